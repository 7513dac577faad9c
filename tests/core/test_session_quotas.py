"""Issue 13 item 8 in the core: one client cannot fill the session table, and a
session with nothing in it is not kept for the whole retention window.
Fake clock, no sockets (the connection-level limits against the real server:
tests/server/test_security_limits.py).
"""

from __future__ import annotations

from nimbus_websocket.core import Open, ServerConfig, Target, User
from nimbus_websocket.core.errors import CloseCode
from nimbus_websocket.core.registry import SessionRegistry
from nimbus_websocket.core.server import ServerConnection

try:
    from support.memory import FakeClock, ServerHarness
except ImportError:  # pragma: no cover
    from tests.support.memory import FakeClock, ServerHarness


def _from(registry: SessionRegistry, clock: FakeClock, ip: str) -> ServerHarness:
    h = ServerHarness(registry=registry, clock=clock)
    h.conn = ServerConnection(registry, now=clock(), subprotocol=h.profile.subprotocols[0], peer_key=ip)
    return h


def test_one_principal_holds_at_most_its_share_and_others_still_get_in() -> None:
    config = ServerConfig(max_sessions=10, max_sessions_per_principal=3, max_sessions_per_peer=0)
    clock = FakeClock()
    registry = SessionRegistry(config)
    for i in range(3):
        assert _from(registry, clock, f"198.51.100.{i}").hello("mallory") is not None
    h = _from(registry, clock, "198.51.100.9")
    assert h.hello("mallory") is None and h.close_code == CloseCode.SERVER_OVERLOAD
    assert _from(registry, clock, "198.51.100.9").hello("alice") is not None
    assert len(registry) == 4


def test_one_peer_prefix_holds_at_most_its_share_whatever_the_principal() -> None:
    config = ServerConfig(max_sessions=10, max_sessions_per_principal=0, max_sessions_per_peer=2)
    clock = FakeClock()
    registry = SessionRegistry(config)
    assert _from(registry, clock, "2001:db8:0:1::1").hello("a") is not None
    assert _from(registry, clock, "2001:db8:0:1::2").hello("b") is not None
    h = _from(registry, clock, "2001:db8:0:1::3")  # the same /64
    assert h.hello("c") is None and h.close_code == CloseCode.SERVER_OVERLOAD
    assert _from(registry, clock, "2001:db8:0:2::1").hello("c") is not None  # the next /64
    # a share frees when a session ends
    first = registry.sessions()[0]
    first.destroy("test")
    assert _from(registry, clock, "2001:db8:0:1::3").hello("c") is not None


def test_a_session_without_channels_is_kept_briefly_one_with_channels_for_the_retention() -> None:
    config = ServerConfig(retention=60.0, empty_retention=5.0)
    clock = FakeClock()
    registry = SessionRegistry(config)
    empty = _from(registry, clock, "198.51.100.1")
    assert empty.hello("alice") is not None
    busy = _from(registry, clock, "198.51.100.2")
    assert busy.hello("bob") is not None
    busy.send(Open(1, Target("localhost", 22), User("bob"), None))
    busy.session.channel_opened(1)
    busy.drain()
    empty_s, busy_s = empty.session, busy.session
    empty.conn.transport_closed(1006, clock())
    busy.conn.transport_closed(1006, clock())
    assert empty_s.expires_at == clock() + 5.0
    assert busy_s.expires_at == clock() + 60.0
    clock.advance(5.0)
    assert [s.principal for s in registry.expire(clock())] == ["alice"]
    assert [s.principal for s in registry.sessions()] == ["bob"]
