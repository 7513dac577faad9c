"""Issue 15, item 3 in Chromium: clickable links, Unicode 11 widths.

* A URL a command prints is a link: under the mouse the pointer becomes a
  hand; a click opens it in a new tab, without ``window.opener`` and without
  a Referer; the terminal page stays where it was.  A ``javascript:`` text is
  not a link.
* CJK and emoji take two cells (Unicode 11, as the shell's wcwidth counts
  them), so what follows them lines up.
"""

from __future__ import annotations

from typing import Any

import pytest
from demo_page import Demo
from e2e_server import ServerThread
from page_helpers import cell_center

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def demo(context: Any, page_server: ServerThread) -> Demo:
    d = Demo(context.new_page()).open(page_server.http_url)
    d.wait_ready()
    d.set_prompt()
    return d


def pointer(demo: Demo) -> bool:
    """The mouse pointer over the terminal is a hand (xterm.js shows it over a link)."""
    return bool(demo.js("() => document.querySelector('#terminal .xterm-screen').classList.contains('xterm-cursor-pointer')"))


def test_a_printed_url_opens_in_a_new_tab_without_opener(context: Any, demo: Demo, page_server: ServerThread) -> None:
    page = demo.page
    url = f"{page_server.http_url}page-config.json?from=terminal"
    demo.run(f"echo 'docs: {url} and javascript:alert(1)'", r"^docs: http.*alert\(1\)$")
    demo.wait_prompt()
    # Hovering: the hand pointer over the URL, not over the javascript: text.
    x, y = cell_center(demo, "javascript:alert")
    page.mouse.move(x, y)
    x, y = cell_center(demo, url, offset=10)
    page.mouse.move(x, y)
    demo.wait("() => document.querySelector('#terminal .xterm-screen').classList.contains('xterm-cursor-pointer')", what="the hand pointer")
    requests: list[Any] = []
    context.on("request", lambda r: requests.append(r))
    with context.expect_page(timeout=10_000) as popup_info:
        page.mouse.click(x, y)
    popup = popup_info.value
    popup.wait_for_load_state("load", timeout=10_000)
    assert popup.url == url
    assert popup.evaluate("() => window.opener") is None
    assert popup.evaluate("() => document.referrer") == ""
    assert '"terminal"' in popup.evaluate("() => document.body.innerText")
    sent = [r for r in requests if r.url == url]
    assert sent and all("referer" not in r.headers for r in sent), [r.headers for r in sent]
    assert demo.demo("page.clipboard.links") == [url]
    popup.close()
    # The terminal is still there and still typing.
    assert page.url.startswith(page_server.http_url)
    x, y = cell_center(demo, "javascript:alert", offset=3)
    page.mouse.move(x, y)
    demo.wait("() => !document.querySelector('#terminal .xterm-screen').classList.contains('xterm-cursor-pointer')", what="no hand over javascript:")
    page.mouse.click(x, y)
    assert demo.demo("page.clipboard.links") == [url]
    demo.run("echo still-$((2*21))", r"^still-42$")


def test_cjk_and_emoji_are_two_cells_wide(demo: Demo) -> None:
    assert demo.demo("page.clipboard.unicode") == "11"
    # w: 漢 字 | 😀 | (printf with octal escapes: the command line itself stays ASCII)
    demo.run(
        "printf 'w:\\346\\274\\242\\345\\255\\227|\\360\\237\\230\\200|end\\n'",
        r"^w:漢字\|😀\|end$",
    )
    cells = demo.js(
        """() => {
            const t = window.nimbusDemo.term, buf = t.buffer.active;
            for (let y = buf.length - 1; y >= 0; y--) {
                const line = buf.getLine(y);
                if (!line.translateToString(true).startsWith('w:')) continue;
                const out = [];
                for (let x = 0; x < 13; x++) { const c = line.getCell(x); out.push([c.getChars(), c.getWidth()]); }
                return out;
            }
            return null;
        }"""
    )
    assert cells == [
        ["w", 1], [":", 1],
        ["漢", 2], ["", 0], ["字", 2], ["", 0],
        ["|", 1],
        ["😀", 2], ["", 0],
        ["|", 1], ["e", 1], ["n", 1], ["d", 1],
    ], cells
    # On screen (the DOM renderer's glyphs): the second "|" is three cells right of the
    # first, "e" one more -- the emoji took two cells, not one.
    xs = demo.js(
        """() => {
            const t = window.nimbusDemo.term;
            const row = [...document.querySelectorAll('#terminal .xterm-rows > div')]
                .find((d) => d.textContent.startsWith('w:'));
            const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
            const at = {};
            let bars = 0;
            for (let n = walker.nextNode(); n; n = walker.nextNode()) {
                for (let i = 0; i < n.data.length; i++) {
                    const ch = n.data[i];
                    if (ch !== '|' && ch !== 'e') continue;
                    const r = document.createRange();
                    r.setStart(n, i); r.setEnd(n, i + 1);
                    at[ch === '|' ? `bar${bars++}` : 'e'] = r.getBoundingClientRect().left;
                }
            }
            const cell = document.querySelector('#terminal .xterm-screen').getBoundingClientRect().width / t.cols;
            return {...at, cell};
        }"""
    )
    cell = xs["cell"]
    assert abs(xs["bar1"] - xs["bar0"] - 3 * cell) < 1, xs
    assert abs(xs["e"] - xs["bar1"] - cell) < 1, xs
