"""Share grants: read-only and read-write links to one live terminal channel.

The owner of a channel asks for a grant (``share``); the server answers with
a token (``share_ok``).  Whoever holds the token connects with it as its
bearer token and gets a *viewer session*: one channel that mirrors the
owner's (its own credit, its own resume), nothing else -- no other channel,
no command, no file, never the owner's resume token.  A grant is bound to
the channel and this server, expires (``ttl``, default
:data:`DEFAULT_TTL`, at most :data:`MAX_TTL`), and is revoked by the owner
(``unshare``), by its channel ending, or by its expiry; every viewer it let
in is then closed with 4016 (``SHARE_REVOKED``).

Bounds: :data:`MAX_GRANTS_PER_CHANNEL` grants per channel,
:data:`MAX_VIEWERS_PER_GRANT` viewer sessions per grant.

Tokens are ``nshare.<session id>.<grant id>.<secret>``: the owner's
(public) session id, 64 bits of grant id, 256 bits of secret, compared in
constant time.  Time is injected.
"""

from __future__ import annotations

import base64
import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from .resume import secrets_equal

__all__ = [
    "DEFAULT_TTL",
    "MAX_GRANTS_PER_CHANNEL",
    "MAX_TTL",
    "MAX_VIEWERS_PER_GRANT",
    "SHARE_PREFIX",
    "ShareBook",
    "ShareGrant",
    "ShareMode",
    "ShareRefused",
    "is_share_token",
    "share_token_session",
]

#: Seconds a grant lives unless the owner asks for less (or more, up to :data:`MAX_TTL`).
DEFAULT_TTL = 3600
MAX_TTL = 24 * 3600
MAX_GRANTS_PER_CHANNEL = 8
MAX_VIEWERS_PER_GRANT = 16
SHARE_PREFIX = "nshare"


class ShareMode(enum.StrEnum):
    """What a viewer may do: watch, or also type."""

    READ = "read"
    WRITE = "write"


class ShareRefused(Exception):
    """A grant could not be made: ``code`` (an ``ErrorCode`` name) and a plain message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class ShareGrant:
    """One grant: channel ``cid`` of session ``sid``, ``mode``, until ``expires_at``."""

    gid: str
    sid: str
    cid: int
    mode: ShareMode
    expires_at: float
    created_at: float
    secret: str = field(repr=False)

    @property
    def token(self) -> str:
        """What the viewer presents as its bearer token: ``nshare.<session id>.<grant id>.<secret>``
        (the session id, not secret, lets any instance of a cluster find the owner)."""
        return f"{SHARE_PREFIX}.{self.sid}.{self.gid}.{self.secret}"


def is_share_token(token: str | None) -> bool:
    """True for a string shaped like a share token (checked by :meth:`ShareBook.verify`)."""
    return token is not None and token.startswith(SHARE_PREFIX + ".")


def share_token_session(token: str) -> str | None:
    """The session id a share token names (``None`` if it is not shaped like one); not a check."""
    parts = token.split(".")
    return parts[1] if len(parts) == 4 and parts[0] == SHARE_PREFIX and parts[1] else None


class ShareBook:
    """Every grant of one server, by id."""

    def __init__(self, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._random = random_bytes
        self._grants: dict[str, ShareGrant] = {}

    def __len__(self) -> int:
        return len(self._grants)

    def create(
        self, sid: str, cid: int, mode: ShareMode, ttl: int | None, now: float
    ) -> ShareGrant:
        """A new grant (``ShareRefused`` ``CHANNEL_LIMIT`` past :data:`MAX_GRANTS_PER_CHANNEL`)."""
        if len(self.of_channel(sid, cid)) >= MAX_GRANTS_PER_CHANNEL:
            raise ShareRefused(
                "CHANNEL_LIMIT", f"at most {MAX_GRANTS_PER_CHANNEL} share links per terminal"
            )
        life = DEFAULT_TTL if ttl is None else max(1, min(int(ttl), MAX_TTL))
        gid = self._random(8).hex()
        while gid in self._grants:
            gid = self._random(8).hex()
        secret = base64.urlsafe_b64encode(self._random(32)).rstrip(b"=").decode("ascii")
        g = ShareGrant(gid, sid, cid, mode, now + life, now, secret)
        self._grants[gid] = g
        return g

    def verify(self, token: str, now: float) -> ShareGrant | None:
        """The live grant ``token`` names, else ``None`` (unknown, expired, wrong secret alike)."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != SHARE_PREFIX:
            return None
        g = self._grants.get(parts[2])
        if g is None or g.sid != parts[1]:
            secrets_equal(parts[3], "x" * 43)  # the same work for an unknown id
            return None
        if not secrets_equal(parts[3], g.secret) or now >= g.expires_at:
            return None
        return g

    def get(self, gid: str) -> ShareGrant | None:
        """The grant with id ``gid``, if any."""
        return self._grants.get(gid)

    def of_channel(self, sid: str, cid: int) -> list[ShareGrant]:
        """The grants of one channel."""
        return [g for g in self._grants.values() if g.sid == sid and g.cid == cid]

    def revoke(self, sid: str, cid: int | None = None, gid: str | None = None) -> list[ShareGrant]:
        """Remove the grants of session ``sid`` (of channel ``cid``; only ``gid``); returns them."""
        gone = [
            g
            for g in self._grants.values()
            if g.sid == sid and (cid is None or g.cid == cid) and (gid is None or g.gid == gid)
        ]
        for g in gone:
            del self._grants[g.gid]
        return gone

    def expire(self, now: float) -> list[ShareGrant]:
        """Remove the grants whose time ran out; returns them."""
        gone = [g for g in self._grants.values() if now >= g.expires_at]
        for g in gone:
            del self._grants[g.gid]
        return gone

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has something to do."""
        return min((g.expires_at for g in self._grants.values()), default=None)
