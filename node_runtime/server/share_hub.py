"""Shared terminals: the screen model, and one hub per shared channel fanning its output out to viewers.

A viewer session (a share link, :mod:`nimbus_websocket.core.share`) has one
channel whose backend is a :class:`ViewBackend`: it takes no process, it
takes the owner's output through the channel's :class:`ShareHub`.

**Late joiners see the screen first.**  The hub keeps a terminal-state model
of the owner's output (:class:`ScreenModel`, the ``pyte`` emulator), seeded
with the owner's last :data:`SEED_BYTES` of output when the first viewer
attaches; a joining viewer gets that screen rendered (clear, every cell with
its attributes, the cursor), then the live stream.  Full-screen programs
(vim, top, less) arrive as they look, not as a tail of raw bytes.

**The model never slows the owner.**  pyte parses about 1 MB/s, far below a
PTY's speed, so output is only *appended* to a bounded backlog
(:data:`MAX_BACKLOG`) on the owner's path; the model parses it in slices of
:data:`SLICE` bytes, leaving the event loop idle for :data:`YIELD_FACTOR`
times as long as each slice took (about 10 % of one core at most).  When a
flood overflows the backlog, the oldest bytes are dropped and the model
restarts from a blank screen with what is left: under a flood it lags and
then catches up, drawing the screen the last :data:`MAX_BACKLOG` bytes draw.

**Each viewer has its own credit.**  Live output goes into the viewer's own
channel (its own credit window, its own connection); once more than
:data:`VIEW_MAX_PENDING` bytes wait there for the viewer's credit, the hub
stops feeding it and, when it has caught up, sends it a fresh screen
snapshot instead of the bytes it missed.  A stalled viewer costs at most
``VIEW_MAX_PENDING`` plus one read of memory, and never the owner's time.

Memory per shared channel: the backlog (256 KiB), the model (one ``Char``
per cell: about 100 bytes x cols x rows, ~1 MiB for 200x50), and per viewer
``VIEW_MAX_PENDING``.  The owner's recent output for the seed is kept only
while the channel is shared (:data:`SEED_BYTES`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import pyte

from ...core.errors import BackendError
from ...core.messages import ViewerInfo
from .backend import Backend, BackendSink

__all__ = [
    "MAX_BACKLOG",
    "SEED_BYTES",
    "VIEW_MAX_PENDING",
    "ScreenModel",
    "SeedRing",
    "ShareHub",
    "ViewBackend",
    "render_screen",
]

log = logging.getLogger("nimbus_websocket.server.share")

#: Unparsed output the model keeps at most; past it, the oldest is dropped.
MAX_BACKLOG = 256 * 1024
#: Bytes parsed per slice of the event loop (plain runs cost the screen's size, not their length).
SLICE = 16 * 1024
#: The start of a DCS, SOS, PM or APC string.
_STRING_START = re.compile(rb"\x1b[PX^_]")
#: Printable ASCII: a backlog of nothing else is one plain run.
_PRINTABLE = bytes(range(0x20, 0x7F))
#: ... and line feeds, which move down without changing the column.
_PLAIN = _PRINTABLE + b"\n"
#: After a slice that took ``t``, the model waits ``YIELD_FACTOR * t`` before the next one.
YIELD_FACTOR = 9.0
#: The owner's recent output replayed into a new model.
SEED_BYTES = 64 * 1024
#: Bytes waiting for a viewer's credit past which it skips to a fresh screen.
VIEW_MAX_PENDING = 256 * 1024
#: Seconds between checks whether a skipping viewer has drained (while one does).
RESYNC_POLL = 0.05


class _Screen(pyte.Screen):
    """pyte's screen, tolerant of what real programs send.

    pyte 0.8.2 passes ``private`` for ``CSI > … m`` (xterm's
    modifyOtherKeys, which vim sends) and would raise; queries are never
    answered (a viewer's model must not type into the owner's shell).
    """

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        if not private:
            super().select_graphic_rendition(*attrs)

    def write_process_input(self, data: str) -> None:
        return None

    def draw(self, data: str) -> None:
        """pyte's ``draw``, skipping the part of a long plain run that scrolls away unseen.

        Drawing ``n`` printable ASCII characters with autowrap leaves on the
        screen only what the last ``rows + 1`` physical rows hold; skipping a
        multiple of ``columns`` characters first keeps every row's alignment,
        so the screen ends identical -- at a cost bounded by the screen's size.
        """
        cols, rows = self.columns, self.lines
        long_plain = len(data) > cols * (rows + 2) and data.isascii() and data.isprintable()
        if long_plain and pyte.modes.DECAWM in self.mode and pyte.modes.IRM not in self.mode:
            data = data[((len(data) - cols * (rows + 1)) // cols) * cols :]
        super().draw(data)


_NAMED = {
    "black": 0,
    "red": 1,
    "green": 2,
    "brown": 3,
    "yellow": 3,
    "blue": 4,
    "magenta": 5,
    "cyan": 6,
    "white": 7,
}


def _color(value: str, base: int) -> str:
    """The SGR parameters for a pyte colour (``base`` 30 foreground, 40 background)."""
    if value == "default":
        return str(base + 9)
    bright = value.startswith("bright")
    name = value.removeprefix("bright")
    if name in _NAMED:
        return str(base + 60 + _NAMED[name]) if bright else str(base + _NAMED[name])
    if len(value) == 6:
        try:
            r, g, b = int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
        except ValueError:
            return str(base + 9)
        return f"{base + 8};2;{r};{g};{b}"
    return str(base + 9)


#: pyte's cell flags and their SGR parameters.
_FLAGS = (("bold", "1"), ("italics", "3"), ("underscore", "4"), ("blink", "5"), ("reverse", "7"), ("strikethrough", "9"))


def _sgr(ch: Any) -> str:
    parts = ["0", *(code for attr, code in _FLAGS if getattr(ch, attr))]
    if ch.fg != "default":
        parts.append(_color(ch.fg, 30))
    if ch.bg != "default":
        parts.append(_color(ch.bg, 40))
    return "\x1b[" + ";".join(parts) + "m"


def render_screen(screen: Any) -> bytes:
    """The screen as bytes that redraw it on a blank terminal: every cell, its attributes, the cursor."""
    out = ["\x1b[?25l\x1b[0m\x1b[H\x1b[2J"]
    plain = _sgr(screen.default_char)
    for y in range(screen.lines):
        row = screen.buffer[y]
        # The last cell worth drawing: trailing default blanks are what the clear left.
        last = -1
        for x in range(screen.columns - 1, -1, -1):
            c = row[x]
            if c.data not in (" ", "") or _sgr(c) != plain:
                last = x
                break
        if last < 0:
            continue
        out.append(f"\x1b[{y + 1};1H")
        current = plain
        for x in range(last + 1):
            c = row[x]
            if c.data == "":  # the second half of a wide character
                continue
            attrs = _sgr(c)
            if attrs != current:
                out.append(attrs)
                current = attrs
            out.append(c.data)
        out.append("\x1b[0m")
    cur = screen.cursor
    out.append(f"\x1b[{cur.y + 1};{cur.x + 1}H")
    if not cur.hidden:
        out.append("\x1b[?25h")
    return "".join(out).encode("utf-8", "replace")


class ScreenModel:
    """The owner's screen as pyte sees it, parsed off the owner's path from a bounded backlog."""

    def __init__(self, cols: int, rows: int) -> None:
        self.screen = _Screen(cols, rows)
        self._stream = pyte.ByteStream(self.screen)
        self._backlog: deque[bytes] = deque()
        self._backlog_bytes = 0
        self._reset = False
        self._in_string = False  # inside a DCS/SOS/PM/APC string (not drawn)
        self._pending_esc = False  # the last chunk of such a string ended with ESC
        #: Bytes dropped under floods (the model restarted from the rest).
        self.dropped = 0

    @property
    def caught_up(self) -> bool:
        """True when every byte fed so far is on the screen."""
        return not self._backlog

    def feed(self, data: bytes) -> None:
        """Queue output for parsing (never parses here); past :data:`MAX_BACKLOG`, compact."""
        self._backlog.append(data)
        self._backlog_bytes += len(data)
        if self._backlog_bytes > MAX_BACKLOG:
            self._compact()

    def _restart_cut(self, joined: bytes, start: int) -> int:
        """Where to restart a model over ``joined`` (cut) so that what follows is drawn right.

        The long plain run after the last line end (a flood) starts at column 0 there: cut
        into it by whole rows (exact). Otherwise the first line end at or after ``start``
        (else the last one before it): exact once a screenful of lines has followed.
        """
        cols, rows = self.screen.columns, self.screen.lines
        keep = cols * (rows + 1)
        q = max(joined.rfind(b"\r"), joined.rfind(b"\n"))
        tail_start = q + 1
        if len(joined) - tail_start > keep and not joined[tail_start:].translate(None, _PRINTABLE):
            return tail_start + ((len(joined) - tail_start - keep) // cols) * cols
        nl = joined.find(b"\n", start)
        if nl < 0:
            nl = joined.rfind(b"\n", 0, start)
        return nl + 1 if nl >= 0 else start

    def _compact(self) -> None:
        """Shrink the backlog so that the screen it draws stays the same where that can be known.

        Plain printable ASCII that the parser meets in its ground state is
        one long run: only its last ``rows + 1`` rows can show, and dropping
        a multiple of ``columns`` before them keeps the alignment (exact).
        Anything else is cut right after a line end, at least half the
        bound back, and the model restarts from a blank screen there: exact
        again once ``rows`` lines have followed (a full-screen program's next
        redraw), approximate until then (colours or modes set before the cut).
        """
        joined = b"".join(self._backlog)
        self._backlog.clear()
        cols, rows = self.screen.columns, self.screen.lines
        keep = cols * (rows + 1)
        ground = (
            self._stream._taking_plain_text and not self._stream.utf8_decoder.getstate()[0] and not self._in_string
        )
        if ground and not joined.translate(None, _PRINTABLE):
            cut = ((len(joined) - keep) // cols) * cols
        else:
            cut = self._restart_cut(joined, max(0, len(joined) - MAX_BACKLOG // 2))
            cut = max(cut, len(joined) - MAX_BACKLOG)  # the bound holds whatever the content
            self._reset = True
        self.dropped += cut
        rest = joined[cut:]
        self._backlog.append(rest)
        self._backlog_bytes = len(rest)

    def _strip_strings(self, data: bytes) -> bytes:
        """Drop DCS, SOS, PM and APC strings (``ESC P`` / ``X`` / ``^`` / ``_`` … ``ESC \\``):
        pyte does not know them and would draw their bodies (vim's terminal queries)."""
        out: list[bytes] = []
        pos = 0
        while pos < len(data):
            if self._in_string:
                end = data.find(b"\x1b\\", pos)
                if end < 0:
                    if data.endswith(b"\x1b"):  # a terminator may straddle the chunks
                        self._pending_esc = True
                    return b"".join(out)
                pos = end + 2
                self._in_string = False
                continue
            if self._pending_esc:
                self._pending_esc = False
            m = _STRING_START.search(data, pos)
            if m is None:
                out.append(data[pos:])
                break
            out.append(data[pos : m.start()])
            pos = m.end()
            self._in_string = True
        return b"".join(out)

    def parse(self, budget: int = SLICE) -> None:
        """Parse up to ``budget`` bytes of the backlog (in one feed: a long run is drawn at once)."""
        if self._reset:
            self.screen.reset()
            self._stream = pyte.ByteStream(self.screen)
            self._reset = self._in_string = self._pending_esc = False
            self._stream.feed(b"\r")  # the cut was after a line end: column 0
        parts: list[bytes] = []
        while budget > 0 and self._backlog:
            chunk = self._backlog.popleft()
            if len(chunk) > budget:
                self._backlog.appendleft(chunk[budget:])
                chunk = chunk[:budget]
            self._backlog_bytes -= len(chunk)
            budget -= len(chunk)
            parts.append(chunk)
        if parts:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if self._in_string or b"\x1b" in data:
                if self._pending_esc and data.startswith(b"\\"):
                    self._in_string = self._pending_esc = False
                    data = data[1:]
                data = self._strip_strings(data)
            self._stream.feed(data)

    def resize(self, cols: int, rows: int) -> None:
        """The owner's terminal changed size (after what was fed before)."""
        while self._backlog:
            self.parse(MAX_BACKLOG)
        self.screen.resize(rows, cols)

    def snapshot(self) -> bytes:
        """The current screen, rendered (:func:`render_screen`)."""
        return render_screen(self.screen)


class SeedRing:
    """The owner's last :data:`SEED_BYTES` of output, and the column it began at when that is known.

    A new viewer's model starts from it. Output that began mid-line would be drawn
    misaligned from column 0, so the ring also tracks, cheaply (C-speed scans per chunk),
    how many plain characters follow the last carriage return: when a chunk starts on
    a line of nothing but printable ASCII, its starting column is known and the seed is
    prefixed to put the model's cursor there; else the seed starts at its first line end.
    """

    __slots__ = ("_chunks", "_col", "_size")

    def __init__(self) -> None:
        self._chunks: deque[tuple[bytes, int | None]] = deque()
        self._size = 0
        self._col: int | None = 0  # plain characters since the last CR (None: unknown)

    def append(self, data: bytes) -> None:
        """Output the owner's program wrote (called on the owner's path)."""
        self._chunks.append((data, self._col))
        self._size += len(data)
        while self._size - len(self._chunks[0][0]) >= SEED_BYTES:
            self._size -= len(self._chunks.popleft()[0])
        cr = data.rfind(b"\r")
        part = data[cr + 1 :] if cr >= 0 else data
        if cr < 0 and self._col is None:
            return
        if part.translate(None, _PLAIN):
            self._col = None  # an escape or a control after the last CR: the column is unknown
        else:
            self._col = (0 if cr >= 0 else (self._col or 0)) + len(part) - part.count(b"\n")

    def seed(self, cols: int) -> bytes:
        """The bytes a new model starts from (see the class docstring)."""
        if not self._chunks:
            return b""
        joined = b"".join(c for c, _ in self._chunks)
        col = self._chunks[0][1]
        if col is not None:  # blanks up to the column (a pending wrap too): the same cells, the same cursor
            return b"\r" + b" " * (((col - 1) % cols) + 1 if col else 0) + joined
        nl = joined.find(b"\n")
        return b"\r" + joined[nl + 1 :] if nl >= 0 else joined


class _Owner(Protocol):
    """What the hub needs of the shared channel's own backend."""

    def write(self, data: bytes) -> None: ...

    def signal(self, sig: str) -> None: ...


class ShareHub:
    """One shared channel: its screen model and its viewers."""

    def __init__(
        self,
        owner: Backend,
        size: tuple[int, int],
        seed: bytes,
        on_viewers: Callable[[tuple[ViewerInfo, ...]], None],
    ) -> None:
        self.owner: _Owner = owner
        self.size = size
        self.model = ScreenModel(*size)
        self.model.feed(seed)
        self.viewers: list[ViewBackend] = []
        self.exit: tuple[int | None, str | None] | None = None
        self._on_viewers = on_viewers
        self._loop = asyncio.get_running_loop()
        self._parse_handle: asyncio.Handle | None = None
        self._resync_handle: asyncio.TimerHandle | None = None
        self._schedule_parse(0.0)

    # ----------------------------------------------------------- owner side
    def output(self, data: bytes) -> None:
        """The owner's program wrote ``data`` (called on the owner's path: cheap)."""
        self.model.feed(data)
        for v in self.viewers:
            v.live(data)
        self._schedule_parse(0.0)

    def resized(self, cols: int, rows: int) -> None:
        """The owner resized: the model follows, viewers are told (they letterbox)."""
        self.size = (cols, rows)
        self.model.resize(cols, rows)
        for v in self.viewers:
            v.resized(cols, rows)

    def exited(self, code: int | None, sig: str | None) -> None:
        """The owner's program ended: so does every view of it."""
        self.exit = (code, sig)
        for v in list(self.viewers):
            v.owner_exited(code, sig)

    # ----------------------------------------------------------- viewer side
    def attach(self, v: ViewBackend) -> None:
        """A viewer joins: it gets a snapshot once the model has caught up, then the live stream."""
        self.viewers.append(v)
        self._announce()
        self.kick()

    def detach(self, v: ViewBackend) -> None:
        """A viewer left (closed, revoked, its session ended)."""
        if v in self.viewers:
            self.viewers.remove(v)
            self._announce()

    def kick(self) -> None:
        """Serve viewers waiting for a snapshot as soon as they can take one."""
        waiting = [v for v in self.viewers if v.needs_snapshot]
        if not waiting:
            return
        if self.model.caught_up:
            snap: bytes | None = None
            for v in waiting:
                if v.can_take_snapshot():
                    snap = snap if snap is not None else self.model.snapshot()
                    v.take_snapshot(snap, self.size)
        if any(v.needs_snapshot for v in self.viewers) and self._resync_handle is None:
            self._resync_handle = self._loop.call_later(RESYNC_POLL, self._resync)

    def close(self) -> None:
        """No viewer left, or the channel ended: stop parsing."""
        for h in (self._parse_handle, self._resync_handle):
            if h is not None:
                h.cancel()
        self._parse_handle = self._resync_handle = None

    # ----------------------------------------------------------- internals
    def _resync(self) -> None:
        self._resync_handle = None
        self.kick()

    def _schedule_parse(self, delay: float) -> None:
        if self._parse_handle is None and not self.model.caught_up:
            self._parse_handle = self._loop.call_later(delay, self._parse)

    def _parse(self) -> None:
        self._parse_handle = None
        t0 = time.perf_counter()
        self.model.parse(SLICE)
        took = time.perf_counter() - t0
        if self.model.caught_up:
            self.kick()
        else:
            self._schedule_parse(took * YIELD_FACTOR)

    def _announce(self) -> None:
        self._on_viewers(tuple(v.info for v in self.viewers))


class ViewBackend:
    """A viewer's channel: the shared channel's screen, then its live output (``Backend``)."""

    def __init__(
        self, sink: BackendSink, hub: ShareHub | None, info: ViewerInfo, pending: Callable[[], int]
    ) -> None:
        self.sink = sink
        self.hub = hub
        self.info = info
        self._pending = pending
        self.needs_snapshot = True
        #: Snapshots sent, and times this viewer fell behind and skipped ahead.
        self.snapshots = 0
        self.skips = 0
        self._opened = False  # output before open_ok would be dropped: the snapshot waits for it
        self._closed = False
        self._paused = True

    async def start(self) -> None:
        """Attach to the hub (``BackendError`` when the shared terminal is gone)."""
        if self.hub is None or self.hub.exit is not None:
            raise BackendError("BACKEND_FAILED", "the shared terminal has ended")
        self.hub.attach(self)

    # ----------------------------------------------------------- from the hub
    def live(self, data: bytes) -> None:
        """Owner output: forwarded while this viewer keeps up, else skipped until a snapshot."""
        if self.needs_snapshot or self._closed:
            return
        if self._pending() > VIEW_MAX_PENDING:
            self.needs_snapshot = True  # behind: the next thing it gets is a fresh screen
            self.skips += 1
            log.info("viewer skips", extra={"event": "viewer_skip", "grant": self.info.grant})
            assert self.hub is not None
            self.hub.kick()
            return
        self.sink.output("stdout", data)

    def can_take_snapshot(self) -> bool:
        """True once the channel is open and what this viewer was sent has drained (its credit caught up)."""
        return self._opened and not self._closed and self._pending() == 0

    def opened(self) -> None:
        """The server sent ``open_ok``: the first snapshot may go."""
        self._opened = True
        if self.hub is not None:
            self.hub.kick()

    def take_snapshot(self, snap: bytes, size: tuple[int, int]) -> None:
        """Send the screen (after the size), then go live."""
        self.needs_snapshot = False
        self.snapshots += 1
        self.resized(*size)
        self.sink.output("stdout", snap)

    def resized(self, cols: int, rows: int) -> None:
        """The shared terminal's size (set by the server runtime: the viewer session's ``resize``)."""
        notify = getattr(self.sink, "view_resized", None)
        if notify is not None:
            notify(cols, rows)

    def owner_exited(self, code: int | None, sig: str | None) -> None:
        """The shared program ended."""
        if not self._closed:
            self.sink.exited(code, sig)

    # ----------------------------------------------------------- Backend protocol
    def write(self, data: bytes) -> None:
        """A read-write viewer typed (the core refuses a read-only viewer's input)."""
        if self.hub is not None and self.info.mode == "write" and not self._closed:
            self.hub.owner.write(data)
        self.sink.input_written(len(data))

    def eof(self) -> None:
        """A viewer cannot end the owner's input."""

    def resize(self, cols: int, rows: int) -> None:
        """The owner's size rules (the core refuses a viewer's resize)."""

    def signal(self, sig: str) -> None:
        """A read-write viewer's Ctrl-C reaches the owner's program."""
        if self.hub is not None and self.info.mode == "write" and not self._closed:
            self.hub.owner.signal(sig)

    def pause(self, paused: bool) -> None:
        """Credit came back: a skipping viewer may be ready for its snapshot."""
        self._paused = paused
        if not paused and self.needs_snapshot and self.hub is not None:
            self.hub.kick()

    def close(self) -> None:
        """The viewer's channel ended."""
        if self._closed:
            return
        self._closed = True
        if self.hub is not None:
            self.hub.detach(self)

    async def wait_closed(self) -> None:
        """Nothing to reap."""
