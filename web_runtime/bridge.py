"""The Python half of the JavaScript facade (``web_runtime/js/nimbus.mjs``).

The facade gives page JavaScript (and the Node shim) the client with
JavaScript idioms: ``Uint8Array`` in and out, plain objects for events,
promises.  This module is what it calls into.  The contract between the two
halves is deliberately narrow and cheap to cross:

* options and open specs travel as **JSON strings** (camelCase keys, times in
  milliseconds), events back to JavaScript as ``dispatch(name, json)``; the
  core's event dicts are snake_case and :func:`js_keys` is the one place
  their keys become camelCase (``buffered_amount`` -> ``bufferedAmount``);
* results of async calls are JSON envelopes ``{"ok": true, "value": ...}``
  or ``{"ok": false, "error": {"name", "code", "message", "wsCode",
  "appCode"}}``, turned into values or a thrown ``NimbusError`` by the facade;
* channel output goes to JavaScript as ``deliver(stream, Uint8Array)`` or,
  when it can be a view of the received message, ``deliver(stream,
  ArrayBuffer, offset, length)``; ``stream`` is 1 (stdout) or 2 (stderr);
* file transfers (:class:`TransferHandle`, over
  :func:`~nimbus_websocket.core.aio.files.upload` /
  :func:`~nimbus_websocket.core.aio.files.download`) cross once per chunk
  each way: an upload calls ``read()`` (a promise of the next
  ``Uint8Array`` slice of the file), a download calls ``sink(...)`` like
  ``deliver`` (a view of the received message when it can be one), and
  progress goes out as ``progress(done, total, rate, eta)`` -- four numbers,
  at most every :data:`PROGRESS_INTERVAL` seconds and at the end.

Consumption (what earns credit).  ``deliver`` returns ``undefined`` when the
JavaScript listeners consumed the chunk synchronously; otherwise it returns
a token and the facade calls :meth:`ChannelHandle.release` with it once the
listeners signalled consumption (xterm.js's write callback, a settled
promise).  A chunk counts as consumed only then: until then the credit for
it is withheld, so a terminal that cannot keep up stops the server within
one window.  This rides on the connection layer's rule that a data callback
returning an awaitable is consumed when the awaitable completes.

Share links (issue 18): :meth:`ChannelHandle.share` / :meth:`ChannelHandle.unshare`
over :meth:`~nimbus_websocket.core.aio.Channel.share`; the channel events
``viewers`` (who watches: ``[{grant, mode, peer, since}]``) and ``resize`` (a
viewer session's shared terminal size: ``{cols, rows}``) are dispatched like
the others.  The viewer link for a page is the facade's to build (from the
page's own location): this side returns the grant, token, mode and expiry.

Handles (:class:`ConnectionHandle`, :class:`ChannelHandle`) are created by
JavaScript (which owns their proxies and destroys them once closed), except
for channels restored by a resume, which are handed over in the ``channel``
dispatch as a ``create_proxy`` proxy.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ..core.aio import files
from ..core.aio.connection import (
    Channel,
    ChannelError,
    ChannelOpenError,
    Connection,
    Hold,
    Listener,
)
from ..core.aio.options import ConnectOptions
from ..core.errors import CloseCode, CloseError
from ..core.events import ChannelExit, Diagnostic, PolicyEvent, StateChanged
from ..core.messages import Target, User, ViewerInfo
from . import _ffi
from .connection import WebConnection, connect

__all__ = [
    "ChannelHandle",
    "ConnectionHandle",
    "TransferHandle",
    "connect_kwargs",
    "error_dict",
    "js_keys",
]

log = logging.getLogger("nimbus_websocket.web")

STDOUT = 1
STDERR = 2

#: Seconds between two ``progress`` calls of a transfer (the last one always goes out).
PROGRESS_INTERVAL = 0.1


# ------------------------------------------------------------- conversions


@functools.lru_cache(maxsize=512)
def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def js_keys(d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` with camelCase keys for JavaScript: the one snake_case -> camelCase conversion.

    Python events and their extras are snake_case (``buffered_amount``,
    ``rtt_ms``, ``ws_code``, ``web_socket_stream``); the JSON the facade
    sees has always been camelCase (``bufferedAmount``, ``rttMs``,
    ``wsCode``, ``webSocketStream``).  Top-level keys only (event dicts are
    flat); a key without ``_`` is unchanged, so converting twice is harmless.
    """
    return {_camel(k): v for k, v in d.items()}


def error_dict(exc: BaseException) -> dict[str, Any]:
    """A plain, JSON-shaped description of ``exc`` for JavaScript."""
    if isinstance(exc, CloseError):
        return {"name": "CloseError", **js_keys(exc.to_dict())}
    if isinstance(exc, ChannelOpenError):
        info: dict[str, Any] = {"name": "ChannelOpenError", "code": exc.code, "message": exc.message}
        if exc.host_key is not None:
            info["hostKey"] = exc.host_key.to_dict()  # HOST_KEY_UNKNOWN / HOST_KEY_CHANGED
        return info
    if isinstance(exc, files.FileTransferError):
        return {"name": "FileTransferError", "code": exc.code, "message": exc.message}
    if isinstance(exc, ChannelError):
        return {"name": "ChannelError", "code": exc.code, "message": exc.message}
    if isinstance(exc, (TypeError, ValueError, KeyError)):
        return {"name": "TypeError", "code": "BAD_ARGUMENT", "message": str(exc)}
    return {"name": type(exc).__name__, "code": "INTERNAL_ERROR", "message": str(exc)}


def _ok(value: Any = None) -> str:
    return json.dumps({"ok": True, "value": value})


def _err(exc: BaseException) -> str:
    return json.dumps({"ok": False, "error": error_dict(exc)})


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


#: Facade keys that are no :class:`ConnectOptions` field, handled here.
_WEB_ONLY = frozenset({"lifecycle", "resumeKey"})
#: Keys the facade passes separately (``url``, ``auth``...) or that no longer
#: do anything (``transport``: there is one transport, the classic WebSocket).
_IGNORED = frozenset({"url", "auth", "on", "WebSocket", "transport"})


def connect_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`~.connection.connect` from the facade's JSON options.

    The shared options are read by
    :meth:`~nimbus_websocket.core.aio.ConnectOptions.from_json` (camelCase
    names and millisecond units come from its fields) into ``options``; the
    browser-only ``lifecycle`` and ``resume.key`` become keywords of their
    own.  Unknown keys are an error (a misspelt option must not be silently
    ignored); ``null`` means "default".
    """
    opts, rest = ConnectOptions.from_json(
        {k: v for k, v in options.items() if k not in _IGNORED}
    )
    unknown = sorted(set(rest) - _WEB_ONLY)
    if unknown:
        raise ValueError(f"unknown connect option(s): {', '.join(repr(k) for k in unknown)}")
    kw: dict[str, Any] = {"options": opts}
    if "lifecycle" in rest:
        kw["lifecycle"] = bool(rest["lifecycle"])
    if "resumeKey" in rest:
        kw["resume_key"] = str(rest["resumeKey"])
    return kw


def _auth_value(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"scheme": "bearer", "token": value}
    if isinstance(value, dict):
        return value
    to_py = getattr(value, "to_py", None)
    if to_py is not None:
        return _auth_value(to_py())
    raise TypeError(
        f"auth must be a token string, {{scheme, token}} or null, not {type(value).__name__}"
    )


def _auth_provider(static: Any, js_fn: Any) -> Callable[[], Any] | None:
    """``auth`` of :func:`connect`: a JavaScript function (sync or async), or a static value."""
    if js_fn is not None:

        async def provider() -> dict[str, Any] | None:
            result = js_fn()
            if hasattr(result, "then"):
                result = await result
            return _auth_value(result)

        return provider
    if static is None:
        return None
    value = _auth_value(static)
    return lambda: value


def _state_dict(ev: StateChanged) -> dict[str, Any]:
    return js_keys({"old": ev.old, "new": ev.new, "state": ev.new, "reason": ev.reason})


def _exit_dict(ev: ChannelExit) -> dict[str, Any]:
    return {"id": ev.id, "code": ev.code, "sig": ev.sig}


def _viewers_list(viewers: tuple[ViewerInfo, ...]) -> list[dict[str, Any]]:
    """``[{grant, mode, peer, since}]`` (``since``: ms since the epoch) of a ``viewers`` event."""
    return [{"grant": v.grant, "mode": v.mode, "peer": v.peer, "since": v.since} for v in viewers]


def _size_dict(size: tuple[int, int] | None) -> dict[str, int] | None:
    return None if size is None else {"cols": size[0], "rows": size[1]}


# --------------------------------------------------------------- channel


class ChannelHandle:
    """One channel as the facade sees it: output to ``deliver``, events to ``dispatch``.

    Create it from JavaScript (``conn.new_channel()``), :meth:`attach` the
    two JavaScript functions, then pass it to
    :meth:`ConnectionHandle.open_session`.  Output that arrives before
    :meth:`attach` (possible for a channel restored by a resume) is kept,
    unconsumed, and delivered on attach.
    """

    def __init__(
        self, channel: Channel | None = None, owner: ConnectionHandle | None = None
    ) -> None:
        self.channel = channel
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._deliver: Any = None
        self._dispatch: Any = None
        # Chunks the JavaScript listeners still hold (token -> Hold); bounded by the
        # credit window, as every unconsumed chunk is.
        self._pending: dict[int, Hold] = {}
        self._early: list[tuple[int, bytes, Hold]] = []
        self._closed = False
        #: For a channel restored by a resume: the output position it resumed from.
        self._resumed_from: int | None = None
        self._last_position = 0

    # ---------------------------------------------------------- JS-facing

    def attach(self, deliver: Any, dispatch: Any) -> None:
        """Install ``deliver(stream, data[, offset, length])`` and ``dispatch(name, json)``; flush early output."""
        self._deliver = deliver
        self._dispatch = dispatch
        early, self._early = self._early, []
        for code, data, hold in early:
            token = self._hand(code, data)
            if token is None:
                hold.release()
            else:
                self._pending[token] = hold

    def release(self, token: int) -> None:
        """The JavaScript listeners consumed the chunk of ``token``: it earns credit now.

        Synchronously (a :class:`~nimbus_websocket.core.aio.connection.Hold`):
        the grant it may trigger goes out in this call, no event-loop turn.
        """
        hold = self._pending.pop(int(token), None)
        if hold is not None:
            hold.release()

    @property
    def id(self) -> int:
        """The channel id (0 before the channel exists)."""
        return 0 if self.channel is None else self.channel.id

    @property
    def state(self) -> str:
        """``opening``, ``open``, ``exited``, ``closing`` or ``closed``."""
        return "opening" if self.channel is None else self.channel.state

    @property
    def received(self) -> int:
        """Output bytes received on the channel since it opened (stdout + stderr, kept across resumes).

        Output reaches the listeners as it is received, so this is the
        stream position just past the last chunk handed to JavaScript (0
        before the channel exists; the last value once it is gone).
        """
        conn = None if self._owner is None else self._owner.live
        if self.channel is not None and conn is not None:
            pos = conn.output_position(self.channel.id)
            if pos is not None:
                self._last_position = pos
        return self._last_position

    @property
    def resumed_from(self) -> int | None:
        """For a channel restored by a resume: the output position it resumed from, else ``None``.

        The first chunk delivered after the resume starts at this offset
        (the server retransmits from it: PROTOCOL.md section 7).
        """
        return self._resumed_from

    @property
    def info(self) -> str:
        """JSON ``{id, state, resumed, exitStatus, exitSignal, received, resumedFrom, viewers, termSize}``.

        ``viewers``: who watches this channel through share links, as the server
        last said (``[{grant, mode, peer, since}]``); ``termSize``: on a viewer
        session, the shared terminal's ``{cols, rows}`` as the server last said
        (``null`` before it did, and on an owner's channel).
        """
        ch = self.channel
        if ch is None:
            return _json(
                {
                    "id": 0,
                    "state": "opening",
                    "resumed": False,
                    "exitStatus": None,
                    "exitSignal": None,
                    "received": 0,
                    "resumedFrom": None,
                    "viewers": [],
                    "termSize": None,
                }
            )
        return _json(
            {
                "id": ch.id,
                "state": ch.state,
                "resumed": ch.resumed,
                "exitStatus": ch.exit_status,
                "exitSignal": ch.exit_signal,
                "received": self.received,
                "resumedFrom": self._resumed_from,
                "viewers": _viewers_list(ch.viewers),
                "termSize": _size_dict(ch.term_size),
            }
        )

    def send_now(self, data: Any) -> bool | str:
        """Send input now if the input buffer has room: ``True`` (sent), ``False`` (use :meth:`send`).

        No coroutine, so no event-loop turn before the bytes reach the
        socket (a keystroke).  An error envelope (JSON) when the channel
        takes no input.
        """
        try:
            ch = self.channel
            if ch is None:
                return False  # send() reports it
            return ch.try_send(data if isinstance(data, str) else data.to_bytes())
        except Exception as exc:
            return _err(exc)

    async def send(self, data: Any) -> str:
        """Send input: a ``Uint8Array`` (bytes) or a string (UTF-8); waits while the buffer is full."""
        try:
            payload = data if isinstance(data, str) else bytes(data.to_bytes())
            assert self.channel is not None, "channel not open"
            await self.channel.send(payload)
        except Exception as exc:
            return _err(exc)
        return _ok()

    def resize(self, cols: int, rows: int) -> None:
        """Resize the remote terminal (coalesced by the core)."""
        if self.channel is not None:
            self.channel.resize(int(cols), int(rows))

    async def signal(self, sig: str) -> str:
        """Deliver ``sig`` (``"INT"``...) to the remote process."""
        try:
            assert self.channel is not None, "channel not open"
            await self.channel.signal(str(sig))
        except Exception as exc:
            return _err(exc)
        return _ok()

    async def share(self, mode: str = "read", ttl: Any = 3600) -> str:
        """A share link to this terminal (``mode`` ``"read"`` or ``"write"``, valid ``ttl``
        seconds; ``None``: the server's longest).  JSON envelope ``{grant, token, mode,
        expires, url}``: ``expires`` in ms since the epoch, ``url`` the endpoint's
        ``?share=`` URL (for ``nimbus-ws connect --share``); a refusal is a ``ChannelError``
        (``POLICY_DENIED``, ``CHANNEL_LIMIT``, ``UNSUPPORTED``)."""
        try:
            if self.channel is None:
                raise ChannelError("CLOSED", "channel not open")
            link = await self.channel.share(str(mode), None if ttl is None else int(ttl))
        except Exception as exc:
            return _err(exc)
        return _ok(
            {
                "grant": link.grant,
                "token": link.token,
                "mode": link.mode,
                "expires": round(link.expires * 1000),
                "url": link.url,
            }
        )

    def unshare(self, grant: str | None = None) -> str:
        """Revoke share link ``grant`` (``None``: every link of this channel); its viewers are closed."""
        try:
            if self.channel is None:
                raise ChannelError("CLOSED", "channel not open")
            self.channel.unshare(None if grant is None else str(grant))
        except Exception as exc:
            return _err(exc)
        return _ok()

    async def close(self, reason: str | None = None) -> str:
        """Close the channel and wait for the server's confirmation."""
        try:
            if self.channel is not None:
                await self.channel.close(reason)
        except Exception as exc:
            return _err(exc)
        return _ok()

    # ------------------------------------------------------------ internals

    def listeners(self) -> dict[str, Listener]:
        """The channel listeners to register (before any output can arrive)."""
        return {
            "data": functools.partial(self._out, STDOUT),  # C-level: one Python frame fewer per chunk
            "stderr": functools.partial(self._out, STDERR),
            "exit": lambda ev: self._emit("exit", _exit_dict(ev)),
            "error": lambda err: self._emit("error", error_dict(err)),
            "close": self._on_close,
            "resumed": lambda ch: self._emit("resumed", {"id": ch.id}),
            "viewers": lambda vs: self._emit("viewers", _viewers_list(vs)),
            "resize": lambda size: self._emit("resize", _size_dict(size)),
        }

    def bind(self, channel: Channel) -> None:
        """Register :meth:`listeners` on ``channel`` (a channel restored by a resume).

        Called when the resume brought the channel back, before any of its
        output arrived: its position now is where the output resumes.
        """
        self.channel = channel
        self._resumed_from = self.received
        for name, cb in self.listeners().items():
            channel.on(name, cb)

    def _out(self, code: int, data: bytes) -> Hold | None:
        if self._closed:
            return None
        if self._deliver is None:
            early = Hold()
            self._early.append((code, data, early))
            return early
        token = self._hand(code, data)
        if token is None:
            return None
        hold = self._pending[token] = Hold()
        return hold

    def _hand(self, code: int, data: bytes) -> int | None:
        """Call ``deliver``; the payload goes out as a view of the received buffer when it can.

        ``deliver(stream, buffer, offset, length)`` when the payload is the
        tail of the binary message being handled (``nimbus.v1``/``lenpfx.v1``
        data frames; see :meth:`~.socket.BrowserWebSocket.payload_location`):
        JavaScript makes the ``Uint8Array`` view, nothing is copied back from
        Python.  Otherwise ``deliver(stream, Uint8Array)`` with a ``to_js``
        copy.  Either way the listener gets a ``Uint8Array`` of its own.
        """
        owner = self._owner
        conn = None if owner is None else owner.conn
        where = None if conn is None else conn.payload_location(data)
        try:
            if where is None:
                token = self._deliver(code, _ffi.to_js(data))
            else:
                token = self._deliver(code, *where)
        except Exception:
            log.exception("channel output listener failed")
            return None
        return None if token is None else int(token)

    def _on_close(self, ch: Channel) -> None:
        self._closed = True
        self._emit(
            "close",
            {
                "id": ch.id,
                "reason": ch.close_reason,
                "exitStatus": ch.exit_status,
                "exitSignal": ch.exit_signal,
                "error": None if ch.error is None else error_dict(ch.error),
            },
        )
        # Nothing is consumed any more: settle what waits, so no task lingers.
        pending = list(self._pending.values()) + [h for _c, _d, h in self._early]
        self._pending.clear()
        self._early.clear()
        for hold in pending:
            hold.release()

    def _emit(self, name: str, payload: Any) -> None:
        dispatch = self._dispatch
        if dispatch is None:
            return
        try:
            dispatch(name, _json(payload))
        except Exception:
            log.exception("channel %r listener failed", name)


# -------------------------------------------------------------- transfers


_UPLOAD_KEYS = frozenset({"path", "mode", "ref", "target", "user"})
_DOWNLOAD_KEYS = frozenset({"path", "ref", "target", "user"})


class TransferHandle:
    """One file transfer as the facade sees it: :meth:`upload` or :meth:`download`, :meth:`cancel`.

    Create it from JavaScript (``conn.new_transfer()``), which destroys its
    proxy once the transfer settled.  The transfer runs as a task of its
    own, so :meth:`cancel` (an ``AbortSignal`` on the JavaScript side) can
    stop it: the channel is closed and the server removes a partial upload
    (:func:`~nimbus_websocket.core.aio.files.upload`); the envelope is then an
    ``AbortError`` with code ``ABORTED``.
    """

    def __init__(self, owner: ConnectionHandle) -> None:
        self._owner = owner
        self._task: asyncio.Task[int] | None = None
        self._cancelled = False

    # ---------------------------------------------------------- JS-facing

    def cancel(self) -> None:
        """Stop the transfer (before it started: it never starts)."""
        self._cancelled = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def upload(self, read: Any, size: int, spec_json: str, progress: Any = None) -> str:
        """Write ``size`` bytes to ``spec.path``; ``read()`` gives the next ``Uint8Array`` (or a
        promise of it), ``undefined`` at the end.  JSON envelope with the bytes written.

        ``spec``: ``{path, mode?, ref?, target?, user?}`` (``target`` and ``user``
        default to those of the channel ``ref``, without its credentials).
        """
        try:
            spec = self._spec(spec_json, _UPLOAD_KEYS)
            conn, target, user, ref = self._peer(spec)
            mode = spec.get("mode")
            work = files.upload(
                conn,
                target,
                user,
                _js_chunks(read),
                int(size),
                str(spec["path"]),
                mode=None if mode is None else int(mode),
                progress=_progress(progress),
                ref=ref,
            )
            return _ok(await self._run(work))
        except asyncio.CancelledError:
            return self._aborted()
        except Exception as exc:
            return _err(exc)

    async def download(self, spec_json: str, sink: Any, progress: Any = None, on_size: Any = None) -> str:
        """Read the file at ``spec.path`` into ``sink(Uint8Array)`` or ``sink(ArrayBuffer,
        offset, length)``; JSON envelope with the bytes received.

        A sink returning a promise holds the chunk's credit until it settles.
        ``on_size(n)`` is called once the server opened the file.
        """
        try:
            spec = self._spec(spec_json, _DOWNLOAD_KEYS)
            conn, target, user, ref = self._peer(spec)
            web = self._owner.conn

            def put(data: bytes) -> Any:
                where = None if web is None else web.payload_location(data)
                result = sink(_ffi.to_js(data)) if where is None else sink(*where)
                return result if hasattr(result, "then") else None

            work = files.download(
                conn,
                target,
                user,
                str(spec["path"]),
                put,
                progress=_progress(progress),
                on_size=None if on_size is None else (lambda n: on_size(n)),
                ref=ref,
            )
            return _ok(await self._run(work))
        except asyncio.CancelledError:
            return self._aborted()
        except Exception as exc:
            return _err(exc)

    # ------------------------------------------------------------ internals

    @staticmethod
    def _spec(spec_json: str, keys: frozenset[str]) -> dict[str, Any]:
        spec = json.loads(spec_json)
        unknown = set(spec) - keys
        if unknown:
            raise ValueError(f"unknown transfer option(s): {', '.join(sorted(unknown))}")
        if not isinstance(spec.get("path"), str) or not spec["path"]:
            raise ValueError("a transfer needs a 'path'")
        return dict(spec)

    def _peer(self, spec: Mapping[str, Any]) -> tuple[Connection, Any, Any, int | None]:
        """The connection, ``target``, ``user`` and ``ref`` of a transfer."""
        conn = self._owner.conn
        if conn is None:
            raise ChannelError("CLOSED", "not connected")
        ref = spec.get("ref")
        ref = None if ref is None else int(ref)
        target, user = spec.get("target"), spec.get("user")
        if (target is None or user is None) and ref is not None:
            ch = conn.session.channel(ref)
            msg = None if ch is None else ch.open_msg
            if msg is not None:
                target = target if target is not None else msg.target
                user = user if user is not None else User(msg.user.username)
        if target is None or user is None:
            raise ValueError("a transfer needs 'target' and 'user' (or 'ref', a terminal channel of this connection)")
        if isinstance(target, Mapping):
            target = Target(str(target.get("host", "")), int(target.get("port", 0)))
        return conn, target, user, ref

    async def _run(self, work: Any) -> int:
        if self._cancelled:
            work.close()
            raise asyncio.CancelledError
        self._task = asyncio.ensure_future(work)
        return await self._task

    def _aborted(self) -> str:
        error = {"name": "AbortError", "code": "ABORTED", "message": "the transfer was cancelled"}
        return json.dumps({"ok": False, "error": error})


async def _js_chunks(read: Any) -> AsyncIterator[bytes]:
    """The chunks ``read()`` gives (``Uint8Array`` or a promise of one) until ``undefined``."""
    while True:
        block = read()
        if hasattr(block, "then"):
            block = await block
        if block is None or block is _ffi.jsnull:
            return
        yield block.to_bytes()


def _progress(js_progress: Any) -> Callable[[files.Progress], None] | None:
    """``progress(done, total, rate, eta)`` for JavaScript, at most every :data:`PROGRESS_INTERVAL` s."""
    if js_progress is None:
        return None
    last = [0.0, -1]

    def report(p: files.Progress) -> None:
        now = time.monotonic()
        final = p.total is not None and p.done >= p.total
        if not final and p.done != 0 and now - last[0] < PROGRESS_INTERVAL:
            return
        if final and last[1] == p.done:
            return  # said already
        last[0], last[1] = now, p.done
        try:
            js_progress(p.done, p.total, p.rate, p.eta)
        except Exception:
            log.exception("transfer progress listener failed")

    return report


# ------------------------------------------------------------ connection


class ConnectionHandle:
    """One connection as the facade sees it; events go to ``dispatch(name, json)``.

    ``channel`` (a restored channel) is dispatched with a
    :class:`ChannelHandle` proxy instead of JSON; the facade attaches to it
    synchronously.  ``statechange``, ``diagnostic`` and ``policy`` are only
    converted and dispatched once JavaScript listens to them (:meth:`want`):
    a ``credit_grant`` policy event per half window is not free.
    """

    #: Events JavaScript always gets (the facade tracks state with them).
    ALWAYS = frozenset({"error", "close", "channel"})

    def __init__(self, dispatch: Any, wanted: Any = None) -> None:
        self._dispatch = dispatch
        self._wanted: set[str] = set(self.ALWAYS)
        for name in wanted or ():
            self._wanted.add(str(name))
        self.conn: WebConnection | None = None
        self._created: WebConnection | None = None

    @property
    def live(self) -> WebConnection | None:
        """The connection, already while :meth:`connect` runs (``conn`` is set once it is ready)."""
        return self.conn if self.conn is not None else self._created

    def _on_created(self, conn: WebConnection) -> None:
        self._created = conn

    # ---------------------------------------------------------- JS-facing

    async def connect(self, options_json: str, auth_fn: Any = None, websocket: Any = None) -> str:
        """Connect with the facade's JSON options; the result is a JSON envelope."""
        try:
            options = json.loads(options_json)
            url = options.get("url")
            if not isinstance(url, str) or not url:
                raise ValueError("connect needs a 'url' (ws:// or wss://)")
            kw = connect_kwargs(options)
            auth = _auth_provider(options.get("auth"), auth_fn)
            self.conn = await connect(
                url,
                auth=auth,
                websocket=websocket,
                on=self.listeners(),
                created=self._on_created,
                **kw,
            )
        except Exception as exc:
            return _err(exc)
        return _ok(self._summary())

    def want(self, name: str) -> None:
        """JavaScript listens to ``name`` from now on: dispatch it."""
        self._wanted.add(str(name))

    def new_channel(self) -> ChannelHandle:
        """A fresh :class:`ChannelHandle` for :meth:`open_session`."""
        return ChannelHandle(owner=self)

    def new_transfer(self) -> TransferHandle:
        """A fresh :class:`TransferHandle` (one upload or download)."""
        return TransferHandle(self)

    @property
    def files(self) -> bool:
        """Whether the server announced file channels (``hello_ok.caps.files``)."""
        conn = self.conn
        if conn is None:
            return False
        return conn.session.server_files

    @property
    def share(self) -> bool:
        """Whether the server makes share links of this session's terminals (``hello_ok.caps.share``)."""
        conn = self.conn
        return False if conn is None else conn.session.server_share

    @property
    def view_mode(self) -> str | None:
        """``"read"`` / ``"write"`` when this connection is a viewer (``hello_ok.caps.view``), else ``None``."""
        conn = self.conn
        return None if conn is None else conn.session.view_mode

    async def open_session(self, handle: ChannelHandle, spec_json: str) -> str:
        """Open a channel (``{target, user, term}`` JSON) into ``handle``; JSON envelope with its id."""
        try:
            if self.conn is None:
                raise ChannelError("CLOSED", "not connected")
            spec = json.loads(spec_json)
            unknown = set(spec) - {"target", "user", "term"}
            if unknown:
                raise ValueError(f"unknown openSession option(s): {', '.join(sorted(unknown))}")
            if "target" not in spec or "user" not in spec:
                raise ValueError(
                    "openSession needs 'target' {host, port} and 'user' {username, auth}"
                )
            ch = await self.conn.open_session(
                spec["target"], spec["user"], spec.get("term"), on=handle.listeners()
            )
            handle.channel = ch
        except Exception as exc:
            return _err(exc)
        return _ok({"id": ch.id})

    @property
    def state(self) -> str:
        """The connection state (``idle``... ``ready``, ``reconnecting``, ``closed``)."""
        return "idle" if self.conn is None else self.conn.state

    @property
    def info(self) -> str:
        """JSON snapshot: state, rttMs, bufferedAmount, pauseReasons, protocol, profile, transport."""
        return _json(self._summary())

    def ping(self) -> None:
        """Send a heartbeat now."""
        if self.conn is not None:
            self.conn.ping()

    def persist(self) -> None:
        """Write the resume state now."""
        if self.conn is not None:
            self.conn.persist()

    def set_pause(self, reason: str, paused: bool) -> None:
        """Withhold credit for ``reason`` (``visibility``, ``offline``) or stop doing so."""
        if self.conn is not None:
            self.conn.set_pause(str(reason), bool(paused))

    def verify(self, why: str = "application") -> None:
        """Verify the connection with a ping (drop and resume it if nothing answers)."""
        if self.conn is not None:
            self.conn.verify(str(why))

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> str:
        """Close the connection (``NORMAL``, the default, ends the server session and clears the resume state)."""
        try:
            if self.conn is not None:
                await self.conn.close(int(code), str(reason))
        except Exception as exc:
            return _err(exc)
        return _ok()

    # ------------------------------------------------------------ internals

    def listeners(self) -> dict[str, Listener]:
        """The connection listeners, registered before the first state change."""
        return {
            "statechange": self._on_statechange,
            "diagnostic": self._on_diagnostic,
            "policy": self._on_policy,
            "error": lambda err: self._emit("error", error_dict(err)),
            "close": lambda err: self._emit("close", None if err is None else error_dict(err)),
            "channel": self._on_channel,
        }

    def _on_diagnostic(self, ev: Diagnostic) -> None:
        if "diagnostic" in self._wanted:
            self._emit("diagnostic", js_keys(ev.to_dict()))

    def _on_policy(self, ev: PolicyEvent) -> None:
        if "policy" in self._wanted:
            self._emit("policy", js_keys(ev.to_dict()))

    def _on_statechange(self, ev: StateChanged) -> None:
        if "statechange" in self._wanted:
            self._emit("statechange", _state_dict(ev))

    def _on_channel(self, ch: Channel) -> None:
        handle = ChannelHandle(owner=self)
        handle.bind(ch)
        proxy = _ffi.create_proxy(handle)
        try:
            self._dispatch("channel", proxy)
        except Exception:
            log.exception("connection 'channel' listener failed")

    def _summary(self) -> dict[str, Any]:
        conn = self.conn
        if conn is None:
            return {"state": "idle"}
        rtt = conn.rtt_ms
        return {
            "state": conn.state,
            "rttMs": None if rtt is None else round(rtt, 3),
            "bufferedAmount": conn.buffered_amount,
            "pauseReasons": sorted(conn.pause_reasons),
            "protocol": conn.protocol,
            "profile": conn.profile,
            "transport": conn.transport,
            "resumed": [c.id for c in conn.resumed_channels],
            "files": self.files,
            "share": self.share,
            "viewMode": self.view_mode,
        }

    def _emit(self, name: str, payload: Any) -> None:
        try:
            self._dispatch(name, _json(payload))
        except Exception:
            log.exception("connection %r listener failed", name)
