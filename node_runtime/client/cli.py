"""``nimbus-ws connect``: a terminal (or one command) over ``nimbus.ssh.v1``, like ``ssh``.

    nimbus-ws connect URL [--target HOST:PORT] [--user NAME]
                          [--password-env VAR | --identity FILE] [--token-env VAR]
                          [--command CMD] [--profile ID] [-t | -T] [-v]

Interactive (stdin is a terminal and no ``--command``, or ``-t``): the local
terminal goes to raw mode (restored on exit), the remote side gets a PTY of
the same size and ``TERM``; ``SIGWINCH`` becomes ``resize``; Ctrl-C is
passed through as the byte ``\\x03``.  Connection state changes
(reconnecting..., reconnected) are reported on stderr.

Non-interactive (``--command``, piped stdin, or ``-T``): the channel is
opened **without** ``term`` -- the server runs it on pipes, not a PTY, so
output is byte-exact (no ``onlcr``, no echo) and stderr stays separate --
and stdin/stdout/stderr are streamed, so
``nimbus-ws connect URL --command 'cat big.bin' > out.bin`` copies a file.
A local ``SIGINT`` is forwarded as the ``INT`` signal; a second one within
a second gives up locally.

Exit status: the remote process's status; ``128 + n`` when it died of signal
``n``; 255 when the connection or the channel failed (as ``ssh``).

``--command`` travels as ``open.command`` (an extension the server announces
with ``caps.command``; a server without it refuses the channel instead of
starting a shell).  When piped stdin ends, ``eof`` (announced as
``caps.eof``) tells the remote command, as ``ssh`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...core.aio.connection import Channel, ChannelError, ChannelOpenError, Connection
from ...core.aio.options import ConnectOptions
from ...core.errors import CloseError, NimbusError
from ...core.events import StateChanged, describe_state_change
from . import messages

__all__ = [
    "EXIT_FAILURE",
    "Session",
    "add_connection_arguments",
    "add_parser",
    "run_connect",
    "share_endpoint",
    "split_url_token",
]

EXIT_FAILURE = 255
STDIN_CHUNK = 64 * 1024


def add_parser(sub: Any) -> None:
    """Register ``connect`` on the ``nimbus-ws`` subcommand parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "connect",
        allow_abbrev=False,
        help="open a terminal or run a command over nimbus.ssh.v1",
        description="Open a terminal (like ssh) or run one command over a nimbus.ssh.v1 WebSocket.",
    )
    p.add_argument(
        "url",
        help="ws:// or wss:// URL of the server endpoint (e.g. ws://127.0.0.1:8765/ws/ssh); a ?token= "
        "parameter is sent as the bearer token and removed from the URL (visible in ps: prefer --token-env)",
    )
    add_connection_arguments(p)
    p.add_argument("--command", "-c", metavar="CMD", default=None, help="run CMD instead of a login shell")
    tty = p.add_mutually_exclusive_group()
    tty.add_argument("-t", dest="tty", action="store_true", default=None, help="force a remote PTY")
    tty.add_argument("-T", dest="tty", action="store_false", help="never ask for a remote PTY")
    p.add_argument(
        "--share",
        action="store_true",
        help="URL is a share link (…?share=TOKEN, the page's or the endpoint's): watch that terminal, "
        "typing into it only if the link is read-write",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="print diagnostics on stderr")
    p.set_defaults(func=run_connect)


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``connect`` and ``cp`` share: where, as whom, with which credentials."""
    p.add_argument("--target", metavar="HOST:PORT", default=None, help="where the server connects (SSH backend)")
    p.add_argument("--user", default=None, help="remote user name (default: the local one)")
    cred = p.add_mutually_exclusive_group()
    cred.add_argument("--password-env", metavar="VAR", help="take the SSH password from this environment variable")
    cred.add_argument("--identity", "-i", metavar="FILE", help="SSH private key file")
    p.add_argument("--token-env", metavar="VAR", help="bearer token for the WebSocket server, from this variable")
    default_profile = str(ConnectOptions().profile)
    p.add_argument(
        "--profile", default=default_profile, help=f"wire profile id (default {default_profile})"
    )


def run_connect(args: argparse.Namespace) -> int:
    """Run ``connect``; returns the exit status."""
    try:
        return asyncio.run(Session(args).run())
    except KeyboardInterrupt:
        return 130


def split_url_token(url: str) -> tuple[str, str | None]:
    """``(url without its token parameter, token)``: ``?token=`` is the bearer token, as on the
    demo page, and is never sent in the request line (servers and proxies log those)."""
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    tokens = [v for k, v in pairs if k == "token"]
    if not tokens:
        return url, None
    if len(tokens) > 1 or not tokens[0]:
        raise ValueError("the URL must carry at most one non-empty ?token= parameter")
    rest = urlencode([(k, v) for k, v in pairs if k != "token"])
    return urlunsplit(parts._replace(query=rest)), tokens[0]


def share_endpoint(link: str) -> tuple[str, str]:
    """``(endpoint URL, share token)`` for a share link: the page's ``http(s)://host/base/?share=T``
    (the endpoint is ``ws(s)://host/base/ws/ssh``) or the endpoint's own ``ws(s)://…?share=T``."""
    parts = urlsplit(link)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    tokens = [v for k, v in pairs if k == "share"]
    if len(tokens) != 1 or not tokens[0]:
        raise ValueError("a share link carries one ?share=TOKEN")
    rest = urlencode([(k, v) for k, v in pairs if k not in ("share", "token")])
    if parts.scheme in ("http", "https"):
        path = parts.path if parts.path.endswith("/") else parts.path.rsplit("/", 1)[0] + "/"
        parts = parts._replace(scheme="wss" if parts.scheme == "https" else "ws", path=path + "ws/ssh")
    elif parts.scheme not in ("ws", "wss"):
        raise ValueError(f"{link}: a share link is an http(s):// page link or a ws(s):// endpoint")
    return urlunsplit(parts._replace(query=rest, fragment="")), tokens[0]


def _parse_target(text: str) -> dict[str, Any]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "22"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad --target {text!r} (want HOST:PORT)")
    return {"host": host, "port": int(port)}


def _user_auth(args: argparse.Namespace) -> dict[str, Any]:
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:  # the name is not echoed: it may be a password typed in the wrong place
            raise ValueError("the environment variable named by --password-env is not set")
        return {"type": "password", "password": password}
    if args.identity:
        with open(os.path.expanduser(args.identity), encoding="utf-8") as f:
            return {"type": "key", "private_key": f.read()}
    if args.target:
        return {"type": "agent"}
    return {}


def _signal_number(name: str) -> int | None:
    try:
        return int(signal.Signals["SIG" + name.upper().removeprefix("SIG")])
    except KeyError:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Session:
    """One ``nimbus-ws connect`` run (``cp`` overrides :meth:`session`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.raw = False
        self.stderr_fd = sys.stderr.fileno()
        self.conn: Connection | None = None
        self.channel: Channel | None = None
        self.last_sigint = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self.failed = False
        self.url = args.url  # without its ?token= once run() split it off

    # ------------------------------------------------------------- messages
    def note(self, text: str) -> None:
        """A status line on stderr (``\\r\\n`` in raw mode)."""
        end = "\r\n" if self.raw else "\n"
        with contextlib.suppress(OSError):
            _write_all(self.stderr_fd, f"nimbus-ws: {text}{end}".encode())

    # ----------------------------------------------------------------- main
    async def run(self) -> int:
        from .api import connect
        from .websockets_impl import WebsocketsImpl

        args = self.args
        try:
            target = _parse_target(args.target) if args.target else {"host": "localhost", "port": 22}
            user = {"username": args.user or getpass.getuser(), "auth": _user_auth(args)}
        except (ValueError, OSError) as exc:
            self.note(str(exc))
            return 2
        interactive = bool(args.tty) if args.tty is not None else (args.command is None and os.isatty(0))
        token_env = args.token_env
        if token_env and token_env not in os.environ:  # not echoed: it may be the token itself
            self.note("the environment variable named by --token-env is not set")
            return 2
        url_token: str | None
        try:
            if getattr(args, "share", False):
                url, url_token = share_endpoint(args.url)
            else:
                url, url_token = split_url_token(args.url)
        except ValueError as exc:
            self.note(str(exc))
            return 2
        self.url = url
        if url_token is not None and token_env:
            self.note("give the bearer token once: ?token= in the URL or --token-env, not both")
            return 2

        def auth() -> dict[str, str]:
            if url_token is not None:
                return {"scheme": "bearer", "token": url_token}
            if token_env:
                return {"scheme": "bearer", "token": os.environ[token_env]}
            return {"scheme": "none"}

        listeners: dict[str, Callable[[Any], object]] = {"statechange": self.on_state}
        if args.verbose:
            listeners["diagnostic"] = lambda d: self.note(f"[{d.phase}] {d.code} {dict(d.extras)}")
        try:
            options = ConnectOptions.from_keywords(profile=args.profile)
            self.conn = conn = await connect(
                url, websocket_impl=WebsocketsImpl, options=options, auth=auth, on=listeners
            )
        except CloseError as exc:
            self.note(f"cannot connect to {url}: {await _explain(exc, url)}")
            return EXIT_FAILURE
        except NimbusError as exc:
            self.note(f"cannot connect to {url}: {exc}")
            return EXIT_FAILURE
        except (KeyError, ValueError, OSError) as exc:  # unknown profile, bad URL
            self.note(f"cannot connect to {url}: {exc}")
            return EXIT_FAILURE
        try:
            return await self.session(conn, target, user, interactive)
        finally:
            await conn.close()

    async def session(self, conn: Connection, target: dict[str, Any], user: dict[str, Any], interactive: bool) -> int:
        args = self.args
        term = None
        if interactive:
            cols, rows = _terminal_size()
            term = {"cols": cols, "rows": rows, "env": {"TERM": os.environ.get("TERM", "xterm-256color")}}
        extra: dict[str, Any] = {}
        if args.command is not None:
            extra["command"] = args.command  # open.command [ext]; refused if unsupported
        try:
            ch = await conn.open_session(target=target, user=user, term=term, **extra)
        except NimbusError as exc:
            self.note(f"cannot open a session: {_explain_open(exc)}")
            return EXIT_FAILURE
        self.channel = ch
        await self.after_open(conn, ch)
        loop = asyncio.get_running_loop()
        restore = self.enter_raw() if interactive and os.isatty(0) else None
        if interactive and os.isatty(0):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGWINCH, lambda: ch.resize(*_terminal_size()))
        else:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGINT, self.on_sigint)
        view = conn.session.view_mode
        if view is not None:
            self.note(f"watching a shared terminal ({'read-write' if view == 'write' else 'read-only: typing is not sent'})")
            size = ch.term_size
            ch.on("resize", lambda s: self.note(f"the shared terminal is {s[0]}x{s[1]}"))
            if size is not None:
                self.note(f"the shared terminal is {size[0]}x{size[1]}")
        if view == "read":
            pump_in = asyncio.create_task(asyncio.sleep(0))
        else:
            pump_in = asyncio.create_task(self.pump_stdin(ch))
        try:
            await self.pump_output(ch)
        except CloseError as exc:
            self.failed = True
            self.note(f"session lost: {await _explain(exc, self.url)}")
        except NimbusError as exc:
            self.failed = True
            self.note(f"session lost: {exc}")
        finally:
            pump_in.cancel()
            for sig in (signal.SIGWINCH, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            if restore is not None:
                restore()
                self.raw = False
        if self.failed or ch.error is not None:
            return EXIT_FAILURE
        if ch.exit_status is not None:
            return ch.exit_status & 0xFF
        if ch.exit_signal is not None:
            num = _signal_number(ch.exit_signal)
            return 128 + num if num is not None else EXIT_FAILURE
        return EXIT_FAILURE

    async def after_open(self, conn: Connection, ch: Channel) -> None:
        """Called once the channel is open, before the terminal goes raw (``share`` prints its link)."""

    # --------------------------------------------------------------- output
    async def pump_output(self, ch: Channel) -> None:
        loop = asyncio.get_running_loop()
        out_fd, err_fd = sys.stdout.fileno(), self.stderr_fd
        async for stream, data in ch.iter_output():
            await loop.run_in_executor(None, _write_all, out_fd if stream == "stdout" else err_fd, data)

    # ---------------------------------------------------------------- input
    async def pump_stdin(self, ch: Channel) -> None:
        """Stream local stdin to the channel (a daemon thread reads, so exit never waits for it)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)

        def reader() -> None:
            while True:
                try:
                    data = os.read(0, STDIN_CHUNK)
                except OSError:
                    data = b""
                try:
                    asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
                except Exception:
                    return
                if not data:
                    return

        threading.Thread(target=reader, name="nimbus-ws-stdin", daemon=True).start()
        while True:
            data = await queue.get()
            if not data:
                if not os.isatty(0):
                    with contextlib.suppress(ChannelError, NimbusError, ValueError):
                        await ch.send_eof()  # like ssh: the remote command sees end of input
                return
            try:
                await ch.send(data)
            except (ChannelError, NimbusError):
                return

    # --------------------------------------------------------------- events
    def on_state(self, ev: StateChanged) -> None:
        if self.conn is None:  # connecting: a failure is reported once, by run()
            return
        notice = describe_state_change(ev)  # which changes a user hears of is the core's call
        if notice is not None:
            self.note(notice)

    def on_sigint(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        ch = self.channel
        if now - self.last_sigint < 1.0 or ch is None or ch.closed:
            raise KeyboardInterrupt
        self.last_sigint = now
        task = loop.create_task(ch.signal("INT"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def enter_raw(self) -> Callable[[], None]:
        import termios
        import tty

        fd = 0
        saved = termios.tcgetattr(fd)
        tty.setraw(fd, termios.TCSANOW)
        self.raw = True

        def restore() -> None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)

        return restore


def _explain_open(exc: NimbusError) -> str:
    """A refused SSH host key in plain words with the offered key, then ``[CODE]``; else ``exc``."""
    if isinstance(exc, ChannelOpenError):
        text = messages.host_key_message(str(exc.code), exc.host_key)
        if text is not None:
            return f"{text} [{exc.code}]"
    return str(exc)


async def _explain(exc: CloseError, url: str) -> str:
    """``exc`` in plain words, then ``[code NAME: raw reason]`` (issue 14.6).  A 404 to the
    upgrade asks the server once more, for the path its 404 names."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2] or url
    name, reason = str(exc.code), exc.message
    text = messages.user_message(name, reason, host=host, code=exc.ws_code)
    if name == "CONNECT_FAILED" and messages.http_status(reason) == 404:
        served = await _served_path(url)
        where = parts.path or "/"
        if served is not None:
            ws = urlunsplit(parts._replace(path=served, query="", fragment=""))
            text = f"there is no WebSocket endpoint at {where}; the server serves {served} (try {ws})"
        else:
            text = f"there is no WebSocket endpoint at {where} on {host} (the default is /ws/ssh)"
    detail = messages.detail_line(exc.ws_code, name, reason)
    return f"{text} [{detail}]" if text else str(exc)


async def _served_path(url: str) -> str | None:
    """The WebSocket path named by the server's 404 body for an upgrade to ``url``."""
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidStatus

    try:
        async with ws_connect(url, open_timeout=5, close_timeout=1):
            return None  # it answered this time: nothing to name
    except InvalidStatus as exc:
        return messages.served_path(bytes(exc.response.body or b""))
    except Exception:  # gone, TLS, timeout: the fixed hint
        return None


def _terminal_size() -> tuple[int, int]:
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return size.columns, size.lines
    return 80, 24
