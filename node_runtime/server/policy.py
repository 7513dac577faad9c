"""Server policy: who may connect, from which page, to which target.

* **Auth** -- bearer tokens compared in constant time, or an embedding
  application's hook (e.g. JWT verification) returning a principal.  With no
  token and no hook, a server bound to loopback lets in only peers owned by
  its own UID (the runtime finds the owner, :mod:`.peercred`); a server bound
  elsewhere gets a generated token from the runtime (docs/security.md, 1).
* **Origin** -- exact same origin at the WebSocket upgrade (HTTP 403 otherwise):
  a browser's ``Origin`` must equal ``<server scheme>://<the request's Host>``
  (scheme, host and port), or be one of the allow-list's exact origins.  A
  server bound to loopback also wants a loopback ``Host`` (so a DNS-rebinding
  page, whose own name is in both headers, is refused).  Requests without
  Origin (non-browser clients) pass; ``*`` is refused (docs/security.md, 2).
* **Targets** -- ``HOST:PORT`` allow-list for ``open.target`` (``*`` for any
  host or port).  The SSH backend defaults to loopback port 22 only
  (docs/security.md, 13).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import ipaddress
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from ...core.messages import Target

__all__ = [
    "REASON_NOT_OWN_USER",
    "REASON_TOKEN_NOT_ACCEPTED",
    "REASON_TOKEN_REQUIRED",
    "AuthHook",
    "AuthPolicy",
    "OriginPolicy",
    "TargetPolicy",
    "generate_token",
    "is_loopback",
    "normalize_origin",
    "running_as_root",
]

#: ``hook(scheme, token) -> principal | None`` (sync or async).
AuthHook = Callable[[str, str | None], "str | None | Awaitable[str | None]"]

#: Close reasons of a refused ``hello`` (code 4003 AUTH_FAILED for all): no credentials
#: where some are needed, credentials that were not accepted, and a loopback server
#: without tokens refusing a peer that is not its own user.  The client's messages
#: (node_runtime/client/messages.py, demo_site/messages.mjs) tell them apart.
REASON_TOKEN_REQUIRED = "token required"
REASON_TOKEN_NOT_ACCEPTED = "token not accepted"
REASON_NOT_OWN_USER = "anonymous access is for the server's own user only"

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"}


def generate_token() -> str:
    """A bearer token for a server that was given none: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def running_as_root() -> bool:
    """True when the server's effective UID is 0 (every shell it opens is a root shell)."""
    return os.geteuid() == 0


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
    """Decides the principal of a ``hello.auth``.

    ``loopback``: the server is bound to loopback (anonymous access is possible at
    all).  ``uid``: the server's own user (default ``os.geteuid()``), the only one
    whose processes get in anonymously, and only without tokens and hook.
    """

    def __init__(
        self,
        tokens: Sequence[str] = (),
        hook: AuthHook | None = None,
        loopback: bool = True,
        *,
        uid: int | None = None,
    ) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._hook = hook
        self._loopback = loopback
        self.uid = os.geteuid() if uid is None else uid
        #: Keys the principal a token maps to (what logs and session bindings see): drawn
        #: anew by every server, so a logged principal cannot be tested offline against
        #: guessed tokens (an unsalted hash could) nor matched across servers or restarts.
        self._principal_key = secrets.token_bytes(32)

    def share_principal_key(self, key: bytes) -> None:
        """Key principals with ``key`` instead of this server's random one: every
        instance of a cluster (same cluster secret) then maps a token to the same
        principal, so a session bound to it resumes on any instance and per-principal
        limits count cluster-wide.  ``key`` must be secret (derived from the cluster
        secret) and at least 16 bytes."""
        if len(key) < 16:
            raise ValueError("principal key must be at least 16 bytes")
        self._principal_key = bytes(key)

    @property
    def anonymous_possible(self) -> bool:
        """True when no token and no hook is configured and the server is bound to loopback:
        then (only then) the runtime needs the peer's UID for :meth:`authenticate`."""
        return self._hook is None and not self._tokens and self._loopback

    async def authenticate(self, scheme: str, token: str | None, *, peer_uid: int | None = None) -> str | None:
        """The principal for ``scheme``/``token``, or ``None`` (the core closes ``AUTH_FAILED``).

        Without tokens and hook, ``"anonymous"`` for a peer whose socket the server's own
        UID owns (``peer_uid``; ``None``, unknown, is refused) on a loopback-bound server.
        """
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
        return "anonymous" if self._loopback and peer_uid is not None and peer_uid == self.uid else None

    def refusal_reason(self, scheme: str, token: str | None) -> str:
        """The close reason for a ``hello`` that :meth:`authenticate` refused.

        :data:`REASON_TOKEN_REQUIRED` when no token came (``scheme`` ``none``, or no
        token) and tokens or a hook decide; :data:`REASON_TOKEN_NOT_ACCEPTED` when a token
        came and was refused -- one text for every refused token, so the reason says
        nothing of how close a guess was; :data:`REASON_NOT_OWN_USER` when the server
        has neither (anonymous access is for the server's own user only).
        """
        if self._hook is None and not self._tokens:
            return REASON_NOT_OWN_USER
        if scheme == "none" or not token:
            return REASON_TOKEN_REQUIRED
        return REASON_TOKEN_NOT_ACCEPTED

    def principal_id(self, token: bytes) -> str:
        """``HMAC-SHA256(per-server random key, token)``, 16 hex digits: a token's principal."""
        return hmac.new(self._principal_key, token, hashlib.sha256).hexdigest()[:16]

    async def check_bearer(self, authorization: str | None, *, peer_uid: int | None = None) -> bool:
        """True if an HTTP request with this ``Authorization`` header may read the
        server's own pages (``/metrics``): the rule of :meth:`authenticate`, applied to
        ``Bearer <token>`` (scheme case-insensitive, RFC 9110 11.1) -- a configured token,
        compared in constant time, or the hook's verdict; with neither, only the
        anonymous rule (loopback-bound, a peer of the server's own UID).  Any other
        header (``Basic``, empty, a token with spaces) counts as no credentials.
        """
        scheme, token = "none", None
        if authorization is not None:
            parts = authorization.strip().split(" ")
            if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1]:
                scheme, token = "bearer", parts[1]
            elif authorization.strip():
                return False  # credentials we do not take: never anonymous
        try:
            return await self.authenticate(scheme, token, peer_uid=peer_uid) is not None
        except Exception:  # a broken hook refuses
            return False


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: What an origin's text may hold: printable ASCII without spaces (``urlsplit`` would
#: silently drop tabs and newlines, and ``,`` joins two origins in one header).
_ORIGIN_CHARS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9._~\-\[\]:]+/?")


def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]`` in the one form compared: scheme and host lower case, an
    IPv6 host bracketed and compressed, the scheme's default port (80, 443) dropped, one
    trailing ``/`` ignored.  ``None`` for anything that is not such an origin: ``null``,
    a path, query, fragment or user info, a bad port, spaces or control characters."""
    if not _ORIGIN_CHARS.fullmatch(text):
        return None
    try:
        u = urlsplit(text.rstrip("/") if text.endswith("/") else text)
        port = u.port
    except ValueError:
        return None
    host = u.hostname
    if not host or u.path or u.query or u.fragment or "@" in u.netloc or u.netloc.endswith(":"):
        return None
    scheme = u.scheme.lower()
    if ":" in host:  # IPv6: one spelling
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            return None
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


class OriginPolicy:
    """Exact same-origin check for the upgrade request, plus an allow-list of exact origins.

    ``scheme`` is the server's own (``http``; ``https`` once it serves TLS): the page's
    origin is ``scheme://`` plus the request's ``Host``.  Raises :class:`ValueError`
    for an allow-list entry that is not an exact origin, and for ``*`` (any page could
    drive the shell: cross-site WebSocket hijacking).
    """

    def __init__(self, allowed: Sequence[str] = (), *, loopback_host_only: bool = False, scheme: str = "http") -> None:
        entries: set[str] = set()
        for o in allowed:
            if o.strip() == "*":
                raise ValueError(
                    "--allow-origin '*' is refused: any web page could open a shell (cross-site WebSocket "
                    "hijacking); list the exact origins (scheme://host[:port])"
                )
            n = normalize_origin(o.strip())
            if n is None:
                raise ValueError(f"--allow-origin {o!r} is not an origin of the form scheme://host[:port]")
            entries.add(n)
        self.allowed = frozenset(entries)
        if scheme not in ("http", "https"):
            raise ValueError(f"server scheme must be http or https, not {scheme!r}")
        self.scheme = scheme
        #: A server bound to loopback also requires a loopback ``Host`` for its own
        #: pages: a DNS-rebinding page has its own name in both headers.
        self._loopback_host_only = loopback_host_only

    def same_origin(self, host_header: str | None) -> str | None:
        """The normalised origin of a page served under ``Host: host_header``."""
        if not host_header:
            return None
        return normalize_origin(f"{self.scheme}://{host_header}")

    def check(self, origin: str | None, host_header: str | None) -> bool:
        """True if a request with ``Origin: origin`` and ``Host: host_header`` may upgrade."""
        if origin is None:
            return True
        o = normalize_origin(origin)
        if o is None:  # "null", malformed, several origins in one header
            return False
        if o in self.allowed:
            return True
        own = self.same_origin(host_header)
        if own is None or o != own:
            return False
        if self._loopback_host_only:
            hhost = urlsplit(own).hostname or ""
            return is_loopback(hhost)
        return True


class TargetPolicy:
    """``open.target`` allow-list.

    Without rules, ``default_loopback_only`` (the SSH backend's default) allows
    loopback hosts on ``default_ports`` only -- port 22 -- so that a server with
    no ``--allow-target`` is not a scanner of every local port (issue 13.13).
    An empty ``default_ports`` means any loopback port.
    """

    def __init__(
        self, allowed: Sequence[str] = (), default_loopback_only: bool = False, default_ports: Sequence[int] = (22,)
    ) -> None:
        self._default_ports = frozenset(default_ports)
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
            return is_loopback(target.host) and (not self._default_ports or target.port in self._default_ports)
        if not self._rules:
            return True
        host = target.host.strip("[]").lower()
        return any(
            (h == "*" or h == host) and (p == "*" or p == str(target.port)) for h, p in self._rules
        )
