"""Flow control with a fake clock: credit grants, pause reasons and their
hysteresis, the adaptive window, resize coalescing, and the server never
sending beyond credit (checked frame by frame on the wire).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from nimbus_websocket.core import (
    BackendPause,
    ByteLog,
    ClientOptions,
    CreditWindow,
    DataFrame,
    Diagnostic,
    Flow,
    OpenOk,
    PauseSet,
    PolicyEvent,
    Resize,
    ServerConfig,
    Target,
    Term,
    User,
)

try:
    from support.memory import ClientHarness, MemoryPair
except ImportError:  # pragma: no cover
    from tests.support.memory import ClientHarness, MemoryPair

TARGET = Target("localhost", 22)
USER = User("alice")
KIB, MIB = 1 << 10, 1 << 20


def open_ready(options: ClientOptions | None = None) -> tuple[ClientHarness, int]:
    h = ClientHarness(options)
    h.connect()
    cid = h.client.open_channel(TARGET, USER, Term(80, 24))
    h.drain()
    h.feed(OpenOk(cid, "key"))
    return h, cid


def flows(msgs: list[Any]) -> list[Flow]:
    return [m for m in msgs if isinstance(m, Flow)]


def policies(h: ClientHarness, kind: str) -> list[PolicyEvent]:
    return [e for e in h.of(PolicyEvent) if e.kind == kind]


# --------------------------------------------------------------- credit rule


def test_initial_grant_is_the_window_with_a_policy_event() -> None:
    h, cid = open_ready()
    (f,) = flows(h.sent)
    assert (f.id, f.credit, f.ack) == (cid, 256 * KIB, 0)
    assert policies(h, "credit_grant") == [PolicyEvent("credit_grant", cid, None, 256 * KIB)]


def test_grants_once_per_half_window_and_report_ack() -> None:
    h, cid = open_ready()
    chunk = b"x" * (32 * KIB)
    for i in range(4):  # 128 KiB received and consumed: outstanding = 128 KiB = window / 2
        h.feed(DataFrame("stdout", cid, chunk))
        out = h.client.consumed(cid, len(chunk), h.clock()) or h.drain()
        if i < 3:
            assert flows(out) == []
    (f,) = flows(out)
    assert f.credit == 128 * KIB and f.ack == 128 * KIB  # back to a full window
    grants = [e.value for e in policies(h, "credit_grant")]
    assert grants == [256 * KIB, 128 * KIB]


def test_unconsumed_data_earns_no_credit() -> None:
    h, cid = open_ready()
    for _ in range(8):
        h.feed(DataFrame("stdout", cid, b"y" * (32 * KIB)))  # the application reads nothing
    assert len(flows(h.sent)) == 1
    assert h.client.channel(cid).credit.in_flight == 0
    h.feed(DataFrame("stdout", cid, b"z"))  # the server has no credit left: 4007
    assert h.client.state.value == "closed"


def test_adaptive_window_doubles_up_to_2_mib() -> None:
    h, cid = open_ready()
    h.client.rtt = 0.5  # grants due faster than 2 x RTT: the window limits throughput
    for _ in range(200):
        ch = h.client.channel(cid)
        n = ch.credit.in_flight
        h.feed(DataFrame("stdout", cid, b"\0" * n))
        h.client.consumed(cid, n, h.clock())
        h.drain()
        assert ch.credit.outstanding <= 2 * MIB
        h.clock.advance(0.1)
    assert h.client.channel(cid).credit.window == 2 * MIB
    assert max(f.credit for f in flows(h.sent)) <= 2 * MIB


def test_window_stays_when_the_consumer_is_slow() -> None:
    h, cid = open_ready()
    h.client.rtt = 0.01
    for _ in range(20):
        h.feed(DataFrame("stdout", cid, b"\0" * (128 * KIB)))
        h.clock.advance(1.0)  # grants far apart compared to the RTT
        h.client.consumed(cid, 128 * KIB, h.clock())
        h.drain()
    assert h.client.channel(cid).credit.window == 256 * KIB


def test_credit_window_unit() -> None:
    w = CreditWindow(window=100, max_window=400)
    assert w.take_grant(0.0, None) == 100
    assert w.take_grant(0.0, None) == 0
    assert w.on_data(60) and w.take_grant(0.0, None) == 0
    w.on_consumed(60)
    assert w.outstanding == 40 and w.take_grant(1.0, None) == 60
    assert not w.on_data(101)  # 161 received > 160 granted
    w2 = CreditWindow(window=100, max_window=400)
    w2.take_grant(0.0, 1.0)
    w2.on_data(100)
    w2.on_consumed(100)
    assert w2.take_grant(0.5, 1.0) == 200 and w2.window == 200  # due within 2 x RTT: doubled
    w2.restart()
    assert w2.granted == w2.received and w2.last_grant_at is None


def test_window_doubles_when_the_server_starves_not_when_the_consumer_lags() -> None:
    w = CreditWindow(window=100, max_window=400)
    w.take_grant(0.0, None)
    w.on_data(40)
    w.on_consumed(40)
    w.on_data(60)  # credit spent, 0 unconsumed before this frame: the grant came too late
    assert w.note_starvation(60) and w.window == 200
    slow = CreditWindow(window=100, max_window=400)
    slow.take_grant(0.0, None)
    slow.on_data(100)  # nothing consumed: the consumer, not the window, is the limit
    assert slow.on_data(0) and slow.unconsumed == 100
    slow.on_data(0)
    assert not slow.note_starvation(0) and slow.window == 100


# -------------------------------------------------------------- pause reasons


def test_buffered_amount_hysteresis_8_mib_2_mib() -> None:
    h, cid = open_ready()
    c = h.client
    seen: list[tuple[str, str | None]] = []

    def feed(amount: int) -> None:
        n = len(h.events)
        c.set_buffered_amount(amount, h.clock())
        h.drain()
        new = h.events[n:]
        seen.extend((e.kind, e.reason) for e in new if isinstance(e, PolicyEvent) and e.kind.startswith("flow_"))

    feed(8 * MIB)
    assert c.pause_reasons == frozenset() and seen == []  # at the mark: not above it
    feed(8 * MIB + 1)
    assert c.pause_reasons == {"transport"} and seen == [("flow_pause", "transport")]
    for amount in (12 * MIB, 5 * MIB, 2 * MIB, 9 * MIB, 2 * MIB):
        feed(amount)
    assert seen == [("flow_pause", "transport")]  # inside the band: no change
    assert c.input_capacity(cid) == 0  # no new input while the socket is backed up
    feed(2 * MIB - 1)
    assert c.pause_reasons == frozenset() and seen[-1] == ("flow_resume", "transport")
    assert c.input_capacity(cid) > 0
    assert c.buffered_amount == 2 * MIB - 1
    codes = [d.code for d in h.of(Diagnostic) if d.phase == "flow"]
    assert codes == ["backpressure_high", "backpressure_low"]


@pytest.mark.parametrize("reason", ["visibility", "offline", "transport"])
def test_no_credit_while_paused_then_grant_on_resume(reason: str) -> None:
    h, cid = open_ready()
    h.client.set_pause(reason, True, h.clock())
    h.drain()
    assert policies(h, "flow_pause") == [PolicyEvent("flow_pause", None, reason)]
    h.feed(DataFrame("stdout", cid, b"a" * (200 * KIB)))  # still within the credit given before
    h.client.consumed(cid, 200 * KIB, h.clock())
    assert flows(h.drain()) == []
    h.client.set_pause(reason, False, h.clock())
    out = h.drain()
    assert policies(h, "flow_resume") == [PolicyEvent("flow_resume", None, reason)]
    (f,) = flows(out)
    assert f.credit == 200 * KIB and f.ack == 200 * KIB
    assert policies(h, "credit_grant")[-1].value == 200 * KIB


def test_credit_waits_for_every_reason_to_clear() -> None:
    h, cid = open_ready()
    c = h.client
    c.set_pause("visibility", True, h.clock())
    c.set_pause("offline", True, h.clock())
    c.set_buffered_amount(9 * MIB, h.clock())
    h.feed(DataFrame("stdout", cid, b"a" * (256 * KIB)))
    c.consumed(cid, 256 * KIB, h.clock())
    c.set_pause("visibility", False, h.clock())
    c.set_buffered_amount(0, h.clock())
    assert flows(h.drain()) == [] and c.pause_reasons == {"offline"}
    c.set_pause("offline", False, h.clock())
    assert [f.credit for f in flows(h.drain())] == [256 * KIB]
    kinds = [(e.kind, e.reason) for e in h.of(PolicyEvent) if e.kind.startswith("flow_")]
    assert kinds == [
        ("flow_pause", "visibility"),
        ("flow_pause", "offline"),
        ("flow_pause", "transport"),
        ("flow_resume", "visibility"),
        ("flow_resume", "transport"),
        ("flow_resume", "offline"),
    ]


def test_setting_a_reason_twice_is_one_event_and_unknown_reasons_raise() -> None:
    h, _ = open_ready()
    h.client.set_pause("visibility", True, h.clock())
    h.client.set_pause("visibility", True, h.clock())
    h.drain()
    assert len(policies(h, "flow_pause")) == 1
    with pytest.raises(ValueError):
        h.client.set_pause("sleepy", True, h.clock())
    p = PauseSet()
    assert p.buffered(100) is None and not p.paused


def test_paused_client_pauses_the_backend_end_to_end() -> None:
    """Credit withheld -> the server stops reading the backend: memory stays bounded."""
    pair = MemoryPair(ClientOptions(window=64 * KIB), echo=False)
    pair.connect()
    cid = pair.client.open_channel(TARGET, USER)
    pair.pump()
    pair.client.set_pause("visibility", True, pair.clock())
    for _ in range(64):
        pair.emit(cid, b"o" * (16 * KIB))  # a chatty program: 1 MiB
    pair.pump()
    s = pair.session()
    ch = s.channels[cid]
    assert len(pair.received[cid]) <= 64 * KIB  # what the credit allowed
    assert ch.log.size <= 64 * KIB + s.config.max_read  # server memory: credit + one read
    assert pair.backends[cid].paused and BackendPause(cid, True) in pair.server_events
    assert len(pair.backends[cid].out) > 0  # the rest still sits in the "PTY"
    pair.client.set_pause("visibility", False, pair.clock())
    pair.pump()
    assert bytes(pair.received[cid]) == b"o" * MIB


# ------------------------------------------------------- never beyond credit


def _check_wire_credit(pair: MemoryPair, conn_frames: list[tuple[str, Any]]) -> int:
    """Walk delivered frames in order: data bytes per channel never exceed credit delivered."""
    profile = pair.client.profile
    granted: dict[int, int] = {}
    sent: dict[int, int] = {}
    n = 0
    for side, frame in conn_frames:
        m = profile.decode(frame, 1 << 30)
        if side == "c2s" and isinstance(m, Flow):
            granted[m.id] = granted.get(m.id, 0) + m.credit
        elif side == "s2c" and isinstance(m, DataFrame):
            sent[m.id] = sent.get(m.id, 0) + len(m.payload)
            assert sent[m.id] <= granted.get(m.id, 0), (m.id, sent[m.id], granted.get(m.id))
            n += 1
    return n


@pytest.mark.parametrize("profile", ["nimbus.v1", "json-base64.v1", "lenpfx.v1"])
def test_server_never_sends_beyond_credit(profile: str) -> None:
    rng = random.Random(5)
    pair = MemoryPair(ClientOptions(profile=profile, window=32 * KIB, max_window=128 * KIB), record_wire=True, echo=False)
    pair.connect()
    a = pair.client.open_channel(TARGET, USER)
    b = pair.client.open_channel(TARGET, USER)
    pair.pump()
    pair.auto_consume = False
    expected = {a: bytearray(), b: bytearray()}
    for _ in range(300):
        cid = rng.choice((a, b))
        data = rng.randbytes(rng.randrange(1, 20 * KIB))
        expected[cid] += data
        pair.emit(cid, data)
        for _ in range(rng.randrange(0, 6)):
            pair.step(rng)
        if rng.random() < 0.3:  # the application catches up, sometimes
            for c in (a, b):
                ch = pair.client.channel(c)
                pair.client.consumed(c, ch.credit.unconsumed, pair.clock())
        pair.clock.advance(0.001)
    for _ in range(10_000):
        for c in (a, b):
            ch = pair.client.channel(c)
            pair.client.consumed(c, ch.credit.unconsumed, pair.clock())
        if pair.pump(rng=rng) == 0:
            break
    frames = pair.wire
    assert _check_wire_credit(pair, frames) > 100
    assert {c: bytes(v) for c, v in pair.received.items()} == {c: bytes(v) for c, v in expected.items()}
    assert pair.client.state.value == "ready"


# ---------------------------------------------------------- resize coalescing


def test_resize_coalescing_at_most_60_per_second() -> None:
    h, cid = open_ready()
    interval = h.client.options.resize_interval
    assert interval >= 1 / 60  # at most ~60 per second (contract 6)
    t0 = h.clock()
    sizes = [(80 + i % 50, 24 + i % 20) for i in range(2000)]
    sent_at: list[tuple[float, Resize]] = []
    for i, (cols, rows) in enumerate(sizes):  # a window drag: one call per ms for 2 s
        t = t0 + i * 0.001
        d = h.client.next_deadline()
        if d is not None and d <= t:
            sent_at += [(d, m) for m in h.tick_to(d) if isinstance(m, Resize)]
        h.clock.t = t
        h.client.resize(cid, cols, rows, t)
        sent_at += [(t, m) for m in h.drain() if isinstance(m, Resize)]
    while (d := h.client.next_deadline()) is not None and d < t0 + 5:
        sent_at += [(d, m) for m in h.tick_to(d) if isinstance(m, Resize)]
    times = [t for t, _ in sent_at]
    assert all(b - a >= interval - 1e-9 for a, b in zip(times, times[1:], strict=False))
    assert len(times) <= 2 * 60 + 1
    assert len(times) >= 2 / interval - 2  # and not starved: one per interval while dragging
    assert (sent_at[-1][1].cols, sent_at[-1][1].rows) == sizes[-1]  # the latest size wins
    coalesced = policies(h, "resize_coalesced")
    assert len(coalesced) >= len(sizes) - len(times) - 1 and all(e.channel == cid for e in coalesced)


def test_resize_same_size_is_not_resent() -> None:
    h, cid = open_ready()
    h.client.resize(cid, 80, 24, h.clock())  # the size the channel was opened with
    assert [m for m in h.drain() if isinstance(m, Resize)] == []


def test_window_drag_for_a_minute_is_not_rate_limited() -> None:
    """Resizes count against the server's 50 control messages/s: the client's
    coalescing must keep a long drag (with heartbeats and credit) under it."""
    pair = MemoryPair()
    pair.connect()
    cid = pair.client.open_channel(TARGET, USER, Term(80, 24))
    pair.pump()
    for i in range(60_000):  # one resize request per ms for 60 s
        pair.clock.t += 0.001
        pair.client.tick(pair.clock())
        pair.client.resize(cid, 80 + i % 100, 24 + i % 30, pair.clock())
        if i % 10 == 0:
            pair.pump()
    pair.pump()
    assert pair.server_closes == []
    assert pair.client.state.value == "ready"


def test_byte_log_unit() -> None:
    log = ByteLog()
    log.append("stdout", b"hello ")
    log.append("stderr", b"world")
    log.append("stdout", b"")
    assert (log.start, log.end, log.size) == (0, 11, 11)
    assert log.read(3, 5) == [("stdout", b"lo "), ("stderr", b"wo")]
    log.trim(8)
    assert log.read(log.start, log.size) == [("stderr", b"rld")]
    with pytest.raises(ValueError):
        log.read(7, 1)
    log.trim(10)
    assert log.read(log.start, 5) == [("stderr", b"d")] and log.start == 10
    log.trim(100)  # clamped
    assert log.size == 0 and log.start == 11


def test_server_config_defaults_match_the_contract() -> None:
    c = ServerConfig()
    assert (c.max_frame, c.max_channels, c.control_rate, c.idle_timeout, c.retention) == (MIB, 4, 50.0, 60.0, 60.0)
    assert c.max_outstanding_credit == 16 * MIB
    o = ClientOptions()
    assert (o.window, o.max_window, o.high_water_mark, o.low_water_mark) == (256 * KIB, 2 * MIB, 8 * MIB, 2 * MIB)
    assert (o.heartbeat_interval, o.heartbeat_misses) == (20.0, 3)
