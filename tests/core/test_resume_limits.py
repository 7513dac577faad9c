"""Issue 13 item 11 in the core: failed resumes that cannot revoke a victim's
session, and a per-prefix budget that rotating source addresses cannot
bypass.  Fake clock, no sockets (the attacks against the real server:
tests/server/test_security_resume.py).
"""

from __future__ import annotations

import pytest
from nimbus_websocket.core import (
    Auth,
    AuthRequested,
    CloseTransport,
    Hello,
    HelloCaps,
    HelloOk,
    Open,
    OpenOk,
    ResumeChannel,
    ResumeRequest,
    ServerConfig,
    Target,
    User,
)
from nimbus_websocket.core.registry import LOOPBACK_PREFIX, ResumeLimiter, peer_prefix
from nimbus_websocket.core.server import ServerConnection

try:
    from support.memory import FakeClock, ServerHarness
except ImportError:  # pragma: no cover
    from tests.support.memory import FakeClock, ServerHarness


class _Srv:
    """One registry and clock shared by several harnesses, each from a chosen peer address."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.clock = FakeClock()
        self.first = ServerHarness(config, clock=self.clock)
        self.registry = self.first.registry

    def conn(self, ip: str = "198.51.100.1") -> ServerHarness:
        h = ServerHarness(registry=self.registry, clock=self.clock)
        h.conn = ServerConnection(
            self.registry, now=self.clock(), subprotocol=h.profile.subprotocols[0], peer_key=ip
        )
        return h


def _victim(config: ServerConfig | None = None) -> tuple[_Srv, str, str]:
    """A session of ``alice`` with channel 1, its connection lost: ``(server, token, resumeKey)``."""
    srv = _Srv(config)
    h = srv.first
    ok = h.hello("alice")
    assert ok is not None and ok.resume is not None
    h.send(Open(1, Target("localhost", 22), User("alice"), None))
    h.session.channel_opened(1)
    h.drain()
    key = h.of(OpenOk)[0].resume_key
    h.conn.transport_closed(1006, srv.clock())
    h.drain()
    return srv, ok.resume.token, key


def _try(srv: _Srv, token: str, key: str, principal: str = "alice", ip: str = "198.51.100.1") -> tuple[int | None, str]:
    """One resume attempt: ``(close code or None when resumed, close reason)``."""
    h = srv.conn(ip)
    h.send(Hello(auth=Auth("bearer", "t"), caps=HelloCaps("nimbus.v1", True),
                 resume=ResumeRequest(token, (ResumeChannel(1, key, 0),))))
    if h.of(AuthRequested):  # (a rate-limited peer is refused before authentication)
        h.conn.auth_result(principal, srv.clock())
        h.drain()
    if h.of(HelloOk):
        h.conn.transport_closed(1006, srv.clock())  # drop it again: the session stays resumable
        h.drain()
        return None, ""
    (close,) = [e for e in h.events if isinstance(e, CloseTransport)]
    return close.code, close.reason


def _wrong(token: str, n: int = 0) -> str:
    return token.split(".")[0] + "." + (f"{n:02d}" + "A" * 41)


# ------------------------------------------------------------- peer_prefix


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("127.0.0.1", LOOPBACK_PREFIX),
        ("127.0.0.2", LOOPBACK_PREFIX),
        ("127.255.255.254", LOOPBACK_PREFIX),
        ("::1", LOOPBACK_PREFIX),
        ("[::1]", LOOPBACK_PREFIX),
        ("::ffff:127.0.0.9", LOOPBACK_PREFIX),  # a dual-stack socket's view of 127.0.0.9
        ("198.51.100.7", "198.51.100.7/32"),
        ("::ffff:198.51.100.7", "198.51.100.7/32"),  # IPv4-mapped: the IPv4 key
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("[2001:db8:1:3::1]", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", ""),  # not named: never limited
        ("unix:/run/nimbus.sock", "unix:/run/nimbus.sock"),  # no address: its own key
    ],
)
def test_peer_prefix(ip: str, key: str) -> None:
    assert peer_prefix(ip) == key


# ----------------------------------------------------------- ResumeLimiter


def test_rotating_loopback_sources_share_one_budget() -> None:
    lim = ResumeLimiter(ServerConfig(resume_failure_limit=5, resume_failure_window=60.0))
    for i in range(2, 7):
        assert not lim.blocked(f"127.0.0.{i}", 0.0)
        lim.failed(f"127.0.0.{i}", 0.0)
    assert lim.blocked("127.0.0.20", 0.0) and lim.blocked("::1", 0.0) and lim.blocked("::ffff:127.0.0.1", 0.0)
    assert len(lim) == 1
    assert not lim.blocked("198.51.100.1", 0.0)  # another machine keeps its budget


def test_an_ipv6_slash64_is_one_peer_and_mapped_ipv4_is_ipv4() -> None:
    lim = ResumeLimiter(ServerConfig(resume_failure_limit=3, resume_failure_window=60.0))
    for host in ("2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:dead:beef:0:1"):
        lim.failed(host, 0.0)
    assert lim.blocked("2001:db8:0:1::99", 0.0)
    assert not lim.blocked("2001:db8:0:2::1", 0.0)  # the next /64 is someone else
    for _ in range(3):
        lim.failed("::ffff:203.0.113.5", 0.0)
    assert lim.blocked("203.0.113.5", 0.0) and not lim.blocked("203.0.113.6", 0.0)


def test_the_budget_slides_with_the_injected_clock() -> None:
    clock = FakeClock(0.0)
    lim = ResumeLimiter(ServerConfig(resume_failure_limit=3, resume_failure_window=10.0))
    for _ in range(3):
        lim.failed("127.0.0.5", clock())
        clock.advance(1.0)
    assert lim.blocked("127.0.0.6", clock())  # t=3: three failures within 10 s
    clock.advance(7.0)  # t=10: the first failure (t=0) left the window
    assert not lim.blocked("127.0.0.6", clock())
    lim.failed("127.0.0.7", clock())
    assert lim.blocked("127.0.0.1", clock())
    clock.advance(100.0)
    assert not lim.blocked("127.0.0.1", clock()) and len(lim) == 0  # an empty entry is dropped


def test_the_table_is_bounded_and_forgets_the_stalest_prefix() -> None:
    lim = ResumeLimiter(ServerConfig(resume_failure_limit=2, resume_failure_window=60.0, max_resume_peers=3))
    assert lim.max_size == 3
    lim.failed("203.0.113.1", 0.0)
    for i in range(1000):  # an attacker with many addresses cannot grow the table
        lim.failed(f"2001:db8:{i:x}::1", 0.0)
        lim.failed("203.0.113.1", 0.0)  # a prefix that keeps failing stays (least recently failing goes)
        assert len(lim) <= 3
    assert lim.blocked("203.0.113.1", 0.0)
    assert len(lim) == 3
    assert not lim.blocked("2001:db8:0::1", 0.0)  # long forgotten


# ------------------------------------------------- another principal's tries


def test_another_principal_cannot_revoke_a_victims_session() -> None:
    srv, token, key = _victim()
    for n in range(10):  # twice max_resume_failures
        assert _try(srv, _wrong(token, n), key, principal="mallory")[0] == 4011
    assert _try(srv, token, key, principal="mallory")[0] == 4011  # even the right secret: not hers
    (s,) = srv.registry.sessions()
    assert s.failures == 0
    assert _try(srv, token, key)[0] is None  # alice resumes


def test_the_owners_wrong_secrets_still_revoke() -> None:
    srv, token, key = _victim()
    for n in range(5):
        assert _try(srv, _wrong(token, n), key)[0] == 4011
    assert _try(srv, token, key)[0] == 4011  # revoked


def test_a_refusal_does_not_confirm_that_a_session_id_exists() -> None:
    srv, token, key = _victim()
    sid = token.split(".")[0]
    unknown_sid = ("0" if sid[0] != "0" else "1") + sid[1:]
    answers = {
        "unknown id": _try(srv, unknown_sid + "." + token.split(".")[1], key, principal="mallory"),
        "foreign principal, wrong secret": _try(srv, _wrong(token), key, principal="mallory"),
        "foreign principal, right secret": _try(srv, token, key, principal="mallory"),
        "malformed": _try(srv, "garbage", key, principal="mallory"),
    }
    assert len(set(answers.values())) == 1, answers
    assert next(iter(answers.values()))[0] == 4011


def test_another_principals_failures_count_against_its_own_prefix() -> None:
    srv, token, key = _victim(ServerConfig(resume_failure_limit=4, resume_failure_window=60.0))
    for i in range(4):  # rotating loopback sources: one key
        assert _try(srv, _wrong(token, i), key, principal="mallory", ip=f"127.0.0.{i + 2}")[0] == 4011
    assert _try(srv, _wrong(token), key, principal="mallory", ip="127.0.0.20")[0] == 4004
    assert _try(srv, token, key, ip="198.51.100.1")[0] is None  # alice elsewhere: unaffected
