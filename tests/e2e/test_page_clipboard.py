"""Issue 15, item 2 in Chromium: the clipboard the platform's way.

A user selects output with the mouse and copies it with Ctrl+Shift+C, or with
Ctrl+C while something is selected (which then does not interrupt the job),
or just by selecting with copy-on-select on;
without a selection Ctrl+C still interrupts.  Ctrl+Shift+V pastes through the
browser's own paste event, bracketed when the application asked for it.  On
macOS (navigator.platform faked before any script runs, as xterm.js reads it)
⌘C copies and Ctrl+C always interrupts.  The remote side sets the clipboard
with OSC 52 only once the user allowed it in Settings, never beyond the bound,
and can never read it.  The context grants clipboard permissions; the test
reads and writes ``navigator.clipboard``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import ServerThread
from page_helpers import cell_center, clipboard, grant_clipboard, set_clipboard, wait_clipboard

pytestmark = pytest.mark.timeout(150)

MAC = "Object.defineProperty(Navigator.prototype, 'platform', {configurable: true, get: () => 'MacIntel'});"


@pytest.fixture
def open_page(browser: Any, page_server: ServerThread) -> Iterator[Callable[..., Demo]]:
    """``open_page(init_script=None, query="")`` -> a page at the ``e2e$`` prompt, clipboard granted."""
    contexts: list[Any] = []

    def open_(init_script: str | None = None, query: str = "") -> Demo:
        ctx = browser.new_context(viewport={"width": 1000, "height": 620}, device_scale_factor=1)
        contexts.append(ctx)
        grant_clipboard(ctx, page_server.http_url)
        if init_script:
            ctx.add_init_script(init_script)
        demo = Demo(ctx.new_page()).open(page_server.http_url + query)
        demo.wait_ready()
        demo.set_prompt()
        return demo

    yield open_
    for ctx in contexts:
        ctx.close()


def select_word(demo: Demo, word: str) -> None:
    """Double-click ``word`` on screen, as a user selects it."""
    x, y = cell_center(demo, word, offset=2)
    demo.page.mouse.dblclick(x, y)
    demo.wait("(w) => window.nimbusDemo.term.getSelection() === w", word, what=f"{word!r} selected")


def test_copy_with_ctrl_shift_c_and_ctrl_c_on_a_selection(open_page: Callable[..., Demo]) -> None:
    demo = open_page()
    page = demo.page
    assert demo.demo("page.clipboard.platform") == "other"
    demo.run("echo copy-me-$((6*7)) and-this-$((7*6))", r"^copy-me-42 and-this-42$")
    demo.wait_prompt()

    # Ctrl+Shift+C: the selection goes to the clipboard, nothing to the shell.
    set_clipboard(demo, "before")
    select_word(demo, "copy-me-42")
    page.keyboard.press("Control+Shift+C")
    wait_clipboard(demo, "copy-me-42")
    assert demo.js("() => window.nimbusDemo.cursorLine()") == "e2e$", demo.screen()
    assert "Copied 10 characters" in demo.status()

    # Ctrl+C with a selection copies (and clears it) instead of interrupting the job.
    demo.type("cat")
    page.keyboard.press("Enter")
    demo.wait("() => window.nimbusDemo.cursorLine() === ''", what="cat waiting for input")
    select_word(demo, "and-this-42")
    page.keyboard.press("Control+C")
    wait_clipboard(demo, "and-this-42")
    assert demo.js("() => window.nimbusDemo.term.hasSelection()") is False
    demo.run("still-running", r"^still-running\nstill-running$")  # the tty's echo, then cat's copy
    # Without a selection Ctrl+C is ^C again: cat ends, the prompt is back.
    page.keyboard.press("Control+C")
    demo.wait_prompt()


def test_copy_on_select(open_page: Callable[..., Demo]) -> None:
    demo = open_page(query="?copyOnSelect=true")
    demo.run("echo picked-$((6*7)) other", r"^picked-42 other$")
    demo.wait_prompt()
    set_clipboard(demo, "before")
    select_word(demo, "picked-42")  # no key: releasing the mouse copies
    wait_clipboard(demo, "picked-42")
    assert demo.demo("page.clipboard.lastCopy") == {"how": "select", "chars": 9}
    # A drag selects and copies too.
    start = cell_center(demo, "picked-42 other", offset=10)
    end = cell_center(demo, "picked-42 other", offset=14)
    demo.page.mouse.move(start[0] - 3, start[1])
    demo.page.mouse.down()
    demo.page.mouse.move(end[0] + 3, end[1], steps=4)
    demo.page.mouse.up()
    wait_clipboard(demo, "other")


def test_paste_with_ctrl_shift_v_is_bracketed(open_page: Callable[..., Demo]) -> None:
    demo = open_page()
    page = demo.page
    # cat -v shows what the terminal sends; the application turns on bracketed paste.
    demo.type("printf '\\e[?2004h'; cat -v")
    page.keyboard.press("Enter")
    demo.wait("() => window.nimbusDemo.cursorLine() === ''", what="cat waiting for input")
    set_clipboard(demo, "first line\nsecond")
    page.keyboard.press("Control+Shift+V")
    demo.wait_screen(r"^\^\[\[200~first line$")
    page.keyboard.press("Enter")
    screen = demo.wait_screen(r"^second\^\[\[201~$")
    assert "^V" not in screen, screen  # the shortcut itself sent nothing
    page.keyboard.press("Control+C")
    demo.wait_prompt()
    # Plain Ctrl+V stays the terminal's ^V (vim's block selection, readline's quoted insert).
    demo.type("cat -v")
    page.keyboard.press("Enter")
    demo.wait("() => window.nimbusDemo.cursorLine() === ''", what="cat waiting for input")
    page.keyboard.press("Control+V")
    page.keyboard.press("Control+V")  # the tty's lnext quotes the next ^V: cat gets one
    page.keyboard.press("Enter")
    screen = demo.wait_screen(r"^\^V$")
    assert "first line" not in screen.split("e2e$ cat -v")[-1], screen  # no paste
    page.keyboard.press("Control+C")
    demo.wait_prompt()


def test_macos_command_c_copies_and_ctrl_c_interrupts(open_page: Callable[..., Demo]) -> None:
    demo = open_page(init_script=MAC)
    page = demo.page
    assert demo.demo("page.clipboard.platform") == "mac"
    demo.run("echo mac-copy-$((6*7))", r"^mac-copy-42$")
    demo.wait_prompt()
    set_clipboard(demo, "before")
    select_word(demo, "mac-copy-42")
    page.keyboard.press("Meta+C")
    wait_clipboard(demo, "mac-copy-42")
    # On a Mac Ctrl+C is ^C even with a selection.
    demo.type("cat")
    page.keyboard.press("Enter")
    demo.wait("() => window.nimbusDemo.cursorLine() === ''", what="cat waiting for input")
    select_word(demo, "mac-copy-42")
    set_clipboard(demo, "untouched")
    page.keyboard.press("Control+C")
    demo.wait_prompt()
    assert clipboard(demo) == "untouched"
    # ⌘V sends no keystroke of its own (the browser's paste event does the pasting).
    page.keyboard.press("Meta+V")
    demo.run("echo after-$((1+1))", r"^after-2$")
    assert demo.js("() => window.nimbusDemo.cursorLine()") == "e2e$"
    assert not [line for line in demo.screen().splitlines() if line.startswith("e2e$ v")], demo.screen()


def osc52(text: str) -> str:
    """A shell command printing an OSC 52 clipboard write of ``text``."""
    return f"printf '\\e]52;c;%s\\a' {base64.b64encode(text.encode()).decode()}"


def test_osc52_writes_are_opt_in_bounded_and_reads_never_answered(open_page: Callable[..., Demo]) -> None:
    demo = open_page()
    page = demo.page
    set_clipboard(demo, "mine")

    # Off by default: the write is dropped and the user is told where to allow it.
    demo.run(osc52("remote-42") + "; echo sent-1", r"^sent-1$")
    demo.wait("() => window.nimbusDemo.page.clipboard.osc52.lastRefusal === 'off'", what="the refusal")
    assert "allow it in Settings" in demo.status()
    assert clipboard(demo) == "mine"

    # The user turns it on in Settings.
    page.click("#btn-settings")
    page.check("#settings-form input[name=osc52]")
    page.click("#settings-form button[type=submit]")
    demo.wait("() => document.getElementById('settings').hidden", what="the panel to close")
    demo.run(osc52("remote-42") + "; echo sent-2", r"^sent-2$")
    wait_clipboard(demo, "remote-42")
    assert "The remote side set the clipboard (9 characters)" in demo.status()

    # Over the bound (1 Mi characters, after decoding): refused, clipboard unchanged.
    demo.run(
        "printf '\\e]52;c;%s\\a' $(head -c 1100000 /dev/zero | tr '\\0' a | base64 -w0); echo sent-3",
        r"^sent-3$",
        timeout=30_000,
    )
    demo.wait("() => window.nimbusDemo.page.clipboard.osc52.lastRefusal === 'too large'", what="the size refusal")
    assert clipboard(demo) == "remote-42"

    # A query is swallowed: nothing comes back as input (the shell would read it).
    demo.run("printf '\\e]52;c;?\\a'; read -rs -t 2 x; echo \"got[$x]\"", r"^got\[\]$")
    assert demo.demo("page.clipboard.osc52.reads") == 1
    assert demo.demo("page.clipboard.osc52.writes") == 1
    # localStorage holds the preference, nothing else.
    stored = demo.js("() => Object.entries(localStorage)")
    assert stored == [["nimbus-demo.prefs", '{"v":1,"prefs":{"osc52":true}}']], stored
