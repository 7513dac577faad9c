"""Credit flow control, pause reasons and the byte log behind exactly-once resume.

Three small pieces, shared by the client and the server machines:

* :class:`CreditWindow` -- the client's side of one channel: how much it has
  granted, received and consumed, when to grant more, and the adaptive
  window rule;
* :class:`PauseSet` -- the reasons (``transport``, ``visibility``,
  ``offline``) for which a client grants no credit, with the
  ``bufferedAmount`` high/low-water hysteresis of the ``transport`` reason;
* :class:`ByteLog` -- bytes sent but not yet acknowledged, kept for
  retransmission after a resume (the server's output, the client's input).

Grant rule: with ``outstanding = granted - consumed`` (bytes in flight plus
bytes received but not yet consumed), a grant of ``window - outstanding``
is made whenever ``outstanding <= window / 2`` and nothing pauses the
channel -- one ``flow`` per half window, as OpenSSH does.

Adaptive rule: the window doubles (up to ``max_window``, 2 MiB; it never
shrinks) when the window, not the consumer, limits throughput, seen two ways:

* **starvation** -- a data frame spends the last byte of credit while the
  application has at most half a window unconsumed (so a grant was due and
  the server still ran dry waiting for it);
* **fast turnover** -- a grant becomes due less than ``2 x RTT`` after the
  previous one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .messages import Stream

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_LOW_WATER",
    "DEFAULT_MAX_WINDOW",
    "DEFAULT_WINDOW",
    "PAUSE_REASONS",
    "ByteLog",
    "CreditWindow",
    "PauseSet",
]

DEFAULT_WINDOW = 256 * 1024
DEFAULT_MAX_WINDOW = 2 * 1024 * 1024
DEFAULT_HIGH_WATER = 8 * 1024 * 1024
DEFAULT_LOW_WATER = 2 * 1024 * 1024
PAUSE_REASONS = ("transport", "visibility", "offline")


@dataclass(slots=True)
class CreditWindow:
    """Client-side credit accounting of one channel (all counters in payload bytes)."""

    window: int = DEFAULT_WINDOW
    max_window: int = DEFAULT_MAX_WINDOW
    granted: int = 0
    received: int = 0
    consumed: int = 0
    last_grant_at: float | None = None

    @property
    def outstanding(self) -> int:
        """Credit the server still holds plus bytes received and not yet consumed."""
        return self.granted - self.consumed

    @property
    def in_flight(self) -> int:
        """Credit the server may still spend."""
        return self.granted - self.received

    @property
    def unconsumed(self) -> int:
        """Bytes received that the application has not consumed yet."""
        return self.received - self.consumed

    def on_data(self, n: int, starvation: bool = False) -> bool:
        """Count ``n`` received bytes; ``False`` if they exceed the credit granted.

        With ``starvation`` (pass it while nothing pauses the channel), a
        frame that spent the last byte of credit also goes through
        :meth:`note_starvation`.
        """
        self.received += n
        if self.received > self.granted:
            return False
        if starvation and self.received == self.granted:
            self.note_starvation(n)
        return True

    def note_starvation(self, n: int) -> bool:
        """After a frame of ``n`` bytes: double the window if it left the server starved.

        Starved means the frame spent the last byte of credit while at most
        half a window was unconsumed before it (see the module doc).  Call it
        only while nothing pauses the channel.  Returns whether it grew.
        """
        if (
            self.received == self.granted
            and self.unconsumed - n <= self.window // 2
            and self.window < self.max_window
        ):
            self.window = min(self.max_window, self.window * 2)
            return True
        return False

    def on_consumed(self, n: int) -> None:
        """The application consumed ``n`` more bytes (never more than received)."""
        self.consumed = min(self.received, self.consumed + n)

    def restart(self) -> None:
        """A new connection (resume): the server's credit restarts at 0."""
        self.granted = self.received
        self.last_grant_at = None

    def take_grant(self, now: float, rtt: float | None) -> int:
        """Return the credit to grant now (0 if none is due) and account for it."""
        if self.granted - self.consumed > self.window // 2:  # outstanding: nothing due yet
            return 0
        if (
            rtt is not None
            and self.last_grant_at is not None
            and now - self.last_grant_at < 2 * rtt
            and self.window < self.max_window
        ):
            self.window = min(self.max_window, self.window * 2)
        grant = self.window - self.outstanding
        if grant <= 0:
            return 0
        self.granted += grant
        self.last_grant_at = now
        return grant


@dataclass(slots=True)
class PauseSet:
    """Why credit is withheld; ``transport`` follows ``bufferedAmount`` with hysteresis."""

    high_water: int = DEFAULT_HIGH_WATER
    low_water: int = DEFAULT_LOW_WATER
    reasons: set[str] = field(default_factory=set)

    @property
    def paused(self) -> bool:
        """True while any reason holds."""
        return bool(self.reasons)

    def set(self, reason: str, on: bool) -> bool:
        """Add or remove ``reason``; ``True`` if that changed anything."""
        if reason not in PAUSE_REASONS:
            raise ValueError(f"unknown pause reason {reason!r}")
        if on == (reason in self.reasons):
            return False
        if on:
            self.reasons.add(reason)
        else:
            self.reasons.discard(reason)
        return True

    def buffered(self, amount: int) -> bool | None:
        """Feed ``bufferedAmount``; return the new ``transport`` state if it crossed a mark."""
        if "transport" not in self.reasons and amount > self.high_water:
            self.reasons.add("transport")
            return True
        if "transport" in self.reasons and amount < self.low_water:
            self.reasons.discard("transport")
            return False
        return None


class ByteLog:
    """An ordered log of ``(stream, bytes)`` segments addressed by absolute offsets.

    ``start`` is the offset of the first byte kept, ``end`` the offset after
    the last; :meth:`trim` drops everything below an acknowledged offset.
    Memory is exactly :attr:`size` bytes plus one small tuple per segment;
    the owner bounds it (the server by the credit it was granted, the client
    by its input-buffer limit).
    """

    __slots__ = ("_segs", "end", "start")

    def __init__(self, start: int = 0) -> None:
        #: Allocated at the first append (an empty deque is ~0.6 KiB, and most
        #: channels of an idle server never log a byte).
        self._segs: deque[tuple[Stream, bytes]] | None = None
        self.start = start
        self.end = start

    @property
    def size(self) -> int:
        """Bytes held."""
        return self.end - self.start

    #: Small segments of one stream are merged up to this size, so a log of
    #: keystrokes stays a handful of segments instead of one per byte.
    MERGE_BELOW = 4096

    def append(self, stream: Stream, data: bytes) -> None:
        """Add ``data`` at :attr:`end`."""
        if not data:
            return
        segs = self._segs
        if segs is None:
            segs = self._segs = deque()
        elif segs and len(data) < self.MERGE_BELOW:
            last_stream, last = segs[-1]
            if last_stream == stream and len(last) < self.MERGE_BELOW:
                segs[-1] = (stream, last + data)
                self.end += len(data)
                return
        segs.append((stream, bytes(data)))
        self.end += len(data)

    def trim(self, offset: int) -> None:
        """Forget every byte below ``offset`` (clamped to ``start..end``)."""
        offset = max(self.start, min(offset, self.end))
        segs = self._segs
        while segs and offset > self.start:
            stream, data = segs[0]
            n = offset - self.start
            if n >= len(data):
                segs.popleft()
                self.start += len(data)
            else:
                segs[0] = (stream, data[n:])
                self.start += n

    def read(self, offset: int, limit: int) -> list[tuple[Stream, bytes]]:
        """Return (without removing) up to ``limit`` bytes starting at absolute ``offset``.

        Reads start near the end of the log (the unsent tail), so the walk to
        ``offset`` goes backwards from :attr:`end`: its cost is the number of
        segments after ``offset``, not the size of the whole log.
        """
        if offset < self.start:
            raise ValueError(f"offset {offset} below the log start {self.start}")
        segs = self._segs
        if segs is None:
            return []
        pos = self.end
        i = len(segs)
        while i > 0 and pos > offset:
            i -= 1
            pos -= len(segs[i][1])
        out: list[tuple[Stream, bytes]] = []
        skip = offset - pos
        n = len(segs)
        while i < n and limit > 0:
            stream, data = segs[i]
            i += 1
            if skip:
                data = data[skip:]
                skip = 0
            if len(data) > limit:
                data = data[:limit]
            out.append((stream, data))
            limit -= len(data)
        return out

    def clear(self, start: int) -> None:
        """Drop everything and restart at ``start``."""
        if self._segs:
            self._segs.clear()
        self.start = self.end = start
