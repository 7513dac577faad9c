"""Helpers of the page-feature tests (issue 15): where a text is on screen, the clipboard.

``cell_center(demo, text)`` finds ``text`` in the xterm buffer and returns the
viewport coordinates of the middle of its first cell (for a mouse or a tap,
like a user would aim); ``clipboard(demo)`` reads ``navigator.clipboard``.
"""

from __future__ import annotations

from typing import Any

from demo_page import Demo

#: Where ``text`` is: (row in the viewport, column of its first cell), cells counted
#: with their widths (a wide character takes two).
_FIND = """(text) => {
  const t = window.nimbusDemo.term, buf = t.buffer.active;
  for (let y = buf.length - 1; y >= 0; y--) {
    const line = buf.getLine(y);
    if (!line) continue;
    const s = line.translateToString(true);
    const i = s.indexOf(text);
    if (i < 0) continue;
    // string index -> cell: walk the cells (a wide char's second cell is empty)
    let idx = 0;
    for (let x = 0; x < t.cols; x++) {
      const c = line.getCell(x);
      if (!c || c.getWidth() === 0) continue;
      if (idx >= i) return {row: y - buf.viewportY, col: x};
      idx += c.getChars().length || 1;
    }
  }
  return null;
}"""


def cell_center(demo: Demo, text: str, offset: int = 0) -> tuple[float, float]:
    """Page coordinates of the middle of the cell ``offset`` cells into ``text`` on screen."""
    where = demo.js(_FIND, text)
    assert where is not None, f"{text!r} is not on screen:\n{demo.screen()}"
    box = demo.page.locator("#terminal .xterm-screen").bounding_box()
    cols, rows = demo.js("() => [window.nimbusDemo.term.cols, window.nimbusDemo.term.rows]")
    assert 0 <= where["row"] < rows, where
    w, h = box["width"] / cols, box["height"] / rows
    return box["x"] + (where["col"] + offset + 0.5) * w, box["y"] + (where["row"] + 0.5) * h


def clipboard(demo: Demo) -> str:
    """What ``navigator.clipboard`` holds (the context granted clipboard-read)."""
    return str(demo.js("() => navigator.clipboard.readText()"))


def set_clipboard(demo: Demo, text: str) -> None:
    demo.js("(t) => navigator.clipboard.writeText(t)", text)


def wait_clipboard(demo: Demo, text: str, timeout: float = 10_000) -> None:
    """Until the clipboard holds ``text``."""
    demo.wait(
        "async (t) => (await navigator.clipboard.readText()) === t",
        text,
        timeout=timeout,
        what=f"the clipboard to hold {text[:40]!r}",
    )


def grant_clipboard(context: Any, url: str) -> None:
    origin = url.split("/", 3)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin="/".join(origin[:3]))
