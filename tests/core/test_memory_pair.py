"""Client and server machines wired in memory: a whole session, and exactly-once
resume under drops at random points of a bidirectional transfer.

The byte streams are compared exactly in both directions: what the client
application wrote vs what the backend received, and what the backend produced
vs what the client application received.
"""

from __future__ import annotations

import random

import pytest
from nimbus_websocket.core import (
    ChannelClosed,
    ChannelExit,
    ChannelOpened,
    ClientOptions,
    ConnectionClosed,
    Target,
    Term,
    User,
)
from nimbus_websocket.core.state import ChannelState, ConnState

try:
    from support.memory import MemoryPair
except ImportError:  # pragma: no cover
    from tests.support.memory import MemoryPair

TARGET = Target("localhost", 22)
USER = User("alice")
KIB = 1 << 10
PROFILES = ("nimbus.v1", "json-base64.v1", "lenpfx.v1")


@pytest.mark.parametrize("profile", PROFILES)
def test_hello_open_data_exit_close(profile: str) -> None:
    pair = MemoryPair(ClientOptions(profile=profile))
    pair.connect()
    assert pair.states() == ["connecting", "authenticating", "ready"]
    cid = pair.client.open_channel(TARGET, USER, Term(100, 40, {"TERM": "xterm-256color"}))
    pair.pump()
    assert pair.events_of(ChannelOpened) == [ChannelOpened(cid)]
    pair.client.send_input(cid, b"echo hello\n")  # echoed by the backend
    pair.pump()
    pair.emit(cid, b"\x00\xffbinary\r\n")
    pair.pump()
    assert bytes(pair.backend_in[cid]) == b"echo hello\n"
    assert bytes(pair.received[cid]) == b"echo hello\n\x00\xffbinary\r\n"
    pair.emit(cid, b"last words")
    pair.exit_backend(cid, 7)
    pair.pump()
    assert bytes(pair.received[cid]).endswith(b"last words")
    assert pair.events_of(ChannelExit) == [ChannelExit(cid, 7, None)]
    (closed,) = pair.events_of(ChannelClosed)
    assert closed.id == cid and closed.error is None
    assert pair.client.channel(cid) is None and pair.backends[cid].closed
    assert pair.session().channels == {}
    # exit came after the last data byte
    order = [type(e).__name__ for e in pair.client_events if type(e).__name__ in ("ChannelData", "ChannelExit")]
    assert order[-1] == "ChannelExit"
    pair.client.close(pair.clock())
    pair.pump()
    assert pair.client.state == ConnState.CLOSED and len(pair.registry) == 0
    assert pair.events_of(ConnectionClosed) == [ConnectionClosed(None)]


def test_client_closes_channel_first() -> None:
    pair = MemoryPair()
    pair.connect()
    cid = pair.client.open_channel(TARGET, USER)
    pair.pump()
    pair.client.close_channel(cid, "done")
    assert pair.client.channel(cid).state == ChannelState.CLOSING
    pair.pump()
    assert [c.id for c in pair.events_of(ChannelClosed)] == [cid]
    assert pair.backends[cid].closed and pair.session().channels == {}
    cid2 = pair.client.open_channel(TARGET, USER)
    pair.pump()
    assert cid2 != cid and pair.client.channel(cid2).state == ChannelState.OPEN


# ------------------------------------------------------------ exactly-once


class Transfer:
    """A bidirectional transfer on one channel, driven frame by frame."""

    def __init__(self, seed: int, size: int = 96 * KIB) -> None:
        self.rng = random.Random(seed)
        profile = PROFILES[seed % 3]
        self.pair = MemoryPair(
            ClientOptions(profile=profile, window=8 * KIB, max_window=32 * KIB, input_buffer_limit=24 * KIB),
            seed=seed,
            echo=False,
        )
        self.pair.connect()
        self.cid = self.pair.client.open_channel(TARGET, USER)
        self.pair.pump()
        self.inp = self.rng.randbytes(size)
        self.out = self.rng.randbytes(size)
        self.pos_in = self.pos_out = 0
        self.steps = 0
        self.drops = 0
        self.mid_transfer = 0

    @property
    def done(self) -> bool:
        p = self.pair
        return (
            self.pos_in == len(self.inp)
            and self.pos_out == len(self.out)
            and len(p.backend_in[self.cid]) >= len(self.inp)
            and len(p.received.get(self.cid, b"")) >= len(self.out)
        )

    def tick(self) -> None:
        """One unit of work: the application writes, the backend produces, one frame moves."""
        p, rng, cid = self.pair, self.rng, self.cid
        c = p.client
        if self.pos_in < len(self.inp) and rng.random() < 0.5:
            n = rng.randrange(1, 3 * KIB)
            self.pos_in += c.send_input(cid, self.inp[self.pos_in : self.pos_in + n], p.clock())
        if self.pos_out < len(self.out) and rng.random() < 0.5:
            n = rng.randrange(1, 3 * KIB)
            p.emit(cid, self.out[self.pos_out : self.pos_out + n])
            self.pos_out = min(len(self.out), self.pos_out + n)
        moved = p.step(rng)
        self.steps += 1
        if c.state == ConnState.RECONNECTING or not moved or rng.random() < 0.05:
            d = c.next_deadline()
            dt = 0.01 if d is None else max(0.0, min(d - p.clock(), 0.05))
            p.advance(dt if dt > 0 else 0.001)  # input acks (50 ms), reconnect backoff
        assert c.state != ConnState.CLOSED, f"client gave up: {c.error}"
        # memory stays bounded on both sides
        s = p.registry.sessions()[0]
        ch = s.channels.get(cid)
        if ch is not None:
            assert ch.log.size <= ch.credit + (ch.sent - ch.log.start) + s.config.max_read
            assert ch.sent - ch.log.start <= 32 * KIB  # unacknowledged output <= max window
        cc = c.channel(cid)
        assert cc is not None and cc.tx.size <= 24 * KIB

    def drop(self, code: int = 1006) -> None:
        """Cut the transport (frames in flight are lost); counts drops of a ready connection."""
        if self.pair.client.state == ConnState.READY:
            self.drops += 1
            self.mid_transfer += not self.done
        self.pair.cut(code)

    def finish(self, limit: int = 20_000) -> None:
        for _ in range(limit):
            if self.done and self.pair.client.state == ConnState.READY:
                break
            self.tick()
        assert self.done, (self.pos_in, self.pos_out, len(self.pair.backend_in[self.cid]), len(self.pair.received.get(self.cid, b"")))
        self.pair.pump()
        self.check()

    def check(self) -> None:
        p, cid = self.pair, self.cid
        assert bytes(p.backend_in[cid]) == self.inp, "input lost or duplicated"
        assert bytes(p.backend_out[cid]) == self.out
        assert bytes(p.received[cid]) == self.out, "output lost or duplicated"
        assert p.client.state == ConnState.READY
        assert not p.events_of(ConnectionClosed)


def test_transfer_without_drops() -> None:
    t = Transfer(seed=0)
    t.finish()
    assert t.steps > 50


@pytest.mark.parametrize("block", range(4))
def test_exactly_once_resume_drop_at_100_random_points(block: int) -> None:
    """100 transfers (25 per block), each cut once at a random frame (seeded)."""
    mid_transfer = 0
    for seed in range(block * 25, block * 25 + 25):
        t = Transfer(seed)
        drop_at = random.Random(10_000 + seed).randrange(1, 180)  # a transfer takes ~180 frames
        while t.steps < drop_at and not t.done:
            t.tick()
        t.drop(1001 if seed % 7 == 0 else 1006)
        t.finish()
        assert t.drops == 1
        mid_transfer += t.mid_transfer
        assert "resume_accepted" in t.pair.diagnostics(), seed
        assert t.pair.registry.resumes == 1
    assert mid_transfer >= 20  # the drops really hit the transfer


def test_exactly_once_many_drops_including_during_the_resume_handshake() -> None:
    rng = random.Random(99)
    for seed in range(200, 210):
        t = Transfer(seed, size=192 * KIB)
        for _ in range(12):
            while t.pair.client.state != ConnState.READY:
                t.tick()
            for _ in range(rng.randrange(1, 25)):
                t.tick()
            t.drop()
            if rng.random() < 0.5:  # sometimes drop again as soon as the new socket opens
                for _ in range(50):
                    t.tick()
                    if t.pair.client.state == ConnState.AUTHENTICATING:
                        t.drop()
                        break
        t.finish()
        assert t.drops == 12 and t.mid_transfer >= 10
        assert t.pair.registry.resumes >= t.drops


def test_exit_is_delivered_once_across_drops() -> None:
    rng = random.Random(3)
    for seed in range(300, 320):
        t = Transfer(seed, size=16 * KIB)
        t.finish()
        t.pair.exit_backend(t.cid, 0)
        for _ in range(rng.randrange(0, 8)):
            t.pair.step(rng)
        t.drop()
        for _ in range(2000):
            if t.pair.client.channel(t.cid) is None and t.pair.client.state == ConnState.READY:
                break
            t.pair.step(rng) or t.pair.advance(0.05)
        t.pair.pump()
        assert t.pair.events_of(ChannelExit) == [ChannelExit(t.cid, 0, None)], seed
        assert [c.id for c in t.pair.events_of(ChannelClosed)] == [t.cid]
        assert bytes(t.pair.received[t.cid]) == t.out


def test_drop_that_loses_hello_ok_still_resumes_exactly_once() -> None:
    """The server accepted the resume (and issued a new token) but its hello_ok was
    lost: the client only has the old token, and must still get its session back."""
    for seed in range(400, 410):
        t = Transfer(seed, size=32 * KIB)
        for _ in range(40):
            t.tick()
        t.drop()
        p = t.pair
        while p.client.state != ConnState.AUTHENTICATING:  # the reconnect, no frame moved yet
            p.advance(0.01)
            p._client_out()
        assert len(p.c2s) == 1 and not p.s2c
        p.step()  # deliver hello (and nothing else) to the server
        p._server_out()  # it authenticates and answers
        assert p.conn is not None and p.conn.ready and p.s2c  # hello_ok is on its way...
        t.drop()  # ...and lost
        t.finish()
        assert p.registry.resumes >= 2
