"""The resume registry: every session of one server, and the failed-resume limits.

* :class:`SessionRegistry` -- sessions by resume token: single-use tokens,
  principal binding, expiry, per-session revocation after
  ``max_resume_failures`` wrong secrets.
* :class:`ResumeLimiter` -- failed resumes per peer (the client's IP): after
  ``resume_failure_limit`` failures within ``resume_failure_window`` seconds
  the peer's resume attempts are refused with 4004 before any lookup.

Both limits are one rule in the core: a runtime only passes the peer's address
(``ServerConnection(peer_key=...)``).  Time is the caller's ``now``.
"""

from __future__ import annotations

import base64
import secrets
from collections import deque
from collections.abc import Callable

from .errors import CloseCode, ProtocolError
from .resume import new_token, parse_token
from .server_config import ServerConfig
from .server_session import ServerSession

__all__ = ["ResumeLimiter", "SessionRegistry"]


class ResumeLimiter:
    """Failed resumes per peer within a sliding window.

    Memory: at most ``config.max_resume_peers`` peers, each with at most
    ``config.resume_failure_limit`` timestamps.  The empty key (a peer the
    runtime did not name) is never limited.
    """

    def __init__(self, config: ServerConfig) -> None:
        self._limit = config.resume_failure_limit
        self._window = config.resume_failure_window
        self._max_peers = config.max_resume_peers
        self._failures: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._failures)

    def blocked(self, key: str, now: float) -> bool:
        """True while ``key`` has used up its failed-resume budget."""
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
        """Count one failed resume of ``key`` at ``now``."""
        if not key:
            return
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self._max_peers:  # bounded: forget the oldest peer
                del self._failures[next(iter(self._failures))]
            times = self._failures[key] = deque(maxlen=max(1, self._limit))
        times.append(now)


class SessionRegistry:
    """All sessions of one server, addressable by resume token.

    Holds at most ``config.max_sessions`` sessions; detached ones expire
    ``config.retention`` seconds after their connection was lost.
    ``resume_limiter`` counts failed resumes per peer.
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
        self.resume_limiter = ResumeLimiter(self.config)
        self.resumes = 0
        self.resume_failures = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[ServerSession]:
        """Every live session."""
        return list(self._sessions.values())

    def create(self, principal: str, ack: bool) -> ServerSession:
        """A new session for ``principal`` (raises ``ProtocolError`` 4010 when full)."""
        if len(self._sessions) >= self.config.max_sessions:
            raise ProtocolError(CloseCode.SERVER_OVERLOAD, "too many sessions")
        _, sid, secret = new_token(self._random_bytes)
        while sid in self._sessions:
            _, sid, secret = new_token(self._random_bytes)
        s = ServerSession(self.config, sid, secret, principal, ack, on_destroy=self.discard)
        self._sessions[sid] = s
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
        """The session ``token`` names, if ``principal`` and ``ack`` match (else 4011)."""
        parsed = parse_token(token)
        s = self._sessions.get(parsed[0]) if parsed else None
        if parsed is None or s is None or s.destroyed:
            self.resume_failures += 1
            raise ProtocolError(CloseCode.RESUME_FAILED, "unknown or expired resume token")
        if s.expires_at is not None and now >= s.expires_at:
            self.resume_failures += 1
            raise ProtocolError(CloseCode.RESUME_FAILED, "resume token expired")
        if not s.secret_matches(parsed[1]) or s.principal != principal:
            self.resume_failures += 1
            s.failures += 1
            if s.failures >= self.config.max_resume_failures:
                s.set_secret(self._fresh_secret(), None)  # revoked: nothing guessable
            raise ProtocolError(CloseCode.RESUME_FAILED, "invalid resume token")
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

    def expire(self, now: float) -> list[ServerSession]:
        """Destroy detached sessions whose retention ended; returns them (drain their events)."""
        dead = [s for s in self._sessions.values() if s.expires_at is not None and now >= s.expires_at]
        for s in dead:
            s.destroy("retention expired")
        return dead

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has something to do."""
        ds = [s.expires_at for s in self._sessions.values() if s.expires_at is not None]
        return min(ds) if ds else None
