"""``nimbus-ws cp``: copy a file to or from the server's side of a session, like ``scp``.

    nimbus-ws cp LOCAL ws://HOST:PORT/ENDPOINT:PATH      # upload
    nimbus-ws cp ws://HOST:PORT/ENDPOINT:PATH LOCAL      # download
                 [--target HOST:PORT] [--user NAME] [--password-env VAR | --identity FILE]
                 [--token-env VAR] [--mode OCTAL] [-q]

The remote side is the endpoint URL, a colon, and the path (``?token=`` may
sit in the URL before the colon).  On the SSH backend the path is the
target user's (SFTP); on the PTY backend the server user's.  A relative
path starts in that user's home.  A remote path ending in ``/`` gets the
local file's name; a local directory gets the remote file's.

Uploads keep the local file's permission bits unless ``--mode`` is given.
Nothing half-written is left on either side: the server writes beside the
target and renames it into place; a download goes to ``LOCAL.nimbus-part``
and is renamed once complete.  The transfer uses the session's credit flow
control and survives network drops (exactly-once resume).

Progress (bytes, speed, ETA) is drawn on stderr when it is a terminal.
Exit status: 0 done; 1 the server refused or failed the transfer (its
reason is printed); 2 a usage mistake; 255 the connection failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import posixpath
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from ...core.aio.connection import Connection
from ...core.aio.files import FileTransferError, Progress, download, upload
from ...core.errors import CloseError, NimbusError
from .cli import EXIT_FAILURE, Session, add_connection_arguments

__all__ = ["add_parser", "run_cp", "split_remote"]

EXIT_TRANSFER = 1
_PART = ".nimbus-part"
#: Seconds between redraws of the progress line.
_REDRAW = 0.1


def add_parser(sub: Any) -> None:
    """Register ``cp`` on the ``nimbus-ws`` subcommand parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "cp",
        allow_abbrev=False,
        help="copy a file to or from the server (upload/download, like scp)",
        description="Copy a file over a nimbus.ssh.v1 WebSocket: LOCAL ws://HOST:PORT/ENDPOINT:PATH uploads, "
        "the other way round downloads.",
        epilog="exit status: 0 done, 1 transfer refused or failed, 2 usage, 255 connection failed",
    )
    p.add_argument("source", help="LOCAL file, or ws[s]://HOST:PORT/ENDPOINT:PATH")
    p.add_argument("dest", help="ws[s]://HOST:PORT/ENDPOINT:PATH, or LOCAL file or directory")
    add_connection_arguments(p)
    p.add_argument(
        "--mode",
        default=None,
        help="upload: permission bits in octal, e.g. 600 (default: the local file's)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    p.add_argument("--verbose", "-v", action="store_true", help="print diagnostics on stderr")
    p.set_defaults(func=run_cp, tty=False, command=None)


def split_remote(text: str) -> tuple[str, str] | None:
    """``(endpoint URL, remote path)`` for ``ws://h:p/ws/ssh:/tmp/f``; ``None`` for a local path.

    The path starts at the first ``:`` after the URL's host part.
    """
    if not text.startswith(("ws://", "wss://")):
        return None
    after = text.index("://") + 3
    slash = text.find("/", after)
    if slash < 0:
        raise ValueError(f"{text}: want ws://HOST:PORT/ENDPOINT:PATH")
    colon = text.find(":", slash)
    if colon < 0 or colon == len(text) - 1:
        raise ValueError(f"{text}: no remote path (want ws://HOST:PORT/ENDPOINT:PATH)")
    url, path = text[:colon], text[colon + 1 :]
    if not urlsplit(url).netloc:
        raise ValueError(f"{text}: want ws://HOST:PORT/ENDPOINT:PATH")
    return url, path


def run_cp(args: argparse.Namespace) -> int:
    """Run ``cp``; returns the exit status."""
    try:
        src, dst = split_remote(args.source), split_remote(args.dest)
    except ValueError as exc:
        sys.stderr.write(f"nimbus-ws cp: {exc}\n")
        return 2
    if (src is None) == (dst is None):
        sys.stderr.write(
            "nimbus-ws cp: exactly one of SOURCE and DEST must be a ws:// URL with :PATH\n"
        )
        return 2
    mode = None
    if args.mode is not None:
        try:
            mode = int(args.mode, 8)
            if not 0 <= mode <= 0o7777:
                raise ValueError
        except ValueError:
            sys.stderr.write(
                f"nimbus-ws cp: --mode {args.mode!r} is not an octal mode such as 644\n"
            )
            return 2
    if dst is not None:
        args.url, remote, local, upward = dst[0], dst[1], args.source, True
    else:
        assert src is not None
        args.url, remote, local, upward = src[0], src[1], args.dest, False
    if upward and not os.path.isfile(local):
        sys.stderr.write(f"nimbus-ws cp: {local}: no such file\n")
        return 2
    try:
        return asyncio.run(_Copy(args, local, remote, upward, mode).run())
    except KeyboardInterrupt:
        return 130


class _Copy(Session):
    """One ``cp``: connects like ``connect``, then moves one file."""

    def __init__(
        self, args: argparse.Namespace, local: str, remote: str, upward: bool, mode: int | None
    ) -> None:
        super().__init__(args)
        self.local = local
        self.remote = remote
        self.upward = upward
        self.mode = mode
        self.bar = _Bar(
            os.path.basename(local) if upward else posixpath.basename(remote),
            enabled=not args.quiet,
        )

    async def session(
        self, conn: Connection, target: dict[str, Any], user: dict[str, Any], interactive: bool
    ) -> int:
        try:
            if self.upward:
                await self._upload(conn, target, user)
            else:
                await self._download(conn, target, user)
        except FileTransferError as exc:
            self.bar.end()
            self.note(f"cp: {exc.message} [{exc.code}]")
            return EXIT_TRANSFER
        except CloseError as exc:
            self.bar.end()
            self.note(f"cp: connection lost: {exc}")
            return EXIT_FAILURE
        except NimbusError as exc:
            self.bar.end()
            self.note(f"cp: {exc}")
            return EXIT_FAILURE
        except OSError as exc:
            self.bar.end()
            self.note(f"cp: {self.local}: {exc.strerror or exc}")
            return EXIT_TRANSFER
        self.bar.end()
        return 0

    async def _upload(self, conn: Connection, target: dict[str, Any], user: dict[str, Any]) -> None:
        remote = self.remote
        if remote.endswith("/"):
            remote += os.path.basename(self.local)
        f = await asyncio.to_thread(open, self.local, "rb")
        with f:
            st = os.fstat(f.fileno())
            mode = self.mode if self.mode is not None else stat.S_IMODE(st.st_mode)
            await upload(
                conn,
                target,
                user,
                _reader(f),
                st.st_size,
                remote,
                mode=mode,
                progress=self.bar.update,
            )

    async def _download(
        self, conn: Connection, target: dict[str, Any], user: dict[str, Any]
    ) -> None:
        local = self.local
        if await asyncio.to_thread(os.path.isdir, local):
            local = os.path.join(local, posixpath.basename(self.remote.rstrip("/")) or "download")
        part = local + _PART
        loop = asyncio.get_running_loop()
        f = await asyncio.to_thread(open, part, "wb")  # closed below, renamed only when complete
        disk = ThreadPoolExecutor(
            1, thread_name_prefix="nimbus-cp"
        )  # one thread: writes stay in order
        done = False
        try:

            def write(data: bytes) -> Any:
                return loop.run_in_executor(disk, f.write, data)

            await download(conn, target, user, self.remote, write, progress=self.bar.update)
            await loop.run_in_executor(disk, f.flush)
            f.close()
            os.replace(part, local)
            done = True
        finally:
            disk.shutdown(wait=True)
            if not done:
                f.close()
                with contextlib.suppress(OSError):
                    os.unlink(part)


async def _reader(f: Any, chunk: int = 256 * 1024) -> Any:
    """The local file's bytes in chunks, read off the event loop."""
    loop = asyncio.get_running_loop()
    while block := await loop.run_in_executor(None, f.read, chunk):
        yield block


class _Bar:
    """``name  42%  42.0/100.0 MiB  118.2 MB/s  ETA 0:01`` on stderr, when it is a terminal."""

    def __init__(self, name: str, *, enabled: bool) -> None:
        self.name = name[:40]
        self.enabled = enabled and sys.stderr.isatty()
        self._drawn = 0.0
        self._last: Progress | None = None
        self._shown = False

    def update(self, p: Progress) -> None:
        self._last = p
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= _REDRAW or p.done == p.total):
            self._drawn = now
            self._draw(p)

    def _draw(self, p: Progress) -> None:
        mib = 1 << 20
        pct = f"{p.fraction * 100:3.0f}%" if p.fraction is not None else "   ?"
        total = f"{p.total / mib:.1f}" if p.total is not None else "?"
        eta = "--:--" if p.eta is None else f"{int(p.eta) // 60}:{int(p.eta) % 60:02d}"
        line = f"\r{self.name}  {pct}  {p.done / mib:.1f}/{total} MiB  {p.rate / 1e6:.1f} MB/s  ETA {eta}"
        with contextlib.suppress(OSError):
            sys.stderr.write(line + "\x1b[K")
            sys.stderr.flush()
        self._shown = True

    def end(self) -> None:
        if self.enabled and self._last is not None:
            self._draw(self._last)
        if self._shown:
            with contextlib.suppress(OSError):
                sys.stderr.write("\n")
                sys.stderr.flush()
            self._shown = False
