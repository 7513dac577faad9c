"""The client session machine with a fake clock: handshake, state tables,
heartbeats, backoff, resume state, and what the client does with a bad server.
No sleeping: time is a number the tests move.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from nimbus_websocket.core import (
    ChannelClosed,
    ChannelData,
    ChannelOpened,
    ChannelOpenFailed,
    ClientOptions,
    ClientSession,
    Close,
    CloseTransport,
    ConnectionClosed,
    DataFrame,
    Diagnostic,
    Exit,
    Flow,
    Hello,
    HelloOk,
    Open,
    OpenErr,
    OpenOk,
    OpenTransport,
    Ping,
    Pong,
    Resize,
    ResumedChannel,
    RetryPolicy,
    ServerCaps,
    Signal,
    StateChanged,
    Target,
    Term,
    User,
)
from nimbus_websocket.core.state import (
    CHANNEL_TRANSITIONS,
    CONNECTION_TRANSITIONS,
    ChanEvent,
    ChannelState,
    ConnEvent,
    ConnState,
    IllegalTransition,
    transition,
)

try:
    from support.memory import ClientHarness, MemoryPair
except ImportError:  # pragma: no cover
    from tests.support.memory import ClientHarness, MemoryPair

TARGET = Target("localhost", 22)
USER = User("alice")


def states(h: ClientHarness) -> list[str]:
    return [e.new for e in h.of(StateChanged)]


def diags(h: ClientHarness, code: str | None = None) -> list[Diagnostic]:
    return [d for d in h.of(Diagnostic) if code in (None, d.code)]


# --------------------------------------------------------------------- tables

CONN_PAIRS = list(itertools.product(ConnState, ConnEvent))
CHAN_PAIRS = list(itertools.product(ChannelState, ChanEvent))


@pytest.mark.parametrize(("state", "event"), CONN_PAIRS, ids=[f"{s}-{e}" for s, e in CONN_PAIRS])
def test_connection_table(state: ConnState, event: ConnEvent) -> None:
    row = CONNECTION_TRANSITIONS[state]
    if event in row:
        assert transition(CONNECTION_TRANSITIONS, state, event) == row[event]
        return
    with pytest.raises(IllegalTransition) as info:
        transition(CONNECTION_TRANSITIONS, state, event)
    assert (info.value.machine, info.value.state, info.value.event) == ("connection", state.value, event.value)
    assert state.value in str(info.value) and event.value in str(info.value)


@pytest.mark.parametrize(("state", "event"), CHAN_PAIRS, ids=[f"{s}-{e}" for s, e in CHAN_PAIRS])
def test_channel_table(state: ChannelState, event: ChanEvent) -> None:
    row = CHANNEL_TRANSITIONS[state]
    if event in row:
        assert transition(CHANNEL_TRANSITIONS, state, event) == row[event]
        return
    with pytest.raises(IllegalTransition) as info:
        transition(CHANNEL_TRANSITIONS, state, event)
    assert (info.value.machine, info.value.state, info.value.event) == ("channel", state.value, event.value)


def test_tables_are_complete_and_closed_is_terminal() -> None:
    assert set(CONNECTION_TRANSITIONS) == set(ConnState)
    assert set(CHANNEL_TRANSITIONS) == set(ChannelState)
    assert CONNECTION_TRANSITIONS[ConnState.CLOSED] == {}
    assert CHANNEL_TRANSITIONS[ChannelState.CLOSED] == {}
    # the contract's paths: idle -> connecting -> authenticating -> ready, and
    # ready -> reconnecting -> authenticating -> ready
    path = [ConnEvent.CONNECT, ConnEvent.OPENED, ConnEvent.ACCEPTED, ConnEvent.LOST, ConnEvent.OPENED, ConnEvent.ACCEPTED]
    s = ConnState.IDLE
    seen = []
    for e in path:
        s = transition(CONNECTION_TRANSITIONS, s, e)  # type: ignore[assignment]
        seen.append(s.value)
    assert seen == ["connecting", "authenticating", "ready", "reconnecting", "authenticating", "ready"]


def test_machine_raises_illegal_transition_for_misuse() -> None:
    h = ClientHarness()
    h.connect()
    with pytest.raises(IllegalTransition):
        h.client.connect(h.clock())  # already connected
    h.client.close(h.clock())
    with pytest.raises(RuntimeError):
        h.client.open_channel(TARGET, USER)


# ------------------------------------------------------------------ handshake


def test_handshake_sequence() -> None:
    h = ClientHarness(ClientOptions(client_info={"name": "t"}))
    assert h.client.state == ConnState.IDLE
    cid = h.client.open_channel(TARGET, USER, Term(100, 30))  # queued until hello_ok
    h.client.connect(h.clock())
    h.drain()
    (ot,) = h.of(OpenTransport)
    assert ot.subprotocols == ("nimbus.ssh.v1",) and ot.attempt == 0
    assert h.sent == []
    h.client.transport_opened(h.clock())
    (hello,) = h.drain()
    assert isinstance(hello, Hello) and hello.proto == 1
    assert hello.caps is not None and hello.caps.profile == "nimbus.v1" and hello.caps.ack
    assert hello.resume is None and hello.client == {"name": "t"}
    assert h.client.state == ConnState.AUTHENTICATING
    out = h.hello_ok(max_frame=4096)
    assert h.client.state == ConnState.READY
    assert states(h) == ["connecting", "authenticating", "ready"]
    assert [type(m) for m in out] == [Open] and out[0].id == cid and out[0].term == Term(100, 30)
    assert h.client.max_frame == 4096 and h.client.ack_enabled and h.client.server_name == "scripted"
    assert [d.code for d in diags(h) if d.phase == "handshake"] == ["hello_sent", "hello_ok"]
    # open_ok: resumeKey persisted before anything else, then credit flows
    out = h.feed(OpenOk(cid, "key-1"))
    assert h.store.load()["channels"] == [{"id": cid, "resumeKey": "key-1", "rx": 0}]
    assert [type(m) for m in out] == [Flow] and out[0].credit == 256 * 1024 and out[0].ack == 0
    assert h.of(ChannelOpened) == [ChannelOpened(cid)]


def test_handshake_timeout_closes_first_connect() -> None:
    h = ClientHarness()
    h.client.connect(h.clock())
    h.client.transport_opened(h.clock())
    h.drain()
    assert h.client.next_deadline() == h.clock() + 10.0
    h.tick_to(h.clock() + 9.99)
    assert h.client.state == ConnState.AUTHENTICATING
    h.tick_to(h.clock() + 0.01)
    assert [c.code for c in h.of(CloseTransport)] == [4012]
    assert h.client.state == ConnState.CLOSED
    assert "handshake_timeout" in [d.code for d in diags(h)]


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (Ping(1.0), 4002),
        (OpenOk(1), 4002),
        (DataFrame("stdout", 1, b"x"), 4002),
        (HelloOk("s", ServerCaps("lenpfx.v1")), 4001),
    ],
)
def test_anything_but_hello_ok_first_is_refused(first: Any, code: int) -> None:
    h = ClientHarness()
    h.client.connect(h.clock())
    h.client.transport_opened(h.clock())
    h.drain()
    h.feed(first)
    assert [c.code for c in h.of(CloseTransport)] == [code]
    (closed,) = h.of(ConnectionClosed)
    assert closed.error is not None and closed.error.app_code == code
    assert h.client.state == ConnState.CLOSED


@pytest.mark.parametrize("msg", [Hello(), Open(1, TARGET, USER), Resize(1, 2, 3), Signal(1, "INT"), HelloOk("s", ServerCaps("nimbus.v1"))])
def test_client_only_messages_from_server_are_4009(msg: Any) -> None:
    h = ClientHarness()
    h.connect()
    h.feed(msg)
    assert [c.code for c in h.of(CloseTransport)] == [4009]


def test_server_close_codes_surface_as_close_errors() -> None:
    for code, name in [(4003, "AUTH_FAILED"), (4001, "UNSUPPORTED_PROFILE"), (4006, "CHANNEL_LIMIT")]:
        h = ClientHarness()
        h.client.connect(h.clock())
        h.client.transport_opened(h.clock())
        h.client.transport_closed(h.clock(), code, "nope")
        h.drain()
        (closed,) = h.of(ConnectionClosed)
        assert closed.error is not None
        assert (closed.error.ws_code, closed.error.app_code, closed.error.code) == (code, code, name)
        assert h.client.state == ConnState.CLOSED


# ------------------------------------------------------------------ heartbeat


def test_heartbeat_pongs_keep_the_connection_and_measure_rtt() -> None:
    h = ClientHarness()
    h.connect()
    t0 = h.clock()
    for k in range(1, 31):  # ten minutes
        out = h.tick_to(t0 + 20 * k)
        (ping,) = out
        assert isinstance(ping, Ping) and ping.ts == round((t0 + 20 * k) * 1000, 3)
        h.clock.t += 0.125
        h.feed(Pong(ping.ts))
        assert h.client.rtt == pytest.approx(0.125)
    assert h.client.state == ConnState.READY
    assert not diags(h, "heartbeat_miss")


def test_ping_from_server_is_answered_at_once() -> None:
    h = ClientHarness()
    h.connect()
    assert h.feed(Ping(42.5)) == [Pong(42.5)]


def test_three_missed_pongs_reconnect_with_heartbeat_timeout() -> None:
    h = ClientHarness()
    h.connect()
    t0 = h.clock()
    assert isinstance(h.tick_to(t0 + 20)[0], Ping)  # ping 1
    assert isinstance(h.tick_to(t0 + 40)[0], Ping)  # miss 1, ping 2
    assert isinstance(h.tick_to(t0 + 60)[0], Ping)  # miss 2, ping 3
    assert h.client.state == ConnState.READY
    h.tick_to(t0 + 79.999)
    assert h.client.state == ConnState.READY
    h.tick_to(t0 + 80)  # miss 3
    assert [d.extras["missed"] for d in diags(h, "heartbeat_miss")] == [1, 2, 3]
    assert len(diags(h, "heartbeat_timeout")) == 1
    assert [c.code for c in h.of(CloseTransport)] == [4012]
    assert h.client.state == ConnState.RECONNECTING
    assert states(h)[-1] == "reconnecting"
    assert h.store.load() is not None  # resume state kept for the reconnect


def test_late_pong_after_two_misses_resets_the_count() -> None:
    h = ClientHarness()
    h.connect()
    t0 = h.clock()
    for k in (1, 2, 3):
        out = h.tick_to(t0 + 20 * k)
    h.feed(Pong(out[0].ts))  # answers ping 3
    h.tick_to(t0 + 80)
    h.tick_to(t0 + 100)
    assert h.client.state == ConnState.READY


# -------------------------------------------------------------------- backoff


def test_retry_policy_delays() -> None:
    p = RetryPolicy()
    assert (p.base, p.factor, p.max_retries, p.jitter) == (0.3, 2.0, 10, True)
    for k in range(12):
        d = min(10.0, 0.3 * 2**k)
        assert p.delay(k, lambda: 0.0) == pytest.approx(d / 2)
        assert p.delay(k, lambda: 1.0) == pytest.approx(d)
        assert d / 2 <= p.delay(k, lambda: 0.37) <= d
    assert RetryPolicy(jitter=False).delay(3, lambda: 0.0) == pytest.approx(2.4)


def _lose_network(pair: MemoryPair) -> None:
    pair.network_up = False
    pair.cut(1006)


def test_backoff_schedule_then_retries_exhausted() -> None:
    pair = MemoryPair(seed=7)
    pair.connect()
    cid = pair.client.open_channel(TARGET, USER)
    pair.pump()
    opened_before = pair.transports_opened
    draws: list[float] = []
    rand = pair.client._rand
    pair.client._rand = lambda: draws.append(rand()) or draws[-1]  # type: ignore[method-assign]
    _lose_network(pair)
    attempts: list[float] = []  # when each reconnect socket was opened
    lost_at = pair.clock()
    for _ in range(50):
        pair._client_out()
        if pair.client.state == ConnState.CLOSED:
            break
        d = pair.client.next_deadline()
        assert d is not None
        n = pair.transports_opened
        pair.advance(d - pair.clock())
        pair._client_out()
        if pair.transports_opened > n:
            attempts.append(pair.clock())
    assert pair.client.state == ConnState.CLOSED
    assert len(attempts) == 10 == pair.transports_opened - opened_before
    (closed,) = pair.events_of(ConnectionClosed)
    assert closed.error is not None and closed.error.code == "RETRIES_EXHAUSTED"
    # delay k = base * 2^k (capped at 10 s), jittered into [d/2, d] by the injected draw
    prev = lost_at
    for k, (at, r) in enumerate(zip(attempts, draws, strict=True)):
        d = min(10.0, 0.3 * 2**k)
        assert at - prev == pytest.approx(d / 2 + r * d / 2, abs=1e-6), k
        assert d / 2 - 1e-6 <= at - prev <= d + 1e-6
        prev = at
    scheduled = [e.extras["attempt"] for e in pair.client_events if isinstance(e, Diagnostic) and e.code == "reconnect_scheduled"]
    assert scheduled == list(range(10))
    assert pair.events_of(ChannelClosed)[-1].id == cid
    # The server still holds the session: the stored state stays for a later
    # (application-initiated) resume within the TTL.
    assert pair.store.load() is not None


def test_reconnect_succeeds_when_network_returns() -> None:
    pair = MemoryPair()
    pair.connect()
    _lose_network(pair)
    for _ in range(3):  # three failed attempts
        pair.advance(pair.client.next_deadline() - pair.clock())
        pair._client_out()
    pair.network_up = True
    pair.advance(pair.client.next_deadline() - pair.clock())
    pair.pump()
    assert pair.client.state == ConnState.READY
    assert pair.states()[-2:] == ["authenticating", "ready"]
    assert "resume_accepted" in pair.diagnostics()


def test_failures_after_the_socket_opened_count_as_tries() -> None:
    """A server that accepts sockets but never answers hello must not be retried forever."""
    pair = MemoryPair()
    pair.connect()
    pair.auto_auth = False
    pair.cut(1006)
    for _ in range(200):
        pair.pump()
        if pair.client.state == ConnState.CLOSED:
            break
        pair.advance(pair.client.next_deadline() - pair.clock())
    assert pair.client.state == ConnState.CLOSED
    (closed,) = pair.events_of(ConnectionClosed)
    assert closed.error is not None and closed.error.code == "RETRIES_EXHAUSTED"
    assert pair.transports_opened == 1 + 10


def test_drop_during_resume_handshake_counts_as_a_try() -> None:
    pair = MemoryPair()
    pair.connect()
    pair.cut(1006)
    for _ in range(200):
        pair._client_out()
        if pair.client.state == ConnState.CLOSED:
            break
        if pair.client.state == ConnState.AUTHENTICATING:
            pair.cut(1006)  # the socket opens, then drops before hello_ok
            continue
        pair.advance(pair.client.next_deadline() - pair.clock())
    assert pair.client.state == ConnState.CLOSED
    assert pair.transports_opened == 1 + 10


# ------------------------------------------------------- resume state / TTL


def _reloaded(pair: MemoryPair, dt: float) -> MemoryPair:
    """A page reload ``dt`` seconds later: a new ClientSession on the same store and server."""
    pair.clock.advance(dt)
    pair.client = ClientSession(ClientOptions(), now=pair.clock(), rand=pair.rng.random, store=pair.store)
    pair.client_events.clear()
    pair._client_out()
    return pair


def test_reload_within_ttl_resumes_channels() -> None:
    pair = MemoryPair()
    pair.connect()
    cid = pair.client.open_channel(TARGET, USER)
    pair.pump()
    pair.client.send_input(cid, b"before reload\n")
    pair.pump()
    pair.client.persist(pair.clock())  # the runtime's pagehide handler
    pair.cut(1001)  # page unload
    pair = _reloaded(pair, 59.0)
    assert "resume_store_load" in pair.diagnostics()
    pair.connect()
    assert "resume_accepted" in pair.diagnostics()
    assert pair.events_of(ChannelOpened) == [ChannelOpened(cid, resumed=True)]
    pair.client.send_input(cid, b"after\n")
    pair.pump()
    assert bytes(pair.backend_in[cid]) == b"before reload\nafter\n"
    assert bytes(pair.received[cid]) == b"before reload\nafter\n"


def test_reload_after_ttl_discards_the_stored_state() -> None:
    pair = MemoryPair()
    pair.connect()
    pair.client.open_channel(TARGET, USER)
    pair.pump()
    pair.cut(1001)
    pair = _reloaded(pair, 60.5)
    assert "resume_store_clear" in pair.diagnostics()
    assert pair.store.load() is None
    pair.connect()  # a fresh session
    assert "resume_accepted" not in pair.diagnostics()
    assert pair.client.channel_ids() == []


def test_reload_with_network_down_retries_instead_of_crashing() -> None:
    pair = MemoryPair()
    pair.connect()
    pair.client.open_channel(TARGET, USER)
    pair.pump()
    pair.cut(1001)
    pair = _reloaded(pair, 1.0)
    pair.network_up = False
    pair.client.connect(pair.clock())
    pair._client_out()  # the socket fails to open (1006) while connecting
    assert pair.client.state == ConnState.RECONNECTING
    pair.network_up = True
    pair.advance(pair.client.next_deadline() - pair.clock())
    pair.pump()
    assert pair.client.state == ConnState.READY
    assert "resume_accepted" in pair.diagnostics()


def test_resume_refused_4011_clears_state_and_fails() -> None:
    pair = MemoryPair()
    pair.connect()
    pair.client.open_channel(TARGET, USER)
    pair.pump()
    pair.cut(1006)
    pair.advance(61.0)  # the first retry only now (say the device slept): beyond the retention
    pair.pump()
    assert pair.server_closes == [4011]
    assert pair.client.state == ConnState.CLOSED
    (closed,) = pair.events_of(ConnectionClosed)
    assert closed.error is not None and (closed.error.ws_code, closed.error.code) == (4011, "RESUME_FAILED")
    assert "resume_rejected" in pair.diagnostics()
    assert pair.store.load() is None


def test_explicit_close_1000_clears_store_other_codes_keep_it() -> None:
    pair = MemoryPair()
    pair.connect()
    pair.client.close(pair.clock(), 1000)
    pair.pump()
    assert pair.store.load() is None
    pair2 = MemoryPair()
    pair2.connect()
    pair2.client.close(pair2.clock(), 1001)
    pair2.pump()
    assert pair2.store.load() is not None
    assert len(pair2.registry) == 1  # the server kept the session too


# ------------------------------------------------------ a misbehaving server


def _ready_with_channel(**kw: Any) -> tuple[ClientHarness, int]:
    h = ClientHarness(**kw)
    h.connect()
    cid = h.client.open_channel(TARGET, USER)
    h.drain()
    return h, cid


def test_receive_data_returns_the_lone_data_event_and_queues_everything_else() -> None:
    h, cid = _ready_with_channel()
    h.feed(OpenOk(cid, "k"))
    h.drain()
    c, p = h.client, h.profile
    frame = p.encode_data(DataFrame("stderr", cid, b"abc"))[0]
    assert c.receive_data(frame, h.clock()) == ChannelData(cid, "stderr", b"abc")
    assert not c.has_output()  # handed over, not queued
    # a control frame: nothing to hand over, its effects are queued as usual
    assert c.receive_data(p.encode_ctl(Ping(5)), h.clock()) is None
    assert c.has_output()
    # events already waiting: the data event queues behind them (order kept)
    c.receive_frame(p.encode_data(DataFrame("stdout", cid, b"first"))[0], h.clock())
    assert c.receive_data(frame, h.clock()) is None
    assert [e.data for e in c.events() if isinstance(e, ChannelData)] == [b"first", b"abc"]
    # a frame beyond the credit: no event, the 4007 close is queued
    big = p.encode_data(DataFrame("stdout", cid, b"x" * (2 << 20)))[0]
    assert c.receive_data(big, h.clock()) is None
    assert [e.code for e in c.events() if isinstance(e, CloseTransport)] == [4007]


def test_data_beyond_credit_is_4007() -> None:
    h, cid = _ready_with_channel(options=ClientOptions(window=1024))
    h.feed(OpenOk(cid, "k"))
    h.feed(DataFrame("stdout", cid, b"x" * 1024))  # exactly the credit
    assert not h.of(CloseTransport)
    h.feed(DataFrame("stderr", cid, b"y"))
    assert [c.code for c in h.of(CloseTransport)] == [4007]


def test_data_before_open_ok_and_for_unknown_ids_is_ignored() -> None:
    h, cid = _ready_with_channel()
    h.feed(DataFrame("stdout", cid, b"early"))
    h.feed(DataFrame("stdout", 99, b"stray"))
    h.feed(Exit(99, 0))
    h.feed(Close(99))
    h.feed(Flow(99, 0, 5))
    h.feed(OpenErr(99, "X", "y"))
    assert not h.of(CloseTransport) and not h.of(ChannelData)
    assert h.client.ignored_frames >= 2


def test_input_ack_beyond_sent_is_4007() -> None:
    h, cid = _ready_with_channel()
    h.feed(OpenOk(cid, "k"))
    h.client.send_input(cid, b"abc")
    h.drain()
    h.feed(Flow(cid, 0, 3))
    assert not h.of(CloseTransport)
    h.feed(Flow(cid, 0, 4))
    assert [c.code for c in h.of(CloseTransport)] == [4007]


def test_exit_then_close_handshake() -> None:
    h, cid = _ready_with_channel()
    h.feed(OpenOk(cid, "k"))
    h.feed(DataFrame("stdout", cid, b"bye\n"))
    out = h.feed(Exit(cid, 3))
    assert out == [Close(cid)]
    assert h.client.channel(cid).state == ChannelState.CLOSING
    h.feed(Close(cid))
    assert h.client.channel(cid) is None
    closed = h.of(ChannelClosed)
    assert [c.id for c in closed] == [cid] and closed[0].error is None


def test_server_close_of_open_channel_is_answered() -> None:
    h, cid = _ready_with_channel()
    h.feed(OpenOk(cid, "k"))
    assert h.feed(Close(cid, "admin")) == [Close(cid)]
    assert h.client.channel(cid) is None


def test_server_close_of_opening_channel_does_not_crash() -> None:
    """PROTOCOL.md 6: a server MAY send close {id}; the client replies and forgets the channel."""
    h, cid = _ready_with_channel()
    out = h.feed(Close(cid, "backend refused"))
    assert h.client.channel(cid) is None
    assert out == [Close(cid)]
    assert [e.id for e in h.of(ChannelOpenFailed)] == [cid]
    assert not h.of(CloseTransport)


def test_resumed_channel_absent_from_hello_ok_is_lost() -> None:
    h, cid = _ready_with_channel()
    h.feed(OpenOk(cid, "k"))
    cid2 = h.client.open_channel(TARGET, USER)
    h.drain()
    h.client.transport_closed(h.clock(), 1006)
    h.drain()
    h.tick_to(h.client.next_deadline())
    h.client.transport_opened(h.clock())
    (hello,) = [m for m in h.drain() if isinstance(m, Hello)]
    assert hello.resume is not None
    assert [(c.id, c.resume_key, c.rx) for c in hello.resume.channels or ()] == [(cid, "k", 0)]
    h.hello_ok(resumed=(ResumedChannel(99, 0),))
    lost = {e.id: e for e in h.of(ChannelClosed)}
    assert lost[cid].error == "LOST"
    assert [e.id for e in h.of(ChannelOpenFailed)] == [cid2]  # open_ok never came
    assert h.client.channel_ids() == []


# ------------------------------------------------------------------ fuzzing

cids = st.integers(1, 4)
server_msgs = st.one_of(
    st.builds(OpenOk, cids, st.none() | st.sampled_from(["k1", "k2"])),
    st.builds(OpenErr, cids, st.just("X"), st.just("no")),
    st.builds(Exit, cids, st.none() | st.integers(-1, 255), st.none() | st.just("KILL")),
    st.builds(Close, cids, st.none() | st.just("bye")),
    st.builds(Flow, cids, st.just(0), st.none() | st.just(0) | st.integers(0, 64)),
    st.builds(Ping, st.integers(0, 10**6)),
    st.builds(Pong, st.integers(0, 10**6)),
    st.builds(DataFrame, st.sampled_from(["stdout", "stderr"]), cids, st.binary(max_size=300)),
)
app_calls = st.one_of(
    st.tuples(st.just("open"), st.none()),
    st.tuples(st.just("input"), st.tuples(cids, st.binary(min_size=1, max_size=100))),
    st.tuples(st.just("resize"), st.tuples(cids, st.integers(1, 300), st.integers(1, 100))),
    st.tuples(st.just("signal"), cids),
    st.tuples(st.just("close_channel"), cids),
    st.tuples(st.just("consumed"), st.tuples(cids, st.integers(0, 5000))),
    st.tuples(st.just("pause"), st.tuples(st.sampled_from(["visibility", "offline", "transport"]), st.booleans())),
    st.tuples(st.just("buffered"), st.integers(0, 10 * 2**20)),
    st.tuples(st.just("tick"), st.floats(0, 25)),
    st.tuples(st.just("drop"), st.sampled_from([1006, 1001, 4012])),
)
server_data = st.builds(DataFrame, st.sampled_from(["stdout", "stderr"]), st.integers(1, 2), st.binary(min_size=1, max_size=300))
client_actions = st.one_of(
    st.tuples(st.just("server"), server_msgs),
    st.tuples(st.just("server"), server_data),
    st.tuples(st.just("server"), server_data),
    st.tuples(st.just("server"), server_data),
    app_calls,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(client_actions, min_size=20, max_size=80))
def test_client_survives_any_server_sequence(script: list[Any]) -> None:
    """Valid server messages in any order, mixed with application calls: the client never raises."""
    h = ClientHarness(ClientOptions(window=4096))
    h.connect()
    for cid in (c0 := h.client.open_channel(TARGET, USER), h.client.open_channel(TARGET, USER)):
        h.drain()
        h.feed(OpenOk(cid, f"k{cid}"))
    assert c0 == 1
    for kind, arg in script:
        c = h.client
        if c.state == ConnState.CLOSED:
            break
        now = h.clock()
        if kind == "server":
            if c.state == ConnState.READY:
                h.feed(arg)
        elif kind == "open":
            c.open_channel(TARGET, USER, Term(80, 24), now)
        elif kind == "input":
            ch = c.channel(arg[0])
            if ch is not None and ch.state in (ChannelState.OPEN, ChannelState.OPENING):
                c.send_input(arg[0], arg[1], now)
        elif kind == "resize":
            c.resize(arg[0], arg[1], arg[2], now)
        elif kind == "signal":
            c.signal(arg, "INT")
        elif kind == "close_channel":
            c.close_channel(arg)
        elif kind == "consumed":
            c.consumed(arg[0], arg[1], now)
        elif kind == "pause":
            c.set_pause(arg[0], arg[1], now)
        elif kind == "buffered":
            c.set_buffered_amount(arg, now)
        elif kind == "tick":
            h.tick_to(now + arg)
        else:
            if c.state == ConnState.READY:
                c.transport_closed(now, arg)
        h.drain()
        if c.state == ConnState.RECONNECTING:  # bring it back: reopen and accept whatever it resumes
            n = len(h.of(OpenTransport))
            while len(h.of(OpenTransport)) == n:  # other deadlines (resize) may come first
                d = c.next_deadline()
                assert d is not None
                h.tick_to(d)
            c.transport_opened(h.clock())
            sent = h.drain()
            hello = [m for m in sent if isinstance(m, Hello)][-1]
            assert hello.resume is not None
            chans = tuple(ResumedChannel(rc.id, 0) for rc in hello.resume.channels or ())
            h.hello_ok(resumed=chans)
        for ch_id in c.channel_ids():  # the client never grants credit beyond its window
            ch = c.channel(ch_id)
            assert ch is not None and ch.credit.outstanding <= ch.credit.max_window
    for m in h.sent:
        if isinstance(m, Flow):
            assert 0 < m.credit <= 2**31
    codes = [e.code for e in h.of(CloseTransport)]
    # 4007: credit overrun; 4012: heartbeat; 4009: a message the tables do not
    # allow now (an exit before open_ok) -- never an exception, never another code.
    assert all(code in (4007, 4009, 4012) for code in codes), codes
    event(f"closed with {codes[-1] if codes else None}")
    event(f"channel data events: {min(len(h.of(ChannelData)), 3)}+")


# ------------------------------------------- rules moved into the core (#12)


def test_verify_pings_and_any_frame_satisfies_it() -> None:
    h = ClientHarness(ClientOptions(verify_timeout=5.0))
    h.connect()
    t0 = h.clock()
    h.client.verify(t0, "visibility", hidden_ms=30_000)
    (ping,) = h.drain()
    assert isinstance(ping, Ping)
    assert h.client.next_deadline() == pytest.approx(t0 + 5.0)  # the verify deadline comes first
    (suspect,) = diags(h, "connection_suspect")
    assert suspect.extras["why"] == "visibility" and suspect.extras["hidden_ms"] == 30_000
    h.client.verify(t0, "again")  # already verifying: nothing more
    assert h.drain() == [] and len(diags(h, "connection_suspect")) == 1
    h.clock.t = t0 + 0.25
    h.feed(Ping(1.0))  # any frame proves the socket alive, not only the pong
    (ok,) = diags(h, "connection_verified")
    assert ok.extras["waited_ms"] == pytest.approx(250.0)
    h.tick_to(t0 + 5.0)
    assert not diags(h, "connection_verify_failed") and h.client.state == ConnState.READY
    assert h.client.next_deadline() == pytest.approx(t0 + 20.0)  # back to the heartbeat


def test_verify_timeout_drops_the_transport_as_a_network_loss() -> None:
    h = ClientHarness(ClientOptions(verify_timeout=5.0))
    h.connect()
    t0 = h.clock()
    h.client.verify(t0, "online")
    h.drain()
    h.tick_to(t0 + 4.999)
    assert h.client.state == ConnState.READY
    h.tick_to(t0 + 5.0)
    (failed,) = diags(h, "connection_verify_failed")
    assert failed.extras["timeout_ms"] == 5000 and failed.extras["why"] == "online"
    # The abandoned socket closes with 4000 (the server keeps the session); the
    # session is told 1006, so it reconnects and resumes.
    assert [(c.code, c.reason) for c in h.of(CloseTransport)] == [(4000, "no answer after online")]
    assert [d.extras["ws_code"] for d in diags(h, "transport_closed")] == [1006]
    assert h.client.state == ConnState.RECONNECTING
    assert h.store.load() is not None


def test_verify_only_when_ready() -> None:
    h = ClientHarness()
    h.client.verify(h.clock(), "visibility")
    h.drain()
    assert not diags(h, "connection_suspect") and h.client.next_deadline() is None


def test_page_visibility_suspect_rule_uses_the_heartbeat_interval() -> None:
    h = ClientHarness(ClientOptions(heartbeat_interval=20.0))
    h.connect()
    t0 = h.clock()
    h.client.page_visibility(True, t0)
    assert h.client.paused_for("visibility")
    h.client.page_visibility(False, t0 + 20.0)  # hidden exactly one interval: not suspect
    assert not h.client.paused_for("visibility")
    h.drain()
    assert not diags(h, "connection_suspect")
    h.client.page_visibility(True, t0 + 21.0)
    h.client.page_visibility(True, t0 + 30.0)  # repeated: hidden since the first
    h.client.page_visibility(False, t0 + 41.5)
    h.drain()
    (suspect,) = diags(h, "connection_suspect")
    assert suspect.extras == {**suspect.extras, "why": "visibility", "hidden_ms": 20_500}
    from nimbus_websocket.core.liveness import is_suspect_after_hidden

    assert is_suspect_after_hidden(20.001, 20.0) and not is_suspect_after_hidden(20.0, 20.0)
    assert ClientOptions(suspect_after=3.0).suspect_after_s == 3.0
    assert ClientOptions(heartbeat_interval=7.0).suspect_after_s == 7.0


def test_page_online_pauses_then_verifies() -> None:
    h = ClientHarness()
    h.connect()
    h.client.page_online(False, h.clock())
    assert h.client.paused_for("offline")
    h.client.page_online(True, h.clock())
    h.drain()
    assert not h.client.paused_for("offline")
    assert [d.extras["why"] for d in diags(h, "connection_suspect")] == ["online"]


def test_cancel_closes_4000_without_error() -> None:
    h = ClientHarness()
    h.client.connect(h.clock())
    h.drain()
    h.client.cancel(h.clock())
    h.drain()
    assert [(c.code, c.reason) for c in h.of(CloseTransport)] == [(4000, "connect cancelled")]
    (closed,) = h.of(ConnectionClosed)
    assert closed.error is None and h.client.state == ConnState.CLOSED
    h.client.cancel(h.clock())  # once closed: nothing
    assert h.drain() == [] and len(h.of(CloseTransport)) == 1


def test_auth_provider_failure_is_4003_and_closes_4000() -> None:
    h = ClientHarness()
    h.client.connect(h.clock())
    h.drain()
    h.client.auth_provider_failed(h.clock(), "vault down")
    h.drain()
    assert [c.code for c in h.of(CloseTransport)] == [4000]
    (closed,) = h.of(ConnectionClosed)
    err = closed.error
    assert err is not None and (err.ws_code, err.app_code, err.code) == (4003, 4003, "AUTH_PROVIDER_FAILED")
    assert "vault down" in err.message and h.client.error is err
    assert h.client.state == ConnState.CLOSED
    h.client.auth_provider_failed(h.clock(), "again")
    assert len(h.of(ConnectionClosed)) == 1


def test_close_reasons_are_cut_to_123_utf8_bytes() -> None:
    from nimbus_websocket.core.errors import MAX_CLOSE_REASON_BYTES, truncate_reason

    assert MAX_CLOSE_REASON_BYTES == 123
    assert truncate_reason("short") == "short"
    cut = truncate_reason("é" * 100)  # 200 bytes; never split a character
    assert len(cut.encode()) == 122 and cut == "é" * 61
    assert len(truncate_reason("x" * 500).encode()) == 123
    h = ClientHarness()
    h.client.connect(h.clock())
    h.drain()
    h.client.close(h.clock(), 4000, "€" * 100)
    h.drain()
    (ct,) = h.of(CloseTransport)
    assert len(ct.reason.encode()) <= 123 and ct.reason == "€" * 41


def test_sendable_close_code_and_abandon_codes_are_the_cores() -> None:
    from nimbus_websocket.core.errors import abandon_close_codes, sendable_close_code

    assert [sendable_close_code(c) for c in (1000, 1001, 1006, 1009, 3000, 4012, 4999, 5000)] == [
        1000, 4000, 4000, 4000, 3000, 4012, 4999, 4000,
    ]
    assert abandon_close_codes() == (4000, 1006)


def test_illegal_transition_on_peer_input_closes_4009() -> None:
    h = ClientHarness()
    h.connect()
    cid = h.client.open_channel(TARGET, USER, now=h.clock())
    h.drain()
    h.feed(Exit(cid, 0))  # exit before open_ok: the channel table has no such move
    assert [c.code for c in h.of(CloseTransport)] == [4009]
    (closed,) = h.of(ConnectionClosed)
    assert closed.error is not None and closed.error.code == "UNSUPPORTED_MESSAGE"
    assert "exit" in closed.error.message and h.client.state == ConnState.CLOSED


def test_local_misuse_raises_locally() -> None:
    from nimbus_websocket.core.errors import ClientClosedError, NimbusError

    h = ClientHarness()
    h.connect()
    with pytest.raises(IllegalTransition):
        h.client.connect(h.clock())
    assert not h.of(CloseTransport)  # misuse never closes the connection
    h.client.close(h.clock())
    with pytest.raises(ClientClosedError) as info:
        h.client.open_channel(TARGET, USER)
    assert isinstance(info.value, NimbusError) and isinstance(info.value, RuntimeError)


def test_signal_is_normalised_and_takes_input_follows_the_channel() -> None:
    h = ClientHarness()
    h.connect()
    cid = h.client.open_channel(TARGET, USER, now=h.clock())
    h.drain()
    assert h.client.takes_input(cid) and not h.client.takes_input(99)
    h.feed(OpenOk(cid, "k"))
    for sig in ("int", "SIGTERM", " hup "):
        h.client.signal(cid, sig)
    assert [m.sig for m in h.drain() if isinstance(m, Signal)] == ["INT", "TERM", "HUP"]
    h.client.close_channel(cid)
    assert not h.client.takes_input(cid)


def test_window_is_never_larger_than_max_window() -> None:
    o = ClientOptions(window=1 << 22, max_window=1 << 20)
    assert o.max_window == 1 << 22
    assert ClientOptions().max_window >= ClientOptions().window


def test_heartbeat_fits_the_server_rule_ping_only_when_idle() -> None:
    from nimbus_websocket.core.heartbeat import Heartbeat

    hb = Heartbeat(10.0, None, only_when_idle=True)
    hb.start(0.0)
    assert hb.due(9.9) is None
    hb.received(5.0)
    beat = hb.due(10.0)
    assert beat is not None and beat.ping is None and not beat.timed_out  # busy: no ping
    assert hb.next_ping == 20.0
    beat = hb.due(20.0)
    assert beat is not None and beat.ping == 20_000.0  # idle for an interval: ping
    assert hb.pong(20_000.0, 20.5) == pytest.approx(0.5) and hb.pong(20_000.0, 21.0) is None
    for t in (30.0, 40.0, 50.0):
        beat = hb.due(t)
        assert beat is not None and not beat.timed_out  # misses=None: never decides


def test_reconnect_counts_failed_tries_only() -> None:
    from nimbus_websocket.core.reconnect import Reconnect

    r = Reconnect(RetryPolicy(base=1.0, factor=2.0, jitter=False, max_retries=3))
    r.succeeded()
    assert r.lost(0.0, lambda: 0.5) == 1.0 and r.attempt == 0  # loss of a ready connection
    assert not r.due(0.999) and r.due(1.0) and not r.due(1.0)
    assert r.lost(1.0, lambda: 0.5) == 2.0 and r.attempt == 1  # that try failed
    assert r.lost(3.0, lambda: 0.5) == 4.0 and r.attempt == 2
    assert r.lost(7.0, lambda: 0.5) is None and r.at is None  # exhausted


def test_a_window_wider_than_the_servers_retained_bound_still_acks() -> None:
    """A 16 MiB window grants only when 8 MiB are spent, but the reference server stops at 4 MiB
    unacknowledged: the client acks on its own every ACK_EVERY bytes, or the channel stalls for good."""
    from nimbus_websocket.core.client import ACK_EVERY

    h, cid = _ready_with_channel(options=ClientOptions(window=16 << 20, max_window=16 << 20))
    first = [m for m in h.feed(OpenOk(cid, "k")) if isinstance(m, Flow)]
    assert first and first[0].credit == 16 << 20
    acks: list[Flow] = []
    for _ in range(5):  # 4 MiB in 1 MiB frames, each consumed at once
        h.feed(DataFrame("stdout", cid, b"x" * (1 << 20)))
        h.client.consumed(cid, 1 << 20, h.clock())
        acks += [m for m in h.drain() if isinstance(m, Flow)]
    assert [(f.credit, f.ack) for f in acks[:4]] == [(0, (i + 1) * ACK_EVERY) for i in range(4)]
