"""The reference server: ``websockets`` (asyncio) around the core's server machines.

This module only shuttles: WebSocket messages into
:class:`~nimbus_websocket.core.ServerConnection`, its frames out, its backend
requests to PTY/SSH backends, and backend output back into the session.
Every protocol rule lives in the core: close codes, limits (including failed
resumes per client IP), the subprotocol choice and backend pausing are the
core's decisions; this module passes the peer's address and acts on events.

Embedding::

    server = Server(ServerOptions(port=0, backend="pty"))
    await server.start()
    ...  # server.url
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection as WsConnection
from websockets.asyncio.server import serve
from websockets.datastructures import Headers, MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State as WsState
from websockets.typing import Subprotocol

from ...core.errors import CloseCode
from ...core.events import (
    AuthRequested,
    BackendClose,
    BackendEof,
    BackendInput,
    BackendOpen,
    BackendPause,
    BackendResize,
    BackendSignal,
    CloseTransport,
    Diagnostic,
    PolicyEvent,
    ServerEvent,
)
from ...core.messages import Stream
from ...core.server import (
    ServerChannel,
    ServerConfig,
    ServerConnection,
    ServerSession,
    SessionRegistry,
    advertised_subprotocols,
    select_subprotocol,
)
from ..ws_push import PushMessages
from .backend import Backend, BackendError, LocalProcessBackend, filter_term_env
from .metrics import Metrics
from .policy import AuthHook, AuthPolicy, OriginPolicy, TargetPolicy, is_loopback
from .ssh_backend import SshBackend, SshOptions

__all__ = ["Server", "ServerOptions"]

log = logging.getLogger("nimbus_websocket.server")

_WS_OPEN = WsState.OPEN
#: Seconds between checks of a socket's unsent bytes while backends are paused for it.
_WRITE_POLL = 0.02

_MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass
class ServerOptions:
    """Everything ``nimbus-ws serve`` can set, plus embedding hooks."""

    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/ws/ssh"
    backend: str = "pty"  # "pty" | "ssh"
    pty_command: str | None = None
    tokens: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    allow_targets: tuple[str, ...] = ()
    static_dir: str | None = None
    metrics: bool = False
    config: ServerConfig = field(default_factory=ServerConfig)
    auth_hook: AuthHook | None = None
    ssh: SshOptions = field(default_factory=SshOptions)
    #: ``False`` (default) or ``True`` for bounded permessage-deflate.
    per_message_deflate: bool = False
    #: Honour ``open.command`` [ext]; ``None``: ``config.allow_command``, except
    #: that a set ``pty_command`` (PTY backend) means no (the operator chose what runs).
    allow_client_command: bool | None = None
    #: Factory ``(sink, open_event) -> Backend`` replacing the built-in backends.
    backend_factory: Callable[[Any, BackendOpen], Backend] | None = None
    #: Failed resumes (``RESUME_FAILED``) tolerated per client IP within ``resume_failure_window``
    #: seconds; past that, resume attempts from that IP are refused (``POLICY_DENIED``).
    #: ``None``: the config's (``ServerConfig.resume_failure_limit``, 20 in 60 s).
    resume_failure_limit: int | None = None
    resume_failure_window: float | None = None

    @property
    def effective_config(self) -> ServerConfig:
        """``config`` with the options that refine it applied (the options stay as given)."""
        allow = self.allow_client_command
        if allow is None and self.pty_command is not None and self.backend == "pty":
            allow = False
        changes: dict[str, Any] = {}
        if allow is not None:
            changes["allow_command"] = allow
        if self.resume_failure_limit is not None:
            changes["resume_failure_limit"] = self.resume_failure_limit
        if self.resume_failure_window is not None:
            changes["resume_failure_window"] = self.resume_failure_window
        return replace(self.config, **changes) if changes else self.config


class _PushWsConnection(PushMessages, WsConnection):
    """The server's ``websockets`` connection with push delivery (:mod:`..ws_push`)."""


class _Sink:
    """Connects one backend to its session channel."""

    __slots__ = ("cid", "dead", "paused_at", "server", "session")

    def __init__(self, server: Server, session: ServerSession, cid: int) -> None:
        self.server = server
        self.session = session
        self.cid = cid
        self.paused_at: float | None = None
        #: Set when the channel closed: a dying backend must not report into a
        #: new channel that reuses the id (contract 12.6).
        self.dead = False

    def read_budget(self) -> int:
        return 0 if self.dead else self.session.read_budget(self.cid)

    def output(self, stream: Stream, data: bytes) -> None:
        if self.dead:
            return
        self.session.backend_output(self.cid, stream, data)
        self.server._pump(self.session)

    def input_written(self, n: int) -> None:
        if self.dead:
            return
        self.session.input_written(self.cid, n, time.time())
        self.server._pump(self.session)

    def exited(self, code: int | None, sig: str | None) -> None:
        if self.dead:
            return
        log.info("exit", extra={"event": "exit", "channel": self.cid, "code": code, "sig": sig})
        self.session.backend_exit(self.cid, code, sig)
        self.server._pump(self.session)


class _Conn:
    """One WebSocket connection: a reader (this task) and a writer task."""

    def __init__(self, server: Server, ws: WsConnection) -> None:
        self.server = server
        self.ws = ws
        peer = ws.remote_address
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.ip = str(peer[0]) if peer else "?"
        self.wake_ev = asyncio.Event()
        self.core = ServerConnection(
            server.registry,
            now=time.time(),
            subprotocol=ws.subprotocol,
            wake=self.flush,
            peer=self.peer,
            peer_key=self.ip,
        )
        self.session: ServerSession | None = None
        self.close_req: tuple[int, str] | None = None
        self.done = False
        self._sleep_until: float | None = None  # the writer's next timed wake-up
        self._stats = dict(self.core.stats)

    async def run(self) -> None:
        m = self.server.metrics
        if m:
            m.connections.inc()
            m.connections_total.inc()
        log.info("connect", extra={"event": "connect", "peer": self.peer, "subprotocol": self.ws.subprotocol})
        writer = asyncio.create_task(self._write_loop())
        ws = self.ws
        if isinstance(ws, PushMessages):
            ws.push = self._receive  # each message handled as its frame is parsed
        try:
            # Waits for the close; carries messages only if the push fell back
            # (fragmented messages). Keeps reading (and discarding) after a close.
            async for msg in ws:
                self._receive(msg)
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            code = rcvd.code if rcvd is not None else CloseCode.ABNORMAL
            self.core.transport_closed(code, time.time())
            self.process()
            self.done = True
            self.wake_ev.set()
            try:
                await asyncio.wait_for(asyncio.shield(writer), 1.0)
            except (TimeoutError, ConnectionClosed):
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await writer
            final = self.core.close_code or code
            log.info("close", extra={"event": "close", "peer": self.peer, "code": final})
            if m:
                m.connections.dec()
                m.closes.labels(str(final)).inc()

    def _receive(self, msg: str | bytes) -> None:
        try:
            self.core.receive_frame(msg, time.time())
            self.process()
            self.flush()
        except Exception:  # a bug, not bad input (the core closes for that): INTERNAL_ERROR_WS, as websockets would
            log.exception("message handling failed", extra={"event": "internal_error", "peer": self.peer})
            with contextlib.suppress(Exception):
                self.ws.protocol.fail(CloseCode.INTERNAL_ERROR_WS, "internal error")
                self.ws.send_data()

    def flush(self) -> None:
        """Write what the core queued now, without a task switch (the writer task
        handles deadlines, the close, and anything the fast path cannot do)."""
        ws, core = self.ws, self.core
        if self.close_req is None and not self.done:
            try:
                proto = ws.protocol
                if proto.state is _WS_OPEN:
                    frames = core.frames_to_send()
                    if frames:
                        for f in frames:
                            if isinstance(f, str):
                                proto.send_text(f.encode())
                            else:
                                proto.send_binary(f)
                        ws.send_data()
                        core.set_buffered_amount(ws.transport.get_write_buffer_size())
            except (AttributeError, OSError, RuntimeError):
                log.debug("fast write failed; the writer task takes over", exc_info=True)
        # Wake the writer only when it has something to do: frames left, a
        # close, or a deadline earlier than the one it sleeps until.
        deadline = core.next_deadline()
        if (
            self.close_req is not None
            or self.done
            or core.has_frames()
            or core.has_events()
            or core.write_paused
            or (deadline is not None and (self._sleep_until is None or deadline < self._sleep_until))
        ):
            self.wake_ev.set()

    async def _write_loop(self) -> None:
        core, ws = self.core, self.ws
        try:
            while not self.done:
                self.wake_ev.clear()
                for frame in core.frames_to_send():
                    await ws.send(frame)
                self.process()
                if self.close_req is not None:
                    for frame in core.frames_to_send():
                        await ws.send(frame)
                    code, reason = self.close_req
                    await ws.close(code, reason)
                    return
                if self.wake_ev.is_set():
                    continue
                deadline = core.next_deadline()
                if core.write_paused:  # poll the socket until it drains below the low-water mark
                    poll = time.time() + _WRITE_POLL
                    deadline = poll if deadline is None else min(deadline, poll)
                self._sleep_until = deadline
                timeout = None if deadline is None else max(0.0, deadline - time.time())
                try:
                    async with asyncio.timeout(timeout):
                        await self.wake_ev.wait()
                except TimeoutError:
                    core.set_buffered_amount(ws.transport.get_write_buffer_size())
                    core.tick(time.time())
                    self.process()
        except ConnectionClosed:
            return

    def process(self) -> None:
        """Handle every event the core queued."""
        if self.core.session is not None:
            self.session = self.core.session
        for ev in self.core.events():
            if isinstance(ev, CloseTransport):
                if self.close_req is None:
                    self.close_req = (ev.code, ev.reason)
                    self.wake_ev.set()
            elif isinstance(ev, AuthRequested):
                self.server._spawn(self._auth(ev))
            elif self.session is not None:
                self.server._handle(self.session, ev)
            else:
                self.server._observe(ev)
        self._count()

    async def _auth(self, ev: AuthRequested) -> None:
        try:
            principal = await self.server.auth.authenticate(ev.scheme, ev.token)
        except Exception:  # a broken hook refuses, it does not crash the server
            log.exception("auth hook failed")
            principal = None
        log.info(
            "auth",
            extra={"event": "auth", "peer": self.peer, "ok": principal is not None, "scheme": ev.scheme, "principal": principal},
        )
        self.core.auth_result(principal, time.time())
        self.process()
        self.wake_ev.set()

    def _count(self) -> None:
        m = self.server.metrics
        if m is None:
            return
        st, old = self.core.stats, self._stats
        if st == old:
            return
        d = {k: st[k] - old.get(k, 0) for k in st}
        self._stats = dict(st)
        if d["bytes_in_data"]:
            m.bytes.labels("in", "data").inc(d["bytes_in_data"])
        if d["bytes_out_data"]:
            m.bytes.labels("out", "data").inc(d["bytes_out_data"])
        for k, direction, kind in (
            ("frames_in_data", "in", "data"),
            ("frames_in_ctl", "in", "control"),
            ("frames_out_data", "out", "data"),
            ("frames_out_ctl", "out", "control"),
        ):
            if d[k]:
                m.frames.labels(direction, kind).inc(d[k])
        if d["credit_granted"]:
            m.credit.inc(d["credit_granted"])


class Server:
    """The ``nimbus.ssh.v1`` reference server."""

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = opts = options or ServerOptions()
        #: The core's config, derived once from the options (which are not changed).
        self.config = opts.effective_config
        self.registry = SessionRegistry(self.config)
        loopback = is_loopback(opts.host)
        self.auth = AuthPolicy(opts.tokens, opts.auth_hook, loopback)
        self.origins = OriginPolicy(opts.allow_origins, loopback_host_only=loopback)
        self.targets = TargetPolicy(opts.allow_targets, default_loopback_only=opts.backend == "ssh")
        self.metrics = Metrics() if opts.metrics else None
        self._backends: dict[tuple[str, int], Backend] = {}
        self._closing: set[Backend] = set()  # closed, not yet reaped
        #: Tasks the server started (auth hooks, backend starts, reaping): kept until done.
        self._tasks: set[asyncio.Future[None]] = set()
        self._sinks: dict[tuple[str, int], _Sink] = {}
        self._ws: WsServer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._static = Path(opts.static_dir).resolve() if opts.static_dir else None
        if not loopback and not opts.tokens and opts.auth_hook is None:
            log.warning("bound to %s without --token: every connection will be refused (AUTH_FAILED)", opts.host)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listen (``options.port`` 0 picks a free port)."""
        opts, config = self.options, self.config
        subprotocols = [Subprotocol(sp) for sp in advertised_subprotocols(config)]
        kw: dict[str, Any] = {"compression": None}
        if opts.per_message_deflate:
            from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

            kw = {
                "compression": None,
                "extensions": [
                    ServerPerMessageDeflateFactory(
                        server_no_context_takeover=True,
                        client_no_context_takeover=True,
                        server_max_window_bits=12,
                        client_max_window_bits=12,
                        require_client_max_window_bits=False,
                    )
                ],
            }
        self._ws = await serve(
            self._handler,
            opts.host,
            opts.port,
            subprotocols=subprotocols,
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            process_response=self._process_response,
            create_connection=_PushWsConnection,
            max_size=config.max_frame,
            ping_interval=None,
            close_timeout=5,
            server_header="nimbus-ws",
            **kw,
        )
        self._ticker = asyncio.create_task(self._tick_sessions())
        log.info("listening", extra={"event": "listening", "url": self.url})

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._ws is not None
        for sock in self._ws.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("not listening")

    @property
    def connections(self) -> frozenset[WsConnection]:
        """The open WebSocket connections (empty before :meth:`start` and after :meth:`stop`)."""
        return frozenset(self._ws.connections) if self._ws is not None else frozenset()

    @property
    def url(self) -> str:
        """``ws://host:port/path``."""
        host = self.options.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}{self.options.path}"

    async def stop(self, code: int = CloseCode.GOING_AWAY) -> None:
        """Stop accepting, close every connection with ``code`` (``GOING_AWAY``), end all sessions."""
        if self._ws is None:
            return
        ws, self._ws = self._ws, None
        ws.close(close_connections=True)
        await ws.wait_closed()
        if self._ticker is not None:
            self._ticker.cancel()
        for s in self.registry.sessions():
            s.destroy("server shutdown")
            self._pump(s)
        backends = list(self._backends.values()) + list(self._closing)
        self._backends.clear()
        for be in backends:
            be.close()
        if backends:
            await asyncio.wait([asyncio.ensure_future(be.wait_closed()) for be in backends], timeout=5)

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        assert self._ws is not None
        await self._ws.serve_forever()

    def _select_subprotocol(self, ws: WsConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        sp = select_subprotocol(self.config, offered)
        return None if sp is None else Subprotocol(sp)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task the server keeps a reference to until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------- plumbing
    async def _handler(self, ws: WsConnection) -> None:
        await _Conn(self, ws).run()

    def _pump(self, session: ServerSession) -> None:
        for ev in session.events():
            self._handle(session, ev)

    def _handle(self, session: ServerSession, ev: ServerEvent) -> None:
        key = (session.sid, getattr(ev, "id", 0))
        if isinstance(ev, BackendOpen):
            self._spawn(self._open(session, session.channels.get(ev.id), ev))
        elif isinstance(ev, BackendInput):
            be = self._backends.get(key)
            if be is not None:
                be.write(ev.data)
            else:
                session.input_written(ev.id, len(ev.data), time.time())
        elif isinstance(ev, BackendPause):
            be = self._backends.get(key)
            if be is not None:
                be.pause(ev.paused)
                self._pause_time(key, ev.paused)
        elif isinstance(ev, BackendEof):
            be = self._backends.get(key)
            if be is not None:
                be.eof()
        elif isinstance(ev, BackendResize):
            be = self._backends.get(key)
            if be is not None:
                be.resize(ev.cols, ev.rows)
        elif isinstance(ev, BackendSignal):
            be = self._backends.get(key)
            if be is not None:
                be.signal(ev.sig)
        elif isinstance(ev, BackendClose):
            be = self._backends.pop(key, None)
            sink = self._sinks.pop(key, None)
            if sink is not None:
                sink.dead = True
            if be is not None:
                be.close()
                self._closing.add(be)
                self._spawn(self._reap(be))
                if self.metrics:
                    self.metrics.channels.dec()
        else:
            self._observe(ev)

    async def _reap(self, be: Backend) -> None:
        try:
            await be.wait_closed()
        finally:
            self._closing.discard(be)

    def _pause_time(self, key: tuple[str, int], paused: bool) -> None:
        sink = self._sinks.get(key)
        if sink is None:
            return
        now = time.monotonic()
        if paused and sink.paused_at is None:
            sink.paused_at = now
        elif not paused and sink.paused_at is not None:
            if self.metrics:
                self.metrics.backpressure.inc(now - sink.paused_at)
            sink.paused_at = None
            log.debug("flow resume", extra={"event": "flow_resume", "channel": key[1]})

    def _observe(self, ev: ServerEvent) -> None:
        if isinstance(ev, Diagnostic):
            if ev.code == "resume_accepted" and self.metrics:
                self.metrics.reconnects.inc()
            if ev.code == "resume_rejected" and self.metrics:
                self.metrics.resumes_failed.inc()
            level = logging.WARNING if ev.code == "protocol_error" else logging.INFO
            log.log(level, ev.code, extra={"event": ev.code, "phase": ev.phase, **_safe_extras(ev.extras)})
        elif isinstance(ev, PolicyEvent):
            level = logging.DEBUG if ev.kind == "channel_closed" else logging.WARNING
            log.log(level, ev.kind, extra={"event": ev.kind, "channel": ev.channel, "reason": ev.reason})

    async def _open(self, session: ServerSession, channel: ServerChannel | None, ev: BackendOpen) -> None:
        cid = ev.id
        log.info(
            "open",
            extra={"event": "open", "channel": cid, "target": f"{ev.target.host}:{ev.target.port}", "user": ev.user.username},
        )
        if not self.targets.allows(ev.target):
            session.channel_open_failed(cid, "POLICY_DENIED", f"target {ev.target.host}:{ev.target.port} not allowed")
            self._pump(session)
            return
        sink = _Sink(self, session, cid)
        opts = self.options
        term = ev.term
        if term is not None:
            kept, dropped = filter_term_env(term.env)
            if dropped:  # not on the allow-list: never reaches the process (issue 13.7)
                term = replace(term, env=kept)
                log.warning(
                    "term env dropped",
                    extra={"event": "term_env_dropped", "channel": cid, "count": len(dropped), "names": ",".join(dropped[:16])[:200]},
                )
                if self.metrics:
                    self.metrics.term_env_dropped.inc(len(dropped))
        if opts.backend_factory is not None:
            be: Backend = opts.backend_factory(sink, ev)
        elif opts.backend == "ssh":
            be = SshBackend(sink, ev.target, ev.user, term, opts.ssh, command=ev.command)
        else:
            command = ev.command if ev.command is not None else opts.pty_command
            be = LocalProcessBackend(sink, term, command, max_read=self.config.max_read)
        try:
            await be.start()
        except BackendError as exc:
            log.info("open failed", extra={"event": "open_err", "channel": cid, "code": exc.code})
            session.channel_open_failed(cid, exc.code, exc.message)
            self._pump(session)
            return
        except Exception as exc:  # a backend bug must not take the server down
            log.exception("backend failed to start")
            session.channel_open_failed(cid, "BACKEND_FAILED", str(exc)[:200])
            self._pump(session)
            return
        if session.destroyed or channel is None or session.channels.get(cid) is not channel:
            be.close()  # the channel closed while the backend started (its id may be reused)
            return
        key = (session.sid, cid)
        self._backends[key] = be
        self._sinks[key] = sink
        if self.metrics:
            self.metrics.channels.inc()
            self.metrics.channels_total.inc()
        session.channel_opened(cid)
        self._pump(session)

    async def _tick_sessions(self) -> None:
        while True:
            now = time.time()
            for s in self.registry.expire(now):
                log.info("session expired", extra={"event": "session_expired"})
                self._pump(s)
            if self.metrics:
                self.metrics.sessions.set(len(self.registry))
            nxt = self.registry.next_expiry()
            await asyncio.sleep(min(1.0, max(0.01, (nxt - now) if nxt else 1.0)))

    # ---------------------------------------------------------------- HTTP
    async def _process_request(self, ws: WsConnection, request: Request) -> Response | None:
        """Answer a plain HTTP request, or refuse an upgrade (``None``: go on with the handshake)."""
        try:
            return await self._route(ws, request)
        except MultipleValuesError as exc:  # a header read below, sent twice
            log.warning("bad request", extra={"event": "bad_request", "reason": f"duplicate header {exc}"})
            return _response(400, b"Bad request\n", "text/plain; charset=utf-8")

    def _process_response(self, ws: WsConnection, request: Request, response: Response) -> None:
        """Every HTTP answer but ``101`` (ours, and ``websockets``' own refusals such as 426)
        carries :attr:`security_headers`."""
        if response.status_code == HTTPStatus.SWITCHING_PROTOCOLS:
            return
        for name, value in self.security_headers:
            if name in response.headers:
                del response.headers[name]
            response.headers[name] = value

    @property
    def security_headers(self) -> tuple[tuple[str, str], ...]:
        """Headers of every HTTP answer: CSP (no framing, no plugins, scripts and connections
        from this origin and the configured ones only), ``X-Frame-Options``, ``Referrer-Policy``."""
        origins: list[str] = []
        for o in self.options.allow_origins:
            o = o.rstrip("/")
            if o == "*" or "://" not in o:
                continue
            scheme, rest = o.split("://", 1)
            origins.append(o)
            ws_scheme = {"http": "ws", "https": "wss"}.get(scheme.lower())
            if ws_scheme:
                origins.append(f"{ws_scheme}://{rest}")
        csp = "; ".join(
            (
                "default-src 'self'",
                # Pyodide compiles its wasm ('wasm-unsafe-eval'); no inline script, no eval.
                "script-src 'self' 'wasm-unsafe-eval'",
                # The one addition the page needs: xterm.js's DOM renderer writes its cell
                # geometry into <style> elements (docs/security.md).
                "style-src 'self' 'unsafe-inline'",
                " ".join(("connect-src 'self'", *origins)),
                "frame-ancestors 'none'",
                "object-src 'none'",
                "base-uri 'none'",
                "form-action 'none'",
            )
        )
        return (
            ("Content-Security-Policy", csp),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff"),
        )

    async def _route(self, ws: WsConnection, request: Request) -> Response | None:
        headers = request.headers
        for name in ("Host", "Origin", "Upgrade"):
            if len(headers.get_all(name)) > 1:  # which one would a proxy have checked?
                log.warning("bad request", extra={"event": "bad_request", "reason": f"duplicate {name} header"})
                return _response(400, b"Bad request\n", "text/plain; charset=utf-8")
        path = urlsplit(request.path).path
        if path == self.options.path:
            if not self.origins.check(request.headers.get("Origin"), request.headers.get("Host")):
                log.warning("origin refused", extra={"event": "origin_refused", "origin": request.headers.get("Origin")})
                return ws.respond(HTTPStatus.FORBIDDEN, "Origin not allowed\n")
            return None
        if path == "/metrics" and self.metrics is not None:
            return _response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if self._static is not None and request.headers.get("Upgrade") is None:
            return await self._serve_static(path)
        return ws.respond(HTTPStatus.NOT_FOUND, "Not found\n")

    async def _serve_static(self, path: str) -> Response:
        """A file under the static directory, or 404 (400 for a NUL byte).

        Percent-escapes are decoded first; no segment may start with ``.`` (dotfiles,
        dot-directories such as ``.git``, and ``..``), before or after symlinks are
        resolved; a directory means its ``index.html``, and the path is resolved
        *after* that is appended, so a symlinked ``index.html`` cannot point outside.
        The body is read whole: ``websockets``' ``Response`` carries ``bytes`` and has
        no streaming body (docs/security.md).
        """
        assert self._static is not None
        not_found = _response(404, b"Not found\n", "text/plain; charset=utf-8")
        try:
            rel = unquote(path, errors="strict").lstrip("/")
        except UnicodeDecodeError:
            rel = "\0"  # not UTF-8 once decoded: as malformed as a NUL
        if "\0" in rel:
            log.warning("bad request", extra={"event": "bad_request", "reason": "NUL byte in path"})
            return _response(400, b"Bad request\n", "text/plain; charset=utf-8")
        parts = [p for p in rel.split("/") if p]
        if any(p.startswith(".") or "\\" in p for p in parts):
            return not_found
        candidate = self._static.joinpath(*parts)
        try:
            if candidate.is_dir():
                candidate = candidate / "index.html"
            target = candidate.resolve(strict=True)
            inside = target.relative_to(self._static)
        except (OSError, ValueError):  # missing, a loop, or outside the directory
            return not_found
        if any(p.startswith(".") for p in inside.parts) or not target.is_file():
            return not_found
        try:
            body = await asyncio.to_thread(target.read_bytes)
        except OSError:
            return not_found
        ctype = _MIME.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return _response(200, body, ctype)


def _response(status: int, body: bytes, ctype: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


def _safe_extras(extras: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(extras).items() if k not in ("token", "payload", "data", "message")} | (
        {"detail": str(extras.get("message"))[:200]} if "message" in extras else {}
    )


def default_static_dir() -> str | None:
    """``build/site`` next to the source tree, when it exists."""
    here = Path(__file__).resolve().parents[2] / "build" / "site"
    return str(here) if here.is_dir() else None


with contextlib.suppress(Exception):
    mimetypes.add_type("text/javascript", ".mjs")
    mimetypes.add_type("application/wasm", ".wasm")
