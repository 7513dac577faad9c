"""The server machines (ServerConnection, ServerSession, SessionRegistry) with a
fake clock: handshake, limits and their close codes, channel lifecycle,
sessions, resume tokens.  No sockets, no sleeping.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from nimbus_websocket.core import (
    Auth,
    AuthRequested,
    BackendClose,
    BackendInput,
    BackendOpen,
    BackendPause,
    BackendResize,
    BackendSignal,
    Close,
    DataFrame,
    Exit,
    FileSpec,
    Flow,
    Hello,
    HelloCaps,
    HelloOk,
    Open,
    OpenErr,
    OpenOk,
    Ping,
    PolicyEvent,
    Pong,
    Resize,
    ResumeChannel,
    ResumeRequest,
    ServerCaps,
    ServerConfig,
    Signal,
    Target,
    Term,
    User,
)
from nimbus_websocket.core.errors import IllegalTransition
from nimbus_websocket.core.events import Diagnostic
from nimbus_websocket.core.server import (
    ResumeLimiter,
    ServerConnection,
    advertised_subprotocols,
    select_subprotocol,
)
from nimbus_websocket.core.state import (
    PHASE_TRANSITIONS,
    ChannelState,
    ConnPhase,
    PhaseEvent,
    transition,
)

try:
    from support.memory import FakeClock, ServerHarness
except ImportError:  # pragma: no cover
    from tests.support.memory import FakeClock, ServerHarness

TARGET = Target("localhost", 22)
USER = User("alice")
MIB = 1 << 20


def ready(config: ServerConfig | None = None, **kw: Any) -> ServerHarness:
    h = ServerHarness(config, **kw)
    assert h.hello() is not None
    return h


def open_channel(h: ServerHarness, cid: int = 1, *, credit: int = 0, term: Term | None = None) -> None:
    h.send(Open(cid, TARGET, USER, term))
    h.session.channel_opened(cid)
    h.drain()
    if credit:
        h.send(Flow(cid, credit))


def data_bytes(msgs: list[Any], cid: int) -> bytes:
    return b"".join(m.payload for m in msgs if isinstance(m, DataFrame) and m.id == cid)


# ------------------------------------------------------------------ handshake


def test_handshake_and_hello_ok() -> None:
    h = ServerHarness()
    assert h.send(Hello(caps=HelloCaps("nimbus.v1", ack=True))) == []  # nothing before auth
    (req,) = h.of(AuthRequested)
    assert req.scheme == "none" and req.token is None
    h.conn.auth_result("alice", h.clock())
    (ok,) = h.drain()
    assert isinstance(ok, HelloOk)
    assert ok.caps.profile_accepted == "nimbus.v1" and ok.caps.flow == "credit"
    assert ok.caps.max_frame == MIB and ok.caps.ack and ok.caps.resumed is None
    assert ok.resume is not None and ok.resume.ttl_ms == 60_000
    assert re.fullmatch(r"[0-9a-f]{16}\.[A-Za-z0-9_-]{43}", ok.resume.token)
    assert h.conn.ready and h.session.principal == "alice"


def test_bearer_token_reaches_auth() -> None:
    h = ServerHarness()
    h.send(Hello(auth=Auth("bearer", "tok")))
    (req,) = h.of(AuthRequested)
    assert (req.scheme, req.token) == ("bearer", "tok")


@pytest.mark.parametrize("profile", ["nimbus.v1", "json-base64.v1", "lenpfx.v1"])
def test_each_profile_negotiates(profile: str) -> None:
    h = ServerHarness(profile=profile)
    ok = h.hello()
    assert ok is not None and ok.caps.profile_accepted == profile


def test_missing_caps_profile_means_nimbus_v1() -> None:
    h = ServerHarness()
    h.send(Hello())
    h.conn.auth_result("alice", h.clock())
    (ok,) = h.drain()
    assert isinstance(ok, HelloOk) and ok.caps.profile_accepted == "nimbus.v1" and not ok.caps.ack


def test_unsupported_profile_4001() -> None:
    h = ServerHarness()
    h.send(Hello(caps=HelloCaps("msgpack.v9")))
    assert h.close_code == 4001 and not h.of(AuthRequested)
    h2 = ServerHarness(ServerConfig(profiles=("nimbus.v1",)))
    h2.send(Hello(caps=HelloCaps("lenpfx.v1")))
    assert h2.close_code == 4001


def test_auth_refused_4003() -> None:
    h = ServerHarness()
    assert h.hello(principal=None) is None
    assert h.close_code == 4003
    assert len(h.registry) == 0


def test_hello_timeout_4012() -> None:
    h = ServerHarness()
    assert h.conn.next_deadline() == h.clock() + 10.0
    h.tick(9.99)
    assert h.close_code is None
    h.tick(0.01)
    assert h.close_code == 4012


def test_auth_pending_past_hello_timeout_4012() -> None:
    h = ServerHarness()
    h.send(Hello())
    h.tick(10.0)
    assert h.close_code == 4012
    h.conn.auth_result("alice", h.clock())  # too late: ignored
    assert not h.of(HelloOk)


@pytest.mark.parametrize(
    "first",
    [Ping(1), Open(1, TARGET, USER), Flow(1, 10), Close(1), DataFrame("stdout", 1, b"ls\n")],
    ids=["ping", "open", "flow", "close", "data"],
)
def test_anything_before_hello_is_4002(first: Any) -> None:
    h = ServerHarness()
    h.send(first)
    assert h.close_code == 4002


def test_message_between_hello_and_hello_ok_is_4002() -> None:
    h = ServerHarness()
    h.send(Hello())
    h.send(Ping(1))
    assert h.close_code == 4002


def test_second_hello_is_4002() -> None:
    h = ready()
    h.send(Hello())
    assert h.close_code == 4002


@pytest.mark.parametrize(
    "msg",
    [HelloOk("x", ServerCaps("nimbus.v1")), OpenOk(1), OpenErr(1, "X", "y"), Exit(1, 0)],
    ids=["hello_ok", "open_ok", "open_err", "exit"],
)
def test_server_only_messages_from_client_are_4009(msg: Any) -> None:
    h = ready()
    h.send(msg)
    assert h.close_code == 4009


# --------------------------------------------------------------------- limits


def test_fifth_open_is_4006() -> None:
    h = ready()
    for cid in range(1, 5):
        open_channel(h, cid)
    assert h.close_code is None
    h.send(Open(5, TARGET, USER))
    assert h.close_code == 4006


def test_exited_but_not_closed_channels_count() -> None:
    h = ready()
    for cid in range(1, 5):
        open_channel(h, cid)
    h.session.backend_exit(4, 0, None)
    h.drain()
    assert Exit(4, 0) in h.out
    h.send(Open(5, TARGET, USER))
    assert h.close_code == 4006


def test_closed_channel_frees_a_slot_and_its_id() -> None:
    h = ready()
    for cid in range(1, 5):
        open_channel(h, cid)
    h.send(Close(4))
    assert h.out[-1] == Close(4)
    open_channel(h, 4)  # the id may be reused once its close completed
    assert h.close_code is None and len(h.session.channels) == 4


@pytest.mark.parametrize("opened", [False, True], ids=["opening", "open"])
def test_duplicate_channel_id_is_4013(opened: bool) -> None:
    h = ready()
    h.send(Open(7, TARGET, USER))
    if opened:
        h.session.channel_opened(7)
    h.send(Open(7, TARGET, USER))
    assert h.close_code == 4013


def test_control_burst_of_51_is_4004() -> None:
    h = ready()
    open_channel(h, 1)  # 1 control message
    for _ in range(49):
        h.send(Resize(1, 80, 24))
    assert h.close_code is None  # 50 in the same instant: the burst
    h.send(Signal(1, "INT"))
    assert h.close_code == 4004
    assert PolicyEvent("rate_limited") in h.events


def test_control_rate_counts_ping_close_resize_signal_not_flow_pong() -> None:
    h = ready()
    open_channel(h, 1)
    for _ in range(1000):
        h.send(Flow(1, 0))
        h.send(Pong(1))
    assert h.close_code is None
    for m in [Ping(1)] * 20 + [Close(99)] * 10 + [Resize(1, 1, 1)] * 10 + [Signal(1, "HUP")] * 9:
        h.send(m)
    assert h.close_code is None
    h.send(Ping(2))
    assert h.close_code == 4004


def test_sustained_50_per_second_is_allowed() -> None:
    h = ready()
    open_channel(h, 1)
    for _ in range(600):  # 12 s at exactly 50/s
        h.send(Resize(1, 80, 24), dt=0.02)
    assert h.close_code is None
    for _ in range(120):  # then 100/s: the bucket drains (net -0.5 token a message)
        h.send(Resize(1, 80, 24), dt=0.01)
    assert h.close_code == 4004


def test_idle_timeout_is_4012_and_any_frame_resets_it() -> None:
    h = ready()
    pings = []
    for _ in range(10):  # 10 min of a client that only answers pings
        pings += [m for m in h.tick(20.0) if isinstance(m, Ping)]
        h.send(Pong(pings[-1].ts))
    assert h.close_code is None and len(pings) == 10  # the server pings when idle
    h.tick(59.9)
    assert h.close_code is None
    h.tick(0.1)
    assert h.close_code == 4012


def test_idle_timeout_detaches_the_session() -> None:
    h = ready()
    open_channel(h, 1)
    h.tick(60.0)
    assert h.close_code == 4012
    assert len(h.registry) == 1 and not h.of(BackendClose)


def test_outstanding_credit_above_16_mib_is_4007() -> None:
    h = ready()
    open_channel(h, 1, credit=16 * MIB)
    assert h.close_code is None
    h.session.backend_output(1, "stdout", b"x" * MIB)  # spends 1 MiB of credit
    h.drain()
    h.send(Flow(1, MIB))  # back to 16 MiB outstanding
    assert h.close_code is None
    h.send(Flow(1, 1))
    assert h.close_code == 4007


def test_ack_beyond_bytes_sent_is_4007() -> None:
    h = ready()
    open_channel(h, 1, credit=100)
    h.session.backend_output(1, "stdout", b"y" * 10)
    h.drain()
    h.send(Flow(1, 0, 10))
    assert h.close_code is None
    h.send(Flow(1, 0, 11))
    assert h.close_code == 4007


def test_stderr_from_client_is_4014() -> None:
    h = ready()
    open_channel(h, 1)
    h.send(DataFrame("stdout", 1, b"ok"))
    assert h.close_code is None
    h.send(DataFrame("stderr", 1, b"no"))
    assert h.close_code == 4014


def test_input_flood_beyond_4_mib_unwritten_is_4007() -> None:
    h = ready()
    open_channel(h, 1)
    for _ in range(4):
        h.send(DataFrame("stdout", 1, b"i" * MIB))  # the backend consumes nothing
    assert h.close_code is None
    h.send(DataFrame("stdout", 1, b"i"))
    assert h.close_code == 4007


def test_frames_for_unknown_ids_are_ignored_and_counted() -> None:
    h = ready()
    open_channel(h, 1)
    for m in (DataFrame("stdout", 9, b"x"), Flow(9, 10), Resize(9, 1, 1), Signal(9, "INT"), Close(9)):
        h.send(m)
    assert h.close_code is None
    assert h.conn.stats["ignored"] == 5
    assert not [e for e in h.events if isinstance(e, (BackendInput, BackendResize, BackendSignal, BackendClose))]


def test_input_for_an_opening_channel_is_held_until_open_ok() -> None:
    # Issue 13 item 16 (was: dropped but counted); tests/core/test_server_early_input.py has the rest.
    h = ready()
    h.send(Open(1, TARGET, USER))
    h.send(DataFrame("stdout", 1, b"typed too early"))
    assert not h.of(BackendInput) and h.conn.stats["ignored"] == 0
    assert h.session.channels[1].rx == len(b"typed too early")
    h.session.channel_opened(1)
    h.drain()
    assert h.of(BackendInput) == [BackendInput(1, b"typed too early")]


def test_oversized_frame_is_4008() -> None:
    h = ready(ServerConfig(max_frame=4096))
    h.send(DataFrame("stdout", 1, b""))
    h.conn.receive_frame(b"\x01\0\0\0\x01" + bytes(4092), h.clock())
    h.drain()
    assert h.close_code == 4008


# ----------------------------------------------------------- channel lifecycle


def test_open_reaches_backend_then_open_ok_with_resume_key() -> None:
    h = ready()
    h.send(Open(3, TARGET, USER, Term(120, 40, {"TERM": "xterm"})))
    (bo,) = h.of(BackendOpen)
    assert (bo.id, bo.target, bo.term) == (3, TARGET, Term(120, 40, {"TERM": "xterm"}))
    assert not h.of(OpenOk)
    h.session.channel_opened(3)
    h.drain()
    (ok,) = h.of(OpenOk)
    assert ok.id == 3 and ok.resume_key and len(ok.resume_key) >= 24
    assert BackendPause(3, True) in h.events  # initial credit is 0


def test_open_failed_sends_open_err_and_frees_the_id() -> None:
    h = ready()
    h.send(Open(3, TARGET, USER))
    h.session.channel_open_failed(3, "TARGET_UNREACHABLE", "refused")
    h.drain()
    assert h.out[-1] == OpenErr(3, "TARGET_UNREACHABLE", "refused")
    open_channel(h, 3)
    assert h.close_code is None


def test_resize_signal_input_reach_the_backend() -> None:
    h = ready()
    open_channel(h, 1)
    h.send(Resize(1, 100, 50))
    h.send(Signal(1, "INT"))
    h.send(DataFrame("stdout", 1, b"\x03"))
    assert BackendResize(1, 100, 50) in h.events and BackendSignal(1, "INT") in h.events
    assert BackendInput(1, b"\x03") in h.events


def test_no_output_without_credit_and_never_beyond_it() -> None:
    h = ready()
    open_channel(h, 1)
    assert h.session.read_budget(1) == 0
    h.session.backend_output(1, "stdout", b"a" * 1000)
    h.drain()
    assert data_bytes(h.out, 1) == b""
    h.send(Flow(1, 300))
    assert data_bytes(h.out, 1) == b"a" * 300
    h.send(Flow(1, 1000))
    assert data_bytes(h.out, 1) == b"a" * 1000
    assert h.session.read_budget(1) == 300


def test_exit_follows_the_remaining_output() -> None:
    h = ready()
    open_channel(h, 1)
    h.session.backend_output(1, "stdout", b"o" * 5000)
    h.session.backend_output(1, "stderr", b"e" * 100)
    h.session.backend_exit(1, 2, None)
    h.drain()
    assert not h.of(Exit)
    h.send(Flow(1, 4000))
    assert not h.of(Exit)
    h.send(Flow(1, 1100))
    msgs = [m for m in h.out if isinstance(m, (DataFrame, Exit))]
    assert msgs[-1] == Exit(1, 2)
    assert data_bytes(msgs, 1) == b"o" * 5000 + b"e" * 100
    assert [m.stream for m in msgs if isinstance(m, DataFrame)][-1] == "stderr"


def test_close_handshake_and_late_frames() -> None:
    h = ready()
    open_channel(h, 1, credit=100)
    h.session.backend_exit(1, None, "KILL")
    h.drain()
    assert h.out[-1] == Exit(1, None, "KILL")
    h.send(Close(1))
    assert h.out[-1] == Close(1) and BackendClose(1) in h.events
    assert 1 not in h.session.channels
    h.send(DataFrame("stdout", 1, b"late"))
    h.send(Close(1))  # a crossing duplicate
    assert h.close_code is None and not h.of(BackendInput)
    assert h.out.count(Close(1)) == 1


def test_client_close_while_opening() -> None:
    h = ready()
    h.send(Open(1, TARGET, USER))
    h.send(Close(1))
    assert h.out[-1] == Close(1) and BackendClose(1) in h.events
    h.session.channel_opened(1)  # the backend came up after all
    h.drain()
    assert not h.of(OpenOk)


def test_protocol_error_destroys_the_session() -> None:
    h = ready()
    open_channel(h, 1)
    h.send("{not json")
    assert h.close_code == 4014
    assert BackendClose(1) in h.events and len(h.registry) == 0


# ---------------------------------------------------------- sessions / resume


class Server:
    """One registry and clock shared by several connections (harnesses)."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.clock = FakeClock()
        first = ServerHarness(config, clock=self.clock)
        self.registry = first.registry
        self.first = first

    def conn(self) -> ServerHarness:
        return ServerHarness(registry=self.registry, clock=self.clock)


def _session_with_channel(ack: bool = True) -> tuple[Server, ServerHarness, str, str]:
    srv = Server()
    h = srv.first
    ok = h.hello(ack=ack)
    assert ok is not None and ok.resume is not None
    open_channel(h, 1)
    key = h.of(OpenOk)[0].resume_key
    return srv, h, ok.resume.token, key


def _resume(h: ServerHarness, token: str, key: str, rx: int = 0, principal: str = "alice", ack: bool = True) -> HelloOk | None:
    return h.hello(principal, ack=ack, resume=ResumeRequest(token, (ResumeChannel(1, key, rx),)))


def test_drop_1006_retains_and_resume_rebinds() -> None:
    srv, h, token, key = _session_with_channel()
    h.conn.transport_closed(1006, srv.clock())
    h.drain()
    assert len(srv.registry) == 1 and not h.of(BackendClose)
    h2 = srv.conn()
    ok = _resume(h2, token, key)
    assert ok is not None and ok.caps.resumed is not None
    assert [(c.id, c.rx) for c in ok.caps.resumed] == [(1, 0)]
    assert ok.resume is not None and ok.resume.token != token
    assert srv.registry.resumes == 1


def test_client_close_1000_destroys_the_session() -> None:
    srv, h, token, key = _session_with_channel()
    h.conn.transport_closed(1000, srv.clock())
    h.drain()
    assert BackendClose(1) in h.events and len(srv.registry) == 0
    h2 = srv.conn()
    assert _resume(h2, token, key) is None and h2.close_code == 4011


@pytest.mark.parametrize("code", [1001, 1006, 1011, 4012])
def test_other_losses_retain(code: int) -> None:
    srv, h, token, key = _session_with_channel()
    h.conn.transport_closed(code, srv.clock())
    assert len(srv.registry) == 1
    assert _resume(srv.conn(), token, key) is not None


def test_retention_expiry_60s() -> None:
    srv, h, token, key = _session_with_channel()
    h.conn.transport_closed(1006, srv.clock())
    srv.clock.advance(59.9)
    assert srv.registry.expire(srv.clock()) == []
    h2 = srv.conn()
    ok = _resume(h2, token, key)
    assert ok is not None and ok.resume is not None
    h2.conn.transport_closed(1006, srv.clock())  # dropped again: a new window starts now
    srv.clock.advance(59.9)
    assert _resume(srv.conn(), ok.resume.token, key) is not None


@pytest.mark.parametrize("reap", [False, True], ids=["lookup", "expire"])
def test_resume_after_retention_is_4011(reap: bool) -> None:
    srv, h, token, key = _session_with_channel()
    h.conn.transport_closed(1006, srv.clock())
    srv.clock.advance(60.0)
    if reap:
        (gone,) = srv.registry.expire(srv.clock())
        assert BackendClose(1) in gone.events()
    h2 = srv.conn()
    assert _resume(h2, token, key) is None
    assert h2.close_code == 4011


def test_token_is_single_use() -> None:
    srv, h, token, key = _session_with_channel()
    h.conn.transport_closed(1006, srv.clock())
    h2 = srv.conn()
    ok = _resume(h2, token, key)
    assert ok is not None and ok.resume is not None
    h2.send(Ping(1))  # the client got hello_ok (its new token): the old one is spent
    h2.conn.transport_closed(1006, srv.clock())
    h3 = srv.conn()
    assert _resume(h3, token, key) is None and h3.close_code == 4011  # the old token
    assert _resume(srv.conn(), ok.resume.token, key) is not None  # the fresh one works


def test_token_of_another_principal_is_4011() -> None:
    srv, h, token, key = _session_with_channel()
    h.conn.transport_closed(1006, srv.clock())
    h2 = srv.conn()
    assert _resume(h2, token, key, principal="mallory") is None
    assert h2.close_code == 4011
    assert _resume(srv.conn(), token, key) is not None  # alice still can


def test_wrong_resume_key_is_4011_and_changes_nothing() -> None:
    srv, h, token, key = _session_with_channel()
    h2 = srv.conn()  # while the first connection is still live
    assert _resume(h2, token, "x" * len(key)) is None
    assert h2.close_code == 4011
    assert h.close_code is None and h.conn.ready  # not superseded by a refused resume
    assert srv.registry.sessions()[0].conn is h.conn


def test_resume_supersedes_a_live_connection_with_4000() -> None:
    srv, h, token, key = _session_with_channel()
    h2 = srv.conn()
    ok = _resume(h2, token, key)
    assert ok is not None
    h.drain()
    assert h.close_code == 4000
    assert srv.registry.sessions()[0].conn is h2.conn
    # the old connection's late close must not detach the new one
    h.conn.transport_closed(4000, srv.clock())
    assert srv.registry.sessions()[0].conn is h2.conn
    h2.send(DataFrame("stdout", 1, b"still here"))
    assert BackendInput(1, b"still here") in h2.events


def test_garbage_and_unknown_tokens_are_4011() -> None:
    srv, h, token, key = _session_with_channel()
    for bad in ("", "nodot", "zzzzzzzzzzzzzzzz.abc", "0123456789abcdef.abc", token + "x"):
        h2 = srv.conn()
        assert h2.hello(resume=ResumeRequest(bad, ())) is None, bad
        assert h2.close_code == 4011


def test_repeated_wrong_secrets_revoke_the_token() -> None:
    srv, h, token, key = _session_with_channel()
    h.conn.transport_closed(1006, srv.clock())
    sid = token.split(".")[0]
    for _ in range(5):
        h2 = srv.conn()
        assert h2.hello(resume=ResumeRequest(sid + ".wrongwrongwrong", ((ResumeChannel(1, key, 0)),))) is None
    h3 = srv.conn()
    assert _resume(h3, token, key) is None and h3.close_code == 4011


def test_ack_mismatch_and_missing_channels_are_4011() -> None:
    srv, h, token, key = _session_with_channel(ack=True)
    h.conn.transport_closed(1006, srv.clock())
    h2 = srv.conn()
    assert _resume(h2, token, key, ack=False) is None and h2.close_code == 4011
    h3 = srv.conn()
    assert h3.hello(resume=ResumeRequest(token, None)) is None and h3.close_code == 4011
    assert _resume(srv.conn(), token, key) is not None


def test_rx_outside_the_replay_window_is_4011() -> None:
    srv, h, token, key = _session_with_channel()
    h.send(Flow(1, 100))
    h.session.backend_output(1, "stdout", b"z" * 100)
    h.drain()
    h.send(Flow(1, 0, 60))  # the client acknowledged 60
    h.conn.transport_closed(1006, srv.clock())
    for rx in (59, 101):
        h2 = srv.conn()
        assert _resume(h2, token, key, rx=rx) is None and h2.close_code == 4011, rx
    h3 = srv.conn()
    ok = _resume(h3, token, key, rx=80)
    assert ok is not None
    h3.send(Flow(1, 1000, 80))
    assert data_bytes(h3.out, 1) == b"z" * 20  # retransmitted from the client's rx


def test_ack_resume_closes_channels_left_out() -> None:
    srv, h, token, key = _session_with_channel()
    open_channel(h, 2)
    h.conn.transport_closed(1006, srv.clock())
    h2 = srv.conn()
    ok = _resume(h2, token, key)  # lists channel 1 only
    assert ok is not None and ok.caps.resumed is not None
    assert [c.id for c in ok.caps.resumed] == [1]
    assert BackendClose(2) in h2.events
    assert set(srv.registry.sessions()[0].channels) == {1}


def test_input_rx_reported_on_resume() -> None:
    srv, h, token, key = _session_with_channel()
    h.send(DataFrame("stdout", 1, b"12345"))
    h.conn.transport_closed(1006, srv.clock())
    ok = _resume(srv.conn(), token, key)
    assert ok is not None and ok.caps.resumed is not None
    assert ok.caps.resumed[0].rx == 5


def test_input_acks_by_bytes_and_by_delay() -> None:
    h = ready()
    open_channel(h, 1)
    h.send(DataFrame("stdout", 1, b"a" * 100))
    h.session.input_written(1, 100, h.clock())
    assert not [m for m in h.drain() if isinstance(m, Flow)]
    assert h.conn.next_deadline() == pytest.approx(h.clock() + 0.05)
    assert h.tick(0.05) == [Flow(1, 0, 100)]
    h.send(DataFrame("stdout", 1, b"b" * 20000))
    h.session.input_written(1, 20000, h.clock())
    assert h.drain() == [Flow(1, 0, 20100)]


def test_an_ack_past_input_ack_bytes_wakes_the_runtime() -> None:
    """An upload has no output to carry its acks: the ack itself must wake the writer."""
    woken: list[int] = []
    h = ready()
    open_channel(h, 1)
    h.conn._wake_cb = lambda: woken.append(1)
    h.send(DataFrame("stdout", 1, b"b" * 20000))
    woken.clear()
    h.session.input_written(1, 20000, h.clock())
    assert woken, "the ack was queued without waking the runtime"
    assert h.drain() == [Flow(1, 0, 20000)]


def test_file_channels_need_the_config_and_carry_the_size() -> None:
    spec = FileSpec("get", "/srv/a.bin")
    off = ready()
    assert not off.conn.config.allow_files
    got = off.send(Open(1, TARGET, USER, file=spec))
    assert [m for m in got if isinstance(m, OpenErr)] == [
        OpenErr(1, "POLICY_DENIED", "this server does not transfer files")
    ]
    assert [e.kind for e in off.of(PolicyEvent)][-1] == "files_refused"
    assert not off.of(BackendOpen)
    h = ServerHarness(ServerConfig(allow_files=True))
    ok = h.hello()
    assert ok is not None and ok.caps.files
    h.send(Open(1, TARGET, USER, file=spec))
    (bo,) = h.of(BackendOpen)
    assert bo.file == spec and bo.term is None
    h.session.channel_opened(1, file_size=1234)
    (opened,) = [m for m in h.drain() + h.out if isinstance(m, OpenOk)][:1]
    assert opened.size == 1234


def test_sessions_are_isolated() -> None:
    srv = Server()
    a = srv.first
    a.hello("alice")
    open_channel(a, 1, credit=1000)
    b = srv.conn()
    b.hello("bob")
    open_channel(b, 1, credit=1000)
    a.session.backend_output(1, "stdout", b"secret of alice")
    b.session.backend_output(1, "stdout", b"bob's")
    a.drain()
    b.drain()
    assert data_bytes(a.out, 1) == b"secret of alice" and data_bytes(b.out, 1) == b"bob's"


# ------------------------------------------------------------------ fuzzing

ids = st.integers(1, 4)
opens = st.builds(Open, st.integers(3, 6), st.just(TARGET), st.just(USER), st.none() | st.builds(Term, st.integers(1, 300), st.integers(1, 100)))
flows = st.builds(Flow, ids, st.integers(0, 70_000), st.none() | st.none() | st.integers(0, 64))
client_msgs = st.one_of(
    opens,
    flows,
    flows,
    st.builds(DataFrame, st.just("stdout"), ids, st.binary(max_size=64)),
    st.builds(Resize, ids, st.integers(1, 300), st.integers(1, 100)),
    st.builds(Signal, ids, st.sampled_from(["INT", "TERM", "HUP"])),
    st.builds(Close, ids),
    st.builds(Ping, st.integers(0, 10**6)),
    st.builds(Pong, st.integers(0, 10**6)),
)
outputs = st.tuples(st.just("output"), st.tuples(ids, st.sampled_from(["stdout", "stderr"]), st.integers(1, 50_000)))
actions = st.one_of(
    st.tuples(st.just("msg"), client_msgs),
    st.tuples(st.just("msg"), client_msgs),
    st.tuples(st.just("msg"), flows),
    st.tuples(st.just("opened"), ids),
    outputs,
    outputs,
    st.tuples(st.just("failed"), st.integers(3, 6)),
    st.tuples(st.just("exit"), ids),
    st.tuples(st.just("written"), st.tuples(ids, st.integers(0, 100))),
    st.tuples(st.just("tick"), st.floats(0, 30)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=30, max_size=100), st.booleans(), st.none() | st.sampled_from([1000, 1006]))
def test_server_survives_any_sequence_and_never_exceeds_credit(script: list[Any], ack: bool, drop: int | None) -> None:
    """Valid messages in any order: the server never raises, and never sends more than the credit.

    The backend side behaves like a runtime: each ``BackendOpen`` is answered at most
    once (``channel_opened`` or ``channel_open_failed``), a second answer being local
    misuse that raises.
    """
    h = ServerHarness()
    assert h.hello(ack=ack) is not None
    open_channel(h, 1)
    open_channel(h, 2)
    granted: dict[int, int] = {}
    sent: dict[int, int] = {}
    awaiting: set[int] = set()  # channels whose BackendOpen is not answered yet
    seen = len(h.events)
    for kind, arg in script:
        for ev in h.events[seen:]:
            if isinstance(ev, BackendOpen):
                awaiting.add(ev.id)
            elif isinstance(ev, BackendClose):
                awaiting.discard(ev.id)
        seen = len(h.events)
        if not h.conn.live:
            break
        s = h.session
        if kind in ("opened", "failed") and arg not in awaiting:
            continue
        if kind == "msg":
            if isinstance(arg, Flow):
                granted[arg.id] = granted.get(arg.id, 0) + arg.credit
            if isinstance(arg, Close):  # a closed id starts over (it may be reused)
                granted.pop(arg.id, None)
                sent.pop(arg.id, None)
            h.send(arg)
        elif kind == "opened":
            awaiting.discard(arg)
            s.channel_opened(arg)
        elif kind == "failed":
            awaiting.discard(arg)
            s.channel_open_failed(arg, "X", "failed")
        elif kind == "output":
            cid, stream, n = arg
            s.backend_output(cid, stream, bytes(n))
        elif kind == "exit":
            s.backend_exit(arg, 0, None)
        elif kind == "written":
            s.input_written(arg[0], arg[1], h.clock())
        else:
            h.tick(arg)
        for m in h.drain():
            if isinstance(m, DataFrame):
                sent[m.id] = sent.get(m.id, 0) + len(m.payload)
                assert sent[m.id] <= granted.get(m.id, 0), (m.id, sent[m.id], granted.get(m.id))
    if drop is not None:
        h.conn.transport_closed(drop, h.clock())
        h.drain()
        # a client close 1000 ends the session only on a live connection; a protocol
        # error ended it already; after the server's own 4012 it stays retained
        ended = (h.close_code is None and drop == 1000) or h.close_code not in (None, 4012)
        assert len(h.registry) == (0 if ended else 1)
    code = h.close_code
    assert code is None or 4000 <= code <= 4099, code
    event(f"close code {code}")
    event("server sent data" if sum(sent.values()) else "no data sent")


# ------------------------------------------------- rules the core owns (issue #12)


def _peer(srv: Server, ip: str) -> ServerHarness:
    """A connection of ``srv`` from client address ``ip`` (the runtime passes it as ``peer_key``)."""
    h = srv.conn()
    h.registry = srv.registry  # (an empty registry is falsy: the harness would make its own)
    h.conn = ServerConnection(srv.registry, now=h.clock(), subprotocol=h.profile.subprotocols[0], peer_key=ip)
    return h


def _guess(h: ServerHarness) -> None:
    h.send(Hello(auth=Auth("bearer", "t"), caps=HelloCaps("nimbus.v1", ack=True),
                 resume=ResumeRequest("0123456789abcdef.guess", ())))
    if any(isinstance(e, AuthRequested) for e in h.events):
        h.conn.auth_result("alice", h.clock())
        h.drain()


def test_failed_resumes_are_limited_per_peer_before_any_lookup() -> None:
    srv = Server(ServerConfig(resume_failure_limit=3, resume_failure_window=10.0))
    for _ in range(3):
        h = _peer(srv, "10.0.0.1")
        _guess(h)
        assert h.close_code == 4011
    blocked = _peer(srv, "10.0.0.1")
    _guess(blocked)
    assert blocked.close_code == 4004
    assert not blocked.of(AuthRequested)  # refused before authentication and lookup
    assert PolicyEvent("rate_limited", reason="resume") in blocked.events
    other = _peer(srv, "10.0.0.2")  # another address keeps its budget
    _guess(other)
    assert other.close_code == 4011
    fresh = _peer(srv, "10.0.0.1")  # a new session (no resume) is not affected
    assert fresh.hello() is not None
    srv.clock.advance(10.0)  # the window slides past the failures
    later = _peer(srv, "10.0.0.1")
    _guess(later)
    assert later.close_code == 4011


def test_resume_limiter_forgets_the_oldest_peer_and_never_limits_an_unnamed_one() -> None:
    lim = ResumeLimiter(ServerConfig(resume_failure_limit=1, max_resume_peers=2))
    for key in ("a", "b", "c"):
        lim.failed(key, 0.0)
    assert len(lim) == 2 and not lim.blocked("a", 0.0) and lim.blocked("c", 0.0)
    lim.failed("", 0.0)
    assert not lim.blocked("", 0.0) and len(lim) == 2


@pytest.mark.parametrize(
    ("profiles", "offered", "chosen"),
    [
        (None, ["nimbus.ssh.lenpfx.v1", "nimbus.ssh.v1"], "nimbus.ssh.lenpfx.v1"),
        (("nimbus.v1",), ["nimbus.ssh.lenpfx.v1", "nimbus.ssh.v1"], "nimbus.ssh.v1"),
        (("nimbus.v1",), ["nimbus.ssh.lenpfx.v1"], None),  # advertised and selected agree
        (None, ["chat", "superchat"], None),
        (None, [], None),
    ],
)
def test_subprotocol_is_chosen_from_the_offer_and_the_configured_profiles(
    profiles: tuple[str, ...] | None, offered: list[str], chosen: str | None
) -> None:
    config = ServerConfig(profiles=profiles)
    assert select_subprotocol(config, offered) == chosen
    advertised = advertised_subprotocols(config)
    assert chosen is None or chosen in advertised
    if profiles == ("nimbus.v1",):
        assert advertised == ("nimbus.ssh.v1",)


@pytest.mark.parametrize(
    ("before", "message", "reason"),
    [
        ("hello", Open(1, TARGET, USER, None), "the first message must be hello"),
        ("hello", DataFrame("stdout", 1, b"x"), "the first message must be hello"),
        ("auth", Ping(1), "message before hello_ok"),
        ("ready", Hello(caps=HelloCaps("nimbus.v1")), "second hello"),
    ],
)
def test_a_message_the_phase_table_has_no_row_for_closes_4002(before: str, message: Any, reason: str) -> None:
    h = ServerHarness()
    if before == "auth":
        h.send(Hello(caps=HelloCaps("nimbus.v1")))
    elif before == "ready":
        assert h.hello() is not None
    assert h.conn.phase == before
    h.send(message)  # never raises: the miss is the peer's fault
    assert h.close_code == 4002
    assert [e.extras["message"] for e in h.of(Diagnostic) if e.code == "protocol_error"] == [reason]
    assert h.conn.phase is ConnPhase.CLOSED and h.conn.next_deadline() is None


def test_phase_table_rows_and_misses() -> None:
    assert set(PHASE_TRANSITIONS) == set(ConnPhase) and PHASE_TRANSITIONS[ConnPhase.CLOSED] == {}
    assert transition(PHASE_TRANSITIONS, ConnPhase.HELLO, PhaseEvent.HELLO) is ConnPhase.AUTH
    with pytest.raises(IllegalTransition) as info:
        transition(PHASE_TRANSITIONS, ConnPhase.READY, PhaseEvent.HELLO)
    assert (info.value.machine, info.value.state, info.value.event) == ("phase", "ready", "hello")


def test_auth_result_is_local_misuse_outside_auth_and_ignored_after_the_close() -> None:
    h = ServerHarness()
    with pytest.raises(IllegalTransition):
        h.conn.auth_result("alice", h.clock())  # no hello yet
    assert h.hello() is not None
    with pytest.raises(IllegalTransition):
        h.conn.auth_result("alice", h.clock())  # answered twice
    late = ServerHarness()
    late.send(Hello(caps=HelloCaps("nimbus.v1")))
    late.tick(10.0)  # the hello timeout closes while the authenticator runs
    assert late.close_code == 4012
    late.conn.auth_result("alice", late.clock())  # too late: ignored
    assert not late.of(HelloOk)


def _closed_events(h: ServerHarness) -> list[tuple[int | None, str | None]]:
    return [(e.channel, e.reason) for e in h.events if isinstance(e, PolicyEvent) and e.kind == "channel_closed"]


def test_every_channel_removal_goes_through_the_table_and_is_visible() -> None:
    h = ready()
    open_channel(h, 1)
    h.send(Close(1))
    assert _closed_events(h) == [(1, "closed by client")] and BackendClose(1) in h.events
    h.send(Open(2, TARGET, USER, None))
    h.session.channel_open_failed(2, "TARGET_UNREACHABLE", "no")
    h.drain()
    assert _closed_events(h)[-1] == (2, "open failed") and BackendClose(2) not in h.events
    h.send(Open(3, TARGET, USER, None))
    open_channel(h, 4)
    h.conn.close(4004, "bye", h.clock())
    h.drain()
    assert sorted(_closed_events(h)[-2:]) == [(3, "closed with 4004"), (4, "closed with 4004")]
    assert h.session is None and len(h.registry) == 0


def test_a_channel_the_client_did_not_resume_is_closed_visibly() -> None:
    srv, h, token, key = _session_with_channel(ack=True)
    open_channel(h, 2)
    h.conn.transport_closed(1006, srv.clock())
    h2 = srv.conn()
    assert _resume(h2, token, key) is not None  # lists channel 1 only
    assert _closed_events(h2) == [(2, "not resumed")] and BackendClose(2) in h2.events
    assert list(h2.session.channels) == [1]


def test_input_for_an_exited_channel_is_ignored_by_the_table() -> None:
    h = ready()
    open_channel(h, 1, credit=100)
    h.session.backend_exit(1, 0, None)
    h.drain()
    assert h.session.channels[1].state is ChannelState.EXITED
    before = h.conn.stats["ignored"]
    h.send(DataFrame("stdout", 1, b"late"))
    h.send(Resize(1, 80, 24))
    assert h.conn.stats["ignored"] == before + 2
    assert not h.of(BackendInput) and not h.of(BackendResize)
    assert h.close_code is None


def test_credit_granted_while_the_backend_starts_leaves_it_reading() -> None:
    h = ready()
    h.send(Open(1, TARGET, USER, None))
    h.send(Flow(1, 4096))  # before open_ok
    h.session.channel_opened(1)
    h.drain()
    assert [e for e in h.events if isinstance(e, BackendPause)] == [BackendPause(1, False)]
    assert h.session.read_budget(1) == 4096
    with pytest.raises(IllegalTransition):
        h.session.channel_opened(1)  # a second answer is local misuse


def test_a_refused_command_is_a_visible_policy_decision() -> None:
    h = ready(ServerConfig(allow_command=False))
    h.send(Open(1, TARGET, USER, None, "id"))
    assert h.of(OpenErr)[0].code == "POLICY_DENIED"
    assert PolicyEvent("command_refused", channel=1) in h.events
    assert not h.of(BackendOpen) and 1 not in h.session.channels


# ----------------------------------------------------- retained output bound


def _feed_backend(h: ServerHarness, cid: int, chunk: int) -> int:
    """Read the backend as a runtime does: while the budget allows; returns bytes read."""
    total = 0
    while (n := min(chunk, h.session.read_budget(cid))) > 0:
        h.session.backend_output(cid, "stdout", b"x" * n)
        total += n
    h.drain()
    return total


def test_a_client_that_grants_but_never_acks_stalls_at_the_retained_bound() -> None:
    """Under caps.ack output is kept until acknowledged: credit alone must not let it grow."""
    h = ready(ServerConfig(max_retained_output=10_000, max_read=4096))
    open_channel(h, 1)
    for _ in range(20):  # 20 x 4 KiB of credit, never an ack
        h.send(Flow(1, 4096))
        _feed_backend(h, 1, 4096)
    assert len(data_bytes(h.out, 1)) == 10_000  # stopped at the bound, not at 80 KiB of credit
    assert h.session.read_budget(1) == 0
    assert h.events[-1] == BackendPause(1, True) or BackendPause(1, True) in h.events
    assert h.close_code is None  # a stall, not an error
    # Acknowledging what arrived frees the room: reading resumes.
    h.events.clear()
    h.send(Flow(1, 0, 10_000))
    assert BackendPause(1, False) in h.events
    assert _feed_backend(h, 1, 4096) > 0


def test_an_acking_client_never_meets_the_retained_bound() -> None:
    h = ready(ServerConfig(max_retained_output=10_000, max_read=4096))
    open_channel(h, 1)
    sent = 0
    for _ in range(50):
        h.send(Flow(1, 4096, sent))  # each grant acknowledges everything received
        _feed_backend(h, 1, 4096)
        sent = len(data_bytes(h.out, 1))
    assert sent == 50 * 4096
