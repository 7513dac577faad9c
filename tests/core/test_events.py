"""Events are typed with the core's enums, and their dict keys are snake_case.

A full scripted session (client and server machines wired in memory, plus
the failure paths a scripted peer provokes) collects every event both sides
emit; each observation must carry enum members -- ``ConnState`` states,
``ErrorCode`` codes, ``PolicyKind`` kinds, ``DiagPhase`` phases -- and
snake_case extras.  A source check makes the same claim for every event the
core builds, including paths the session does not reach.  The conversion to
the camelCase JSON the JavaScript facade sees is tested with the bridge in
``tests/web/test_web_units.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from nimbus_websocket.core import (
    ChannelClosed,
    ChannelOpenFailed,
    ClientOptions,
    ConnectionClosed,
    DataFrame,
    Diagnostic,
    DiagPhase,
    ErrorCode,
    Hello,
    OpenErr,
    OpenOk,
    PolicyEvent,
    PolicyKind,
    ServerConfig,
    StateChanged,
    Target,
    Term,
    User,
)
from nimbus_websocket.core.state import ConnState

try:
    from support.memory import ClientHarness, MemoryPair, ServerHarness
except ImportError:  # pragma: no cover
    from tests.support.memory import ClientHarness, MemoryPair, ServerHarness

ROOT = Path(__file__).resolve().parents[2]
TARGET = Target("localhost", 22)
USER = User("alice")
KIB = 1 << 10
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def _scripted_session() -> list[Any]:
    """Every event of a session that goes through most of what the machines do."""
    pair = MemoryPair(ClientOptions(ping_on_ready=True), ServerConfig(allow_command=False))
    pair.connect()
    c = pair.client
    cid = c.open_channel(TARGET, USER, Term(80, 24))
    pair.pump()
    c.send_input(cid, b"hello\n")
    pair.emit(cid, bytes(300 * KIB))  # more than a window: credit is granted
    pair.pump()
    c.resize(cid, 100, 30, pair.clock())  # sent
    c.resize(cid, 110, 31, pair.clock())  # due after resize_interval
    c.resize(cid, 120, 32, pair.clock())  # replaces the pending one: coalesced
    pair.advance(0.1)
    pair.pump()
    c.page_visibility(True, pair.clock())  # pause "visibility", persist
    pair.pump()
    pair.advance(25.0)  # longer than a heartbeat interval: suspect on return
    pair.pump()
    c.page_visibility(False, pair.clock())  # verify: ping; the pong proves it alive
    pair.pump()
    c.set_buffered_amount(c.options.high_water_mark + 1, pair.clock())
    c.set_buffered_amount(0, pair.clock())
    pair.pump()
    cmd = c.open_channel(TARGET, USER, command="true")  # the server runs no commands
    pair.pump()
    pair.cut()  # lost: reconnect and resume
    pair.run_until_ready()
    pair.emit(cid, b"bye")
    pair.exit_backend(cid, 3)
    pair.pump()
    c.close(pair.clock())
    pair.pump()
    events = pair.client_events + pair.server_events
    assert any(isinstance(e, ChannelOpenFailed) and e.id == cmd for e in events)

    # The failure paths: a scripted server breaking the contract, an unknown open_err code.
    h = ClientHarness()
    h.connect()
    bad = h.client.open_channel(TARGET, USER)
    h.drain()
    h.feed(OpenErr(bad, "SOMETHING_NEW", "refused"))
    ok = h.client.open_channel(TARGET, USER)
    h.drain()
    h.feed(OpenOk(ok, "key"))
    h.feed(DataFrame("stdout", ok, bytes(2 * (1 << 20))))  # beyond the window: 4007
    events += h.events

    # The server: a message before hello, then a refused resume.
    s = ServerHarness()
    s.send(DataFrame("stdout", 1, b"x"))
    s.drain()
    events += s.events
    s = ServerHarness()
    s.send(Hello(resume=None))
    s.drain()
    events += s.events
    return events


def test_every_event_of_a_session_is_enum_typed_with_snake_case_extras() -> None:
    events = _scripted_session()
    phases: set[DiagPhase] = set()
    kinds: set[PolicyKind] = set()
    for ev in events:
        match ev:
            case Diagnostic():
                assert type(ev.phase) is DiagPhase, ev
                phases.add(ev.phase)
                bad = [k for k in ev.to_dict() if not SNAKE.match(k)]
                assert not bad, (ev.code, bad)
            case PolicyEvent():
                assert type(ev.kind) is PolicyKind, ev
                kinds.add(ev.kind)
            case StateChanged():
                assert type(ev.old) is ConnState and type(ev.new) is ConnState, ev
            case ChannelOpenFailed():
                assert type(ev.code) is ErrorCode, ev
            case ChannelClosed():
                assert ev.error is None or type(ev.error) is ErrorCode, ev
            case ConnectionClosed():
                assert ev.error is None or type(ev.error.code) is ErrorCode, ev
    # The session really went through the paths it claims to cover.
    assert phases >= {
        DiagPhase.HANDSHAKE,
        DiagPhase.TRANSPORT,
        DiagPhase.CONNECTION,
        DiagPhase.RECONNECT,
        DiagPhase.RESUME,
        DiagPhase.FLOW,
        DiagPhase.PROTOCOL,
    }, phases
    assert kinds >= {
        PolicyKind.CREDIT_GRANT,
        PolicyKind.FLOW_PAUSE,
        PolicyKind.FLOW_RESUME,
        PolicyKind.RESIZE_COALESCED,
        PolicyKind.CHANNEL_CLOSED,
    }, kinds
    codes = {ev.code: ev for ev in events if isinstance(ev, Diagnostic)}
    assert {"buffered_amount", "rtt_ms", "ws_code"} <= set(codes["transport_closed"].extras)
    assert "hidden_ms" in codes["connection_suspect"].extras
    assert "waited_ms" in codes["connection_verified"].extras
    assert "delay_ms" in codes["reconnect_scheduled"].extras
    assert "close_code" in codes["protocol_error"].extras


def test_an_unknown_open_err_code_is_unknown_and_named_in_the_message() -> None:
    h = ClientHarness()
    h.connect()
    cid = h.client.open_channel(TARGET, USER)
    h.drain()
    h.feed(OpenErr(cid, "SOMETHING_NEW", "refused"))
    (failed,) = h.of(ChannelOpenFailed)
    assert failed == ChannelOpenFailed(cid, ErrorCode.UNKNOWN, "SOMETHING_NEW: refused")
    h2 = ClientHarness()
    h2.connect()
    cid = h2.client.open_channel(TARGET, USER)
    h2.drain()
    h2.feed(OpenErr(cid, "TARGET_UNREACHABLE", "no route"))
    (failed,) = h2.of(ChannelOpenFailed)
    assert failed.code is ErrorCode.TARGET_UNREACHABLE and failed.msg == "no route"


def test_enum_values_keep_the_public_names() -> None:
    """StrEnum members compare equal to, and serialise as, the names JSON always had."""
    assert PolicyKind.CREDIT_GRANT == "credit_grant" and DiagPhase.HANDSHAKE == "handshake"
    ev = PolicyEvent(PolicyKind.FLOW_PAUSE, None, "visibility")
    assert ev.to_dict() == {"kind": "flow_pause", "channel": None, "reason": "visibility", "value": None}
    assert type(ev.to_dict()["kind"]) is PolicyKind  # json.dumps writes "flow_pause"


# ------------------------------------------------------------ source check

#: Call name -> index of the positional argument that must be an enum member.
_TYPED_ARGS = {"PolicyEvent": 0, "_policy": 0, "Diagnostic": 1, "_diag": 1, "runtime_diagnostic": 0}


def _string_literals(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_the_core_and_runtimes_build_events_with_enum_members_only() -> None:
    """No ``PolicyEvent("...")`` / ``_diag(now, "...")``: every kind and phase is a member."""
    files = sorted((ROOT / "core").rglob("*.py")) + sorted((ROOT / "web_runtime").glob("*.py"))
    offenders: list[str] = []
    seen = 0
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            index = _TYPED_ARGS.get(name)
            if index is None or len(node.args) <= index:
                continue
            seen += 1
            literals = _string_literals(node.args[index])
            if literals:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}({literals})")
    assert seen > 30, seen  # the check really found the producers
    assert not offenders, offenders
