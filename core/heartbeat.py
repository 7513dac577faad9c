"""Heartbeats: when to ping, which pong answers, when the peer is gone (sans-I/O).

One :class:`Heartbeat` per connection, for either side:

* the client pings every ``interval`` seconds and counts pings that got no
  pong by the next one; ``misses`` unanswered pings in a row mean the
  connection is dead (contract: 20 s x 3);
* the server pings only when nothing was received for an ``interval``
  (``only_when_idle=True``: a busy connection needs no ping), and leaves the
  verdict to its idle timeout (``misses=None``).

Any frame received resets the miss count (:meth:`Heartbeat.received`): a
peer busy sending output is alive even if its pong is late.  Time is
injected in seconds; ping timestamps are milliseconds, as on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Beat", "Heartbeat"]


@dataclass(frozen=True, slots=True)
class Beat:
    """What :meth:`Heartbeat.due` decided: send ``ping`` (a ts), note a miss, or give up."""

    #: Timestamp (ms) to send in a ``ping``, or ``None`` for no ping now.
    ping: float | None
    #: The previous ping went unanswered (``missed`` counts them).
    missed: bool
    #: ``misses`` pings in a row went unanswered: the connection is dead.
    timed_out: bool


@dataclass(slots=True)
class Heartbeat:
    """Ping schedule and pong matching for one connection (see the module doc)."""

    #: Seconds between two pings (or between two idleness checks).
    interval: float
    #: Unanswered pings in a row that mean the peer is gone (``None``: never decide).
    misses: int | None = None
    #: Ping only when nothing was received for an ``interval`` (the server's rule).
    only_when_idle: bool = False
    #: When :meth:`due` next has something to do (``None``: stopped).
    next_ping: float | None = None
    #: Timestamp (ms) of the ping awaiting its pong, if any.
    outstanding: float | None = None
    #: Unanswered pings in a row so far.
    missed: int = 0
    #: Clock time of the last frame received.
    last_rx: float = float("-inf")

    def start(self, now: float) -> None:
        """The connection is ready: first ping after one ``interval``."""
        self.next_ping = now + self.interval
        self.outstanding = None
        self.missed = 0
        self.last_rx = now

    def stop(self) -> None:
        """No more pings (the transport is gone)."""
        self.next_ping = None

    def received(self, now: float) -> None:
        """A frame arrived: the peer is alive."""
        self.missed = 0
        self.last_rx = now

    def ping_now(self, now: float) -> float:
        """Ping now (out of schedule): returns the ts to send; the next one is an ``interval`` later."""
        ts = round(now * 1000, 3)
        self.outstanding = ts
        self.next_ping = now + self.interval
        return ts

    def pong(self, ts: float, now: float) -> float | None:
        """A pong with ``ts`` arrived: the round-trip time in seconds if it answers our ping."""
        if self.outstanding is None or ts != self.outstanding:
            return None
        self.outstanding = None
        return max(0.0, now - ts / 1000)

    def due(self, now: float) -> Beat | None:
        """At :attr:`next_ping`: what to do now (``None`` when nothing is due)."""
        if self.next_ping is None or now < self.next_ping:
            return None
        missed = False
        if self.outstanding is not None and self.misses is not None:
            self.missed += 1
            missed = True
        if self.misses is not None and self.missed >= self.misses:
            self.next_ping = None
            return Beat(None, missed, True)
        if self.only_when_idle and now - self.last_rx < self.interval:
            self.next_ping = now + self.interval
            return Beat(None, missed, False)
        return Beat(self.ping_now(now), missed, False)
