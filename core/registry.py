"""The resume registry: every session of one server, and the failed-resume limits.

* :class:`SessionRegistry` -- sessions by resume token: single-use tokens,
  principal binding, expiry, per-session revocation after
  ``max_resume_failures`` wrong secrets.
* :class:`ResumeLimiter` -- failed resumes per peer prefix (:func:`peer_prefix`
  of the client's IP): after ``resume_failure_limit`` failures within
  ``resume_failure_window`` seconds the prefix's resume attempts are refused
  with 4004 before any lookup.

Both limits are one rule in the core: a runtime only passes the peer's address
(``ServerConnection(peer_key=...)``).  Time is the caller's ``now``.

A resume attempt by another principal than the session's is refused (4011,
with the same reason as an unknown session) but never counts against the
session: the session id is not secret, so anyone could otherwise revoke a
victim's resume with ``max_resume_failures`` wrong secrets.  It still counts
against the attacker's prefix.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from collections import deque
from collections.abc import Callable

from .errors import CloseCode, ProtocolError
from .events import PolicyEvent, PolicyKind
from .resume import new_token, parse_token
from .server_config import ServerConfig
from .server_session import ServerSession
from .share import MAX_VIEWERS_PER_GRANT, ShareBook, ShareGrant, ShareMode, ShareRefused
from .state import ChanEvent

__all__ = ["LOOPBACK_PREFIX", "ResumeLimiter", "SessionRegistry", "peer_prefix"]

#: The one key every loopback peer (127.0.0.0/8, ``::1``) shares: the same machine.
LOOPBACK_PREFIX = "loopback"
#: Prefix length an IPv6 peer is counted by (one customer network, RFC 6177).
_IPV6_PREFIX = 64
#: Reason of every refused token (unknown, expired, revoked, wrong secret,
#: another principal's session): the answer does not confirm that an id exists.
_BAD_TOKEN = "invalid or expired resume token"


def peer_prefix(ip: str) -> str:
    """The key failed resumes from the address ``ip`` are counted against.

    * IPv4: the address itself (``/32``), e.g. ``"192.0.2.7/32"``;
    * loopback (all of ``127.0.0.0/8`` and ``::1``): :data:`LOOPBACK_PREFIX`,
      one key, so rotating source addresses on the machine gains nothing;
    * IPv6: its ``/64`` network, e.g. ``"2001:db8:1:2::/64"`` (a host owns a
      whole ``/64``; counting single addresses would give it 2**64 budgets);
    * IPv4-mapped IPv6 (``::ffff:192.0.2.7``, a dual-stack socket): as IPv4.

    Brackets and a zone id (``fe80::1%eth0``) are ignored.  A string that is
    no IP address (a Unix socket's name, a test's label) is its own key; the
    empty string stays empty (not limited).
    """
    text = ip.strip()
    host = text.removeprefix("[").removesuffix("]").split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return text
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return LOOPBACK_PREFIX
    if isinstance(addr, ipaddress.IPv4Address):
        return f"{addr}/32"
    return str(ipaddress.IPv6Network((addr, _IPV6_PREFIX), strict=False))


class ResumeLimiter:
    """Failed resumes per peer prefix within a sliding window.

    Keys are passed through :func:`peer_prefix` (a runtime may pass the raw
    client IP): every loopback address is one key, an IPv6 peer is its
    ``/64``, an IPv4 peer its address.

    Memory: the table holds at most ``config.max_resume_peers`` prefixes
    (10,000 by default), each with at most ``config.resume_failure_limit``
    timestamps (20): about 13 MiB at the defaults, whatever the peers do.
    When it is full, the prefix whose last failure is oldest is forgotten
    first.  The empty key (a peer the runtime did not name) is never limited.
    """

    def __init__(self, config: ServerConfig) -> None:
        self._limit = config.resume_failure_limit
        self._window = config.resume_failure_window
        self._max_peers = max(1, config.max_resume_peers)
        #: Prefix -> failure times, least recently failing first.
        self._failures: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._failures)

    @property
    def max_size(self) -> int:
        """The most prefixes the table holds (``config.max_resume_peers``)."""
        return self._max_peers

    def blocked(self, key: str, now: float) -> bool:
        """True while the prefix of ``key`` has used up its failed-resume budget."""
        key = peer_prefix(key)
        times = self._failures.get(key)
        if not times:
            return False
        horizon = now - self._window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return False
        return len(times) >= self._limit

    def failed(self, key: str, now: float) -> None:
        """Count one failed resume of the prefix of ``key`` at ``now``."""
        key = peer_prefix(key)
        if not key:
            return
        times = self._failures.pop(key, None)  # re-inserted last: the table is in LRU order
        if times is None:
            while len(self._failures) >= self._max_peers:  # bounded: forget the stalest prefix
                del self._failures[next(iter(self._failures))]
            times = deque(maxlen=max(1, self._limit))
        times.append(now)
        self._failures[key] = times


class SessionRegistry:
    """All sessions of one server, addressable by resume token.

    Holds at most ``config.max_sessions`` sessions; detached ones expire
    ``config.retention`` seconds after their connection was lost.
    ``resume_limiter`` counts failed resumes per peer prefix.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.config = config or ServerConfig()
        self._random_bytes = random_bytes
        self._sessions: dict[str, ServerSession] = {}
        #: The peer prefix each session was created from (``max_sessions_per_peer``).
        self._peers: dict[str, str] = {}
        self.resume_limiter = ResumeLimiter(self.config)
        self.resumes = 0
        self.resume_failures = 0
        #: Share grants of this server's channels (:mod:`.share`).
        self.shares = ShareBook(random_bytes)
        #: Policy events of revocations (the runtime drains them with :meth:`events`).
        self._events: list[PolicyEvent] = []
        #: Viewer sessions a revocation ended, whose events the runtime has not drained.
        self._touched: list[ServerSession] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[ServerSession]:
        """Every live session."""
        return list(self._sessions.values())

    def get(self, sid: str) -> ServerSession | None:
        """The live session with id ``sid``, if any."""
        return self._sessions.get(sid)

    def create(self, principal: str, ack: bool, peer: str = "", view: ShareGrant | None = None) -> ServerSession:
        """A new session for ``principal`` connecting from ``peer`` (an address; counted by
        :func:`peer_prefix`).  Raises ``ProtocolError`` 4010 when the table is full, or
        when the principal or the peer prefix holds its share
        (``max_sessions_per_principal`` / ``max_sessions_per_peer``) already.
        ``view``: the share grant of a viewer session (at most
        :data:`~.share.MAX_VIEWERS_PER_GRANT` per grant, else 4010)."""
        cfg = self.config
        if len(self._sessions) >= cfg.max_sessions:
            raise ProtocolError(CloseCode.SERVER_OVERLOAD, "too many sessions")
        if view is not None and len(self.viewers_of(view.gid)) >= MAX_VIEWERS_PER_GRANT:
            raise ProtocolError(CloseCode.SERVER_OVERLOAD, f"at most {MAX_VIEWERS_PER_GRANT} viewers per share link")
        prefix = peer_prefix(peer)
        if cfg.max_sessions_per_principal or cfg.max_sessions_per_peer:
            mine = sum(1 for x in self._sessions.values() if x.principal == principal)
            here = sum(1 for sid in self._sessions if self._peers.get(sid) == prefix) if prefix else 0
            if (cfg.max_sessions_per_principal and mine >= cfg.max_sessions_per_principal) or (
                cfg.max_sessions_per_peer and here >= cfg.max_sessions_per_peer
            ):
                raise ProtocolError(CloseCode.SERVER_OVERLOAD, "too many sessions for this client")
        _, sid, secret = new_token(self._random_bytes)
        while sid in self._sessions:
            _, sid, secret = new_token(self._random_bytes)
        s = ServerSession(
            self.config, sid, secret, principal, ack, on_destroy=self.discard, view=view,
            on_channel_removed=self._channel_removed,
        )
        self._sessions[sid] = s
        self._peers[sid] = prefix
        return s

    def issue_token(self, s: ServerSession, used: str | None = None) -> str:
        """A fresh single-use token for ``s``.

        ``used`` is the secret of the token the client just resumed with: it
        stays valid until the client confirms the new token (its first
        message after ``hello_ok``), so a ``hello_ok`` lost with the
        connection does not cost the session.  Every other token stops working.
        """
        token, _, secret = new_token(self._random_bytes, s.sid)
        s.set_secret(secret, used)
        return token

    def lookup(self, token: str, principal: str, ack: bool, now: float) -> ServerSession:
        """The session ``token`` names, if ``principal`` and ``ack`` match (else 4011).

        A malformed, unknown, expired or revoked token, a wrong secret and
        another principal's session are refused alike (4011, one reason).
        Only a wrong secret presented by the session's own principal counts
        towards its revocation (``max_resume_failures``): another principal
        cannot burn a victim's budget by knowing its (non-secret) id.
        """
        parsed = parse_token(token)
        s = self._sessions.get(parsed[0]) if parsed else None
        if parsed is None or s is None or s.destroyed or (s.expires_at is not None and now >= s.expires_at):
            self.resume_failures += 1
            raise ProtocolError(CloseCode.RESUME_FAILED, _BAD_TOKEN)
        matches = s.secret_matches(parsed[1])  # compared even for a stranger: the same work either way
        if s.principal != principal:
            self.resume_failures += 1
            raise ProtocolError(CloseCode.RESUME_FAILED, _BAD_TOKEN)
        if not matches:
            self.resume_failures += 1
            s.failures += 1
            if s.failures >= self.config.max_resume_failures:
                s.set_secret(self._fresh_secret(), None)  # revoked: nothing guessable
            raise ProtocolError(CloseCode.RESUME_FAILED, _BAD_TOKEN)
        if s.ack != ack:
            self.resume_failures += 1
            raise ProtocolError(CloseCode.RESUME_FAILED, "caps.ack differs from the original session")
        return s

    def _fresh_secret(self) -> str:
        return new_token(self._random_bytes, "0" * 16)[2]

    def new_key(self) -> str:
        """A random channel ``resumeKey`` (144 bits, base64url)."""
        return base64.urlsafe_b64encode(self._random_bytes(18)).decode("ascii")

    def discard(self, s: ServerSession) -> None:
        """Forget ``s`` (called when it is destroyed)."""
        if self._sessions.get(s.sid) is s:
            del self._sessions[s.sid]
            self._peers.pop(s.sid, None)

    def expire(self, now: float) -> list[ServerSession]:
        """Destroy detached sessions whose retention ended, and close the viewers of
        share links that expired; returns the sessions touched (drain their events)."""
        dead = [s for s in self._sessions.values() if s.expires_at is not None and now >= s.expires_at]
        for s in dead:
            s.destroy("retention expired")
        return dead + self._end_viewers(self.shares.expire(now), "share link expired", now)

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has something to do."""
        ds = [s.expires_at for s in self._sessions.values() if s.expires_at is not None]
        share = self.shares.next_expiry()
        if share is not None:
            ds.append(share)
        return min(ds) if ds else None

    # ------------------------------------------------------------------ sharing

    def viewers_of(self, gid: str) -> list[ServerSession]:
        """The viewer sessions share grant ``gid`` let in."""
        return [s for s in self._sessions.values() if s.view is not None and s.view.gid == gid]

    def share(self, s: ServerSession, cid: int, mode: ShareMode, ttl: int | None, now: float) -> ShareGrant:
        """A share link to channel ``cid`` of owner session ``s`` (``ShareRefused`` when it cannot be)."""
        if not self.config.allow_share:
            raise ShareRefused("POLICY_DENIED", "this server does not share terminals")
        if s.view is not None:
            raise ShareRefused("POLICY_DENIED", "a viewer cannot share what it watches")
        ch = s.channels.get(cid)
        if ch is None or not ch.allows(ChanEvent.INPUT) or ch.file_channel:
            raise ShareRefused("POLICY_DENIED", f"channel {cid} is not a running terminal")
        g = self.shares.create(s.sid, cid, mode, ttl, now)
        self._events.append(PolicyEvent(PolicyKind.SHARE_CREATED, channel=cid, reason=f"{g.gid} {mode}"))
        return g

    def unshare(self, s: ServerSession, cid: int, gid: str | None, now: float) -> list[ServerSession]:
        """Revoke ``gid`` (every grant) of channel ``cid`` of ``s``: its viewers close with 4016."""
        return self._end_viewers(self.shares.revoke(s.sid, cid, gid), "share link revoked by its owner", now)

    def events(self) -> list[PolicyEvent]:
        """Share events since the last call (drains the queue)."""
        out, self._events = self._events, []
        return out

    def drain_touched(self) -> list[ServerSession]:
        """Viewer sessions revocations ended since the last call: drain their events
        (the backends of their channels close)."""
        out, self._touched = self._touched, []
        return out

    def has_touched(self) -> bool:
        """True when :meth:`drain_touched` or :meth:`events` would return something."""
        return bool(self._touched or self._events)

    def _channel_removed(self, s: ServerSession, cid: int) -> None:
        self._end_viewers(self.shares.revoke(s.sid, cid), "the shared terminal ended", None)

    def _end_viewers(self, grants: list[ShareGrant], reason: str, now: float | None) -> list[ServerSession]:
        touched: list[ServerSession] = []
        for g in grants:
            self._events.append(PolicyEvent(PolicyKind.SHARE_REVOKED, channel=g.cid, reason=f"{g.gid} {reason}"))
            for v in self.viewers_of(g.gid):
                touched.append(v)
                conn = v.conn
                if conn is not None:
                    conn.close(CloseCode.SHARE_REVOKED, reason, now if now is not None else 0.0)
                    conn.wake()
                v.destroy(reason)
        self._touched.extend(touched)
        return touched
