"""``nimbus-ws conformance URL``: run the conformance kit against any server.

Writes one line per case (``PASS|FAIL|SKIP name — reason``, failures
followed by the frames involved), then ``N passed, N failed, N skipped``.
Exit status 1 when any case failed, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from .cases import CASES
from .context import DEFAULT_COMMANDS, PROFILES, KitOptions
from .runner import (
    CaseResult,
    describe_server,
    format_result,
    run_kit,
    selected_cases,
    write_report,
)

__all__ = ["add_parser", "main", "options_from_args", "run_conformance"]


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _command(text: str) -> tuple[str, str]:
    name, sep, template = text.partition("=")
    if not sep or name not in DEFAULT_COMMANDS:
        raise argparse.ArgumentTypeError(f"expected NAME=TEMPLATE with NAME in {', '.join(DEFAULT_COMMANDS)}")
    return name, template


def _json_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return obj


def _term(text: str) -> tuple[int, int]:
    cols, sep, rows = text.partition("x")
    if not sep or not cols.isdigit() or not rows.isdigit():
        raise argparse.ArgumentTypeError(f"expected COLSxROWS, got {text!r}")
    return int(cols), int(rows)


def add_parser(sub: Any) -> None:
    """Register ``conformance``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "conformance",
        allow_abbrev=False,
        help="run the protocol conformance kit against a server",
        description="Run the nimbus.ssh.v1 conformance matrix against the server at URL (wire-level checks).",
    )
    add_arguments(p)
    p.set_defaults(func=run_conformance)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The kit's options (shared by ``nimbus-ws conformance`` and :func:`main`)."""
    p.add_argument("url", nargs="?", help="ws:// or wss:// URL of the server's WebSocket endpoint")
    p.add_argument("--profile", choices=(*PROFILES, "all"), default="nimbus.v1", help="wire profile to test (default nimbus.v1)")
    p.add_argument("--token", default=None, help="bearer token the server requires (also enables the no-token case)")
    p.add_argument("--origin", default=None, help="Origin header to send on every upgrade")
    p.add_argument("--report", metavar="FILE", default=None, help="also write a JSON report to FILE")
    p.add_argument("--target", type=_hostport, default=("127.0.0.1", 22), metavar="HOST:PORT", help="open.target (default 127.0.0.1:22)")
    p.add_argument("--user", default=None, help="open.user.username (default: the current user)")
    p.add_argument("--user-auth", type=_json_object, default={}, metavar="JSON", help="open.user.auth, e.g. '{\"password\": \"...\"}'")
    p.add_argument("--denied-target", type=_hostport, default=None, metavar="HOST:PORT", help="a target the server refuses (open_err case)")
    p.add_argument("--term", type=_term, default=(80, 24), metavar="COLSxROWS", help="open.term size (default 80x24)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds any single wait may take (default 5)")
    p.add_argument("--quiet-window", type=float, default=0.5, help="seconds to watch that nothing arrives (default 0.5)")
    p.add_argument("--window", type=int, default=64 * 1024, help="credit window kept outstanding while reading (default 65536)")
    p.add_argument("--skip-slow", action="store_true", help="skip cases with observation windows or 1 MiB frames")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN", help="run only cases matching PATTERN (fnmatch, repeatable; e.g. 'credit.*')")
    p.add_argument("--cmd", type=_command, action="append", default=[], metavar="NAME=TEMPLATE", help="override a shell command template (see --list)")
    p.add_argument("--list", action="store_true", help="list the cases and command templates, then exit")


def options_from_args(args: argparse.Namespace) -> KitOptions:
    """Build :class:`KitOptions` from parsed arguments."""
    commands = dict(DEFAULT_COMMANDS)
    commands.update(dict(args.cmd))
    opts = KitOptions(
        url=args.url,
        profiles=PROFILES if args.profile == "all" else (args.profile,),
        token=args.token,
        origin=args.origin,
        target=args.target,
        user_auth=args.user_auth,
        denied_target=args.denied_target,
        term=args.term,
        timeout=args.timeout,
        quiet_window=args.quiet_window,
        window=args.window,
        skip_slow=args.skip_slow,
        only=tuple(args.only),
        commands=commands,
    )
    if args.user:
        opts.user = args.user
    return opts


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _list(opts: KitOptions) -> int:
    for pid in opts.profiles:
        for c in selected_cases(opts, pid):
            _write(f"{pid}/{c.name}{' (slow)' if c.slow else ''} — {c.doc}")
    _write("")
    _write("command templates (--cmd NAME=TEMPLATE):")
    for name, template in opts.commands.items():
        _write(f"  {name}={template}")
    return 0


def run_conformance(args: argparse.Namespace) -> int:
    """Run the kit; exit status 1 on any failure."""
    if args.url is None and not args.list:
        sys.stderr.write("nimbus-ws conformance: a server URL is required\n")
        return 2
    opts = options_from_args(args if args.url else argparse.Namespace(**{**vars(args), "url": ""}))
    if args.list:
        return _list(opts)
    if not CASES:
        return 2

    def emit(r: CaseResult) -> None:
        _write(format_result(r))

    _write(f"# nimbus-ws conformance {opts.url} — profiles {', '.join(opts.profiles)}")
    report = asyncio.run(run_kit(opts, emit))
    for pid in opts.profiles:
        _write(f"# {describe_server(report, pid)}")
    _write(f"# {report.seconds:.1f} s")
    _write(report.summary_line())
    if args.report:
        write_report(report, args.report)
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m nimbus_websocket.node_runtime.conformance.cli``)."""
    from ..cli import StrictArgumentParser

    p = StrictArgumentParser(prog="nimbus-ws conformance")
    add_arguments(p)
    return run_conformance(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
