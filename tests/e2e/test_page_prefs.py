"""Issue 15, item 4 in Chromium: preferences.

The server runs with ``--terminal-option`` values (``fontSize=17``, a red);
the page shows them.  URL parameters win for one load (``?fontSize=19&theme=light``);
the settings panel saves to localStorage, which wins over the server on every
later load and loses to URL parameters.  Reset goes back to the server's.
Every check is what the user would see: the rendered font size and colours,
the cursor, and the shell's own idea of the window size (``stty size``).
localStorage holds nothing but the preferences; ``osc52`` is never taken
from a URL; a bad value is ignored and said so in the status bar.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import PTY_COMMAND, ServerThread

pytestmark = pytest.mark.timeout(150)

SERVER_RED = "#ee1111"


@pytest.fixture(scope="module")
def server(site_dir: Path) -> Iterator[ServerThread]:
    st = ServerThread(
        static_dir=str(site_dir),
        pty_command=PTY_COMMAND,
        terminal_options={"fontSize": "17", "colors": {"red": SERVER_RED}, "cursorStyle": "underline"},
    ).start()
    try:
        yield st
    finally:
        st.stop()


def rendered(demo: Demo) -> dict[str, Any]:
    """What the user sees: the rows' font, the terminal's background, the cursor's shape."""
    return dict(
        demo.js(
            """() => {
                const rows = getComputedStyle(document.querySelector('#terminal .xterm-rows'));
                const vp = getComputedStyle(document.querySelector('#terminal .xterm-viewport'));
                const cur = document.querySelector('#terminal .xterm-cursor');
                const shape = cur ? [...cur.classList].find((c) => /^xterm-cursor-(block|underline|bar)$/.test(c)) : null;
                const t = window.nimbusDemo.term;
                return {fontSize: rows.fontSize, background: vp.backgroundColor, cursor: shape,
                        cols: t.cols, rows: t.rows, scrollback: t.options.scrollback, blink: t.options.cursorBlink,
                        theme: document.documentElement.dataset.theme};
            }"""
        )
    )


def red_text(demo: Demo) -> str:
    """The colour of ANSI red output as rendered."""
    demo.run("printf '\\e[31mred-%s\\e[0m\\n' $((40+2))", r"^red-42$")
    # In the buffer is not yet on screen: the DOM renderer draws rows on its next animation frame.
    demo.wait(
        "() => [...document.querySelectorAll('#terminal .xterm-rows span')].some((s) => s.textContent === 'red-42')",
        what="the red line rendered",
    )
    return str(
        demo.js(
            """() => {
                const span = [...document.querySelectorAll('#terminal .xterm-rows span')].reverse()
                    .find((s) => s.textContent === 'red-42');
                return getComputedStyle(span).color;
            }"""
        )
    )


def rgb(hex_color: str) -> str:
    h = hex_color.lstrip("#")
    return f"rgb({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)})"


def stty_matches(demo: Demo) -> None:
    """The shell's window size is the terminal's (the font change reached the PTY)."""
    r = rendered(demo)
    demo.run("stty size", rf"^{r['rows']} {r['cols']}$")


def open_ready(context: Any, url: str) -> Demo:
    d = Demo(context.new_page()).open(url)
    d.wait_ready()
    d.set_prompt()
    return d


def stored(demo: Demo) -> Any:
    entries = demo.js("() => Object.entries(localStorage)")
    assert [k for k, _ in entries] in ([], ["nimbus-demo.prefs"]), entries
    return json.loads(entries[0][1]) if entries else None


def test_server_options_then_url_then_saved_settings(context: Any, server: ServerThread) -> None:
    # 1. The server's options.
    demo = open_ready(context, server.http_url)
    r = rendered(demo)
    assert (r["fontSize"], r["cursor"], r["theme"]) == ("17px", "xterm-cursor-underline", "dark"), r
    assert red_text(demo) == rgb(SERVER_RED)
    assert demo.js("() => document.getElementById('keybar').hidden") is True  # no touch screen here
    stty_matches(demo)
    assert stored(demo) is None

    # 2. URL parameters win for this load; osc52 is never taken from a URL; a bad value is said.
    demo.page.goto(server.http_url + "?fontSize=19&theme=light&cursorStyle=bar&osc52=true&scrollback=999999")
    demo.wait_ready()
    demo.set_prompt()
    r = rendered(demo)
    assert (r["fontSize"], r["cursor"], r["theme"], r["background"]) == ("19px", "xterm-cursor-bar", "light", "rgb(255, 255, 255)"), r
    assert r["scrollback"] == 5000  # 999999 is over the bound: the default stays
    assert demo.demo("page.prefs.effective.osc52") is False
    # What was ignored stays on the settings button and in the panel (the status bar moves on).
    title = demo.page.get_attribute("#btn-settings", "title") or ""
    assert "osc52 cannot be set here" in title and "scrollback: expected a whole number 0..50000" in title, title
    assert red_text(demo) == rgb(SERVER_RED)  # the server's colour on the light theme
    stty_matches(demo)
    assert stored(demo) is None

    # 3. The settings panel: save, applied at once, the URL overrides dropped.
    page = demo.page
    page.click("#btn-settings")
    assert "osc52 cannot be set here" in page.inner_text("#settings-note")
    assert page.input_value("#settings-form input[name=fontSize]") == "19"
    page.fill("#settings-form input[name=fontSize]", "21")
    page.select_option("#settings-form select[name=theme]", "dark")
    page.select_option("#settings-form select[name=cursorStyle]", "block")
    page.fill("#settings-form input[name=scrollback]", "1000")
    page.uncheck("#settings-form input[name=cursorBlink]")
    page.click("#settings-form summary")
    page.fill("#settings-form input[name='color.red']", "#22cc22")
    page.click("#settings-form button[type=submit]")
    demo.wait("() => document.getElementById('settings').hidden", what="the panel to close")
    demo.wait("() => getComputedStyle(document.querySelector('#terminal .xterm-rows')).fontSize === '21px'", what="21px")
    r = rendered(demo)
    assert (r["cursor"], r["theme"], r["scrollback"], r["blink"]) == ("xterm-cursor-block", "dark", 1000, False), r
    assert "fontSize" not in page.url and "theme" not in page.url, page.url
    assert stored(demo) == {
        "v": 1,
        # What differs from the server's options (+ defaults): the dark theme does not.
        "prefs": {"fontSize": 21, "cursorStyle": "block", "scrollback": 1000, "cursorBlink": False, "colors": {"red": "#22cc22"}},
    }
    assert red_text(demo) == rgb("#22cc22")
    stty_matches(demo)

    # 4. Saved settings win over the server on the next load; URL parameters over them.
    page.reload()
    demo.wait_ready()
    demo.set_prompt()
    assert rendered(demo)["fontSize"] == "21px"
    page.goto(server.http_url + "?fontSize=12")
    demo.wait_ready()
    demo.set_prompt()
    assert rendered(demo)["fontSize"] == "12px"
    stty_matches(demo)

    # 5. Reset: back to the server's options, nothing stored.
    page.click("#btn-settings")
    page.click("#settings-reset")
    page.click("#settings-cancel")
    demo.wait("() => getComputedStyle(document.querySelector('#terminal .xterm-rows')).fontSize === '17px'", what="17px")
    assert rendered(demo)["cursor"] == "xterm-cursor-underline"
    assert stored(demo) is None
