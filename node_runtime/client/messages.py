"""Plain-words sentences for the errors a user meets (``nimbus-ws connect``; issue 14.6).

One table, keyed by the stable :class:`~nimbus_websocket.core.errors.ErrorCode`
names (plus ``NOT_FOUND`` and ``ORIGIN_REFUSED``, the HTTP answers 404 and 403
to the upgrade, and ``UPGRADE_REFUSED``, the page's guess when a server that
answers HTTP refused its WebSocket), says what happened in words; the code and the server's raw
reason go on a detail beside it.  A 4003 ``AUTH_FAILED`` is told apart by the
server's close reason (``node_runtime/server/policy.py``: ``token required``,
``token not accepted``...).  The page has the same table in
``demo_site/messages.mjs``; ``tests/server/test_user_errors.py`` checks that the
two hold the same keys and sentences.  ``{host}`` stands for the server's
``host:port``.  A refused SSH host key (``HOST_KEY_CHANGED`` /
``HOST_KEY_UNKNOWN`` with the open error's
:class:`~nimbus_websocket.core.errors.HostKey`) is worded by
:data:`HOST_KEY_MESSAGES`, where ``{target}`` is the SSH target.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ...core.errors import CloseCode, HostKey, close_code_name

__all__ = [
    "AUTH_REASONS",
    "HOST_KEY_MESSAGES",
    "MESSAGES",
    "detail_line",
    "host_key_message",
    "http_status",
    "served_path",
    "user_message",
]

#: What happened, by error name.
MESSAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "CONNECT_FAILED": "Could not reach the server at {host} — is it running?",
        "NOT_FOUND": "There is no terminal endpoint at this address on {host}",
        "ORIGIN_REFUSED": "This page is not allowed to connect to that server",
        "UPGRADE_REFUSED": (
            "The server at {host} is up but refused the terminal connection (is this page allowed to connect to it?)"
        ),
        "POLICY_VIOLATION": "This page is not allowed to connect to that server",
        "AUTH_FAILED": "The server did not accept the credentials",
        "AUTH_PROVIDER_FAILED": "The token could not be obtained",
        "RESUME_FAILED": "This terminal session has expired; start a new one",
        "SERVER_OVERLOAD": "The server is full; try again later",
        "TRY_AGAIN_LATER": "The server is busy; try again later",
        "TIMEOUT": "The connection timed out: no answer from the server in time",
        "GOING_AWAY": "The server restarted or is shutting down",
        "SERVICE_RESTART": "The server restarted or is shutting down",
        "CONNECTION_LOST": "The connection to {host} was lost and the session could not be resumed",
        "RETRIES_EXHAUSTED": "Lost the connection to {host} and could not reconnect — is the server running?",
        "POLICY_DENIED": "The server refused this (too many attempts, or a target it does not allow)",
        "UNSUPPORTED_PROFILE": "The server does not speak this client's protocol version",
        "BAD_HELLO": "The server did not understand this client (a version mismatch?)",
        "TLS_HANDSHAKE": "The secure (TLS) connection to {host} failed",
        "INTERNAL_ERROR": "The server hit an internal error",
        "INTERNAL_ERROR_WS": "The server hit an internal error",
        "CANCELLED": "This connection was replaced by a newer one",
        # Without the key (an older server; a revoked key): HOST_KEY_MESSAGES has the full sentences.
        "HOST_KEY_CHANGED": "The SSH host key of the target changed — this could be a man-in-the-middle attack",
        "HOST_KEY_UNKNOWN": (
            "The SSH host key of the target is not known to this gateway; the operator must add it to known_hosts"
        ),
    }
)

#: A refused SSH host key, by open-error code, with the key the target offered.
HOST_KEY_MESSAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "HOST_KEY_CHANGED": (
            "The SSH host key of {target} changed — this could be a man-in-the-middle attack."
            " Offered key: {keyType} {fingerprint}"
        ),
        "HOST_KEY_UNKNOWN": (
            "The SSH host key of {target} is not known to this gateway ({keyType} {fingerprint});"
            " the operator must add it to known_hosts"
        ),
    }
)

#: ``AUTH_FAILED`` (4003), by the server's close reason.  Every refused token gets
#: the same reason: nothing tells how close a guess was.
AUTH_REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "token required": "The server needs a token",
        "token not accepted": "The token was not accepted",
        "anonymous access is for the server's own user only": (
            "Only the user who started the server may connect (it was started without a token)"
        ),
    }
)

_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")
#: The reference server's 404 body for an upgrade to a path it does not serve
#: (``node_runtime/server/app.py``: ``NOT_FOUND_WS_HINT``).
_SERVED_PATH = re.compile(r"The WebSocket endpoint is (/[!-~]{0,200})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def user_message(name: str, reason: str = "", *, host: str = "the server", code: int | None = None) -> str | None:
    """The sentence for error ``name`` (an ``ErrorCode`` name, ``NOT_FOUND``,
    ``ORIGIN_REFUSED``) with the server's close ``reason`` and WebSocket close ``code``,
    or ``None`` if the table has none.  A ``CONNECT_FAILED`` that was an HTTP 404 or 403
    answer is that answer's; one the server closed with a code (4010 full, 1001 going
    away...) is that code's."""
    if name == "CONNECT_FAILED":
        if code is not None and code != CloseCode.ABNORMAL and close_code_name(code) in MESSAGES:
            name = close_code_name(code)
        status = http_status(reason)
        name = {404: "NOT_FOUND", 403: "ORIGIN_REFUSED"}.get(status or 0, name)
    if name == "AUTH_FAILED" and reason in AUTH_REASONS:
        return AUTH_REASONS[reason]
    text = MESSAGES.get(name)
    return text.replace("{host}", host) if text is not None else None


def host_key_message(name: str, host_key: HostKey | None) -> str | None:
    """The sentence for a refused SSH host key (``name`` ``HOST_KEY_CHANGED`` /
    ``HOST_KEY_UNKNOWN``) with the key the target offered, or ``None`` without one.
    The server's fields are shown with control characters escaped."""
    text = HOST_KEY_MESSAGES.get(name)
    if text is None or host_key is None:
        return None
    fields = {"target": host_key.host, "keyType": host_key.key_type, "fingerprint": host_key.fingerprint}
    return re.sub(r"\{(target|keyType|fingerprint)\}", lambda m: _escape(fields[m.group(1)]), text)


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def detail_line(ws_code: int | None, name: str, reason: str) -> str:
    """``4003 AUTH_FAILED: token not accepted``: the code, its name and the raw reason,
    control characters shown escaped (the reason comes from the server)."""
    head = " ".join(x for x in (str(ws_code) if ws_code is not None else "", name) if x)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", reason)
    return f"{head}: {text}" if text else head


def http_status(message: str) -> int | None:
    """The HTTP status a failed upgrade was answered with (``... HTTP 404``), if any."""
    m = _HTTP_STATUS.search(message)
    return int(m.group(1)) if m else None


def served_path(body: bytes) -> str | None:
    """The WebSocket path a server's 404 body names, if it names one."""
    m = _SERVED_PATH.search(body[:1000].decode("utf-8", "replace"))
    return m.group(1) if m else None
