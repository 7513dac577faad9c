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
import socket
import ssl
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection as WsConnection
from websockets.asyncio.server import serve
from websockets.datastructures import MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State as WsState
from websockets.typing import Subprotocol

from ...core.errors import CloseCode, HostKey
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
from ...core.messages import FileSpec, Stream, Term, ViewerInfo
from ...core.registry import peer_prefix
from ...core.server import (
    ServerConfig,
    ServerConnection,
    ServerSession,
    SessionRegistry,
    advertised_subprotocols,
    select_subprotocol,
)
from ...core.share import ShareGrant, is_share_token
from ..ws_push import PushMessages
from . import page_config, peercred, recordings_http
from .backend import Backend, BackendError, LocalProcessBackend, filter_term_env
from .files import FilePolicy, LocalFileBackend
from .limits import Counter
from .metrics import Metrics
from .policy import (
    AuthHook,
    AuthPolicy,
    OriginPolicy,
    TargetPolicy,
    generate_token,
    is_loopback,
    running_as_root,
)
from .proxy import TrustedProxies, normalize_base_path
from .recording import ChannelRecorder, RecordPolicy
from .sftp_files import SftpFileBackend
from .share_hub import SeedRing, ShareHub, ViewBackend
from .ssh_backend import SshBackend, SshOptions
from .static import FileBody, StaticFiles, response, send_file
from .tls import server_ssl_context

__all__ = ["ConnectionGate", "Server", "ServerOptions"]

log = logging.getLogger("nimbus_websocket.server")

_WS_OPEN = WsState.OPEN
#: Seconds between checks of a socket's unsent bytes while backends are paused for it.
_WRITE_POLL = 0.02
#: The 404 body of an upgrade to a path the server does not serve, before the path it
#: does (``nimbus-ws connect`` reads it: node_runtime/client/messages.py).
#: ``Server`` header of every HTTP answer.
SERVER_HEADER = "nimbus-ws"
#: Seconds from accept to the end of the opening handshake (TLS handshake included; a
#: streamed static file stops the clock once its head is decided).
OPEN_TIMEOUT = 10.0
NOT_FOUND_WS_HINT = "Not found. The WebSocket endpoint is "


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
    #: TCP connections at once, overall and per client prefix (IPv4 address, all of
    #: 127/8, IPv6 /64); over either, a new connection is aborted at accept.  Each
    #: connection without a session holds at most ``config.max_unsent`` +
    #: ``config.max_frame`` (3 MiB) until the hello timeout: 512 x 3 MiB = 1.5 GiB at worst.
    max_connections: int = 512
    max_connections_per_ip: int = 64
    #: Seconds a static-file client may take to read 1 MiB before it is cut (a file is
    #: streamed from disk, never held in memory: :mod:`.static`).
    static_stall_timeout: float = 30.0
    #: URL prefix everything is served under (page, assets, ``path``, ``/metrics``), for a
    #: reverse proxy that does not strip its prefix: ``/term/`` serves ``/term/ws/ssh``;
    #: outside it, 404; ``/term`` redirects to ``/term/`` (docs/deploy.md).
    base_path: str = "/"
    #: Proxies (exact addresses or CIDR networks) whose ``X-Forwarded-For`` names the
    #: client for per-client limits, the failed-resume budget and logs; from any other
    #: peer the header is ignored.  Admission at accept still keys by the TCP peer.
    trust_proxy: tuple[str, ...] = ()
    #: TLS: PEM certificate chain (leaf first) and its private key (``None``: in ``cert``);
    #: the server then serves ``https://`` and ``wss://`` (TLS >= 1.2, loaded at construction).
    cert: str | None = None
    key: str | None = None
    #: A ready server-side context for embedding; wins over ``cert``/``key``.
    ssl_context: ssl.SSLContext | None = None
    #: xterm.js options for the page (``--terminal-option``), served as ``page-config.json``
    #: (:mod:`.page_config`: allow-listed keys, checked values; the user's own settings win).
    terminal_options: Mapping[str, Any] = field(default_factory=dict)
    #: ``SO_REUSEPORT`` on the listening socket: several processes share the port
    #: (``nimbus-ws serve --workers N``, node_runtime/cluster/workers.py).
    reuse_port: bool = False
    #: File channels (``open.file``, :mod:`.files`): ``None`` picks the default --
    #: on, with no root and a 2 GiB limit, where clients get a shell as the server's
    #: (or the SSH target's) user anyway; off when ``pty_command`` fixed what runs.
    files: FilePolicy | None = None
    #: Record every terminal channel as asciicast v2 (``--record DIR``, :mod:`.recording`).
    record: RecordPolicy | None = None
    #: Share links (``share`` [ext], :mod:`.share_hub`): owners hand out read-only or
    #: read-write views of their terminals (``--no-share``: off).
    share: bool = True

    @property
    def file_policy(self) -> FilePolicy:
        """The file policy in force (``files``, or the default above)."""
        if self.files is not None:
            return self.files
        return FilePolicy(enabled=not (self.backend == "pty" and self.pty_command is not None))

    @property
    def effective_config(self) -> ServerConfig:
        """``config`` with the options that refine it applied (the options stay as given)."""
        allow = self.allow_client_command
        if allow is None and self.pty_command is not None and self.backend == "pty":
            allow = False
        changes: dict[str, Any] = {"allow_files": self.file_policy.enabled, "allow_share": self.share}
        if allow is not None:
            changes["allow_command"] = allow
        if self.resume_failure_limit is not None:
            changes["resume_failure_limit"] = self.resume_failure_limit
        if self.resume_failure_window is not None:
            changes["resume_failure_window"] = self.resume_failure_window
        return replace(self.config, **changes)


class ConnectionGate(Protocol):
    """What :attr:`Server.gate` offers (implemented by node_runtime/cluster/gate.py)."""

    async def accept(self, ws: WsConnection) -> tuple[bool, str | bytes | None]:
        """``(handled, first)``: ``handled`` when the gate answered the connection itself (a relay,
        a refusal); else the first message it read (``None``: none), for the session machine."""

    def relayed_client(self, request: Request) -> str | None:
        """The client address an authenticated cluster relay forwards in ``request``, else ``None``."""


class _PushWsConnection(PushMessages, WsConnection):
    """The server's ``websockets`` connection: push delivery (:mod:`..ws_push`),
    admission at accept, and a bound on what it holds unsent.

    *Admission*: :attr:`nimbus` (the :class:`Server`, set on a per-server
    subclass) counts TCP connections per peer key; one over
    ``max_connections`` / ``max_connections_per_ip`` is aborted before a byte
    is read.

    *Unsent bytes*: ``websockets`` answers pings (and the core queues frames)
    whether or not the peer reads; a peer that never reads and keeps sending
    would grow the socket's write buffer without bound.  Once the unsent
    bytes pass ``ServerConfig.max_unsent`` the connection stops *reading*
    (``pause_reading``), so the peer's further frames wait in its own kernel
    buffers, until the buffer drains below the transport's low-water mark
    (``resume_writing``).  The hello timeout, the idle timeout and the
    close timeout still run, so such a peer is closed in bounded time.
    """

    nimbus: Server | None = None
    _admitted: str | None = None
    _reads_paused = False
    #: The opening handshake's timeout (:data:`OPEN_TIMEOUT`), while it runs.
    open_deadline: asyncio.Timeout | None = None

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        """``websockets``' handshake within :data:`OPEN_TIMEOUT` (``serve`` gets ``open_timeout=None``
        so that a static file, streamed inside ``process_request``, can stop the clock)."""
        async with asyncio.timeout(OPEN_TIMEOUT) as deadline:
            self.open_deadline = deadline
            try:
                await super().handshake(*args, **kwargs)
            finally:
                self.open_deadline = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit or abort the new TCP connection, then let ``websockets`` start."""
        super().connection_made(transport)
        server = self.nimbus
        if server is None:
            return
        peer = transport.get_extra_info("peername")
        key = peer_prefix(str(peer[0])) if peer else "?"
        if server.conn_limits.acquire(key):
            self._admitted = key
            return
        server.refused("connections", key)
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        """Give the admission slot back."""
        if self._admitted is not None and self.nimbus is not None:
            self.nimbus.conn_limits.release(self._admitted)
            self._admitted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Process ``data``; stop reading if the answers it caused are not being read."""
        super().data_received(data)
        server = self.nimbus
        if server is not None and not self._reads_paused:
            transport = self.transport
            if transport.get_write_buffer_size() > server.config.max_unsent and not transport.is_closing():
                self._reads_paused = True
                transport.pause_reading()
                log.info("reads paused", extra={"event": "reads_paused", "peer": self._admitted})

    def resume_writing(self) -> None:
        """The peer drained the buffer: read again."""
        super().resume_writing()
        if self._reads_paused:
            self._reads_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()


class _Sink:
    """Connects one backend to its session channel."""

    __slots__ = ("cid", "dead", "hub", "paused_at", "recent", "recorder", "server", "session")

    def __init__(self, server: Server, session: ServerSession, cid: int) -> None:
        self.server = server
        self.session = session
        self.cid = cid
        self.paused_at: float | None = None
        #: Set when the channel closed: a dying backend must not report into a
        #: new channel that reuses the id (contract 12.6).
        self.dead = False
        #: The channel's asciicast recorder (``--record``), once its backend started.
        self.recorder: ChannelRecorder | None = None
        #: The channel's share hub while viewers watch it (:mod:`.share_hub`).
        self.hub: ShareHub | None = None
        #: The last output (a new viewer's screen), kept when sharing is on (:class:`SeedRing`).
        self.recent: SeedRing | None = None

    def read_budget(self) -> int:
        return 0 if self.dead else self.session.read_budget(self.cid)

    def output(self, stream: Stream, data: bytes) -> None:
        if self.dead:
            return
        if self.recorder is not None:
            self.recorder.output(data)
        if self.recent is not None:
            self.recent.append(data)
        if self.hub is not None:
            self.hub.output(data)
        self.session.backend_output(self.cid, stream, data)
        self.server._pump(self.session)

    def unsent(self) -> int:
        """Output of the channel waiting for the client's credit."""
        ch = self.session.channels.get(self.cid)
        return ch.pending if ch is not None else 0

    def view_resized(self, cols: int, rows: int) -> None:
        """A viewer's channel: tell the viewer the shared terminal's size."""
        if not self.dead:
            self.session.view_resized(self.cid, cols, rows)
            self.server._pump(self.session)

    def seed(self, cols: int) -> bytes:
        """The recent output a new viewer's screen model starts from."""
        return self.recent.seed(cols) if self.recent is not None else b""

    def input_written(self, n: int) -> None:
        if self.dead:
            return
        self.session.input_written(self.cid, n, time.time())
        self.server._pump(self.session)

    def exited(self, code: int | None, sig: str | None) -> None:
        if self.dead:
            return
        log.info("exit", extra={"event": "exit", "channel": self.cid, "code": code, "sig": sig})
        if self.recorder is not None:
            self.recorder.marker(f"exit {code if sig is None else sig}")
        if self.hub is not None:
            self.hub.exited(code, sig)
        self.session.backend_exit(self.cid, code, sig)
        self.server._pump(self.session)


class _Conn:
    """One WebSocket connection: a reader (this task) and a writer task."""

    def __init__(self, server: Server, ws: WsConnection, first: str | bytes | None = None) -> None:
        self.server = server
        self.ws = ws
        #: The first message, when the cluster gate read it already (node_runtime/cluster/gate.py).
        self._first = first
        peer = ws.remote_address
        #: The TCP peer (``ip:port``): the proxy's, when the request was forwarded.
        self.via = f"{peer[0]}:{peer[1]}" if peer else "?"
        #: The client: the TCP peer's address, or the one a trusted proxy forwarded.
        self.ip, self.forwarded = server.client_address(ws)
        #: The client in logs and diagnostics (``ip:port`` when not forwarded).
        self.peer = self.ip if self.forwarded else self.via
        #: Came through some proxy (a forwarding header, trusted or not): never anonymous.
        self.proxied = _proxied(ws.request)
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
        extra: dict[str, Any] = {"event": "connect", "peer": self.peer, "subprotocol": self.ws.subprotocol}
        if self.forwarded:
            extra["via"] = self.via
        log.info("connect", extra=extra)
        writer = asyncio.create_task(self._write_loop())
        ws = self.ws
        if isinstance(ws, PushMessages):
            ws.push = self._receive  # each message handled as its frame is parsed
        if self._first is not None:
            self._receive(self._first)
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
                m.count_close(final)  # bounded labels: a client-chosen code counts as "other"

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
        # close, or a deadline earlier than the one it sleeps until (asked last:
        # the dearest question, and the others usually decide).
        if (
            self.close_req is not None
            or self.done
            or core.has_frames()
            or core.has_events()
            or core.write_paused
            or self._deadline_moved()
        ):
            self.wake_ev.set()

    def _deadline_moved(self) -> bool:
        """True when the core's next deadline is earlier than the writer's wake-up."""
        deadline = self.core.next_deadline()
        return deadline is not None and (self._sleep_until is None or deadline < self._sleep_until)

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
        """Handle every event the core queued (and what share revocations did to viewer sessions)."""
        if self.core.session is not None:
            self.session = self.core.session
        if self.server.registry.has_touched():
            self.server._after_revocations()
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
        if ev.scheme == "bearer" and is_share_token(ev.token):
            self._auth_share(ev.token or "")
            return
        auth = self.server.auth
        peer_uid: int | None = None
        if auth.anonymous_possible and not self.proxied:
            # Anonymous access is for the server's own user only: who owns the client's
            # socket (the kernel's socket table; a thread, the table can be long).
            # A forwarded request's socket is the proxy's, not the client's: never anonymous.
            transport = self.ws.transport
            sockname, peername = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
            try:
                peer_uid = await asyncio.to_thread(peercred.peer_uid, sockname, peername)
            except Exception:  # cannot tell: not trusted
                log.exception("peer lookup failed")
        reason = ""  # the core's default ("authentication failed"): a broken hook
        try:
            principal = await auth.authenticate(ev.scheme, ev.token, peer_uid=peer_uid)
            if principal is None:  # issue 14.6: "token required" vs "token not accepted"
                reason = auth.refusal_reason(ev.scheme, ev.token)
        except Exception:  # a broken hook refuses, it does not crash the server
            log.exception("auth hook failed")
            principal = None
        extra: dict[str, Any] = {"event": "auth", "peer": self.peer, "ok": principal is not None, "scheme": ev.scheme, "principal": principal}
        if auth.anonymous_possible:
            extra["peer_uid"] = peer_uid
            if principal is None:
                extra["reason"] = "anonymous access is for the server's own user only"
                if self.proxied:
                    extra["reason"] = "forwarded by a proxy: anonymous access is never granted, send a token"
        log.info("auth", extra=extra)
        self.core.auth_result(principal, time.time(), reason)
        self.process()
        self.wake_ev.set()

    def _auth_share(self, token: str) -> None:
        """A share link as the bearer token: a viewer session of its grant, or 4003."""
        grant = self.server.registry.shares.verify(token, time.time())
        principal = f"share:{grant.gid}" if grant is not None else None
        log.info(
            "auth",
            extra={"event": "auth", "peer": self.peer, "ok": grant is not None, "scheme": "share", "principal": principal},
        )
        reason = "" if grant is not None else "share link not valid (revoked, expired or unknown)"
        self.core.auth_result(principal, time.time(), reason, view=grant)
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
        #: Drawn at start when a server bound beyond loopback has neither tokens nor a hook:
        #: such a server never opens a shell anonymously; :meth:`start` logs the URL carrying it.
        self.generated_token: str | None = None
        tokens = opts.tokens
        if not loopback and not tokens and opts.auth_hook is None:
            self.generated_token = generate_token()
            tokens = (self.generated_token,)
        self.auth = AuthPolicy(tokens, opts.auth_hook, loopback)
        if opts.key is not None and opts.cert is None and opts.ssl_context is None:
            raise ValueError("ServerOptions.key is set without cert")
        #: The TLS context when the server serves https/wss (``ssl_context``, else from ``cert``/``key``).
        self.ssl_context = opts.ssl_context or (server_ssl_context(opts.cert, opts.key) if opts.cert else None)
        #: Exact same origin (the server's own scheme, https with TLS) or the allow-list.
        self.origins = OriginPolicy(opts.allow_origins, loopback_host_only=loopback, scheme="https" if self.tls else "http")
        self.targets = TargetPolicy(opts.allow_targets, default_loopback_only=opts.backend == "ssh")
        #: ``options.base_path`` normalised (``/`` or ``/a/b/``); raises ValueError if malformed.
        self.base_path = normalize_base_path(opts.base_path)
        #: ``options.trust_proxy`` parsed: whose ``X-Forwarded-For`` is believed.
        self.trusted_proxies = TrustedProxies.parse(opts.trust_proxy)
        self.metrics = Metrics() if opts.metrics else None
        self._backends: dict[tuple[str, int], Backend] = {}
        #: Each terminal channel's size (``open.term``, then every ``resize``): a new share hub's model.
        self._sizes: dict[tuple[str, int], tuple[int, int]] = {}
        #: Recorders of channels not yet stopped with the server (weakly: a closed one is dropped).
        self._recorders: weakref.WeakSet[ChannelRecorder] = weakref.WeakSet()
        self._closing: set[Backend] = set()  # closed, not yet reaped
        #: Tasks the server started (auth hooks, backend starts, reaping): kept until done.
        self._tasks: set[asyncio.Future[None]] = set()
        self._sinks: dict[tuple[str, int], _Sink] = {}
        self._ws: WsServer | None = None
        self._ticker: asyncio.Task[None] | None = None
        #: TCP connections admitted, overall and per peer key (docs/security.md, item 8).
        self.conn_limits = Counter(opts.max_connections, opts.max_connections_per_ip)
        self._static = StaticFiles(opts.static_dir) if opts.static_dir else None
        #: This server's connection class: :class:`_PushWsConnection` knowing its server.
        self._conn_class = type("_ServerWsConnection", (_PushWsConnection,), {"nimbus": self})
        #: Sees each WebSocket before the session machine (a cluster's relay, a drain), or ``None``:
        #: set by node_runtime/cluster (``ClusterNode``); see :class:`ConnectionGate`.
        self.gate: ConnectionGate | None = None
        self._serve_kw: dict[str, Any] = {}
        self._also: list[WsServer] = []

    def refused(self, what: str, key: str) -> None:
        """Count and log (debug: a flood must not flood the log) an admission refusal."""
        log.debug("refused", extra={"event": "refused", "limit": what, "peer": key})
        if self.metrics is not None:
            self.metrics.refused.labels(what).inc()

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
        if self.ssl_context is not None:
            kw["ssl_handshake_timeout"] = OPEN_TIMEOUT
        self._serve_kw = dict(
            subprotocols=subprotocols,
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            process_response=self._process_response,
            create_connection=self._conn_class,
            max_size=config.max_frame,
            ping_interval=None,
            close_timeout=5,
            server_header=SERVER_HEADER,
            # The open timeout runs in _PushWsConnection.handshake (a streamed file stops it).
            open_timeout=None,
            ssl=self.ssl_context,
            **kw,
        )
        self._ws = await serve(self._handler, opts.host, opts.port, reuse_port=opts.reuse_port or None, **self._serve_kw)
        self._ticker = asyncio.create_task(self._tick_sessions())
        log.info("listening", extra={"event": "listening", "url": self.url})
        fp = opts.file_policy
        log.info(
            "file transfer %s", "on" if fp.enabled else "off",
            extra={"event": "files", "enabled": fp.enabled, "root": fp.root or "", "max_size": fp.max_size},
        )
        if running_as_root():
            log.warning("running as root: every shell is a root shell", extra={"event": "running_as_root"})
        if self.generated_token is not None:
            log.warning(
                "no token configured for %s: generated one; open %s", opts.host, self.access_url, extra={"event": "token_generated"}
            )

    @property
    def tls(self) -> bool:
        """Whether the server serves TLS (``https://``, ``wss://``)."""
        return self.ssl_context is not None

    @property
    def access_url(self) -> str:
        """The URL to open: the page (``http(s)://host:port/``) when a static directory is served,
        else the WebSocket URL; with ``?token=`` when the token was generated at start."""
        host = self.options.host
        if host in ("", "0.0.0.0", "::"):  # every address: name the machine
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        http, ws = ("https", "wss") if self.tls else ("http", "ws")
        base = f"{http}://{host}:{self.port}{self.base_path}" if self._static is not None else f"{ws}://{host}:{self.port}{self.ws_path}"
        return base if self.generated_token is None else f"{base}?token={self.generated_token}"

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
        """``ws://host:port/path`` (``wss://`` with TLS)."""
        host = self.options.host
        if ":" in host:
            host = f"[{host}]"
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}{self.ws_path}"

    @property
    def ws_path(self) -> str:
        """The WebSocket's path: ``options.path`` under :attr:`base_path` (``/term/ws/ssh``)."""
        return self.base_path.rstrip("/") + "/" + self.options.path.lstrip("/")

    def client_address(self, ws: WsConnection) -> tuple[str, bool]:
        """``(address, forwarded)``: the client of ``ws``'s request -- the TCP peer's address,
        or, when the peer is a trusted proxy (``trust_proxy``), the client its
        ``X-Forwarded-For`` names (``forwarded`` True)."""
        peer = ws.remote_address
        ip = str(peer[0]) if peer else "?"
        request = ws.request
        relayed = self.gate.relayed_client(request) if self.gate is not None and request is not None else None
        if relayed is not None:  # an authenticated cluster relay names its client
            return relayed, True
        if not self.trusted_proxies or request is None:
            return ip, False
        values = request.headers.get_all("X-Forwarded-For")
        if not values or not self.trusted_proxies.trusts(ip):
            return ip, False
        return self.trusted_proxies.client_address(ip, values), True

    async def listen_also(self, host: str, port: int) -> int:
        """Serve the same routes on one more address (after :meth:`start`); returns its port."""
        extra = await serve(self._handler, host, port, **self._serve_kw)
        self._also.append(extra)
        return int(next(iter(extra.sockets)).getsockname()[1])

    async def stop(self, code: int = CloseCode.GOING_AWAY) -> None:
        """Stop accepting, close every connection with ``code`` (``GOING_AWAY``), end all sessions."""
        if self._ws is None:
            return
        ws, self._ws = self._ws, None
        also, self._also = self._also, []
        for each in (ws, *also):
            each.close(close_connections=True)
        for each in (ws, *also):
            await each.wait_closed()
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
        recorders, self._recorders = list(self._recorders), weakref.WeakSet()
        for rec in recorders:
            rec.close()
            await asyncio.wait_for(rec.wait_closed(), 5)

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
        first: str | bytes | None = None
        if self.gate is not None:
            handled, first = await self.gate.accept(ws)
            if handled:
                return
        await _Conn(self, ws, first).run()

    def _after_revocations(self) -> None:
        """Drain the viewer sessions share revocations ended, and log the share events."""
        reg = self.registry
        for ev in reg.events():
            log.info(ev.kind.value.replace("_", " "), extra={"event": ev.kind.value, "channel": ev.channel, "detail": ev.reason})
        for s in reg.drain_touched():
            self._pump(s)

    def _pump(self, session: ServerSession) -> None:
        for ev in session.events():
            self._handle(session, ev)

    def _handle(self, session: ServerSession, ev: ServerEvent) -> None:
        key = (session.sid, getattr(ev, "id", 0))
        if isinstance(ev, BackendOpen):
            # The sink is the channel's identity in the runtime: registered now, so a
            # close that arrives while the backend starts marks it dead (contract 12.6:
            # a backend of a closed channel never reports into a reopened id).
            opening = _Sink(self, session, ev.id)
            old = self._sinks.get(key)
            if old is not None:  # cannot happen (the core closes an id before reusing it)
                old.dead = True
            self._sinks[key] = opening
            self._spawn(self._open(session, opening, ev))
        elif isinstance(ev, BackendInput):
            be = self._backends.get(key)
            if be is not None:
                be.write(ev.data)
                rec = self._recorder(key)
                if rec is not None:
                    rec.input(ev.data)
            else:  # never acknowledged: a byte counts as consumed only once a backend took it
                log.warning("input for a channel without a backend", extra={"event": "input_dropped", "channel": key[1]})
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
                rec = self._recorder(key)
                if rec is not None:
                    rec.resize(ev.cols, ev.rows)
                self._sizes[key] = (ev.cols, ev.rows)
                owner = self._sinks.get(key)
                if owner is not None and owner.hub is not None:
                    owner.hub.resized(ev.cols, ev.rows)
        elif isinstance(ev, BackendSignal):
            be = self._backends.get(key)
            if be is not None:
                be.signal(ev.sig)
        elif isinstance(ev, BackendClose):
            be = self._backends.pop(key, None)
            self._sizes.pop(key, None)
            sink = self._sinks.pop(key, None)
            if sink is not None:
                sink.dead = True  # a backend still starting is closed when its start returns
                if sink.recorder is not None:
                    sink.recorder.close()
                if sink.hub is not None:
                    sink.hub.close()
                    sink.hub = None
            if be is not None:
                self._close_backend(be)
                if self.metrics:
                    self.metrics.channels.dec()
        else:
            self._observe(ev)

    def _recorder(self, key: tuple[str, int]) -> ChannelRecorder | None:
        sink = self._sinks.get(key)
        return sink.recorder if sink is not None else None

    def _start_recording(self, session: ServerSession, sink: _Sink, ev: BackendOpen, term: Term | None) -> bool:
        """Start the channel's recorder (``--record``); False (and one log line) if it cannot."""
        policy = self.options.record
        if policy is None or ev.file is not None:
            return True
        size = (term.cols, term.rows) if term is not None else (80, 24)
        env = dict(term.env) if term is not None else {}
        try:
            sink.recorder = ChannelRecorder(policy, session.sid, ev.id, session.principal, size, env)
        except OSError as exc:
            log.error(
                "recording unavailable", extra={"event": "recording_failed", "path": policy.directory, "reason": exc.strerror or str(exc)}
            )
            return False
        self._recorders.add(sink.recorder)
        return True

    def _close_backend(self, be: Backend) -> None:
        """Hang ``be`` up and reap it in the background (``stop`` waits for it too)."""
        be.close()
        self._closing.add(be)
        self._spawn(self._reap(be))

    async def _reap(self, be: Backend) -> None:
        try:
            await be.wait_closed()
        except Exception:  # a backend bug must not leave it in _closing forever
            log.exception("backend failed to close")
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

    def _open_failed(
        self, session: ServerSession, sink: _Sink, code: str, msg: str, host_key: HostKey | None = None
    ) -> None:
        key = (session.sid, sink.cid)
        if self._sinks.get(key) is sink:
            del self._sinks[key]
        if not sink.dead:  # else the channel (and maybe a new one with its id) is not ours
            sink.dead = True
            session.channel_open_failed(sink.cid, code, msg, host_key)
            self._pump(session)

    async def _open(self, session: ServerSession, sink: _Sink, ev: BackendOpen) -> None:
        cid = ev.id
        log.info(
            "open",
            extra={"event": "open", "channel": cid, "target": f"{ev.target.host}:{ev.target.port}", "user": ev.user.username},
        )
        if session.view is None and not self.targets.allows(ev.target):  # a viewer opens no target
            self._open_failed(session, sink, "POLICY_DENIED", f"target {ev.target.host}:{ev.target.port} not allowed")
            return
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
        elif session.view is not None:
            be = self._view_backend(session, sink, session.view)
        elif ev.file is not None:
            be = self._file_backend(session, sink, ev, ev.file)
        elif opts.backend == "ssh":
            be = SshBackend(sink, ev.target, ev.user, term, opts.ssh, command=ev.command)
        else:
            command = ev.command if ev.command is not None else opts.pty_command
            be = LocalProcessBackend(sink, term, command, max_read=self.config.max_read)
        try:
            await be.start()
        except BackendError as exc:
            log.info("open failed", extra={"event": "open_err", "channel": cid, "code": exc.code})
            self._open_failed(session, sink, exc.code, exc.message, exc.host_key)
            self._close_backend(be)  # whatever it started before failing
            return
        except Exception as exc:  # a backend bug must not take the server down
            log.exception("backend failed to start")
            self._open_failed(session, sink, "BACKEND_FAILED", str(exc)[:200])
            self._close_backend(be)
            return
        key = (session.sid, cid)
        if sink.dead or session.destroyed or self._sinks.get(key) is not sink:
            # The channel closed while the backend started; its id may already
            # belong to a new channel, which this backend must never touch.
            sink.dead = True
            self._close_backend(be)
            return
        if not self._start_recording(session, sink, ev, term):  # audit required: no recording, no channel
            self._open_failed(session, sink, "BACKEND_FAILED", "the server cannot record this session")
            self._close_backend(be)
            return
        self._backends[key] = be
        if self.options.share and session.view is None and ev.file is None:
            sink.recent = SeedRing()  # a future viewer's first screen
            if term is not None:
                self._sizes[key] = (term.cols, term.rows)
        if self.metrics:
            self.metrics.channels.inc()
            self.metrics.channels_total.inc()
        session.channel_opened(cid, getattr(be, "file_size", None))
        self._pump(session)
        if isinstance(be, ViewBackend):
            be.opened()

    def _file_backend(self, session: ServerSession, sink: _Sink, ev: BackendOpen, spec: FileSpec) -> Backend:
        """The backend of a file channel: SFTP on the SSH backend, the local filesystem on the PTY one.

        ``spec.ref`` names a terminal channel of the same session whose context the
        transfer shares: its SSH connection, or its shell's working directory.
        """
        ref = self._backends.get((session.sid, spec.ref)) if spec.ref is not None else None
        policy = self.options.file_policy
        if self.options.backend == "ssh":
            ssh = SshBackend(sink, ev.target, ev.user, None, self.options.ssh)
            sftp = SftpFileBackend(sink, spec, policy, ssh, ref if isinstance(ref, SshBackend) else None)
            sftp.observer = self._file_ended
            return sftp
        cwd = ref.cwd() if isinstance(ref, LocalProcessBackend) else None
        local = LocalFileBackend(sink, spec, policy, session.principal, cwd)
        local.observer = self._file_ended
        return local

    def _view_backend(self, session: ServerSession, sink: _Sink, grant: ShareGrant) -> Backend:
        """A viewer's channel: the shared channel's hub (made when its first viewer comes)."""
        owner_key = (grant.sid, grant.cid)
        owner_sink = self._sinks.get(owner_key)
        owner_be = self._backends.get(owner_key)
        owner_session = self.registry.get(grant.sid)
        hub = None
        if owner_sink is not None and owner_be is not None and owner_session is not None and not owner_sink.dead:
            hub = owner_sink.hub
            if hub is None:
                size = self._sizes.get(owner_key, (80, 24))

                def announce(
                    viewers: tuple[ViewerInfo, ...], s: ServerSession = owner_session, cid: int = grant.cid, owner: _Sink = owner_sink
                ) -> None:
                    s.viewers_changed(cid, viewers)
                    self._pump(s)
                    if not viewers and owner.hub is not None:  # nobody watches: no model to keep up
                        owner.hub.close()
                        owner.hub = None

                hub = owner_sink.hub = ShareHub(owner_be, size, owner_sink.seed(size[0]), announce)
        peer = getattr(session.conn, "peer", "") or ""
        info = ViewerInfo(grant.gid, "write" if grant.mode == "write" else "read", str(peer)[:64], int(time.time() * 1000))
        log.info("viewer", extra={"event": "viewer_attached", "grant": grant.gid, "mode": str(grant.mode), "peer": info.peer})
        return ViewBackend(sink, hub, info, sink.unsent)

    def _file_ended(self, op: str, result: str, n: int) -> None:
        """A file transfer ended (``done``, ``failed`` or ``cancelled``) after ``n`` bytes."""
        if self.metrics:
            self.metrics.file_transfers.labels(op=op, result=result).inc()
            self.metrics.file_bytes.labels(op=op).inc(n)

    async def _tick_sessions(self) -> None:
        while True:
            now = time.time()
            for s in self.registry.expire(now):
                log.info("session expired", extra={"event": "session_expired"})
                self._pump(s)
            if self.registry.has_touched():
                self._after_revocations()
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
            return response(400, b"Bad request\n", "text/plain; charset=utf-8")

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
                return response(400, b"Bad request\n", "text/plain; charset=utf-8")
        target = urlsplit(request.path)
        path = self._under_base(target.path)
        if path is None:
            if target.path == self.base_path.rstrip("/") and request.headers.get("Upgrade") is None:
                # "/term" -> "/term/": the page's relative URLs resolve under the prefix.
                location = self.base_path + (f"?{target.query}" if target.query else "")
                return response(HTTPStatus.MOVED_PERMANENTLY, b"Moved\n", "text/plain; charset=utf-8", (("Location", location),))
            return self._not_found(ws, request)
        if path == self._ws_rel_path:
            relay = self.gate is not None and self.gate.relayed_client(request) is not None  # checked by the relaying instance
            if not relay and not self.origins.check(request.headers.get("Origin"), request.headers.get("Host")):
                log.warning("origin refused", extra={"event": "origin_refused", "origin": request.headers.get("Origin")})
                return ws.respond(HTTPStatus.FORBIDDEN, "Origin not allowed\n")
            return None
        if path == "/metrics" and self.metrics is not None:
            refused = await self._operator_refusal(ws, request, "metrics")
            if refused is not None:
                return refused
            return response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if self.options.record is not None and recordings_http.handles(path):
            # --record: the recordings page, its list and the casts (the operator's credentials).
            rec = await recordings_http.respond(
                path, request, directory=self.options.record.directory, base_path=self.base_path,
                static=self._static, check=lambda: self._operator_refusal(ws, request, "recordings"),
            )
            return rec if isinstance(rec, Response) else await self._send_file(ws, request, rec)
        if path == page_config.PAGE_CONFIG_PATH and request.headers.get("Upgrade") is None:
            return page_config.page_config_response(self.options.terminal_options)
        if self._static is not None and request.headers.get("Upgrade") is None:
            answer = await self._static.respond(path, request_headers=request.headers)
            if isinstance(answer, Response):
                return answer
            return await self._send_file(ws, request, answer)
        return self._not_found(ws, request)

    async def _send_file(self, ws: WsConnection, request: Request, answer: FileBody) -> Response:
        """Stream ``answer`` (a static file, a recording) and return its head."""
        # Streamed from the file (never read whole); the connection is closed after it,
        # so websockets answers nothing more.  Its open timeout stops here: a slow link
        # gets the page at its own pace, cut only if it stalls (static_stall_timeout).
        head = answer.head
        head.headers["Server"] = SERVER_HEADER
        self._process_response(ws, request, head)
        deadline = getattr(ws, "open_deadline", None)
        if deadline is not None:
            deadline.reschedule(None)
        await send_file(ws, answer, stall=self.options.static_stall_timeout)
        return head

    async def _operator_refusal(self, ws: WsConnection, request: Request, what: str) -> Response | None:
        """``None`` if ``request`` may read the operator's pages (``/metrics``, the recordings),
        else the answer refusing it; ``what`` names the page in the log (``<what>_refused``).

        Issue 13.12: the upgrade's Origin/Host rule (DNS rebinding), then the hello's
        credentials rule -- bearer token, hook, or anonymous for the server's own UID.
        """
        headers = request.headers
        event = f"{what}_refused"
        host = headers.get("Host")
        if not self.origins.check(headers.get("Origin"), host):
            log.info("%s refused", what, extra={"event": event, "reason": "origin"})
            return response(HTTPStatus.FORBIDDEN, b"Origin not allowed\n", "text/plain; charset=utf-8")
        try:
            host_name = urlsplit("//" + (host or "")).hostname or ""
        except ValueError:  # "[::1", a bad port...
            host_name = ""
        if is_loopback(self.options.host) and not is_loopback(host_name):
            log.info("%s refused", what, extra={"event": event, "reason": "host", "host": (host or "")[:100]})
            return response(HTTPStatus.MISDIRECTED_REQUEST, b"Misdirected request\n", "text/plain; charset=utf-8")
        peer_uid: int | None = None
        if self.auth.anonymous_possible and not _proxied(request):
            transport = ws.transport
            try:
                peer_uid = await asyncio.to_thread(
                    peercred.peer_uid, transport.get_extra_info("sockname"), transport.get_extra_info("peername")
                )
            except Exception:  # cannot tell: not trusted
                log.exception("peer lookup failed")
        if not await self.auth.check_bearer(headers.get("Authorization"), peer_uid=peer_uid):
            log.info("%s refused", what, extra={"event": event, "reason": "auth"})
            return response(
                HTTPStatus.UNAUTHORIZED, b"Unauthorized\n", "text/plain; charset=utf-8",
                (("WWW-Authenticate", 'Bearer realm="nimbus-ws"'),),
            )
        return None

    def _not_found(self, ws: WsConnection, request: Request) -> Response:
        """404; an upgrade to a path the server does not serve is told the one it does
        (issue 14.6: ``nimbus-ws connect`` names it).  The path is no secret: the page
        derives it from its own address."""
        if request.headers.get("Upgrade") is None:
            return ws.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        return ws.respond(HTTPStatus.NOT_FOUND, f"{NOT_FOUND_WS_HINT}{self.ws_path}\n")

    @property
    def _ws_rel_path(self) -> str:
        """``options.path`` with its leading slash: the WebSocket's path under the base."""
        return "/" + self.options.path.lstrip("/")

    def _under_base(self, path: str) -> str | None:
        """``path`` relative to :attr:`base_path` (with a leading ``/``), or ``None`` outside it."""
        base = self.base_path
        if base == "/":
            return path
        if not path.startswith(base):
            return None
        return "/" + path[len(base):]


#: Headers a reverse proxy adds: a request carrying one came through a proxy.
_FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def _proxied(request: Request | None) -> bool:
    """True if ``request`` carries a forwarding header (from a trusted proxy or not)."""
    return request is not None and any(name in request.headers for name in _FORWARDING_HEADERS)


def _safe_extras(extras: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(extras).items() if k not in ("token", "payload", "data", "message")} | (
        {"detail": str(extras.get("message"))[:200]} if "message" in extras else {}
    )
