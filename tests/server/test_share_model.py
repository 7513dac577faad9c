"""The share hub's screen model (node_runtime/server/share_hub.py) against pyte fed every byte.

What a late joiner is shown must be what the owner's terminal shows: long
plain runs drawn at the screen's cost, a compacted backlog, DCS strings
(vim's terminal queries) not drawn, and the rendered snapshot redrawing the
same screen on a blank terminal.
"""

from __future__ import annotations

import random

import pyte
from nimbus_websocket.node_runtime.server.share_hub import (
    MAX_BACKLOG,
    ScreenModel,
    _Screen,
    render_screen,
)


def truth(data: bytes, cols: int = 80, rows: int = 24) -> list[str]:
    s = pyte.Screen(cols, rows)
    pyte.ByteStream(s).feed(data)
    return s.display


def model_of(chunks: list[bytes], cols: int = 80, rows: int = 24) -> ScreenModel:
    m = ScreenModel(cols, rows)
    for c in chunks:
        m.feed(c)
    while not m.caught_up:
        m.parse()
    return m


def test_a_long_plain_run_and_a_compacted_backlog_keep_the_alignment() -> None:
    head = b"prompt$ "
    body = b"x" * 300_001 + b"y" * 17
    m = model_of(
        [head] + [body[i : i + 65536] for i in range(0, len(body), 65536)] + [b"\r\ndone\r\n$ "]
    )
    assert m.dropped > 0  # the backlog overflowed and was compacted
    want = truth(head + body.replace(b"y" * 17, b"") + b"y" * 17 + b"\r\ndone\r\n$ ")
    assert m.screen.display == want


def test_other_floods_restart_at_a_line_end_and_end_right() -> None:
    rng = random.Random(3)
    lines = [
        f"\x1b[3{rng.randrange(8)}mline {i} {'z' * rng.randrange(60)}\x1b[0m\r\n".encode()
        for i in range(9000)
    ]
    data = b"".join(lines)
    assert len(data) > MAX_BACKLOG
    m = model_of([data[i : i + 4096] for i in range(0, len(data), 4096)])
    assert m.dropped > 0 and m.screen.display == truth(data)


def test_dcs_strings_are_not_drawn_even_split() -> None:
    for chunks in (
        [b"ab\x1bP+q6b75\x1b\\cd"],
        [b"ab\x1bP+q6", b"b75\x1b\\cd"],
        [b"ab\x1bP+q6b75\x1b", b"\\cd"],
    ):
        assert model_of(chunks, 20, 2).screen.display[0].rstrip() == "abcd", chunks


def test_the_snapshot_redraws_the_screen_with_its_attributes() -> None:
    m = model_of(
        [
            b"\x1b[1;31mred bold\x1b[0m plain \x1b[44mblue bg\x1b[0m\r\n\x1b[38;5;208morange\x1b[0m \xe4\xb8\xad\r\n$ "
        ]
    )
    fresh = _Screen(80, 24)
    pyte.ByteStream(fresh).feed(render_screen(m.screen))
    assert fresh.display == m.screen.display
    for y in range(3):
        for x in range(20):
            a, b = fresh.buffer[y][x], m.screen.buffer[y][x]
            assert (a.data, a.fg, a.bg, a.bold) == (b.data, b.fg, b.bg, b.bold), (y, x)
    assert (fresh.cursor.x, fresh.cursor.y) == (m.screen.cursor.x, m.screen.cursor.y)


def test_a_seed_that_starts_mid_line_is_aligned() -> None:
    """A viewer joining after a flood: the owner's last 64 KiB begin in the middle of a wrapped line."""
    from nimbus_websocket.node_runtime.server.share_hub import SeedRing

    cols, rows = 115, 32
    out = b"$ cmd\r\n" + b"x" * 1_200_000 + b"\r\ndone\r\n$ "
    ring = SeedRing()
    for i in range(0, len(out), 16384):
        ring.append(out[i : i + 16384])
    m = model_of([ring.seed(cols)], cols, rows)
    assert m.screen.display == truth(out, cols, rows)
    # Output with escapes after the last line start: the seed starts at a line end instead (no misalignment).
    ring = SeedRing()
    colored = b"".join(f"\x1b[32mrow {i}\x1b[0m\r\n".encode() for i in range(5000))
    for i in range(0, len(colored), 4096):
        ring.append(colored[i : i + 4096])
    assert model_of([ring.seed(cols)], cols, rows).screen.display == truth(colored, cols, rows)


def test_compaction_with_no_line_end_in_its_second_half_stays_aligned() -> None:
    cols, rows = 115, 32
    pre = b"x" * 40_000 + b"\r\ndone-1\r\n$ head ...\r\n\x1b[?2004l\r"
    flood = [b"x" * 16384] * 20
    tail = b"\r\ndone-2\r\n$ "
    m = model_of([pre, *flood, tail], cols, rows)
    assert m.dropped > 0
    assert m.screen.display == truth(pre + b"".join(flood) + tail, cols, rows)
