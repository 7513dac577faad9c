"""Issue 13 item 16: input that arrives while a channel's backend starts.

``open cat``, ``"early\\n"`` before ``open_ok``, ``"late\\n"`` after: both reach the
backend, in order, and under ``caps.ack`` the acks cover exactly the bytes the
backend reported written -- never a held byte, never a dropped one.  Scripted
frames into the core's server machines with an injected clock (no sockets).
The same against the real server: tests/server/test_channel_lifecycle.py.
"""

from __future__ import annotations

from typing import Any

from nimbus_websocket.core import (
    BackendClose,
    BackendEof,
    BackendInput,
    BackendOpen,
    BackendPause,
    BackendResize,
    BackendSignal,
    Close,
    DataFrame,
    Flow,
    Open,
    OpenOk,
    Resize,
    ResumeChannel,
    ResumeRequest,
    ServerConfig,
    Signal,
    Target,
    User,
)
from nimbus_websocket.core.messages import Eof
from nimbus_websocket.core.server_session import MAX_EARLY_CONTROLS

try:
    from support.memory import ServerHarness
except ImportError:  # pragma: no cover
    from tests.support.memory import ServerHarness

TARGET = Target("localhost", 22)
USER = User("alice")
DELAY = ServerConfig().input_ack_delay

_BACKEND = (BackendInput, BackendResize, BackendSignal, BackendEof, BackendPause, BackendClose, BackendOpen)


def ready(config: ServerConfig | None = None, *, ack: bool = True) -> ServerHarness:
    h = ServerHarness(config)
    assert h.hello(ack=ack) is not None
    return h


def backend_events(h: ServerHarness, start: int = 0) -> list[Any]:
    return [e for e in h.events[start:] if isinstance(e, _BACKEND)]


def acks(h: ServerHarness, cid: int = 1) -> list[int]:
    return [m.ack for m in h.out if isinstance(m, Flow) and m.id == cid and m.ack is not None]


def written(h: ServerHarness, cid: int, n: int) -> None:
    """The backend reports ``n`` input bytes written (what the runtime does)."""
    h.session.input_written(cid, n, h.clock())
    h.drain()


def test_early_input_is_delivered_after_open_ok_in_order_and_acked_only_when_written() -> None:
    h = ready()
    h.send(Open(1, TARGET, USER, command="cat"))
    h.send(DataFrame("stdout", 1, b"early\n"))
    assert not h.of(BackendInput)  # held: the backend is not up yet
    h.tick(DELAY * 4)
    assert acks(h) == []  # nothing is acknowledged before it was written
    mark = len(h.events)
    h.session.channel_opened(1)
    h.drain()
    assert isinstance(h.out[-1], OpenOk)
    assert backend_events(h, mark) == [BackendPause(1, True), BackendInput(1, b"early\n")]
    h.send(Flow(1, 1024))
    h.send(DataFrame("stdout", 1, b"late\n"))
    assert h.of(BackendInput) == [BackendInput(1, b"early\n"), BackendInput(1, b"late\n")]
    h.tick(DELAY * 4)
    assert acks(h) == []  # received is not written
    written(h, 1, 6)
    h.tick(DELAY)
    assert acks(h) == [6]
    written(h, 1, 5)
    h.tick(DELAY)
    assert acks(h) == [6, 11]
    ch = h.session.channels[1]
    assert (ch.rx, ch.written, ch.acked) == (11, 11, 11)
    assert h.close_code is None and h.conn.stats["ignored"] == 0


def test_early_controls_keep_their_place_and_resize_coalesces() -> None:
    h = ready()
    h.send(Open(1, TARGET, USER))
    for m in (
        Resize(1, 100, 30),
        DataFrame("stdout", 1, b"a"),
        Signal(1, "INT"),
        Resize(1, 120, 40),  # replaces the first: only the latest size matters
        DataFrame("stdout", 1, b"b"),
        Eof(1),
    ):
        h.send(m)
    assert not [e for e in backend_events(h) if not isinstance(e, BackendOpen)]
    h.session.channel_opened(1)
    h.drain()
    assert [e for e in backend_events(h) if not isinstance(e, (BackendOpen, BackendPause))] == [
        BackendInput(1, b"a"),
        BackendSignal(1, "INT"),
        BackendResize(1, 120, 40),
        BackendInput(1, b"b"),
        BackendEof(1),
    ]


def test_early_input_is_bounded_by_the_input_buffer() -> None:
    h = ready(ServerConfig(max_input_buffer=16))
    h.send(Open(1, TARGET, USER))
    h.send(DataFrame("stdout", 1, b"x" * 16))
    assert h.close_code is None
    h.send(DataFrame("stdout", 1, b"y"))
    assert h.close_code == 4007


def test_early_signals_are_bounded() -> None:
    h = ready(ServerConfig(control_burst=1000, control_rate=1000.0))
    h.send(Open(1, TARGET, USER))
    for _ in range(MAX_EARLY_CONTROLS):
        h.send(Signal(1, "INT"))
    for _ in range(10):
        h.send(Resize(1, 80, 24))  # coalesced: never counts past one
    assert h.close_code is None
    h.send(Eof(1))
    assert h.close_code == 4007


def test_held_input_of_a_channel_closed_while_opening_never_reaches_a_reopened_id() -> None:
    h = ready()
    h.send(Open(1, TARGET, USER))
    h.send(DataFrame("stdout", 1, b"first"))
    h.send(Close(1))
    assert BackendClose(1) in h.events
    h.send(Open(1, TARGET, USER, command="echo second"))
    h.send(DataFrame("stdout", 1, b"second"))
    h.session.channel_opened(1)
    h.drain()
    assert h.of(BackendInput) == [BackendInput(1, b"second")]
    assert h.session.channels[1].rx == len(b"second")  # counters start again with the channel


def test_held_input_is_discarded_with_open_err() -> None:
    h = ready()
    h.send(Open(1, TARGET, USER))
    h.send(DataFrame("stdout", 1, b"lost with the channel"))
    h.session.channel_open_failed(1, "TARGET_UNREACHABLE", "no")
    h.drain()
    assert not h.of(BackendInput) and 1 not in h.session.channels


def test_input_after_exit_is_discarded_and_counted_as_consumed() -> None:
    # Unchanged rule: no process is left to read it, so a resend could not help.
    h = ready()
    h.send(Open(1, TARGET, USER))
    h.session.channel_opened(1)
    h.session.backend_exit(1, 0, None)
    h.drain()
    h.send(DataFrame("stdout", 1, b"too late"))
    assert not h.of(BackendInput) and h.conn.stats["ignored"] == 1
    ch = h.session.channels[1]
    assert ch.rx == ch.written == len(b"too late")


def test_a_resume_while_opening_keeps_the_held_input() -> None:
    h = ServerHarness()
    ok = h.hello(ack=True)
    assert ok is not None and ok.resume is not None
    h.send(Open(1, TARGET, USER))
    h.send(DataFrame("stdout", 1, b"held"))
    h.conn.transport_closed(1006, h.clock())
    h.drain()
    h2 = ServerHarness(registry=h.registry, clock=h.clock)
    ch = next(iter(h.registry.sessions())).channels[1]
    back = h2.hello(ack=True, resume=ResumeRequest(ok.resume.token, (ResumeChannel(1, ch.resume_key, 0),)))
    assert back is not None and back.caps.resumed is not None
    assert [(r.id, r.rx) for r in back.caps.resumed] == [(1, 4)]  # received, and still to be delivered
    h2.session.channel_opened(1)
    h2.drain()
    assert h2.of(BackendInput) == [BackendInput(1, b"held")]
