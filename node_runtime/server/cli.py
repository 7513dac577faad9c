"""``nimbus-ws serve``: run the reference server until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from ...core.server_config import ServerConfig
from ..cluster.cli import add_arguments as add_cluster_arguments
from ..cluster.cli import check_args as check_cluster_args
from ..cluster.cli import drain_timeout, node_from_args
from .app import Server, ServerOptions
from .files import DEFAULT_MAX_FILE_SIZE, FilePolicy
from .page_config import parse_terminal_options
from .policy import OriginPolicy
from .proxy import TrustedProxies, normalize_base_path
from .recording import RecordPolicy
from .ssh_backend import SshOptions
from .static import default_static_dir, installed_site_dir
from .tls import TlsConfigError, server_ssl_context

__all__ = ["EXIT_STATUS", "add_parser", "run_serve"]

#: The ``serve --help`` epilog (and README "Using it"): what the exit status means.
EXIT_STATUS = (
    "exit status: 0 stopped by SIGTERM or SIGINT; 2 usage or configuration error "
    "(one line on stderr: bad option, port in use, missing --static directory, "
    "unreadable certificate, missing extra); 1 unexpected error"
)

_STD_ATTRS = set(vars(logging.LogRecord("x", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD_ATTRS:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


#: Characters a text log line never carries raw: C0/C1 controls and DEL (newline, CR, ESC
#: forge lines or drive the reader's terminal), line/paragraph separators, bidi overrides.
_LOG_UNSAFE = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069]")


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def log_escape(text: object) -> str:
    """``str(text)`` with backslashes doubled and unsafe characters as ``\\xNN``/``\\uNNNN``."""
    return _LOG_UNSAFE.sub(_escape_char, str(text).replace("\\", "\\\\"))


def _log_value(value: object) -> str:
    """One ``key=value`` value: escaped; quoted when it holds a space, ``=`` or ``"`` (or is empty)."""
    text = log_escape(value)
    if not text or any(c in text for c in ' ="'):
        return '"' + text.replace('"', '\\"') + '"'
    return text


class TextFormatter(logging.Formatter):
    """``time level msg key=value ...``; client-supplied text cannot break out of its line
    (control characters escaped, values with spaces quoted; issue 13.10)."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={_log_value(v)}" for k, v in vars(record).items() if k not in _STD_ATTRS)
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname.lower():7} {log_escape(record.getMessage())}"
        out = f"{base} {extras}" if extras else base
        if record.exc_info:
            out += "\n" + self.formatException(record.exc_info)
        return out


def setup_logging(fmt: str, level: int = logging.INFO) -> None:
    """Structured logs on stderr (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("nimbus_websocket")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def add_parser(sub: Any) -> None:
    """Register ``serve``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run the reference server", allow_abbrev=False, epilog=EXIT_STATUS
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; 0.0.0.0: every IPv4 address)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default %(default)s; 0: a free port)")
    p.add_argument("--path", default="/ws/ssh", help="the WebSocket endpoint's path (default %(default)s)")
    # --- behind a reverse proxy (docs/deploy.md) ---
    p.add_argument(
        "--base-path",
        metavar="PREFIX",
        default="/",
        help="serve everything (page, --path, /metrics) under this URL prefix, e.g. /term/, for a proxy "
        "that does not strip it; outside it 404, /term redirects to /term/ (default %(default)s)",
    )
    p.add_argument(
        "--trust-proxy",
        metavar="ADDR",
        action="append",
        default=[],
        help="a reverse proxy (exact address or CIDR network; repeatable) whose X-Forwarded-For names "
        "the client for per-client limits, the failed-resume budget and logs; from other peers the "
        "header is ignored (default: none). Connections at accept still count per proxy address",
    )
    # --- end reverse proxy ---
    p.add_argument(
        "--backend",
        choices=("pty", "ssh"),
        default="pty",
        help="pty: a shell on this machine as this user; ssh: an SSH client to an allowed target (default %(default)s)",
    )
    p.add_argument(
        "--cert",
        metavar="FILE",
        default=None,
        help="serve https:// and wss:// with this PEM certificate chain, leaf first (default: none, plain http/ws)",
    )
    p.add_argument(
        "--key",
        metavar="FILE",
        default=None,
        help="the PEM private key of --cert, unencrypted (default: none, the key is in the --cert file)",
    )
    p.add_argument("--pty-command", default=None, help="command for PTY channels (default: the user's login shell)")
    p.add_argument(
        "--no-share",
        dest="share",
        action="store_false",
        help="no share links: owners cannot hand out read-only or read-write views of their terminals "
        "(default: they can; a link expires, 1 h by default, and is revocable)",
    )
    p.add_argument(
        "--record",
        metavar="DIR",
        default=None,
        help="record every terminal channel as an asciicast v2 file in DIR (created 0700; files 0600). Default: off",
    )
    p.add_argument(
        "--record-input",
        action="store_true",
        help="also record what clients type (captures passwords typed at prompts; default: output and resizes only)",
    )
    p.add_argument(
        "--record-max-size",
        metavar="SIZE",
        default=None,
        help="rotate a recording to a new part at SIZE (bytes or K/M/G; default 64M; at most 16 parts per channel)",
    )
    files = p.add_mutually_exclusive_group()
    files.add_argument(
        "--files",
        dest="files",
        action="store_true",
        default=None,
        help="file transfer (upload/download) in the session's context: SFTP on the SSH backend, the server "
        "user's filesystem on the PTY backend (default: on, except with --pty-command)",
    )
    files.add_argument(
        "--no-files", dest="files", action="store_false", help="no file transfer (default: on, see --files)"
    )
    p.add_argument(
        "--files-root",
        metavar="DIR",
        default=None,
        help="file transfers only inside DIR (symlinks resolved; on the SSH backend, a remote path). Default: none",
    )
    p.add_argument(
        "--max-file-size",
        metavar="SIZE",
        default=None,
        help="largest file transferred, bytes or with K/M/G (default 2G)",
    )
    p.add_argument(
        "--token",
        action="append",
        default=[],
        help="accepted bearer token (repeatable; visible in ps: prefer --token-file or $NIMBUS_TOKEN). "
        "Default: none; anonymous on loopback, a generated token beyond it",
    )
    p.add_argument(
        "--token-file",
        metavar="FILE",
        action="append",
        default=[],
        help="accepted bearer tokens, one per line (blank and # lines ignored; repeatable; default: none)",
    )
    p.add_argument(
        "--allow-origin",
        metavar="ORIGIN",
        action="append",
        default=[],
        help="also accept pages of this exact origin, scheme://host[:port] (repeatable; '*' is refused). "
        "By default only the server's own origin may open the WebSocket",
    )
    p.add_argument(
        "--allow-target",
        action="append",
        default=[],
        help="SSH backend: allowed HOST:PORT target (repeatable; * wildcards; default: loopback port 22 only)",
    )
    p.add_argument(
        "--static",
        metavar="DIR",
        default=None,
        help="serve this directory on the same port, e.g. the demo site; 'auto': the installed page, else "
        "build/site (default: the page installed by the server extra (nimbus-websocket-site), else none)",
    )
    p.add_argument("--metrics", action="store_true", help="Prometheus text at /metrics (Authorization: Bearer <token> when tokens are set)")
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines on stderr (default %(default)s)")
    p.add_argument(
        "--known-hosts",
        metavar="FILE",
        default=None,
        help="SSH backend: known_hosts file the targets' host keys are checked against "
        "(default: none, so every host key is refused)",
    )
    p.add_argument("--insecure-ignore-host-keys", action="store_true", help="SSH backend: do not verify host keys (tests only)")
    p.add_argument(
        "--ssh-server-credentials",
        metavar="[USER@]HOST:PORT",
        action="append",
        default=[],
        help="SSH backend: let clients sending auth type 'agent' log in to this target with THIS server's "
        "ssh-agent and ~/.ssh/id_* keys (repeatable; * wildcards). Default: never",
    )
    p.add_argument(
        "--ssh-connect-timeout",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="SSH backend: TCP connect + SSH handshake (default %(default)s)",
    )
    p.add_argument("--per-message-deflate", action="store_true", help="enable bounded permessage-deflate")
    p.add_argument("--retention", type=float, default=None, help="seconds a dropped session is kept (default 60)")
    p.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        help=f"sessions kept at once, live or retained; more are refused with 4010 "
        f"(default {ServerConfig().max_sessions}; each can hold about 35 MiB at worst, PROTOCOL.md 11)",
    )
    p.add_argument(
        "--max-sessions-per-client",
        type=int,
        default=None,
        help=f"sessions one principal, and one client address (IPv4, all of loopback, an IPv6 /64), "
        f"may hold at once; more are refused with 4010 (default {ServerConfig().max_sessions_per_principal}; 0: no bound)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=ServerOptions.max_connections,
        help="TCP connections at once; more are dropped at accept (default %(default)s; 0: no bound)",
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=ServerOptions.max_connections_per_ip,
        help="TCP connections at once from one client address (IPv4, all of loopback, an IPv6 /64); "
        "default %(default)s; 0: no bound",
    )
    p.add_argument(
        "--terminal-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="an xterm.js option for the page, like ttyd's -t (repeatable): fontSize=18, fontFamily=..., "
        "lineHeight, letterSpacing, cursorStyle=block|underline|bar, cursorBlink=true, scrollback=N (<= 50000), "
        "theme=dark|light or theme={JSON colours}, drawBoldTextInBrightColors, minimumContrastRatio, "
        "macOptionIsMeta, rightClickSelectsWord. A user's own settings and URL parameters win "
        "(default: none; docs/page-features.md)",
    )
    add_cluster_arguments(p)  # --redis, --advertise, --workers, --drain-timeout... (docs/scale.md)
    p.add_argument("--verbose", "-v", action="store_true", help="debug logs")
    p.set_defaults(func=run_serve)


def read_tokens(given: Sequence[str], files: Sequence[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """The accepted tokens: ``--token`` values, every ``--token-file`` line (blank and ``#``
    lines skipped) and ``$NIMBUS_TOKEN``. A file without a token, an unreadable one, or an
    empty ``NIMBUS_TOKEN`` stops the server (the operator asked for tokens). Errors never
    show a token."""
    tokens = list(given)
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                found = [s for s in (line.strip() for line in f) if s and not s.startswith("#")]
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise SystemExit(f"nimbus-ws serve: cannot read --token-file {path}: {reason}") from None
        if not found:
            raise SystemExit(f"nimbus-ws serve: --token-file {path} holds no token")
        tokens += found
    env = environ.get("NIMBUS_TOKEN")
    if env is not None:
        if not env.strip():
            raise SystemExit("nimbus-ws serve: NIMBUS_TOKEN is set but empty")
        tokens.append(env.strip())
    if any(not t for t in tokens):
        raise SystemExit("nimbus-ws serve: --token must not be empty")
    return tuple(dict.fromkeys(tokens))


def _ssh_options(args: argparse.Namespace) -> SshOptions:
    """The SSH backend's options; server-side credentials only for the listed targets (docs/security.md, 3)."""
    if not args.ssh_connect_timeout > 0:
        raise SystemExit("nimbus-ws serve: --ssh-connect-timeout must be positive")
    try:
        ssh = SshOptions(
            known_hosts=args.known_hosts,
            insecure_ignore_host_keys=args.insecure_ignore_host_keys,
            connect_timeout=args.ssh_connect_timeout,
            server_credentials=tuple(args.ssh_server_credentials),
        )
    except ValueError as exc:
        raise SystemExit(f"nimbus-ws serve: --ssh-server-credentials: {exc}") from None
    if ssh.server_credentials and args.backend == "ssh":
        logging.getLogger("nimbus_websocket.server").warning(
            "clients may log in with this server's own SSH agent and keys to: %s",
            ", ".join(ssh.server_credentials),
            extra={"event": "ssh_server_credentials_enabled"},
        )
    return ssh


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """Build :class:`ServerOptions` from parsed arguments."""
    from dataclasses import replace



    config = ServerConfig()
    tokens = read_tokens(args.token, args.token_file, os.environ)
    check_cluster_args(args, tokens)
    try:  # one clear line for '*' or a malformed origin, before anything starts
        OriginPolicy(args.allow_origin)
    except ValueError as exc:
        raise SystemExit(f"nimbus-ws serve: {exc}") from None
    if args.retention is not None:
        config = replace(config, retention=args.retention)
    if args.max_sessions is not None:
        if args.max_sessions < 1:
            raise SystemExit("nimbus-ws serve: --max-sessions must be at least 1")
        config = replace(config, max_sessions=args.max_sessions)
    if args.max_sessions_per_client is not None:
        if args.max_sessions_per_client < 0:
            raise SystemExit("nimbus-ws serve: --max-sessions-per-client must be 0 (no bound) or more")
        n = args.max_sessions_per_client
        config = replace(config, max_sessions_per_principal=n, max_sessions_per_peer=n)
    for flag in ("max_connections", "max_connections_per_ip"):
        if getattr(args, flag) < 0:
            raise SystemExit(f"nimbus-ws serve: --{flag.replace('_', '-')} must be 0 (no bound) or more")
    try:  # --base-path / --trust-proxy: one clear line, before anything starts
        base_path = normalize_base_path(args.base_path)
        TrustedProxies.parse(args.trust_proxy)
    except ValueError as exc:
        raise SystemExit(f"nimbus-ws serve: {exc}") from None
    try:
        terminal_options = parse_terminal_options(args.terminal_option)
    except ValueError as exc:
        raise SystemExit(f"nimbus-ws serve: --terminal-option {exc}") from None
    return ServerOptions(
        share=args.share,
        record=_record_policy(args),
        files=_file_policy(args),
        base_path=base_path,
        trust_proxy=tuple(args.trust_proxy),
        **_tls_and_static(args),
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip,
        host=args.host,
        port=args.port,
        path=args.path,
        backend=args.backend,
        pty_command=args.pty_command,
        tokens=tokens,
        allow_origins=tuple(args.allow_origin),
        allow_targets=tuple(args.allow_target),
        static_dir=(
            installed_site_dir() if args.static is None
            else default_static_dir() if args.static == "auto" else args.static
        ),
        metrics=args.metrics,
        config=config,
        ssh=_ssh_options(args),
        per_message_deflate=args.per_message_deflate,
        terminal_options=terminal_options,
        reuse_port=args.worker,
    )


def parse_size(text: str) -> int:
    """``2G`` -> 2147483648 (suffixes K, M, G, T: powers of 1024; ``ValueError`` otherwise)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if t and t[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(t[-1]) + 1)
        t = t[:-1]
    if not t.isdigit():
        raise ValueError(f"{text!r} is not a size (bytes, or a number with K, M, G or T)")
    return int(t) * mult


def _record_policy(args: argparse.Namespace) -> RecordPolicy | None:
    """``--record`` / ``--record-input`` / ``--record-max-size`` (``None``: not recording)."""
    if args.record is None:
        if args.record_input or args.record_max_size:
            _config_error("--record-input and --record-max-size need --record DIR")
        return None
    try:
        os.makedirs(args.record, mode=0o700, exist_ok=True)
    except OSError as exc:
        _config_error(f"--record {args.record}: {exc.strerror or exc}")
    if not os.access(args.record, os.W_OK | os.X_OK):
        _config_error(f"--record {args.record}: not writable")
    max_file = 64 << 20
    if args.record_max_size is not None:
        try:
            max_file = parse_size(args.record_max_size)
        except ValueError as exc:
            _config_error(f"--record-max-size: {exc}")
        if max_file < 4096:
            _config_error("--record-max-size must be at least 4K")
    return RecordPolicy(args.record, record_input=args.record_input, max_file=max_file)


def _file_policy(args: argparse.Namespace) -> FilePolicy | None:
    """``--files`` / ``--no-files`` / ``--files-root`` / ``--max-file-size`` (``None``: the default)."""
    if args.files is None and args.files_root is None and args.max_file_size is None:
        return None
    enabled = args.files if args.files is not None else not (args.backend == "pty" and args.pty_command)
    if args.files is False and (args.files_root or args.max_file_size):
        _config_error("--files-root and --max-file-size need file transfer (drop --no-files)")
    max_size = DEFAULT_MAX_FILE_SIZE
    if args.max_file_size is not None:
        try:
            max_size = parse_size(args.max_file_size)
        except ValueError as exc:
            _config_error(f"--max-file-size: {exc}")
    root = args.files_root
    if root is not None and args.backend == "pty" and not os.path.isdir(root):
        why = "is not a directory" if os.path.exists(root) else "does not exist"
        _config_error(f"--files-root {root} {why}")
    return FilePolicy(enabled=enabled, root=root, max_size=max_size)


def _config_error(message: str) -> NoReturn:
    """One line on stderr, exit status 2 (an operator's mistake, not a traceback)."""
    sys.stderr.write(f"nimbus-ws serve: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _tls_and_static(args: argparse.Namespace) -> dict[str, Any]:
    """``ServerOptions`` fields checked before anything starts: the TLS context (from
    ``--cert``/``--key``) and the ``--static`` directory."""
    out: dict[str, Any] = {}
    if args.static not in (None, "auto") and not os.path.isdir(args.static):
        why = "is not a directory" if os.path.exists(args.static) else "does not exist"
        _config_error(f"--static {args.static} {why}")
    if args.key is not None and args.cert is None:
        _config_error("--key needs --cert")
    if args.cert is not None:
        try:
            out["ssl_context"] = server_ssl_context(args.cert, args.key)
        except TlsConfigError as exc:
            _config_error(str(exc))
        out.update(cert=args.cert, key=args.key)
    return out


def _warn_ignored(args: argparse.Namespace) -> None:
    """Warnings for options that cannot do what the operator meant (issue 14, item 5)."""
    log = logging.getLogger("nimbus_websocket.server")
    if args.backend == "ssh" and args.known_hosts is None and not args.insecure_ignore_host_keys:
        log.warning(
            "--backend ssh without --known-hosts: every connection will fail its host-key check "
            "(give --known-hosts FILE, or --insecure-ignore-host-keys for tests only)",
            extra={"event": "no_known_hosts"},
        )
    if args.backend == "pty":
        ignored = [
            flag
            for flag, given in (
                ("--allow-target", args.allow_target),
                ("--known-hosts", args.known_hosts is not None),
                ("--insecure-ignore-host-keys", args.insecure_ignore_host_keys),
                ("--ssh-server-credentials", args.ssh_server_credentials),
            )
            if given
        ]
        if ignored:
            log.warning(
                "%s ignored: the PTY backend runs a local shell, it has no SSH target (use --backend ssh)",
                ", ".join(ignored),
                extra={"event": "options_ignored"},
            )


def _bind_error(exc: OSError, host: str, port: int) -> str:
    """One line for a failed listen."""
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {host}: unknown host"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use"
    if exc.errno == errno.EACCES:
        return f"cannot listen on port {port} on {host}: permission denied"
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return f"cannot listen on {host}: not an address of this machine"
    return f"cannot listen on port {port} on {host}: {exc.strerror or exc}"


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (``GOING_AWAY``).

    Exit status (:data:`EXIT_STATUS`): 0 after a signal, 2 for a configuration error
    (one line on stderr), 1 for anything unexpected."""
    setup_logging(args.log_format, logging.DEBUG if args.verbose else logging.INFO)
    try:
        options = options_from_args(args)
    except SystemExit as exc:  # the checks above exit with their one line: status 2
        if isinstance(exc.code, str):
            sys.stderr.write(exc.code.rstrip("\n") + "\n")
            return 2
        raise
    _warn_ignored(args)
    if args.token:
        logging.getLogger("nimbus_websocket.server").warning(
            "--token on the command line is visible to other local users (ps); prefer --token-file or NIMBUS_TOKEN",
            extra={"event": "token_on_command_line"},
        )
    if args.workers > 1:  # a supervisor of N server processes (node_runtime/cluster/workers.py)
        from ..cluster.workers import run_workers

        return run_workers(args)
    return asyncio.run(_serve(options, args))


async def _serve(options: ServerOptions, args: argparse.Namespace | None = None) -> int:
    server = Server(options)
    try:
        node = node_from_args(server, args) if args is not None else None
    except SystemExit as exc:
        sys.stderr.write(f"{exc.code}\n")
        return 2
    try:
        await server.start()
    except OSError as exc:  # port in use, not an address here: one line, status 2
        sys.stderr.write(f"nimbus-ws serve: {_bind_error(exc, options.host, options.port)}\n")
        return 2
    if node is not None:
        await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    page = ""
    if options.static_dir:
        page = f"  page: {'https' if server.tls else 'http'}://{options.host}:{server.port}{server.base_path}"
    sys.stderr.write(f"nimbus-ws serving {server.url}{page}\n")
    sys.stderr.flush()
    await stop.wait()
    logging.getLogger("nimbus_websocket.server").info("shutdown", extra={"event": "shutdown"})
    if node is not None:  # drains first (--drain-timeout), then closes with 1001
        await node.shutdown(stop, drain_timeout=drain_timeout(args) if args is not None else 0.0)
    else:
        await server.stop()
    return 0
