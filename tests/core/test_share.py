"""Share links in the sans-I/O core (fake clock, no sockets): grants, viewer sessions, revocation.

The system claims (screens, credit, Chromium) are tests/server/test_server_share.py
and tests/e2e/test_page_share.py; this is the core's bookkeeping.
"""

from __future__ import annotations

import pytest
from nimbus_websocket.core import (
    BackendInput,
    BackendOpen,
    BackendResize,
    BackendSignal,
    DataFrame,
    Flow,
    Open,
    OpenErr,
    PolicyEvent,
    Resize,
    ServerConfig,
    Signal,
    Target,
    Term,
    User,
    ctl_from_dict,
    ctl_to_dict,
)
from nimbus_websocket.core.events import PolicyKind
from nimbus_websocket.core.messages import (
    FileSpec,
    Share,
    ShareErr,
    ShareOk,
    Unshare,
    ViewerInfo,
    Viewers,
)
from nimbus_websocket.core.share import (
    MAX_GRANTS_PER_CHANNEL,
    MAX_VIEWERS_PER_GRANT,
    ShareBook,
    ShareMode,
)

try:
    from support.memory import FakeClock, ServerHarness
except ImportError:  # pragma: no cover
    from tests.support.memory import FakeClock, ServerHarness

T = Target("localhost", 22)
U = User("alice")
CFG = ServerConfig(allow_share=True)


def owner(clock: FakeClock | None = None) -> ServerHarness:
    h = ServerHarness(CFG, clock=clock)
    ok = h.hello()
    assert ok is not None and ok.caps.share and ok.caps.view is None
    h.send(Open(1, T, U, Term(80, 24, {})))
    h.session.channel_opened(1)
    h.drain()
    return h


def share(
    h: ServerHarness, mode: str = "read", ttl: int | None = None, cid: int = 1
) -> ShareOk | ShareErr:
    got = [
        m
        for m in h.send(Share(cid, "read" if mode == "read" else "write", 5, ttl))
        if isinstance(m, (ShareOk, ShareErr))
    ]
    assert len(got) == 1 and got[0].ref == 5
    return got[0]


def viewer(h: ServerHarness, token: str) -> ServerHarness:
    v = ServerHarness(registry=h.registry, clock=h.clock)
    grant = h.registry.shares.verify(token, h.clock())
    assert grant is not None
    from nimbus_websocket.core import Auth, Hello, HelloCaps

    v.send(Hello(auth=Auth("bearer", token), caps=HelloCaps(profile=v.profile.id, ack=True)))
    v.conn.auth_result(f"share:{grant.gid}", v.clock(), view=grant)
    v.drain()
    return v


def test_messages_round_trip() -> None:
    for m in (
        Share(1, "write", 2, 60),
        ShareOk(1, 2, "abc", "nshare.abc.x", "read", 123),
        ShareErr(1, 2, "CHANNEL_LIMIT", "too many"),
        Unshare(1),
        Unshare(1, "abc"),
        Viewers(1, (ViewerInfo("abc", "read", "1.2.3.4:5", 9),)),
    ):
        assert ctl_from_dict(ctl_to_dict(m)) == m


def test_a_grant_is_verified_in_constant_time_and_expires() -> None:
    book = ShareBook()
    g = book.create("sid", 1, ShareMode.READ, 10, now=100.0)
    assert book.verify(g.token, 105.0) is g
    assert book.verify(g.token[:-1] + ("A" if g.token[-1] != "A" else "B"), 105.0) is None
    assert (
        book.verify("nshare.unknown.secret", 105.0) is None
        and book.verify("garbage", 105.0) is None
    )
    assert book.verify(g.token, 110.0) is None  # expired
    assert book.expire(110.0) == [g] and len(book) == 0
    long = book.create("sid", 1, ShareMode.READ, 10**9, now=0.0)
    assert long.expires_at == 24 * 3600  # capped


def test_share_ok_then_viewer_session_sees_only_the_view() -> None:
    h = owner()
    ok = share(h, "read", 600)
    assert isinstance(ok, ShareOk) and ok.expires == int((h.clock() + 600) * 1000)
    v = viewer(h, ok.token)
    hello_ok = v.out[0]
    assert hello_ok.caps.view == "read" and not hello_ok.caps.share and not hello_ok.caps.files
    v.send(Open(1, T, User("bob"), Term(80, 24, {})))
    (bo,) = v.of(BackendOpen)
    assert v.session.view is not None and v.session.view.gid == ok.grant
    v.session.channel_opened(1)
    v.drain()
    # A second channel, a command or a file: refused.
    for extra in ({}, {"command": "id"}, {"file": FileSpec("get", "/etc/passwd")}):
        got = v.send(Open(2, T, U, None if extra else Term(80, 24, {}), **extra))
        assert [m.code for m in got if isinstance(m, OpenErr)] == ["POLICY_DENIED"], extra
    # Read-only: input, signal, eof, and any resize are policy events, nothing reaches a backend.
    before = len(v.of(BackendInput)) + len(v.of(BackendSignal)) + len(v.of(BackendResize))
    v.send(DataFrame("stdout", 1, b"rm -rf /\n"))
    v.send(Signal(1, "INT"))
    v.send(Resize(1, 10, 10))
    assert len(v.of(BackendInput)) + len(v.of(BackendSignal)) + len(v.of(BackendResize)) == before
    kinds = [e.reason for e in v.of(PolicyEvent) if e.kind == PolicyKind.VIEW_REFUSED]
    assert kinds[-3:] == ["input", "signal", "resize"]
    assert v.conn.ready  # no disconnect
    # A viewer cannot share.
    got = v.send(Share(1, "read", 1))
    assert [m.code for m in got if isinstance(m, ShareErr)] == ["POLICY_DENIED"]
    # The owner's size reaches the viewer as an s->c resize.
    v.session.view_resized(1, 120, 40)
    assert Resize(1, 120, 40) in v.drain()


def test_a_write_viewer_types_but_never_resizes() -> None:
    h = owner()
    ok = share(h, "write")
    assert isinstance(ok, ShareOk)
    v = viewer(h, ok.token)
    v.send(Open(1, T, U, Term(80, 24, {})))
    v.session.channel_opened(1)
    v.drain()
    v.send(DataFrame("stdout", 1, b"ls\n"))
    v.send(Resize(1, 10, 10))
    assert [e.data for e in v.of(BackendInput)] == [b"ls\n"] and not v.of(BackendResize)


def test_unshare_expiry_and_channel_end_close_viewers_with_4016() -> None:
    clock = FakeClock()
    h = owner(clock)
    a, b, c = share(h), share(h, ttl=5), share(h)
    assert isinstance(a, ShareOk) and isinstance(b, ShareOk) and isinstance(c, ShareOk)
    va, vb, vc = viewer(h, a.token), viewer(h, b.token), viewer(h, c.token)
    sessions = {id(v.session) for v in (va, vb, vc)}
    sa = va.session
    h.send(Unshare(1, a.grant))
    assert va.conn.close_code == 4016 and sa.destroyed
    assert vb.conn.close_code is None and h.registry.shares.verify(a.token, clock()) is None
    clock.advance(6)
    h.registry.expire(clock())
    assert vb.conn.close_code == 4016 and vc.conn.close_code is None
    h.session.receive_close(1)  # the owner's terminal ends
    assert vc.conn.close_code == 4016 and len(h.registry.shares) == 0
    touched = h.registry.drain_touched()
    assert {id(s) for s in touched} == sessions
    reasons = [e.reason or "" for e in h.registry.events() if e.kind == PolicyKind.SHARE_REVOKED]
    assert any("revoked by its owner" in r for r in reasons) and any(
        "expired" in r for r in reasons
    )
    assert any("ended" in r for r in reasons)


def test_limits_and_refusals() -> None:
    h = owner()
    for _ in range(MAX_GRANTS_PER_CHANNEL):
        assert isinstance(share(h), ShareOk)
    over = share(h)
    assert isinstance(over, ShareErr) and over.code == "CHANNEL_LIMIT"
    assert isinstance(share(h, cid=9), ShareErr)  # no such channel
    one = h.registry.shares.of_channel(h.session.sid, 1)[0]
    for _ in range(MAX_VIEWERS_PER_GRANT):
        viewer(h, one.token)
    extra = ServerHarness(registry=h.registry, clock=h.clock)
    from nimbus_websocket.core import Auth, Hello, HelloCaps

    extra.send(Hello(auth=Auth("bearer", one.token), caps=HelloCaps(profile=extra.profile.id)))
    extra.conn.auth_result(f"share:{one.gid}", extra.clock(), view=one)
    assert extra.conn.close_code == 4010
    off = ServerHarness()
    ok = off.hello()
    assert ok is not None and not ok.caps.share
    off.send(Open(1, T, U, Term(80, 24, {})))
    off.session.channel_opened(1)
    off.drain()
    got = off.send(Share(1, "read", 5))
    assert [m.code for m in got if isinstance(m, ShareErr)] == ["POLICY_DENIED"]


@pytest.mark.parametrize("bad", [{"mode": "admin"}, {"ref": -1}, {"ttl": 0}])
def test_bad_share_is_4014(bad: dict[str, object]) -> None:
    from nimbus_websocket.core import ProtocolError

    d = {"t": "share", "id": 1, "mode": "read", "ref": 1, **bad}
    with pytest.raises(ProtocolError) as ei:
        ctl_from_dict(d)
    assert int(ei.value.code) == 4014


def test_flow_and_input_acks_still_work_for_refused_input() -> None:
    h = owner()
    ok = share(h)
    assert isinstance(ok, ShareOk)
    v = viewer(h, ok.token)
    v.send(Open(1, T, U, Term(80, 24, {})))
    v.session.channel_opened(1)
    v.drain()
    got = v.send(DataFrame("stdout", 1, b"x" * 20000))
    assert (
        Flow(1, 0, 20000) in got + v.drain()
    )  # consumed and acknowledged: the viewer's buffer drains
