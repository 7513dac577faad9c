"""Issue 15, item 6 in Chromium's mobile emulation (touch, 390x844).

* The status bar wraps instead of overflowing: "New session…" and every
  other item are on screen, nothing is cut off.
* The key bar is there (and not on a desktop: tests/e2e/test_page_prefs.py);
  tapping its keys sends Esc, Tab, arrows and ``| ~ / -``; Ctrl and Alt are
  sticky for the next key of the bar or of the phone's keyboard, once; the
  focus (and so the phone's keyboard) stays in the terminal.  ``cat -vT``
  shows what arrived.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import ServerThread

pytestmark = pytest.mark.timeout(120)

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser: Any, page_server: ServerThread) -> Iterator[Demo]:
    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        demo = Demo(ctx.new_page()).open(page_server.http_url)
        demo.wait_ready()
        demo.set_prompt()
        yield demo
    finally:
        ctx.close()


def boxes(demo: Demo, selector: str) -> list[dict[str, Any]]:
    return list(
        demo.js(
            """(sel) => [...document.querySelectorAll(sel)].filter((e) => e.offsetParent !== null).map((e) => {
                const r = e.getBoundingClientRect();
                return {id: e.id || e.textContent.trim(), left: r.left, right: r.right, top: r.top, bottom: r.bottom};
            })""",
            selector,
        )
    )


def test_status_bar_wraps_on_a_phone(phone: Demo, shots: Any) -> None:
    shots(phone.page, "phone")
    width = phone.js("() => document.documentElement.clientWidth")
    assert width == PHONE["width"]
    bar = phone.js("() => { const b = document.getElementById('statusbar'); return [b.scrollWidth, b.clientWidth, b.getBoundingClientRect().bottom]; }")
    assert bar[0] <= bar[1] <= width, bar
    assert bar[2] <= PHONE["height"] + 0.5, bar
    for box in boxes(phone, "#statusbar > *:not(.spacer)"):
        assert box["left"] >= 0 and box["right"] <= width + 0.5, box
        assert box["bottom"] <= PHONE["height"] + 0.5, box
    new = next(b for b in boxes(phone, "#btn-new"))
    assert new["right"] <= width, new
    # The button works: the connection form opens.
    phone.page.tap("#btn-new")
    phone.wait("() => !document.getElementById('connect').hidden", what="the connection form")


def test_key_bar_sends_keys_with_sticky_ctrl_and_alt(phone: Demo) -> None:
    page = phone.page
    assert phone.demo("page.keybar.visible") is True
    width = PHONE["width"]
    keys = boxes(phone, "#keybar button")
    assert [k["id"] for k in keys] == ["Esc", "Tab", "Ctrl", "Alt", "←", "↑", "↓", "→", "|", "~", "/", "-"], keys
    for k in keys:
        assert k["left"] >= 0 and k["right"] <= width + 0.5, k
    # The terminal sits above the key bar, the key bar above the status bar.
    term = phone.js("() => document.getElementById('terminal').getBoundingClientRect().bottom")
    status = phone.js("() => document.getElementById('statusbar').getBoundingClientRect().top")
    assert term <= keys[0]["top"] and keys[0]["bottom"] <= status + 0.5, (term, keys[0], status)

    phone.type("cat -vT")
    page.keyboard.press("Enter")
    phone.wait("() => window.nimbusDemo.cursorLine() === ''", what="cat waiting for input")

    def tap(label: str) -> None:
        page.tap(f"#keybar button:text-is('{label}')")

    tap("Esc")
    tap("Tab")
    tap("←")
    tap("Ctrl")
    assert page.get_attribute("#keybar [data-mod=ctrl]", "aria-pressed") == "true"
    phone.type("a")  # the phone's keyboard: Ctrl+A, once
    assert page.get_attribute("#keybar [data-mod=ctrl]", "aria-pressed") == "false"
    phone.type("b")
    tap("Alt")
    phone.type("x")  # Alt+X: ESC x
    for label in ("|", "~", "/", "-"):
        tap(label)
    tap("Ctrl")
    tap("↑")  # Ctrl+Up: ESC [1;5A
    tap("Alt")
    tap("Alt")  # a second tap disarms
    phone.type("z")
    # Focus never left the terminal: the phone keyboard stays up.
    assert phone.js("() => document.activeElement === window.nimbusDemo.term.textarea") is True
    page.keyboard.press("Enter")
    phone.wait_screen(r"^\^\[\^I\^\[\[D\^Ab\^\[x\|~/-\^\[\[1;5Az$")
    assert phone.demo("page.keybar.keys") == 8
    # Ctrl from the bar + "c" from the keyboard interrupts cat.
    tap("Ctrl")
    phone.type("c")
    phone.wait_prompt()
