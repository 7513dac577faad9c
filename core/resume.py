"""Resume state: what a client keeps to get its channels back, and resume tokens.

Client side: :class:`ClientResume` is the seam the client session calls: it
holds the :class:`ResumeState` granted in ``hello_ok`` and persists it through
a :class:`ResumeStore` (``memory``, ``none``; the browser runtime adds
``sessionStorage``).  The stored form is JSON-shaped (its keys are a storage
format, kept across versions, not an event)::

    {"v": 1, "token": "<sid>.<secret>", "expiresAt": <epoch ms>, "ack": true,
     "profile": "nimbus.v1",
     "channels": [{"id": 1, "resumeKey": "...", "rx": 12345}]}

Server side: a resume token is ``<sid>.<secret>`` -- ``sid`` 16 hex digits
naming the session (not secret), ``secret`` 32 random bytes in unpadded
base64url (256 bits from the injected CSPRNG).  Lookup is by ``sid``; the
secret is compared with :func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ClientResume",
    "MemoryResumeStore",
    "NullResumeStore",
    "ResumeState",
    "ResumeStore",
    "StoredChannel",
    "new_token",
    "parse_token",
    "secrets_equal",
]

SECRET_BYTES = 32
SID_BYTES = 8


@dataclass(slots=True)
class StoredChannel:
    """One channel as persisted: id, ``resumeKey``, payload bytes received."""

    id: int
    resume_key: str
    rx: int = 0


@dataclass(slots=True)
class ResumeState:
    """Everything a client needs to resume: token, expiry, options, channels."""

    token: str
    expires_at: float  # seconds, same clock as the machine's ``now``
    ack: bool
    profile: str
    channels: list[StoredChannel] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped form (the format above)."""
        return {
            "v": 1,
            "token": self.token,
            "expiresAt": int(self.expires_at * 1000),
            "ack": self.ack,
            "profile": self.profile,
            "channels": [{"id": c.id, "resumeKey": c.resume_key, "rx": c.rx} for c in self.channels],
        }

    @classmethod
    def from_dict(cls, d: Any) -> ResumeState | None:
        """Parse a stored dict; ``None`` for anything damaged or of another version."""
        try:
            if d.get("v") != 1:
                return None
            chans = [
                StoredChannel(int(c["id"]), str(c["resumeKey"]), int(c["rx"])) for c in d["channels"]
            ]
            return cls(str(d["token"]), float(d["expiresAt"]) / 1000, bool(d["ack"]), str(d["profile"]), chans)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


class ResumeStore(Protocol):
    """Where a client keeps its :class:`ResumeState` (synchronous on purpose)."""

    def load(self) -> dict[str, Any] | None:
        """Return the stored dict, or ``None``."""
        ...

    def save(self, state: dict[str, Any]) -> None:
        """Replace the stored dict."""
        ...

    def clear(self) -> None:
        """Forget it."""
        ...


class MemoryResumeStore:
    """Keeps the state in this object (survives reconnects, not process restarts)."""

    def __init__(self) -> None:
        self._state: dict[str, Any] | None = None

    def load(self) -> dict[str, Any] | None:
        """See :class:`ResumeStore`."""
        return self._state

    def save(self, state: dict[str, Any]) -> None:
        """See :class:`ResumeStore`."""
        self._state = state

    def clear(self) -> None:
        """See :class:`ResumeStore`."""
        self._state = None


class NullResumeStore:
    """Never keeps anything: reconnects cannot resume (``resume.storage="none"``)."""

    def load(self) -> dict[str, Any] | None:
        """See :class:`ResumeStore`."""
        return None

    def save(self, state: dict[str, Any]) -> None:
        """See :class:`ResumeStore`."""

    def clear(self) -> None:
        """See :class:`ResumeStore`."""


class ClientResume:
    """A client's resume state and where it is kept: the seam :class:`~.client.ClientSession` calls.

    The session says what happened -- the store was read at start
    (:meth:`load`), ``hello_ok`` granted a token or none (:meth:`granted`),
    the channels worth keeping changed (:meth:`save`), the session ended for
    good (:meth:`clear`) -- and this decides what is stored: a stale or
    foreign state is discarded on load, the TTL is the shorter of the
    server's and ``ttl`` (``ClientOptions.resume_ttl``), and the expiry only
    restarts while the connection is ready (the server's retention starts at
    the drop).
    """

    def __init__(self, store: ResumeStore | None, profile: str, ttl: float) -> None:
        self._store: ResumeStore = store if store is not None else NullResumeStore()
        self._profile = profile
        self._max_ttl = ttl
        self._ttl = ttl
        #: The state in force (``None``: nothing to resume with).
        self.state: ResumeState | None = None

    @property
    def active(self) -> bool:
        """Whether there is a state to resume with (and to keep up to date)."""
        return self.state is not None

    def load(self, now: float) -> tuple[ResumeState | None, bool]:
        """Read the store once, at start: ``(state, stale)``.

        A usable state (not expired at ``now``, of this profile) becomes
        :attr:`state` and is returned; a stale one is cleared from the store
        (``(None, True)``); nothing stored, or something damaged: ``(None, False)``.
        """
        state = ResumeState.from_dict(self._store.load())
        if state is None:
            return None, False
        if state.expires_at <= now or state.profile != self._profile:
            self._store.clear()
            return None, True
        self.state = state
        return state, False

    def granted(self, token: str | None, ttl: float, now: float, ack: bool) -> None:
        """``hello_ok`` granted ``token`` for ``ttl`` seconds (``None``: no resume offered).

        Without a grant nothing more is persisted; the store keeps what it
        has until :meth:`clear`.
        """
        if token is None:
            self.state = None
            return
        self._ttl = min(ttl, self._max_ttl)
        self.state = ResumeState(token, now + self._ttl, ack, self._profile)

    def save(self, channels: list[StoredChannel], renew_at: float | None) -> bool:
        """Store the state with ``channels``; the expiry restarts at ``renew_at`` when given.

        Returns whether anything was written (nothing without a state).
        """
        st = self.state
        if st is None:
            return False
        if renew_at is not None:
            st.expires_at = renew_at + self._ttl
        st.channels = channels
        self._store.save(st.to_dict())
        return True

    def clear(self) -> bool:
        """Forget the state and clear the store; returns whether there was a state."""
        if self.state is None:
            return False
        self.state = None
        self._store.clear()
        return True


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_token(random_bytes: Callable[[int], bytes], sid: str | None = None) -> tuple[str, str, str]:
    """Return ``(token, sid, secret)``; a fresh ``sid`` unless one is given."""
    if sid is None:
        sid = random_bytes(SID_BYTES).hex()
    secret = _b64(random_bytes(SECRET_BYTES))
    return f"{sid}.{secret}", sid, secret


def parse_token(token: str) -> tuple[str, str] | None:
    """Split a token into ``(sid, secret)``; ``None`` if it is not well formed."""
    sid, dot, secret = token.partition(".")
    if not dot or len(sid) != 2 * SID_BYTES or len(secret) > 64 or not secret:
        return None
    try:
        int(sid, 16)
    except ValueError:
        return None
    return sid, secret


def secrets_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())
