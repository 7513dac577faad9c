"""Issue 15, item 1, in Chromium: a reload brings the terminal's screen back exactly.

The page saves xterm's screen (SerializeAddon: scrollback, alternate buffer,
cursor, modes) with the stream position it represents when it hides or
unloads, writes it back before the resumed output, and the output resumes
from exactly that position (demo_site/screen_state.mjs, docs/page.md).  Each
test does what a user does -- types, reloads -- and then types *nothing*
before checking what is on screen:

* a shell: the marker, the prompt and the scrollback (capped at 1000 lines)
  are back, each line once, and the saved record stays under its 1 MiB bound;
* vim (alternate buffer) and top (full screen): drawn, not blank, and
  still alive (vim's modes came back too);
* output xterm had been handed but not parsed yet when the page went away is
  part of the saved state (not lost, not repeated);
* a reload in the middle of a stream: every line is on screen exactly once.

PTY backend (bash without rc files); the SSH backend shares the page code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo

pytestmark = pytest.mark.timeout(180)

#: screen_state.mjs MAX_CHARS / SCROLLBACK_STEPS[0]
MAX_CHARS = 1 << 20
SCROLLBACK_KEPT = 1000

#: After the page's own pagehide listener (registered when app.mjs loaded):
#: note the size of the record it wrote, for the test to read after the reload.
NOTE_RECORD = """() => addEventListener('pagehide', () => sessionStorage.setItem('e2e-record-chars',
    String(sessionStorage.getItem('nimbus-demo.screen')?.length ?? -1)))"""


def open_shell(context: Any, url: str) -> Demo:
    demo = Demo(context.new_page()).open(url)
    demo.wait_ready()
    demo.set_prompt()
    return demo


def reload_untouched(demo: Demo) -> None:
    """Reload and wait for the resumed terminal; nothing is typed."""
    sessions = demo.demo("sessions")
    assert sessions >= 1
    demo.page.reload()
    demo.wait_ready()
    assert demo.demo("resumed") is True, f"a new session instead of a resume: {demo.demo('events')}"


def lines(text: str) -> list[str]:
    return text.split("\n")


def test_reload_brings_back_prompt_marker_and_scrollback(context: Any, site_server: Any, shots: Any) -> None:
    demo = open_shell(context, site_server.http_url)
    demo.run("seq -f 'scroll-%g' 1 1500", r"^scroll-1500$")  # more scrollback than is kept
    demo.run("echo marker-$((6*7))", r"^marker-42$")
    demo.wait_prompt()
    before = demo.screen()
    cursor = demo.js("() => { const b = window.nimbusDemo.term.buffer.active; return [b.cursorX, b.cursorY]; }")
    demo.js(NOTE_RECORD)
    reload_untouched(demo)
    demo.wait_screen(r"^marker-42$", timeout=5_000)
    demo.wait_prompt(timeout=5_000)
    shots(demo.page, "reloaded")
    after = demo.screen()
    state = demo.demo("screenState")
    assert state["restored"] is True and state["gap"] == 0 and state["skipped"] == 0, state
    assert len(re.findall(r"^marker-42$", after, re.M)) == 1
    # Exactly the tail of the old buffer: the last 1000 lines of scrollback plus the screen.
    rows = demo.js("() => window.nimbusDemo.term.rows")
    got = lines(after)
    assert SCROLLBACK_KEPT <= len(got) <= SCROLLBACK_KEPT + rows, len(got)
    assert lines(before)[-len(got) :] == got
    assert demo.js("() => { const b = window.nimbusDemo.term.buffer.active; return [b.cursorX, b.cursorY]; }") == cursor
    chars = int(demo.js("() => sessionStorage.getItem('e2e-record-chars')"))
    assert 0 < chars <= MAX_CHARS, chars
    assert demo.js("() => sessionStorage.getItem('nimbus-demo.screen')") is None  # used up by the restore
    # The same shell, and it still takes input.
    demo.run("echo again-$((7*7))", r"^again-49$")
    print(f"\nsaved record: {chars} characters for {len(got)} lines")


def test_reload_inside_vim_shows_vim(context: Any, site_server: Any, tmp_path: Path, shots: Any) -> None:
    poem = tmp_path / "poem.txt"
    poem.write_text("".join(f"vim-line-{i}\n" for i in range(1, 11)))
    demo = open_shell(context, site_server.http_url)
    demo.run("echo before-vim-$((2*21))", r"^before-vim-42$")
    demo.type(f"vim -u NONE -i NONE -N -n {poem}")
    demo.page.keyboard.press("Enter")
    demo.wait_screen(r"^vim-line-10$")
    demo.wait_screen(r'"[^"]*poem\.txt" 10L')
    screen = demo.screen()
    modes = demo.js("() => window.nimbusDemo.term.modes")
    reload_untouched(demo)
    demo.wait_screen(r"^vim-line-10$", timeout=5_000)
    shots(demo.page, "vim-reloaded")
    assert demo.js("() => window.nimbusDemo.term.buffer.active.type") == "alternate"
    assert demo.screen() == screen  # drawn exactly as it was, not blank
    assert demo.js("() => window.nimbusDemo.term.modes") == modes
    # vim is alive behind it: quit, and the shell's screen from before vim is there too.
    demo.type(":q!")
    demo.page.keyboard.press("Enter")
    demo.wait_prompt()
    assert demo.js("() => window.nimbusDemo.term.buffer.active.type") == "normal"
    assert re.search(r"^before-vim-42$", demo.screen(), re.M)


def test_reload_inside_top_shows_top(context: Any, site_server: Any, shots: Any) -> None:
    demo = open_shell(context, site_server.http_url)
    demo.type("top -d 30")  # redraws only every 30 s: what shows after the reload is the saved screen
    demo.page.keyboard.press("Enter")
    demo.wait_screen(r"^top - ")
    demo.wait_screen(r"^Tasks:")
    screen = demo.screen()
    buffer = demo.js("() => window.nimbusDemo.term.buffer.active.type")  # procps top: the normal one
    reload_untouched(demo)
    demo.wait_screen(r"^top - ", timeout=5_000)
    shots(demo.page, "top-reloaded")
    assert demo.js("() => window.nimbusDemo.term.buffer.active.type") == buffer
    after = demo.screen()
    assert re.search(r"^Tasks:", after, re.M) and re.search(r"PID\s+USER", after), after
    if after != screen:  # top redrew in between (its 30 s tick): still drawn, never blank
        assert demo.demo("screenState")["restored"] is True
    demo.type("q")
    demo.wait_prompt()


def test_unparsed_output_survives_the_reload(context: Any, site_server: Any, shots: Any) -> None:
    """Output handed to xterm but not parsed yet when the page goes is saved with the screen.

    An OSC handler that never finishes holds xterm's parser (xterm.js supports
    asynchronous handlers), so what follows it stays queued in term.write --
    the situation of a reload in the middle of heavy output, made certain.
    """
    demo = open_shell(context, site_server.http_url)
    demo.js(
        """() => { const d = window.nimbusDemo; window.__tapped = ''; const dec = new TextDecoder();
            d.tap = (b) => { window.__tapped += dec.decode(b, {stream: true}); };
            window.__stalled = false;
            d.term.parser.registerOscHandler(7777, () => { window.__stalled = true; return new Promise(() => {}); }); }"""
    )
    demo.type("printf '\\033]7777;hold\\007'; sleep 0.3; echo held-$((5*5))-back")
    demo.page.keyboard.press("Enter")
    demo.wait(
        "() => window.__stalled && /held-25-back\\r\\n[^]*e2e\\$ $/.test(window.__tapped)",
        what="output queued behind the OSC",
    )
    assert not re.search(r"^held-25-back$", demo.screen(), re.M)  # handed to xterm, not parsed
    assert demo.js("() => window.nimbusDemo.written < window.nimbusDemo.rx")
    reload_untouched(demo)
    demo.wait_screen(r"^held-25-back$", timeout=5_000)
    demo.wait_prompt(timeout=5_000)
    shots(demo.page, "unparsed-reloaded")
    state = demo.demo("screenState")
    assert state["restored"] is True and state["gap"] == 0 and state["skipped"] == 0, state
    assert len(re.findall(r"^held-25-back$", demo.screen(), re.M)) == 1
    demo.run("echo fine-$((8*8))", r"^fine-64$")


def test_reload_mid_stream_every_line_once_on_screen(context: Any, site_server: Any, shots: Any) -> None:
    demo = open_shell(context, site_server.http_url)
    demo.type("for i in $(seq 1 300); do echo N$i; sleep 0.01; done; echo stream-$((3*3))-done")
    demo.page.keyboard.press("Enter")
    demo.wait_screen(r"^N20$")
    reload_untouched(demo)
    screen = demo.wait_screen(r"^stream-9-done$", timeout=30_000)
    shots(demo.page, "stream-reloaded")
    numbers = [int(n) for n in re.findall(r"^N(\d+)$", screen, re.M)]
    assert numbers == list(range(1, 301)), f"lost or repeated lines on screen: {numbers}"
    assert demo.demo("screenState")["gap"] == 0
