"""File transfer over file channels (``open.file`` [ext], ``caps.files``).

A file channel is an ordinary channel whose bytes are a file's: the same
credit window bounds a download (the server reads no further ahead than the
credit the client granted, at most ``max_window``), the same input buffer
bounds an upload (at most ``FILE_INPUT_LIMIT``, 4 MiB -- the contract's bound
on unwritten input -- sent and not yet acknowledged as written to disk), and the same exactly-once resume carries a
transfer across a dropped connection.  Memory per transfer is therefore one
window plus one chunk on either side; a file is never held whole.

:func:`upload` and :func:`download` are what the CLI (``nimbus-ws cp``), the
browser runtime and applications call; both report :class:`Progress` and
end with the server's verdict (``exit`` 0, or :class:`FileTransferError`
carrying its one-line reason).  Cancelling the awaiting task closes the
channel, and the server removes what a ``put`` had written so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ErrorCode
from ..messages import FileSpec, Target, User
from .connection import Channel, ChannelError, Connection

__all__ = ["CHUNK", "FileTransferError", "Progress", "ProgressCallback", "download", "upload"]

#: Bytes per read of an upload's source (and per ``send``): one data frame's worth.
CHUNK = 256 * 1024
#: Longest stderr reason kept from the server (it sends one line).
_MAX_REASON = 4096


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a transfer is: ``done`` of ``total`` bytes after ``elapsed`` seconds."""

    done: int
    total: int | None
    elapsed: float

    @property
    def rate(self) -> float:
        """Bytes per second so far (0 before any time passed)."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (``None`` while unknown)."""
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    @property
    def fraction(self) -> float | None:
        """``done / total`` in [0, 1] (``None`` without a total; 1 for an empty file)."""
        if self.total is None:
            return None
        return 1.0 if self.total == 0 else min(1.0, self.done / self.total)


ProgressCallback = Callable[[Progress], object]


class FileTransferError(ChannelError):
    """The server refused or failed the transfer; ``message`` is its reason in plain words."""

    def __init__(self, message: str, code: str = ErrorCode.FILE_FAILED) -> None:
        super().__init__(code, message)


Source = AsyncIterable[bytes] | Iterable[bytes] | Any


def _chunks(source: Source, chunk: int) -> AsyncIterable[bytes]:
    """An async iterator of byte chunks from a binary file, an iterable or an async iterable."""
    if hasattr(source, "__aiter__"):
        return source  # type: ignore[return-value]

    async def gen() -> Any:
        if hasattr(source, "read"):
            while block := source.read(chunk):
                yield block
        else:
            for block in source:
                yield block

    return gen()  # type: ignore[no-any-return]


class _Transfer:
    """What :func:`upload` and :func:`download` share: the channel, stderr, progress."""

    def __init__(
        self, total: int | None, progress: ProgressCallback | None, clock: Callable[[], float]
    ) -> None:
        self.total = total
        self.done = 0
        self.reason = bytearray()
        self._progress = progress
        self._clock = clock
        self._t0 = clock()

    def on_stderr(self, data: bytes) -> None:
        self.reason += data[: max(0, _MAX_REASON - len(self.reason))]

    def advance(self, n: int) -> None:
        self.done += n
        self.report()

    def report(self) -> None:
        if self._progress is not None:
            self._progress(Progress(self.done, self.total, self._clock() - self._t0))

    async def finish(self, ch: Channel) -> None:
        """Wait for the server's ``exit``; raise :class:`FileTransferError` unless it was 0."""
        status = await ch.wait_closed()
        if status != 0:
            text = (
                self.reason.decode("utf-8", "replace").strip()
                or f"the server ended the transfer ({status})"
            )
            raise FileTransferError(text)


async def _open(
    conn: Connection, target: Any, user: Any, spec: FileSpec, on: Mapping[str, Any]
) -> Channel:
    try:
        return await conn.open_session(target, user, None, on=on, file=spec)
    except ChannelError as e:
        if e.code in (ErrorCode.FILE_FAILED, ErrorCode.POLICY_DENIED, ErrorCode.UNSUPPORTED):
            raise FileTransferError(e.message, e.code) from None
        raise


async def _guard(ch: Channel | None, work: Awaitable[None]) -> None:
    """Run ``work``; if it is cancelled or fails, close the channel (the server discards the file)."""
    try:
        await work
    except BaseException:
        if ch is not None and not ch.closed:
            with contextlib.suppress(Exception):
                await asyncio.shield(ch.close("cancelled"))
        raise


async def upload(
    conn: Connection,
    target: Mapping[str, Any] | Target,
    user: Mapping[str, Any] | User,
    source: Source,
    size: int,
    path: str,
    *,
    mode: int | None = None,
    progress: ProgressCallback | None = None,
    chunk: int = CHUNK,
    ref: int | None = None,
) -> int:
    """Write ``size`` bytes from ``source`` to ``path`` on the server; returns ``size``.

    ``source``: a binary file object, or an (async) iterable of ``bytes``;
    it must yield exactly ``size`` bytes (fewer or more is a ``ValueError``
    and nothing is left on the server).  The file appears at ``path`` only
    when complete (written beside it, then renamed), with permission bits
    ``mode`` (default: the server's ``0o644`` less its umask).  Relative
    paths are taken from the shell's working directory where the backend
    knows it (``ref``: the id of the session's terminal channel whose
    working directory, or SSH connection, the transfer shares).
    ``progress`` is called after every chunk the connection took.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    xfer = _Transfer(size, progress, time.monotonic)
    ch = await _open(
        conn, target, user, FileSpec("put", path, size, mode, ref), {"stderr": xfer.on_stderr}
    )

    async def work() -> None:
        async for block in _chunks(source, chunk):
            if xfer.done + len(block) > size:
                raise ValueError(f"the source holds more than the announced {size} bytes")
            await ch.send(block)
            xfer.advance(len(block))
        if xfer.done != size:
            raise ValueError(f"the source ended after {xfer.done} of the announced {size} bytes")
        await ch.send_eof()
        await xfer.finish(ch)

    await _guard(ch, work())
    return size


async def download(
    conn: Connection,
    target: Mapping[str, Any] | Target,
    user: Mapping[str, Any] | User,
    path: str,
    sink: Callable[[bytes], object],
    *,
    progress: ProgressCallback | None = None,
    on_size: Callable[[int], object] | None = None,
    ref: int | None = None,
) -> int:
    """Read the server's file at ``path`` into ``sink``; returns the bytes received.

    ``sink(chunk)`` is called with each chunk in order; if it returns an
    awaitable, the chunk counts as consumed (and credit for more is granted)
    once that is done, so a slow sink slows the server, never memory.
    ``on_size`` is called with the file's length once the server opened it.
    """
    xfer = _Transfer(None, progress, time.monotonic)

    def on_data(data: bytes) -> object:
        result = sink(data)
        xfer.advance(len(data))
        return result if result is not None and inspect.isawaitable(result) else None

    ch = await _open(
        conn, target, user, FileSpec("get", path, ref=ref), {"data": on_data, "stderr": xfer.on_stderr}
    )
    xfer.total = ch.file_size
    if on_size is not None and ch.file_size is not None:
        on_size(ch.file_size)
    xfer.report()

    async def work() -> None:
        await xfer.finish(ch)
        if xfer.total is not None and xfer.done != xfer.total:
            raise FileTransferError(f"received {xfer.done} of {xfer.total} bytes")

    await _guard(ch, work())
    return xfer.done
