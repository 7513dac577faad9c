"""Close codes, error codes and the one exception hierarchy of nimbus-websocket.

Every way a ``nimbus.ssh.v1`` connection can end has a code in
:class:`CloseCode`: the WebSocket codes of RFC 6455 and the application codes
4000-4015 of the contract (``protocol.md`` section 8).  Every error a user
can see has a stable name in :class:`ErrorCode` (a ``str`` enum, so
``err.code == "AUTH_FAILED"`` holds).

The hierarchy (everything nimbus raises derives from :class:`NimbusError`)::

    NimbusError
    ├── ProtocolError      the peer broke the contract: close with .code (a CloseCode)
    ├── CloseError         a connection ended for good: .ws_code, .app_code, .code (ErrorCode)
    ├── ChannelError       a channel ended abnormally or takes no input: .code (ErrorCode)
    │   └── ChannelOpenError   the server refused the channel (open_err; .host_key for a host-key refusal)
    ├── BackendError       a server backend could not open or run a channel: .code (ErrorCode), .host_key
    ├── ClientClosedError  a local call on a closed client session (also a RuntimeError)
    └── IllegalTransition  a state machine was asked for a move its table has not
                           (local misuse; on peer input the machines close with the
                           contract's code instead)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "MAX_CLOSE_REASON_BYTES",
    "RETRYABLE_CLOSE_CODES",
    "BackendError",
    "ChannelError",
    "ChannelOpenError",
    "CloseCode",
    "ClientClosedError",
    "CloseError",
    "ErrorCode",
    "HostKey",
    "IllegalTransition",
    "NimbusError",
    "ProtocolError",
    "abandon_close_codes",
    "close_code_name",
    "describe_close_code",
    "sendable_close_code",
    "truncate_reason",
]


class CloseCode(enum.IntEnum):
    """WebSocket (1000-1015) and application (4000-4016) close codes (4016 [ext]: share links)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR_WS = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015

    CANCELLED = 4000
    UNSUPPORTED_PROFILE = 4001
    BAD_HELLO = 4002
    AUTH_FAILED = 4003
    POLICY_DENIED = 4004
    TARGET_UNREACHABLE = 4005
    CHANNEL_LIMIT = 4006
    FLOW_VIOLATION = 4007
    FRAME_TOO_LARGE = 4008
    UNSUPPORTED_MESSAGE = 4009
    SERVER_OVERLOAD = 4010
    RESUME_FAILED = 4011
    TIMEOUT = 4012
    DUPLICATE_CHANNEL_ID = 4013
    MALFORMED_FRAME = 4014
    INTERNAL_ERROR = 4015
    #: [ext] a viewer's share link was revoked, expired, or its terminal ended.
    SHARE_REVOKED = 4016


class ErrorCode(enum.StrEnum):
    """Stable names of every error a user can see (``CloseError.code``, ``ChannelError.code``).

    The first block are the :class:`CloseCode` names (a close frame's code);
    the second the client's own outcomes; the third ``open_err`` codes the
    reference server sends.  ``open_err.code`` is any string of at most 64
    characters on the wire (PROTOCOL.md): :meth:`of` maps a name this
    version does not know to :attr:`UNKNOWN` (the text stays in the message).
    """

    NORMAL = "NORMAL"
    GOING_AWAY = "GOING_AWAY"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    UNSUPPORTED_DATA = "UNSUPPORTED_DATA"
    NO_STATUS = "NO_STATUS"
    ABNORMAL = "ABNORMAL"
    INVALID_DATA = "INVALID_DATA"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    MESSAGE_TOO_BIG = "MESSAGE_TOO_BIG"
    MANDATORY_EXTENSION = "MANDATORY_EXTENSION"
    INTERNAL_ERROR_WS = "INTERNAL_ERROR_WS"
    SERVICE_RESTART = "SERVICE_RESTART"
    TRY_AGAIN_LATER = "TRY_AGAIN_LATER"
    BAD_GATEWAY = "BAD_GATEWAY"
    TLS_HANDSHAKE = "TLS_HANDSHAKE"
    CANCELLED = "CANCELLED"
    UNSUPPORTED_PROFILE = "UNSUPPORTED_PROFILE"
    BAD_HELLO = "BAD_HELLO"
    AUTH_FAILED = "AUTH_FAILED"
    POLICY_DENIED = "POLICY_DENIED"
    TARGET_UNREACHABLE = "TARGET_UNREACHABLE"
    CHANNEL_LIMIT = "CHANNEL_LIMIT"
    FLOW_VIOLATION = "FLOW_VIOLATION"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    UNSUPPORTED_MESSAGE = "UNSUPPORTED_MESSAGE"
    SERVER_OVERLOAD = "SERVER_OVERLOAD"
    RESUME_FAILED = "RESUME_FAILED"
    TIMEOUT = "TIMEOUT"
    DUPLICATE_CHANNEL_ID = "DUPLICATE_CHANNEL_ID"
    MALFORMED_FRAME = "MALFORMED_FRAME"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    SHARE_REVOKED = "SHARE_REVOKED"

    #: The first connection attempt failed before the session was ready.
    CONNECT_FAILED = "CONNECT_FAILED"
    #: The transport dropped and the session could not be resumed.
    CONNECTION_LOST = "CONNECTION_LOST"
    #: Every reconnect attempt of the retry policy failed.
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
    #: The application's ``auth`` callable raised or returned something unusable.
    AUTH_PROVIDER_FAILED = "AUTH_PROVIDER_FAILED"
    #: The connection or channel is closed (an operation came too late).
    CLOSED = "CLOSED"
    #: A channel did not survive a reconnect.
    LOST = "LOST"
    #: The peer does not support what was asked (e.g. ``open.command``).
    UNSUPPORTED = "UNSUPPORTED"

    #: The backend could not start the session (``open_err``).
    BACKEND_FAILED = "BACKEND_FAILED"
    #: The SSH target's host key is not in the server's known_hosts (``open_err``).
    HOST_KEY_UNKNOWN = "HOST_KEY_UNKNOWN"
    #: known_hosts holds a *different* key for the SSH target: possibly a man in
    #: the middle (``open_err``).
    HOST_KEY_CHANGED = "HOST_KEY_CHANGED"
    #: A file channel could not open its file: not found, not a regular file,
    #: permission denied, too large (``open_err``).
    FILE_FAILED = "FILE_FAILED"

    #: A code this version does not know.
    UNKNOWN = "UNKNOWN"

    @classmethod
    def of(cls, value: str) -> ErrorCode:
        """The member named ``value``, or :attr:`UNKNOWN`."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


_DESCRIPTIONS: dict[int, str] = {
    1000: "normal closure",
    1001: "going away (server shutdown or page unload)",
    1002: "WebSocket protocol error",
    1003: "unsupported data",
    1005: "no status code",
    1006: "connection lost",
    1007: "invalid frame payload (not UTF-8)",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension missing",
    1011: "server internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failure",
    4000: "cancelled or superseded by a newer connection",
    4001: "wire profile not supported by the server",
    4002: "bad hello",
    4003: "authentication failed",
    4004: "denied by policy (rate limit or forbidden target)",
    4005: "target unreachable",
    4006: "too many channels on this connection",
    4007: "flow-control violation",
    4008: "frame too large",
    4009: "unsupported message type",
    4010: "server overloaded",
    4011: "resume failed (token invalid, expired or already used)",
    4012: "idle timeout",
    4013: "duplicate channel id",
    4014: "malformed frame",
    4015: "server internal error",
    4016: "share link revoked, expired, or its terminal ended",
}

#: Codes after which a client reconnects (and resumes) instead of giving up.
#: Everything else is terminal: the peer told us not to come back as we are.
RETRYABLE_CLOSE_CODES: frozenset[int] = frozenset(
    {1001, 1005, 1006, 1011, 1012, 1013, 1014, 4010, 4012, 4015}
)


#: The longest close reason a WebSocket close frame carries: 123 bytes of UTF-8
#: (RFC 6455 5.5: a control frame's payload is at most 125 bytes, 2 of them the code).
MAX_CLOSE_REASON_BYTES = 123


def truncate_reason(reason: str, limit: int = MAX_CLOSE_REASON_BYTES) -> str:
    """Cut ``reason`` to at most ``limit`` bytes of UTF-8, never inside a character.

    Every close reason nimbus puts on the wire goes through this function
    (the core's ``CloseTransport`` reasons and the runtimes' ``close()``
    calls), so a long or non-ASCII message never makes ``close()`` throw.
    """
    raw = reason.encode("utf-8")
    if len(raw) <= limit:
        return reason
    return raw[:limit].decode("utf-8", "ignore")


def sendable_close_code(code: int) -> int:
    """Map ``code`` to one a client's WHATWG ``close()`` accepts (1000 or 3000-4999).

    Codes a client may not send (1001-1015: reserved or only the peer's to
    send, like 1006 or 1009) become 4000 (``CANCELLED``): never 1000, because
    an explicit 1000 ends the server-side session (contract 12.7) and a
    client that merely gives up on one socket must keep its session.
    """
    if code == CloseCode.NORMAL or 3000 <= code <= 4999:
        return code
    return int(CloseCode.CANCELLED)


def abandon_close_codes() -> tuple[int, int]:
    """``(sent, reported)`` when a client abandons a socket as if the network dropped it.

    ``sent`` (4000 ``CANCELLED``) is what the abandoned socket's ``close()``
    sends: the server keeps the session for a resume.  ``reported`` (1006
    ``ABNORMAL``) is the close code the session is told, so it reconnects and
    resumes exactly as after a real network loss.
    """
    return int(CloseCode.CANCELLED), int(CloseCode.ABNORMAL)


def close_code_name(code: int) -> str:
    """Return the stable upper-case name of ``code`` (``"UNKNOWN_<n>"`` if none)."""
    try:
        return CloseCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def describe_close_code(code: int) -> str:
    """Return a short human explanation of ``code`` for status bars and logs."""
    return _DESCRIPTIONS.get(code, f"close code {code}")


#: Longest ``HostKey`` fields on the wire (``open_err.hostKey``, PROTOCOL.md section 3).
HOST_KEY_TYPE_MAX, HOST_KEY_FINGERPRINT_MAX, HOST_KEY_HOST_MAX = 32, 128, 262


@dataclass(frozen=True, slots=True)
class HostKey:
    """The host key an SSH target offered and the server did not trust (``open_err.hostKey`` [ext]).

    Sent with ``HOST_KEY_UNKNOWN`` (``known`` false: the server's known_hosts
    has no key for the target) and ``HOST_KEY_CHANGED`` (``known`` true: it
    has a different one -- possibly a man in the middle).  ``key_type`` is
    the name ``ssh-keygen -l`` prints (``ED25519``, ``RSA``, ``ECDSA``...),
    ``fingerprint`` the key's ``SHA256:...`` fingerprint and ``host`` the
    target as ``HOST:PORT``.  Nothing of the known_hosts entries themselves is
    told: only whether there was one.  The key is never accepted.
    """

    key_type: str
    fingerprint: str
    known: bool
    host: str

    @property
    def code(self) -> ErrorCode:
        """``HOST_KEY_CHANGED`` when known_hosts had another key, else ``HOST_KEY_UNKNOWN``."""
        return ErrorCode.HOST_KEY_CHANGED if self.known else ErrorCode.HOST_KEY_UNKNOWN

    def to_dict(self) -> dict[str, object]:
        """The wire (and JavaScript) shape: ``{keyType, fingerprint, known, host}``."""
        return {"keyType": self.key_type, "fingerprint": self.fingerprint, "known": self.known, "host": self.host}


class NimbusError(Exception):
    """Base class of every exception raised by nimbus-websocket."""


class ProtocolError(NimbusError):
    """The peer broke the contract; the connection must close with ``code``.

    ``code`` is a :class:`CloseCode` from the contract (for example
    ``MALFORMED_FRAME`` for a truncated envelope, ``UNSUPPORTED_MESSAGE`` for
    an unknown ``t``, ``FRAME_TOO_LARGE`` for a frame over ``maxFrame``).
    """

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(f"{code.name} ({int(code)}): {message}")
        self.code = code
        self.message = message


class CloseError(NimbusError):
    """A connection ended for good (failed connect, auth, resume or terminal close).

    ``ws_code`` is the WebSocket close code seen on the wire (1006 when the
    socket dropped without one), ``app_code`` the application code 4000-4099
    when there was one (else ``None``), ``code`` the stable
    :class:`ErrorCode` (e.g. ``AUTH_FAILED``, ``RETRIES_EXHAUSTED``; a ``str``
    given is mapped with :meth:`ErrorCode.of`), and ``message`` a human text.
    """

    def __init__(self, ws_code: int, app_code: int | None, code: ErrorCode | str, message: str) -> None:
        self.code: ErrorCode = code if isinstance(code, ErrorCode) else ErrorCode.of(code)
        super().__init__(f"{self.code} (ws {ws_code}): {message}")
        self.ws_code = ws_code
        self.app_code = app_code
        self.message = message

    @classmethod
    def from_close(cls, ws_code: int, reason: str = "") -> CloseError:
        """Build the error for a close frame ``(ws_code, reason)`` received from the peer."""
        app = ws_code if 4000 <= ws_code <= 4099 else None
        text = reason or describe_close_code(ws_code)
        return cls(ws_code, app, ErrorCode.of(close_code_name(ws_code)), text)

    def to_dict(self) -> dict[str, object]:
        """JSON-shaped view, for diagnostics and the JS facade."""
        return {
            "wsCode": self.ws_code,
            "appCode": self.app_code,
            "code": self.code,
            "message": self.message,
        }


class ChannelError(NimbusError):
    """A channel ended abnormally (``code`` e.g. ``LOST``: not resumed) or is closed.

    ``code`` is an :class:`ErrorCode`; ``message`` a human text (for an
    ``open_err``, the server's ``msg``, prefixed with its code when the code
    is one this version does not know).
    """

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        self.code: ErrorCode = code if isinstance(code, ErrorCode) else ErrorCode.of(code)
        if self.code is ErrorCode.UNKNOWN and code != ErrorCode.UNKNOWN:
            message = f"{code}: {message}"
        super().__init__(f"{self.code}: {message}")
        self.message = message


class ChannelOpenError(ChannelError):
    """``open_err``: the server refused the channel (``code`` e.g. ``TARGET_UNREACHABLE``).

    ``host_key`` is the :class:`HostKey` the SSH target offered when the code
    is ``HOST_KEY_UNKNOWN`` or ``HOST_KEY_CHANGED`` and the server said which
    key (``open_err.hostKey``), else ``None``.
    """

    def __init__(self, code: ErrorCode | str, message: str, host_key: HostKey | None = None) -> None:
        super().__init__(code, message)
        self.host_key = host_key


class BackendError(NimbusError):
    """A server backend could not open or run a channel; ``code`` goes into ``open_err``.

    ``host_key``: the refused SSH host key, sent as ``open_err.hostKey``.
    """

    def __init__(self, code: ErrorCode | str, message: str, host_key: HostKey | None = None) -> None:
        self.code: ErrorCode = code if isinstance(code, ErrorCode) else ErrorCode.of(code)
        super().__init__(f"{self.code}: {message}")
        self.message = message
        self.host_key = host_key


class ClientClosedError(NimbusError, RuntimeError):
    """A local call on a client session that is already closed (for example ``open_channel``).

    Also a ``RuntimeError``, which is what earlier versions raised.
    """


class IllegalTransition(NimbusError):
    """An event that a state table does not allow in the current state.

    Raised by :func:`nimbus_websocket.core.state.transition`.  On the
    application's own call it reaches the caller (local misuse); the session
    machines catch it on peer input and close with the contract's code.
    """

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: event {event!r} is illegal in state {state!r}")
        self.machine = machine
        self.state = state
        self.event = event
