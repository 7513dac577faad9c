"""Control messages and data frames of ``nimbus.ssh.v1`` as typed, frozen data.

Every control message of the contract (``protocol.md`` section 2) is a frozen
dataclass; :data:`Ctl` is their union.  :func:`ctl_from_dict` validates a
JSON-shaped dict strictly -- required fields, types and ranges -- and raises
:class:`~nimbus_websocket.core.errors.ProtocolError` with
``MALFORMED_FRAME`` (4014) for a bad known message and
``UNSUPPORTED_MESSAGE`` (4009) for an unknown ``t``.  Unknown optional fields
are ignored.  :func:`ctl_to_dict` is its inverse and produces the wire names
(``resumeKey``, ``maxFrame``, ``profileAccepted``...).

Secrets (bearer tokens, ``open.user.auth``) are excluded from ``repr`` so a
message can be logged without leaking them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from .errors import (
    HOST_KEY_FINGERPRINT_MAX,
    HOST_KEY_HOST_MAX,
    HOST_KEY_TYPE_MAX,
    CloseCode,
    HostKey,
    ProtocolError,
)

__all__ = [
    "CHANNEL_ID_MAX",
    "CREDIT_MAX",
    "COUNTER_MAX",
    "STREAM_STDERR",
    "STREAM_STDOUT",
    "Auth",
    "Close",
    "Ctl",
    "DataFrame",
    "Eof",
    "Exit",
    "FILE_MODE_MAX",
    "FILE_PATH_MAX",
    "FILE_SIZE_MAX",
    "FileSpec",
    "Flow",
    "Hello",
    "HelloCaps",
    "HelloOk",
    "HostKey",
    "Open",
    "OpenErr",
    "OpenOk",
    "Ping",
    "Pong",
    "Resize",
    "ResumeChannel",
    "ResumeGrant",
    "ResumeRequest",
    "ResumedChannel",
    "ServerCaps",
    "Share",
    "ShareErr",
    "ShareOk",
    "Signal",
    "Unshare",
    "ViewerInfo",
    "Viewers",
    "Stream",
    "Target",
    "Term",
    "User",
    "ctl_from_dict",
    "ctl_to_dict",
]

#: Largest channel id (ids are 1..2**32-1).
CHANNEL_ID_MAX = 2**32 - 1
#: Largest credit one ``flow`` may carry (0..2**31).
CREDIT_MAX = 2**31
#: Largest byte counter (``ack``, ``rx``): the JSON-safe integer range.
COUNTER_MAX = 2**53 - 1
#: Smallest ``maxFrame`` a server may announce (every profile fits a control message).
MIN_MAX_FRAME = 1024
#: Terminal size bounds for ``open.term`` and ``resize``.
TERM_MIN, TERM_MAX = 1, 10_000

Stream: TypeAlias = Literal["stdout", "stderr"]
STREAM_STDOUT: Stream = "stdout"
STREAM_STDERR: Stream = "stderr"

# Length bounds on strings: a bad peer cannot make us keep megabytes of text.
_MAX_SHORT = 256
_MAX_TEXT = 4096
_MAX_TOKEN = 1024
_MAX_ENV = 64


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class DataFrame:
    """Opaque terminal bytes on one channel.

    ``stream`` is ``"stdout"`` or ``"stderr"``; client input travels as
    ``"stdout"`` from client to server.  ``payload`` is never altered.
    """

    stream: Stream
    id: int
    payload: bytes


# ---------------------------------------------------------------- nested parts


@dataclass(frozen=True, slots=True)
class Auth:
    """``hello.auth``: ``scheme`` ``"bearer"`` (with ``token``) or ``"none"``."""

    scheme: Literal["bearer", "none"]
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class HelloCaps:
    """``hello.caps``: requested wire profile and the exactly-once extension."""

    profile: str | None = None
    ack: bool = False


@dataclass(frozen=True, slots=True)
class ResumeChannel:
    """One channel the client wants back: its id, ``resumeKey`` and bytes received."""

    id: int
    resume_key: str = field(repr=False)
    rx: int = 0


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """``hello.resume``: the single-use token and (with ``caps.ack``) the channels."""

    token: str = field(repr=False)
    channels: tuple[ResumeChannel, ...] | None = None


@dataclass(frozen=True, slots=True)
class ResumedChannel:
    """One resumed channel in ``hello_ok.caps.resumed``: id and input bytes received."""

    id: int
    rx: int = 0


@dataclass(frozen=True, slots=True)
class ServerCaps:
    """``hello_ok.caps``."""

    profile_accepted: str
    flow: Literal["credit"] = "credit"
    max_frame: int | None = None
    ack: bool = False
    resumed: tuple[ResumedChannel, ...] | None = None
    #: [ext] the server honours ``open.command``.
    command: bool = False
    #: [ext] the server understands ``eof``.
    eof: bool = False
    #: [ext] the server opens file channels (``open.file``).
    files: bool = False
    #: [ext] the server makes share links of this session's channels (``share``).
    share: bool = False
    #: [ext] this is a viewer session (a share link): ``"read"`` or ``"write"``.
    view: str | None = None


@dataclass(frozen=True, slots=True)
class ResumeGrant:
    """``hello_ok.resume`` [ext]: the token to resume this session with, and its TTL."""

    token: str = field(repr=False)
    ttl_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class Target:
    """``open.target``: where the channel's terminal lives."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class User:
    """``open.user``: the remote user name and opaque backend credentials."""

    username: str
    auth: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class Term:
    """``open.term``: initial terminal size and environment (``TERM`` at least)."""

    cols: int = 80
    rows: int = 24
    env: Mapping[str, str] = field(default_factory=dict)


#: Longest ``open.file.path`` (bytes of UTF-8, the Linux ``PATH_MAX``).
FILE_PATH_MAX = 4096
#: Largest ``open.file.size`` the wire carries (2**53 - 1, exact in a JS number).
FILE_SIZE_MAX = 2**53 - 1
#: ``open.file.mode``: permission bits only (no set-uid games beyond ``0o7777``).
FILE_MODE_MAX = 0o7777


@dataclass(frozen=True, slots=True)
class FileSpec:
    """``open.file`` [ext]: the channel carries one file instead of a terminal.

    ``op`` ``"get"``: the server sends the file at ``path`` as the channel's
    output (``open_ok.size`` tells its length), then ``exit`` 0.  ``"put"``:
    the client sends exactly ``size`` bytes as input, then ``eof``; the server
    writes them to a temporary file beside ``path``, renames it into place
    (``mode`` its permission bits) and answers ``exit`` 0.  Any failure is one
    line on stderr and ``exit`` 1; a channel closed before ``exit`` leaves no
    partial file.  ``ref``: a terminal channel of the same session whose
    context the transfer shares (its working directory for a relative
    ``path``; on the SSH backend, its SSH connection).  Needs ``caps.files``.
    """

    op: Literal["get", "put"]
    path: str
    size: int | None = None
    mode: int | None = None
    ref: int | None = None


# --------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Hello:
    """c->s, first frame of every connection."""

    proto: int = 1
    auth: Auth | None = None
    caps: HelloCaps | None = None
    resume: ResumeRequest | None = None
    client: Mapping[str, str] | None = None
    t: Literal["hello"] = field(default="hello", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class HelloOk:
    """s->c, the server's answer to ``hello``; nothing else precedes it."""

    server: str
    caps: ServerCaps
    resume: ResumeGrant | None = None
    t: Literal["hello_ok"] = field(default="hello_ok", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Open:
    """c->s, open channel ``id`` to ``target`` as ``user`` with terminal ``term``."""

    id: int
    target: Target
    user: User
    term: Term | None = None
    #: [ext] run this instead of the login shell (servers announce ``caps.command``).
    command: str | None = None
    #: [ext] a file transfer instead of a terminal (servers announce ``caps.files``).
    file: FileSpec | None = None
    t: Literal["open"] = field(default="open", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class OpenOk:
    """s->c, channel ``id`` is open; ``resume_key`` identifies it for a resume."""

    id: int
    resume_key: str | None = field(default=None, repr=False)
    #: [ext] a ``get`` file channel: the file's length in bytes.
    size: int | None = None
    t: Literal["open_ok"] = field(default="open_ok", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class OpenErr:
    """s->c, channel ``id`` could not be opened (``code`` e.g. ``AUTH_FAILED``).

    ``host_key`` [ext] (``hostKey``): the SSH host key the target offered, with
    ``HOST_KEY_UNKNOWN`` / ``HOST_KEY_CHANGED``.
    """

    id: int
    code: str
    msg: str
    host_key: HostKey | None = None
    t: Literal["open_err"] = field(default="open_err", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Resize:
    """c->s, the terminal of channel ``id`` is now ``cols`` x ``rows``."""

    id: int
    cols: int
    rows: int
    t: Literal["resize"] = field(default="resize", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Signal:
    """c->s, deliver signal ``sig`` (``INT``, ``TERM``, ``HUP``...) on channel ``id``."""

    id: int
    sig: str
    t: Literal["signal"] = field(default="signal", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Close:
    """Both ways: channel ``id`` is (to be) closed."""

    id: int
    reason: str | None = None
    t: Literal["close"] = field(default="close", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Exit:
    """s->c, the channel's process ended with status ``code`` or signal ``sig``."""

    id: int
    code: int | None = None
    sig: str | None = None
    t: Literal["exit"] = field(default="exit", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Flow:
    """Credit grant (c->s) and, with ``caps.ack``, byte acknowledgement (both ways)."""

    id: int
    credit: int
    ack: int | None = None
    t: Literal["flow"] = field(default="flow", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Eof:
    """[ext] c->s, no more input on channel ``id`` (stdin closed); needs ``caps.eof``."""

    id: int
    t: Literal["eof"] = field(default="eof", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Ping:
    """Both ways: heartbeat; the receiver answers :class:`Pong` with the same ``ts``."""

    ts: float
    t: Literal["ping"] = field(default="ping", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Pong:
    """Both ways: the answer to :class:`Ping`."""

    ts: float
    t: Literal["pong"] = field(default="pong", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Share:
    """[ext] c->s, make a share link to channel ``id`` (``mode`` read|write, ``ttl`` seconds); ``ref`` pairs the answer."""

    id: int
    mode: Literal["read", "write"]
    ref: int
    ttl: int | None = None
    t: Literal["share"] = field(default="share", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ShareOk:
    """[ext] s->c, the link for request ``ref``: grant id, the viewer's ``token``, expiry (ms since the epoch)."""

    id: int
    ref: int
    grant: str
    token: str = field(repr=False)
    mode: Literal["read", "write"]
    expires: int
    t: Literal["share_ok"] = field(default="share_ok", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ShareErr:
    """[ext] s->c, request ``ref`` refused (``code`` e.g. ``POLICY_DENIED``, ``CHANNEL_LIMIT``)."""

    id: int
    ref: int
    code: str
    msg: str
    t: Literal["share_err"] = field(default="share_err", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class Unshare:
    """[ext] c->s, revoke ``grant`` of channel ``id`` (``None``: every grant of it); its viewers close with 4016."""

    id: int
    grant: str | None = None
    t: Literal["unshare"] = field(default="unshare", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class ViewerInfo:
    """One viewer of a shared channel: its grant, mode, address and since when (ms since the epoch)."""

    grant: str
    mode: Literal["read", "write"]
    peer: str
    since: int


@dataclass(frozen=True, slots=True)
class Viewers:
    """[ext] s->c, who is watching channel ``id`` now (sent whenever it changes)."""

    id: int
    viewers: tuple[ViewerInfo, ...]
    t: Literal["viewers"] = field(default="viewers", init=False, repr=False)


#: Viewers listed in one ``viewers`` message at most.
MAX_VIEWERS_LISTED = 128

Ctl: TypeAlias = (
    Hello | HelloOk | Open | OpenOk | OpenErr | Resize | Signal | Close | Exit | Flow | Eof | Ping | Pong
    | Share | ShareOk | ShareErr | Unshare | Viewers
)


# ------------------------------------------------------------------ validation


def _bad(msg: str) -> ProtocolError:
    return ProtocolError(CloseCode.MALFORMED_FRAME, msg)


def _obj(d: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any] | None:
    v = d.get(key)
    if v is None:
        if required:
            raise _bad(f"missing object field {key!r}")
        return None
    if not isinstance(v, dict):
        raise _bad(f"field {key!r} must be an object")
    return v


def _int(
    d: Mapping[str, Any], key: str, lo: int, hi: int, *, required: bool = True
) -> int | None:
    v = d.get(key)
    if v is None:
        if required:
            raise _bad(f"missing integer field {key!r}")
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"field {key!r} must be an integer")
    if not lo <= v <= hi:
        raise _bad(f"field {key!r}={v} out of range {lo}..{hi}")
    return v


def _rint(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = _int(d, key, lo, hi)
    assert v is not None
    return v


def _str(
    d: Mapping[str, Any], key: str, maxlen: int = _MAX_SHORT, *, required: bool = True
) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise _bad(f"missing string field {key!r}")
        return None
    if not isinstance(v, str):
        raise _bad(f"field {key!r} must be a string")
    if len(v) > maxlen:
        raise _bad(f"field {key!r} longer than {maxlen}")
    return v


def _rstr(d: Mapping[str, Any], key: str, maxlen: int = _MAX_SHORT) -> str:
    v = _str(d, key, maxlen)
    assert v is not None
    return v


def _bool(d: Mapping[str, Any], key: str) -> bool:
    v = d.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(f"field {key!r} must be a boolean")
    return v


def _num(d: Mapping[str, Any], key: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(f"field {key!r} must be a number")
    if isinstance(v, float) and not math.isfinite(v):
        raise _bad(f"field {key!r} must be finite")
    if abs(v) > 2**53:
        raise _bad(f"field {key!r} out of range")
    return v


def _id(d: Mapping[str, Any]) -> int:
    return _rint(d, "id", 1, CHANNEL_ID_MAX)


def _sig(d: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    v = _str(d, key, 32, required=required)
    if v is not None and (not v or not v.replace("_", "").isalnum() or not v.isascii()):
        raise _bad(f"field {key!r} is not a signal name")
    return v


def _list(d: Mapping[str, Any], key: str, maxlen: int) -> list[Any] | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, list):
        raise _bad(f"field {key!r} must be an array")
    if len(v) > maxlen:
        raise _bad(f"field {key!r} has more than {maxlen} items")
    for item in v:
        if not isinstance(item, dict):
            raise _bad(f"items of {key!r} must be objects")
    return v


def _term_size(d: Mapping[str, Any]) -> tuple[int, int]:
    return _rint(d, "cols", TERM_MIN, TERM_MAX), _rint(d, "rows", TERM_MIN, TERM_MAX)


def _hello(d: Mapping[str, Any]) -> Hello:
    proto = _rint(d, "proto", 0, 2**31)
    if proto != 1:
        raise ProtocolError(CloseCode.BAD_HELLO, f"unsupported proto {proto}")
    auth = None
    if (a := _obj(d, "auth", required=False)) is not None:
        scheme = _rstr(a, "scheme", 32)
        if scheme not in ("bearer", "none"):
            raise _bad(f"unknown auth scheme {scheme!r}")
        token = _str(a, "token", _MAX_TOKEN, required=scheme == "bearer")
        auth = Auth(scheme, token)  # type: ignore[arg-type]
    caps = None
    if (c := _obj(d, "caps", required=False)) is not None:
        caps = HelloCaps(profile=_str(c, "profile", 64, required=False), ack=_bool(c, "ack"))
    resume = None
    if (r := _obj(d, "resume", required=False)) is not None:
        items = _list(r, "channels", 64)
        chans = None
        if items is not None:
            chans = tuple(
                ResumeChannel(_id(i), _rstr(i, "resumeKey", _MAX_TOKEN), _rint(i, "rx", 0, COUNTER_MAX))
                for i in items
            )
        resume = ResumeRequest(_rstr(r, "token", _MAX_TOKEN), chans)
    client = None
    if (ci := _obj(d, "client", required=False)) is not None:
        client = {str(k)[:_MAX_SHORT]: str(v)[:_MAX_SHORT] for k, v in list(ci.items())[:16]}
    return Hello(proto, auth, caps, resume, client)


def _hello_ok(d: Mapping[str, Any]) -> HelloOk:
    c = _obj(d, "caps")
    assert c is not None
    flow = _rstr(c, "flow", 32)
    if flow != "credit":
        raise _bad(f"unknown flow mode {flow!r}")
    items = None
    if (rs := _obj(c, "resumed", required=False)) is not None:
        lst = _list(rs, "channels", 64) or []
        items = tuple(ResumedChannel(_id(i), _rint(i, "rx", 0, COUNTER_MAX)) for i in lst)
    caps = ServerCaps(
        profile_accepted=_rstr(c, "profileAccepted", 64),
        max_frame=_int(c, "maxFrame", MIN_MAX_FRAME, 2**31, required=False),
        ack=_bool(c, "ack"),
        resumed=items,
        command=_bool(c, "command"),
        eof=_bool(c, "eof"),
        files=_bool(c, "files"),
        share=_bool(c, "share"),
        view=_mode(c, "view", required=False),
    )
    grant = None
    if (g := _obj(d, "resume", required=False)) is not None:
        grant = ResumeGrant(_rstr(g, "token", _MAX_TOKEN), _rint(g, "ttlMs", 0, 2**31))
    return HelloOk(_rstr(d, "server", _MAX_SHORT), caps, grant)


def _open(d: Mapping[str, Any]) -> Open:
    tg = _obj(d, "target")
    us = _obj(d, "user")
    assert tg is not None and us is not None
    target = Target(_rstr(tg, "host", 255), _rint(tg, "port", 0, 65535))
    uauth = _obj(us, "auth", required=False) or {}
    user = User(_rstr(us, "username", _MAX_SHORT), dict(uauth))
    term = None
    if (tm := _obj(d, "term", required=False)) is not None:
        cols, rows = _term_size(tm)
        env: dict[str, str] = {}
        if (e := _obj(tm, "env", required=False)) is not None:
            if len(e) > _MAX_ENV:
                raise _bad("too many term.env entries")
            for k, v in e.items():
                if not isinstance(v, str) or len(k) > _MAX_SHORT or len(v) > _MAX_TEXT:
                    raise _bad("term.env values must be short strings")
                env[k] = v
        term = Term(cols, rows, env)
    command = _str(d, "command", 8192, required=False)
    spec = None
    if (f := _obj(d, "file", required=False)) is not None:
        spec = _file_spec(f)
        if term is not None or command is not None:
            raise _bad("open.file excludes term and command")
    return Open(_id(d), target, user, term, command, spec)


def _file_spec(f: Mapping[str, Any]) -> FileSpec:
    op = _rstr(f, "op", 8)
    if op not in ("get", "put"):
        raise _bad("open.file.op must be get or put")
    path = _rstr(f, "path", FILE_PATH_MAX)
    if not path or "\0" in path or len(path.encode("utf-8", "surrogatepass")) > FILE_PATH_MAX:
        raise _bad("open.file.path must be a non-empty path without NUL")
    size = _int(f, "size", 0, FILE_SIZE_MAX, required=op == "put")
    mode = _int(f, "mode", 0, FILE_MODE_MAX, required=False)
    if op == "get" and (size is not None or mode is not None):
        raise _bad("open.file: size and mode are for put")
    ref = _int(f, "ref", 0, CHANNEL_ID_MAX, required=False)
    return FileSpec("put" if op == "put" else "get", path, size, mode, ref)


def _mode(d: Mapping[str, Any], key: str, *, required: bool = True) -> Literal["read", "write"] | None:
    v = _str(d, key, 8, required=required)
    if v is None:
        return None
    if v not in ("read", "write"):
        raise _bad(f"{key} must be read or write")
    return "read" if v == "read" else "write"


def _share(d: Mapping[str, Any]) -> Share:
    mode = _mode(d, "mode")
    assert mode is not None
    return Share(_id(d), mode, _rint(d, "ref", 0, CHANNEL_ID_MAX), _int(d, "ttl", 1, 2**31, required=False))


def _share_ok(d: Mapping[str, Any]) -> ShareOk:
    mode = _mode(d, "mode")
    assert mode is not None
    return ShareOk(
        _id(d), _rint(d, "ref", 0, CHANNEL_ID_MAX), _rstr(d, "grant", 64), _rstr(d, "token", _MAX_TOKEN), mode,
        _rint(d, "expires", 0, 2**53),
    )


def _viewers(d: Mapping[str, Any]) -> Viewers:
    out = []
    for v in _list(d, "viewers", MAX_VIEWERS_LISTED) or []:
        if not isinstance(v, dict):
            raise _bad("viewers entries must be objects")
        mode = _mode(v, "mode")
        assert mode is not None
        out.append(ViewerInfo(_rstr(v, "grant", 64), mode, _rstr(v, "peer", _MAX_SHORT), _rint(v, "since", 0, 2**53)))
    return Viewers(_id(d), tuple(out))


def _open_err(d: Mapping[str, Any]) -> OpenErr:
    host_key = None
    if (h := _obj(d, "hostKey", required=False)) is not None:
        host_key = HostKey(
            _rstr(h, "keyType", HOST_KEY_TYPE_MAX),
            _rstr(h, "fingerprint", HOST_KEY_FINGERPRINT_MAX),
            _bool(h, "known"),
            _rstr(h, "host", HOST_KEY_HOST_MAX),
        )
    return OpenErr(_id(d), _rstr(d, "code", 64), _rstr(d, "msg", _MAX_TEXT), host_key)


def _flow(d: Mapping[str, Any]) -> Flow:
    return Flow(_id(d), _rint(d, "credit", 0, CREDIT_MAX), _int(d, "ack", 0, COUNTER_MAX, required=False))


def _exit(d: Mapping[str, Any]) -> Exit:
    return Exit(_id(d), _int(d, "code", -(2**31), 2**31 - 1, required=False), _sig(d, "sig", required=False))


_DECODERS: dict[str, Callable[[Mapping[str, Any]], Ctl]] = {
    "hello": _hello,
    "hello_ok": _hello_ok,
    "open": _open,
    "open_ok": lambda d: OpenOk(
        _id(d), _str(d, "resumeKey", _MAX_TOKEN, required=False), _int(d, "size", 0, FILE_SIZE_MAX, required=False)
    ),
    "open_err": _open_err,
    "resize": lambda d: Resize(_id(d), *_term_size(d)),
    "signal": lambda d: Signal(_id(d), _sig(d, "sig", required=True) or ""),
    "close": lambda d: Close(_id(d), _str(d, "reason", _MAX_TEXT, required=False)),
    "exit": _exit,
    "flow": _flow,
    "eof": lambda d: Eof(_id(d)),
    "share": _share,
    "share_ok": _share_ok,
    "share_err": lambda d: ShareErr(_id(d), _rint(d, "ref", 0, CHANNEL_ID_MAX), _rstr(d, "code", 64), _rstr(d, "msg", _MAX_TEXT)),
    "unshare": lambda d: Unshare(_id(d), _str(d, "grant", 64, required=False)),
    "viewers": _viewers,
    "ping": lambda d: Ping(_num(d, "ts")),
    "pong": lambda d: Pong(_num(d, "ts")),
}

#: Every control message type ``t`` of the contract.
CTL_TYPES: frozenset[str] = frozenset(_DECODERS)


def ctl_from_dict(d: Mapping[str, Any]) -> Ctl:
    """Validate a JSON-shaped dict and return the typed control message.

    Raises :class:`ProtocolError`: 4009 for an unknown ``t``, 4014 for a
    missing field, wrong type or out-of-range value (4002 for ``proto != 1``).
    """
    if not isinstance(d, dict):
        raise _bad("control message must be a JSON object")
    t = d.get("t")
    if not isinstance(t, str):
        raise _bad("control message without a string 't'")
    dec = _DECODERS.get(t)
    if dec is None:
        raise ProtocolError(CloseCode.UNSUPPORTED_MESSAGE, f"unknown message type {t[:32]!r}")
    return dec(d)


# -------------------------------------------------------------------- encoding


def _opt(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


def ctl_to_dict(m: Ctl) -> dict[str, Any]:
    """Return the JSON-shaped wire dict of ``m`` (the inverse of :func:`ctl_from_dict`)."""
    out: dict[str, Any] = {"t": m.t}
    match m:
        case Hello():
            out["proto"] = m.proto
            if m.auth is not None:
                a: dict[str, Any] = {"scheme": m.auth.scheme}
                _opt(a, "token", m.auth.token)
                out["auth"] = a
            if m.caps is not None:
                c: dict[str, Any] = {}
                _opt(c, "profile", m.caps.profile)
                if m.caps.ack:
                    c["ack"] = True
                out["caps"] = c
            if m.resume is not None:
                r: dict[str, Any] = {"token": m.resume.token}
                if m.resume.channels is not None:
                    r["channels"] = [
                        {"id": ch.id, "resumeKey": ch.resume_key, "rx": ch.rx}
                        for ch in m.resume.channels
                    ]
                out["resume"] = r
            if m.client is not None:
                out["client"] = dict(m.client)
        case HelloOk():
            out["server"] = m.server
            sc: dict[str, Any] = {"flow": m.caps.flow, "profileAccepted": m.caps.profile_accepted}
            _opt(sc, "maxFrame", m.caps.max_frame)
            if m.caps.ack:
                sc["ack"] = True
            if m.caps.command:
                sc["command"] = True
            if m.caps.eof:
                sc["eof"] = True
            if m.caps.files:
                sc["files"] = True
            if m.caps.share:
                sc["share"] = True
            _opt(sc, "view", m.caps.view)
            if m.caps.resumed is not None:
                sc["resumed"] = {"channels": [{"id": ch.id, "rx": ch.rx} for ch in m.caps.resumed]}
            out["caps"] = sc
            if m.resume is not None:
                out["resume"] = {"token": m.resume.token, "ttlMs": m.resume.ttl_ms}
        case Open():
            out["id"] = m.id
            out["target"] = {"host": m.target.host, "port": m.target.port}
            out["user"] = {"username": m.user.username, "auth": dict(m.user.auth)}
            if m.term is not None:
                tm: dict[str, Any] = {"cols": m.term.cols, "rows": m.term.rows}
                if m.term.env:
                    tm["env"] = dict(m.term.env)
                out["term"] = tm
            _opt(out, "command", m.command)
            if m.file is not None:
                fs: dict[str, Any] = {"op": m.file.op, "path": m.file.path}
                _opt(fs, "size", m.file.size)
                _opt(fs, "mode", m.file.mode)
                _opt(fs, "ref", m.file.ref)
                out["file"] = fs
        case OpenOk():
            out["id"] = m.id
            _opt(out, "resumeKey", m.resume_key)
            _opt(out, "size", m.size)
        case OpenErr():
            out.update(id=m.id, code=m.code, msg=m.msg)
            if m.host_key is not None:
                out["hostKey"] = m.host_key.to_dict()
        case Resize():
            out.update(id=m.id, cols=m.cols, rows=m.rows)
        case Signal():
            out.update(id=m.id, sig=m.sig)
        case Eof():
            out["id"] = m.id
        case Close():
            out["id"] = m.id
            _opt(out, "reason", m.reason)
        case Exit():
            out["id"] = m.id
            _opt(out, "code", m.code)
            _opt(out, "sig", m.sig)
        case Flow():
            out.update(id=m.id, credit=m.credit)
            _opt(out, "ack", m.ack)
        case Share():
            out.update(id=m.id, mode=m.mode, ref=m.ref)
            _opt(out, "ttl", m.ttl)
        case ShareOk():
            out.update(id=m.id, ref=m.ref, grant=m.grant, token=m.token, mode=m.mode, expires=m.expires)
        case ShareErr():
            out.update(id=m.id, ref=m.ref, code=m.code, msg=m.msg)
        case Unshare():
            out["id"] = m.id
            _opt(out, "grant", m.grant)
        case Viewers():
            out["id"] = m.id
            out["viewers"] = [{"grant": v.grant, "mode": v.mode, "peer": v.peer, "since": v.since} for v in m.viewers]
        case Ping() | Pong():
            out["ts"] = m.ts
    return out
