"""``nimbus-ws share``: a terminal like ``connect`` that hands out a share link to itself.

    nimbus-ws share URL [--mode read|write] [--ttl SECONDS] [connect's options]

Opens the session as ``connect`` does, then asks the server for a share
link (``share``, PROTOCOL.md 6.2) and prints it on stderr -- the page's link
for a browser and the ``nimbus-ws connect --share`` line -- before the
terminal goes raw.  Viewers joining and leaving are noted on stderr.  The
link dies with the session, when it expires (``--ttl``, default one hour),
or when the terminal ends.  ``--mode write`` lets the viewer type into this
shell: say so to whoever gets it.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ...core.aio.connection import Channel, ChannelError, Connection
from .cli import Session, add_connection_arguments

__all__ = ["add_parser", "run_share"]


def add_parser(sub: Any) -> None:
    """Register ``share`` on the ``nimbus-ws`` subcommand parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "share",
        allow_abbrev=False,
        help="open a terminal and print a share link to it (read-only by default)",
        description="Open a terminal (like connect) and print a link others can watch it with.",
    )
    p.add_argument("url", help="ws:// or wss:// URL of the server endpoint")
    add_connection_arguments(p)
    p.add_argument(
        "--mode",
        choices=("read", "write"),
        default="read",
        help="what viewers may do (default %(default)s)",
    )
    p.add_argument(
        "--ttl",
        type=int,
        default=3600,
        help="seconds the link works (default %(default)s; at most 86400)",
    )
    p.add_argument(
        "--command", "-c", metavar="CMD", default=None, help="run CMD instead of a login shell"
    )
    p.add_argument("--verbose", "-v", action="store_true", help="print diagnostics on stderr")
    p.set_defaults(func=run_share, tty=True, share=False)


def run_share(args: argparse.Namespace) -> int:
    """Run ``share``; returns the exit status."""
    if args.ttl < 1:
        raise SystemExit("nimbus-ws share: --ttl must be at least 1")
    try:
        return asyncio.run(_Sharing(args).run())
    except KeyboardInterrupt:
        return 130


class _Sharing(Session):
    async def after_open(self, conn: Connection, ch: Channel) -> None:
        args = self.args
        try:
            link = await ch.share(args.mode, args.ttl)
        except ChannelError as exc:
            self.note(f"no share link: {exc.message} [{exc.code}]")
            return
        kind = (
            "read-write: viewers can type into this shell" if link.mode == "write" else "read-only"
        )
        self.note(f"share link ({kind}, {args.ttl} s): {link.page_url()}")
        self.note(f"  or: nimbus-ws connect --share '{link.url}'")
        seen: dict[str, int] = {}

        def on_viewers(viewers: Any) -> None:
            now = {v.peer + "/" + v.grant: 1 for v in viewers}
            for key in now.keys() - seen.keys():
                self.note(f"viewer joined from {key.split('/')[0]} ({len(now)} watching)")
            for _key in seen.keys() - now.keys():
                self.note(f"viewer left ({len(now)} watching)")
            seen.clear()
            seen.update(now)

        ch.on("viewers", on_viewers)
