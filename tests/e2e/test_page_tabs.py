"""Issue 15, item 5, in Chromium: several terminals in one page, as tabs.

Each tab is a channel of the page's one connection (demo_site/tabs.mjs).
The tests do what a user does -- click "+" and the tabs, press the
shortcuts, type, reload -- and check what they would see:

* three tabs, a different command in each; switching with the tab buttons,
  Alt+N and Ctrl+Shift+PageUp/PageDown shows each tab's own screen, and
  typing goes to the tab on screen only;
* a 5th tab is refused visibly (the runtime refuses a 5th channel: the
  server would end the connection), the four keep working;
* closing a tab ends its shell on the server; a tab whose shell exited says
  so and closes; closing the last tab is like today's exit (Enter: a new
  session);
* a reload brings every tab back -- order, titles, screens, the tab on
  screen -- on the same shells, and each still takes input;
* a flood in a hidden tab does not stall the visible one, and the hidden
  tab's terminal keeps parsing (its write callbacks pace its own channel).

PTY backend (bash without rc files).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from demo_page import PROMPT, Demo

pytestmark = pytest.mark.timeout(240)

#: screen_state.mjs: one tab's record, and the whole document with 2+ tabs.
MAX_CHARS = 1 << 20
MAX_TOTAL_CHARS = 2 << 20


class Tabs:
    """The page's tabs, as the user sees and uses them."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.page = demo.page

    def info(self) -> list[dict[str, Any]]:
        return list(self.demo.js("() => window.nimbusDemo.tabs.info()"))

    def count(self) -> int:
        return int(self.demo.js("() => window.nimbusDemo.tabs.count"))

    def active(self) -> int:
        return int(self.demo.js("() => window.nimbusDemo.tabs.activeIndex"))

    def screen(self, i: int) -> str:
        return str(self.demo.js("(i) => window.nimbusDemo.tabs.screenText(i)", i))

    def labels(self) -> list[str]:
        return [t.strip() for t in self.page.locator("#tabs .tab .tab-label").all_inner_texts()]

    def wait_shown(self, i: int, count: int | None = None) -> None:
        """Until tab ``i`` is on screen (the only visible pane), ready; ``count`` tabs."""
        self.demo.wait(
            """([i, n]) => { const t = window.nimbusDemo.tabs;
                if (n !== null && t.count !== n) return false;
                const all = t.info();
                return t.activeIndex === i && all[i].phase === 'ready' && window.nimbusDemo.phase === 'ready'
                    && all.every((x, j) => x.hidden === (j !== i))
                    && document.activeElement === t.term(i).textarea; }""",
            [i, count],
            what=f"tab {i + 1} on screen" + (f" of {count}" if count else ""),
        )

    def new_by_button(self) -> int:
        n = self.count()
        self.page.click("#tab-new")
        self.wait_shown(n, n + 1)
        return n

    def new_by_shortcut(self) -> int:
        n = self.count()
        self.page.keyboard.press("Alt+Shift+T")
        self.wait_shown(n, n + 1)
        return n

    def click(self, i: int) -> None:
        self.page.locator("#tabs .tab").nth(i).locator(".tab-label").click()
        self.wait_shown(i)


def open_page(context: Any, url: str) -> tuple[Demo, Tabs]:
    demo = Demo(context.new_page()).open(url)
    demo.wait_ready()
    demo.set_prompt()
    return demo, Tabs(demo)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(pred: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


# --------------------------------------------------------------------- tests


def test_three_tabs_switch_with_buttons_and_shortcuts(context: Any, site_server: Any, shots: Any) -> None:
    demo, tabs = open_page(context, site_server.http_url)
    assert tabs.count() == 1 and demo.page.is_visible("#tab-new")
    demo.run("echo first-$((1*11))", r"^first-11$")
    pids = [demo.shell_pid()]

    assert tabs.new_by_button() == 1
    demo.set_prompt()
    demo.run("echo second-$((2*11))", r"^second-22$")
    pids.append(demo.shell_pid())

    assert tabs.new_by_shortcut() == 2
    demo.set_prompt()
    demo.run("echo third-$((3*11))", r"^third-33$")
    pids.append(demo.shell_pid())
    shots(demo.page, "three-tabs")

    assert len(set(pids)) == 3, f"three tabs, three shells: {pids}"
    assert demo.js("() => new Set(window.nimbusDemo.tabs.info().map((t) => t.id)).size") == 3
    assert len(tabs.labels()) == 3
    own = {0: "first-11", 1: "second-22", 2: "third-33"}

    def shows_only_its_own(i: int) -> None:
        screen = demo.screen()  # nimbusDemo.* follows the tab on screen
        assert re.search(rf"^{own[i]}$", screen, re.M), screen
        for j, marker in own.items():
            if j != i:
                assert not re.search(rf"^{marker}$", screen, re.M), f"tab {i + 1} shows {marker}"
        assert screen == tabs.screen(i)

    # The tab buttons.
    tabs.click(0)
    shows_only_its_own(0)
    # Alt+N.
    demo.page.keyboard.press("Alt+2")
    tabs.wait_shown(1)
    shows_only_its_own(1)
    # Ctrl+Shift+PageDown / PageUp: next / previous, wrapping.
    demo.page.keyboard.press("Control+Shift+PageDown")
    tabs.wait_shown(2)
    shows_only_its_own(2)
    demo.page.keyboard.press("Control+Shift+PageDown")
    tabs.wait_shown(0)
    demo.page.keyboard.press("Control+Shift+PageUp")
    tabs.wait_shown(2)
    demo.page.keyboard.press("Alt+1")
    tabs.wait_shown(0)

    # Typing goes to the tab on screen, and only there.
    demo.run("echo typed-in-$((100+1))", r"^typed-in-101$")
    assert demo.shell_pid() == pids[0]
    for j in (1, 2):
        assert "typed-in-101" not in tabs.screen(j)
    demo.page.keyboard.press("Alt+3")
    tabs.wait_shown(2)
    demo.wait_prompt()
    assert demo.shell_pid() == pids[2]
    # None of the shortcuts reached a shell as input (no stray characters).
    demo.wait_prompt()
    assert demo.js("() => window.nimbusDemo.cursorLine()") == PROMPT.rstrip()


def test_fifth_tab_is_refused_visibly(context: Any, site_server: Any, shots: Any) -> None:
    demo, tabs = open_page(context, site_server.http_url)
    for _ in range(3):
        tabs.new_by_button()
    assert tabs.count() == 4
    channels = site_server.channel_count()
    demo.page.click("#tab-new")
    demo.wait("() => window.nimbusDemo.tabs.refused === 1", what="the 5th tab refused")
    msg = demo.page.inner_text("#st-msg")
    assert "No new terminal" in msg and "4 channels" in msg, msg
    assert demo.page.get_attribute("#tab-new", "data-refused") is not None  # the button says so too
    shots(demo.page, "fifth-refused")
    demo.page.keyboard.press("Alt+Shift+T")  # the shortcut is refused the same way
    demo.wait("() => window.nimbusDemo.tabs.refused === 2", what="the shortcut refused")
    assert tabs.count() == 4 and demo.demo("state") == "ready"
    assert site_server.channel_count() == channels  # nothing reached the server
    # Every tab still works.
    for i in range(4):
        demo.page.keyboard.press(f"Alt+{i + 1}")
        tabs.wait_shown(i)
        demo.run(f"echo alive-{i}-$((6*7))", rf"^alive-{i}-42$")


def test_close_tabs_and_exit(context: Any, site_server: Any, shots: Any) -> None:
    demo, tabs = open_page(context, site_server.http_url)
    first = demo.shell_pid()
    tabs.new_by_button()
    demo.set_prompt()
    second = demo.shell_pid()
    tabs.new_by_button()
    demo.set_prompt()
    third = demo.shell_pid()
    channels = site_server.channel_count()

    # The ✕ of the second tab: the tab goes and its shell ends on the server.
    demo.page.locator("#tabs .tab").nth(1).locator(".tab-close").click()
    demo.wait("() => window.nimbusDemo.tabs.count === 2", what="the tab to go")
    wait_until(lambda: not pid_alive(second), f"shell {second} gone")
    wait_until(lambda: site_server.channel_count() == channels - 1, "its channel closed on the server")
    assert pid_alive(first) and pid_alive(third)
    assert tabs.active() == 1  # its neighbour is on screen: the third shell
    tabs.wait_shown(1)
    assert demo.shell_pid() == third

    # A shell that exits: the tab says so, the others go on, Alt+Shift+W closes it.
    demo.type("exit 5")
    demo.page.keyboard.press("Enter")
    demo.wait("() => window.nimbusDemo.phase === 'exited'", what="the exit to show")
    assert demo.demo("exit") == {"code": 5, "sig": None}
    demo.wait_screen(r"process exited with code 5")
    assert demo.page.get_attribute("#tabs .tab >> nth=1", "data-phase") == "exited"
    shots(demo.page, "tab-exited")
    demo.page.keyboard.press("Alt+1")
    tabs.wait_shown(0)  # the first tab was not touched
    demo.page.keyboard.press("Alt+2")
    demo.wait("() => window.nimbusDemo.tabs.activeIndex === 1 && window.nimbusDemo.phase === 'exited'", what="back on the exited tab")
    demo.page.keyboard.press("Alt+Shift+W")
    tabs.wait_shown(0, 1)
    wait_until(lambda: not pid_alive(third), f"shell {third} gone")

    # The last tab: closing it is like today's exit; Enter starts a new session in it.
    demo.page.keyboard.press("Alt+Shift+W")
    demo.wait("() => window.nimbusDemo.phase === 'exited'", what="the last tab closed")
    demo.wait_screen(r"session closed — press Enter for a new session")
    assert tabs.count() == 1 and "exited" in demo.status()
    wait_until(lambda: not pid_alive(first), f"shell {first} gone")
    demo.page.keyboard.press("Enter")
    demo.wait_ready()
    demo.set_prompt()
    assert demo.shell_pid() not in (first, second, third)


def test_reload_brings_every_tab_back(context: Any, site_server: Any, shots: Any) -> None:
    demo, tabs = open_page(context, site_server.http_url)
    demo.run("seq -f 'one-%g' 1 1200; echo mark-one-$((1*7))", r"^mark-one-7$")
    pids = [demo.shell_pid()]
    tabs.new_by_button()
    demo.set_prompt()
    demo.type("printf '\\033]0;tab-two-title\\007'; echo mark-two-$((2*7))")
    demo.page.keyboard.press("Enter")
    demo.wait_screen(r"^mark-two-14$")
    demo.wait("() => window.nimbusDemo.tabs.info()[1].title === 'tab-two-title'", what="the title")
    assert document_title(demo) == "tab-two-title — nimbus"
    pids.append(demo.shell_pid())
    tabs.new_by_shortcut()
    demo.set_prompt()
    demo.run("echo mark-three-$((3*7))", r"^mark-three-21$")
    pids.append(demo.shell_pid())
    tabs.click(1)  # the middle tab on screen when the page goes
    demo.wait_prompt()
    before = tabs.info()
    screens = [tabs.screen(i) for i in range(3)]
    ids = [t["id"] for t in before]
    labels = tabs.labels()
    assert labels[1] == "tab-two-title"
    demo.js(
        """() => addEventListener('pagehide', () => sessionStorage.setItem('e2e-doc',
            sessionStorage.getItem('nimbus-demo.screen') ?? ''))"""
    )

    demo.page.reload()
    demo.wait_ready()
    demo.wait("() => window.nimbusDemo.tabs.count === 3", what="three tabs back")
    tabs.wait_shown(1)
    shots(demo.page, "tabs-reloaded")
    after = tabs.info()
    assert [t["id"] for t in after] == ids, "same channels, same order"
    assert all(t["resumed"] for t in after)
    assert tabs.labels() == labels
    assert document_title(demo) == "tab-two-title — nimbus"
    for i in range(3):
        state = after[i]["screenState"]
        assert state["restored"] is True and state["gap"] == 0, (i, state)
        got = tabs.screen(i).split("\n")  # the tail of the old buffer (1000 lines of scrollback are kept)
        assert got == screens[i].split("\n")[-len(got) :], f"tab {i + 1}'s screen differs after the reload"
        assert min(len(screens[i].split("\n")), 1000) <= len(got), (i, len(got))
    # What was saved: one document, within its bound, every screen in it.
    doc = demo.js("() => sessionStorage.getItem('e2e-doc')")
    assert 0 < len(doc) <= MAX_TOTAL_CHARS, len(doc)
    assert demo.js("() => sessionStorage.getItem('nimbus-demo.screen')") is None  # used up by the restore
    print(f"\nsaved document: {len(doc)} characters for 3 tabs")

    # The same shells, and each still takes what is typed.
    for i in (1, 0, 2):
        demo.page.keyboard.press(f"Alt+{i + 1}")
        tabs.wait_shown(i)
        demo.run(f"echo again-{i}-$((9*9))", rf"^again-{i}-81$")
        assert demo.shell_pid() == pids[i]


def document_title(demo: Demo) -> str:
    return str(demo.js("() => document.title"))


def test_flood_in_hidden_tab_does_not_stall_the_visible_one(context: Any, site_server: Any, shots: Any) -> None:
    demo, tabs = open_page(context, site_server.http_url)
    demo.type("yes nimbus-flood | tr -d '\\n' | fold -w 99")
    demo.page.keyboard.press("Enter")
    demo.wait("() => window.nimbusDemo.rx > 1048576", what="the flood to run")
    tabs.new_by_button()  # the flooding tab is hidden now
    demo.set_prompt()
    hidden = lambda: demo.js("() => window.nimbusDemo.tabs.info()[0]")  # noqa: E731
    at_switch = hidden()
    assert at_switch["hidden"] is True
    took = []
    for i in range(5):
        t0 = time.monotonic()
        demo.run(f"echo visible-{i}-$((5*5))", rf"^visible-{i}-25$", timeout=10_000)
        demo.wait_prompt(timeout=10_000)
        took.append(time.monotonic() - t0)
    later = hidden()
    shots(demo.page, "flood-hidden")
    flooded = later["rx"] - at_switch["rx"]
    print(f"\nvisible tab: commands took {', '.join(f'{t:.2f}' for t in took)} s while the hidden tab got {flooded / (1 << 20):.1f} MiB")
    # A stall would leave the visible tab without an answer; one slow command (fresh-clone CI once saw
    # 5.3 s while the other xdist worker ran its own Chromium on this 2-core machine) is load, not a stall:
    # the typical command must stay interactive. Latency figures belong to bench/.
    assert sorted(took)[len(took) // 2] < 2.0, took
    # The hidden tab was not stalled either: it kept receiving, and its terminal kept parsing.
    assert flooded > 1 << 20, f"hidden tab got only {flooded} bytes"
    assert later["written"] > at_switch["written"] + (1 << 20)
    # Back to the flood: Ctrl+C stops it.
    demo.page.keyboard.press("Alt+1")
    tabs.wait_shown(0)
    demo.page.keyboard.press("Control+C")
    demo.wait_prompt(timeout=10_000)
    demo.run("echo calm-$((4*4))", r"^calm-16$")
