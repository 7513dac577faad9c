"""Server policy: who may connect, from which page, to which target.

* **Auth** -- bearer tokens compared in constant time, or an embedding
  application's hook (e.g. JWT verification) returning a principal.  With no
  token configured, scheme ``none`` is accepted only when the server is bound
  to loopback.
* **Origin** -- an allow-list checked at the WebSocket upgrade (HTTP 403).
  With no list, a browser Origin must name the same host as the request,
  and a server bound to loopback also wants a loopback ``Host`` (so a
  DNS-rebinding page, whose own name is in both headers, is refused).
  Requests without Origin (non-browser clients) pass.
* **Targets** -- ``HOST:PORT`` allow-list for ``open.target`` (``*`` for any
  host or port).  The SSH backend defaults to loopback targets only.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from ...core.messages import Target

__all__ = ["AuthHook", "AuthPolicy", "OriginPolicy", "TargetPolicy", "is_loopback"]

#: ``hook(scheme, token) -> principal | None`` (sync or async).
AuthHook = Callable[[str, str | None], "str | None | Awaitable[str | None]"]

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``."""
    h = host.strip("[]").lower()
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class AuthPolicy:
    """Decides the principal of a ``hello.auth``."""

    def __init__(self, tokens: Sequence[str] = (), hook: AuthHook | None = None, loopback: bool = True) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._hook = hook
        self._loopback = loopback
        #: Keys the principal a token maps to (what logs and session bindings see): drawn
        #: anew by every server, so a logged principal cannot be tested offline against
        #: guessed tokens (an unsalted hash could) nor matched across servers or restarts.
        self._principal_key = secrets.token_bytes(32)

    async def authenticate(self, scheme: str, token: str | None) -> str | None:
        """The principal for ``scheme``/``token``, or ``None`` (the core closes ``AUTH_FAILED``)."""
        if self._hook is not None:
            res = self._hook(scheme, token)
            if inspect.isawaitable(res):
                res = await res
            return res if isinstance(res, str) and res else None
        if self._tokens:
            if scheme != "bearer" or token is None:
                return None
            raw = token.encode()
            ok = False
            for t in self._tokens:  # no early exit: constant time over the list
                ok |= hmac.compare_digest(raw, t)
            return "bearer:" + self.principal_id(raw) if ok else None
        return "anonymous" if self._loopback else None

    def principal_id(self, token: bytes) -> str:
        """``HMAC-SHA256(per-server random key, token)``, 16 hex digits: a token's principal."""
        return hmac.new(self._principal_key, token, hashlib.sha256).hexdigest()[:16]


class OriginPolicy:
    """Origin allow-list for the upgrade request."""

    def __init__(self, allowed: Sequence[str] = (), *, loopback_host_only: bool = False) -> None:
        self._allowed = {o.rstrip("/").lower() for o in allowed}
        #: Without a list, also require a loopback ``Host`` (a server bound to
        #: loopback): a DNS-rebinding page has its own name in both headers.
        self._loopback_host_only = loopback_host_only

    def check(self, origin: str | None, host_header: str | None) -> bool:
        """True if a request with ``Origin: origin`` and ``Host: host_header`` may upgrade."""
        if origin is None:
            return True
        o = origin.rstrip("/").lower()
        if self._allowed:
            return "*" in self._allowed or o in self._allowed
        if o == "null":
            return False
        ohost = urlsplit(o).hostname or ""
        hhost = urlsplit("//" + (host_header or "")).hostname or ""
        if self._loopback_host_only and not is_loopback(hhost):
            return False
        return bool(ohost) and (ohost == hhost or (is_loopback(ohost) and is_loopback(hhost)))


class TargetPolicy:
    """``open.target`` allow-list."""

    def __init__(self, allowed: Sequence[str] = (), default_loopback_only: bool = False) -> None:
        self._rules: list[tuple[str, str]] = []
        for item in allowed:
            if item.count(":") > 1 and not item.startswith("["):
                host, port = item, "*"  # a bare IPv6 address: any port
            else:
                host, _, port = item.rpartition(":")
                if not host:
                    host, port = item, "*"
            self._rules.append((host.strip("[]").lower(), port or "*"))
        self._loopback_only = default_loopback_only and not self._rules

    def allows(self, target: Target) -> bool:
        """True if channels may be opened to ``target``."""
        if self._loopback_only:
            return is_loopback(target.host)
        if not self._rules:
            return True
        host = target.host.strip("[]").lower()
        return any(
            (h == "*" or h == host) and (p == "*" or p == str(target.port)) for h, p in self._rules
        )
