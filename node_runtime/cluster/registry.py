"""The core's session registry, for an instance of a cluster.

:class:`ClusterRegistry` is :class:`~...core.registry.SessionRegistry` with
three additions, everything else (single-use tokens, principal binding,
revocation, expiry, the failed-resume budget) staying the core's:

* tokens are signed with the cluster secret (:meth:`ClusterSecret.token_secret`),
  so any instance can tell a token of this cluster from a forgery;
* a session is written to the directory when it is created and removed when
  it ends;
* the per-principal and per-client-prefix session limits
  (``max_sessions_per_principal`` / ``max_sessions_per_peer``) count the
  sessions the other instances hold too (their counts as of the last
  heartbeat, at most one heartbeat old).  ``max_sessions`` stays per
  instance: it bounds this process's memory.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from ...core.errors import CloseCode, ProtocolError
from ...core.registry import SessionRegistry, peer_prefix
from ...core.server_config import ServerConfig
from ...core.server_session import ServerSession
from ...core.share import ShareGrant
from .directory import Directory
from .secret import ClusterSecret

__all__ = ["ClusterRegistry", "principal_key"]


def principal_key(principal: str) -> str:
    """The directory's count key of a principal (hashed: Redis never sees the name)."""
    return "p:" + hashlib.sha256(principal.encode("utf-8", "replace")).hexdigest()[:24]


class ClusterRegistry(SessionRegistry):
    """Sessions of one instance: signed tokens, written to the directory, limits cluster-wide."""

    def __init__(self, config: ServerConfig, secret: ClusterSecret) -> None:
        super().__init__(config)
        self.secret = secret
        #: Set by the cluster node once Redis is configured.
        self.directory: Directory | None = None

    def has(self, sid: str) -> bool:
        """True when this instance holds the session ``sid``."""
        return sid in self._sessions

    def counts(self) -> dict[str, int]:
        """This instance's sessions per principal key and per client prefix (``a:<prefix>``)."""
        c: Counter[str] = Counter(principal_key(s.principal) for s in self._sessions.values())
        c.update("a:" + p for p in self._peers.values() if p)
        return dict(c)

    def create(self, principal: str, ack: bool, peer: str = "", view: ShareGrant | None = None) -> ServerSession:
        """The core's ``create``, with the other instances' sessions counted against the
        per-client limits (4010), and the new session written to the directory."""
        cfg, d = self.config, self.directory
        if d is not None and (cfg.max_sessions_per_principal or cfg.max_sessions_per_peer):
            prefix = peer_prefix(peer)
            mine = sum(1 for x in self._sessions.values() if x.principal == principal)
            here = sum(1 for p in self._peers.values() if prefix and p == prefix)
            theirs = d.remote_count(principal_key(principal))
            there = d.remote_count("a:" + prefix) if prefix else 0
            if (cfg.max_sessions_per_principal and mine + theirs >= cfg.max_sessions_per_principal) or (
                cfg.max_sessions_per_peer and prefix and here + there >= cfg.max_sessions_per_peer
            ):
                raise ProtocolError(CloseCode.SERVER_OVERLOAD, "too many sessions for this client")
        s = super().create(principal, ack, peer, view)
        if d is not None:
            d.register(s.sid)
        return s

    def issue_token(self, s: ServerSession, used: str | None = None) -> str:
        """A fresh single-use token whose secret any instance of the cluster can check."""
        secret = self.secret.token_secret(s.sid)
        s.set_secret(secret, used)
        return f"{s.sid}.{secret}"

    def discard(self, s: ServerSession) -> None:
        """Forget ``s`` and remove it from the directory."""
        known = self._sessions.get(s.sid) is s
        super().discard(s)
        if known and self.directory is not None:
            self.directory.unregister(s.sid)
