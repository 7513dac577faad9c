"""File channels on the server: the path policy and the local-filesystem backend.

A file channel (``open.file``, PROTOCOL.md 6.1) is driven like any other
backend (:class:`~.backend.Backend`): a ``get`` is output read under the
channel's credit, a ``put`` is input written and acknowledged as it reaches
the disk.  :class:`LocalFileBackend` does it in the server user's filesystem
-- with the server user's permissions, the same as the PTY backend's shells
-- and :class:`~.sftp_files.SftpFileBackend` over SFTP on the SSH backend.

Policy (:class:`FilePolicy`): a maximum size, and optionally a root
(``--files-root``) outside which nothing is read or written (the resolved
path, after symlinks, must lie inside it).  File channels are on by default
where the client already has a shell as the same user (the PTY backend
running login shells, the SSH backend): anything a transfer can do, the
shell can do with ``cat``; they are off by default when the operator fixed
what runs (``--pty-command``), because there the shell is not the user's.

Memory per transfer: a ``get`` holds the chunk (:data:`CHUNK`) being sent,
as the channel's credit allows, and one read ahead (SFTP: 1 MiB chunks,
``sftp_files``); a ``put`` holds the input the core lets
through (``max_input_buffer``) until it is written.  A ``put`` writes to a
temporary ``.NAME.RANDOM.nimbus-part`` beside the target (mode 0600), after
checking the filesystem has room for the announced size (so a full disk
fails at once; one that fills during the transfer fails at that write), and
renames it into place only when every byte arrived and was flushed; a
failure, a cancel or a lost session removes it.

Every transfer is logged (``file_start``, ``file_done``, ``file_failed``,
``file_cancelled``: op, path, size, user, never content).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import secrets
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ...core.errors import BackendError
from ...core.messages import FileSpec
from .backend import BackendSink

__all__ = [
    "CHUNK",
    "DEFAULT_MAX_FILE_SIZE",
    "FileBackendBase",
    "FilePolicy",
    "LocalFileBackend",
    "human_size",
]

log = logging.getLogger("nimbus_websocket.server.files")

#: Bytes a ``get`` reads at a time (never more than the channel's credit).
CHUNK = 256 * 1024
#: Queued upload bytes written in one ``writev`` at most.
WRITE_BATCH = 1 << 20
#: ``FilePolicy.max_size`` default: 2 GiB.
DEFAULT_MAX_FILE_SIZE = 2 << 30
_PART = ".nimbus-part"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def human_size(n: int) -> str:
    """``1.5 MiB`` for 1572864."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


@dataclass(frozen=True, slots=True)
class FilePolicy:
    """What file channels may do on this server.

    ``enabled``: whether ``caps.files`` is announced at all.  ``root``: when
    set, every path must resolve (symlinks followed) inside it, and relative
    paths are taken from it unless the referenced shell's working directory
    lies inside it.  ``max_size``: the largest file read or written.
    """

    enabled: bool = True
    root: str | None = None
    max_size: int = DEFAULT_MAX_FILE_SIZE

    def resolve(self, path: str, cwd: str | None) -> str:
        """The absolute, symlink-free path for ``path`` (``BackendError`` ``POLICY_DENIED`` outside ``root``).

        A relative ``path`` starts at ``cwd`` (the shell's working
        directory), else at ``root``, else at the server user's home.
        """
        root = os.path.realpath(self.root) if self.root else None
        base = cwd or root or os.path.expanduser("~")
        if root is not None and cwd is not None and not _inside(os.path.realpath(cwd), root):
            base = root
        full = os.path.realpath(os.path.join(base, os.path.expanduser(path)))
        if root is not None and not _inside(full, root):
            raise BackendError("POLICY_DENIED", f"{path}: outside the server's file root")
        return full


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the server's disk"
    return exc.strerror or str(exc)


class FileBackendBase:
    """What the local and SFTP file backends share: the spec, logging, the
    ``put`` input queue, and the one-line failure (stderr, then ``exit`` 1)."""

    #: The file's length, for ``open_ok.size`` (``get``), once started.
    file_size: int | None = None
    #: Called once when a started transfer ends: ``(op, "done"|"failed"|"cancelled", bytes)``.
    observer: Callable[[str, str, int], object] | None = None

    def __init__(self, sink: BackendSink, spec: FileSpec, policy: FilePolicy, user: str) -> None:
        self.sink = sink
        self.spec = spec
        self.policy = policy
        self.user = user
        self.path = spec.path  # resolved by start()
        self.done = 0
        self._paused = True
        self._unpaused = asyncio.Event()
        self._input: deque[bytes] = deque()
        self._have_input = asyncio.Event()
        self._eof = False
        self._closed = False
        self._finished = False
        self._task: asyncio.Task[None] | None = None
        self._release: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    # ---------------------------------------------------------- reporting
    def _log(self, event: str, **extra: object) -> None:
        fields: dict[str, object] = {
            "event": event,
            "op": self.spec.op,
            "path": self.path,
            "size": self.file_size if self.spec.op == "get" else self.spec.size,
            "user": self.user,
        }
        fields.update(extra)
        (log.warning if event == "file_failed" else log.info)(event.replace("_", " "), extra=fields)

    def _observe(self, result: str) -> None:
        if self.observer is not None:
            self.observer(self.spec.op, result, self.done)

    def _fail(self, reason: str) -> None:
        """Tell the client why in one line and end the channel with ``exit`` 1."""
        if self._finished:
            return
        self._finished = True
        self._log("file_failed", reason=reason, bytes=self.done)
        self._observe("failed")
        self.sink.output("stderr", f"{self.spec.path}: {reason}\n".encode(errors="replace"))
        self.sink.exited(1, None)

    def _succeed(self) -> None:
        self._finished = True
        took = time.monotonic() - self._t0
        self._log("file_done", bytes=self.done, seconds=round(took, 3))
        self._observe("done")
        self.sink.exited(0, None)

    async def _send_file(self, read_at: Callable[[int, int], asyncio.Future[bytes]], chunk: int = CHUNK) -> None:
        """A ``get``: ``file_size`` bytes as output, one chunk read ahead while the last goes out.

        ``read_at(offset, n)`` starts a read of at most ``chunk`` bytes and returns its future.
        At most one chunk is held beyond the one being sent; output goes only as credit allows.
        """
        size = self.file_size or 0
        nxt = read_at(0, min(chunk, size)) if size else None
        try:
            while self.done < size:
                assert nxt is not None
                data = await nxt
                if not data:
                    self._fail(f"the file shrank to {self.done} bytes while it was read")
                    return
                after = self.done + len(data)
                nxt = read_at(after, min(chunk, size - after)) if after < size else None
                view = memoryview(data)
                while view:  # as credit allows (normally the whole chunk at once)
                    n = await self._budget()
                    part, view = view[:n], view[n:]
                    self.sink.output("stdout", data if len(part) == len(data) else bytes(part))
                    self.done += len(part)
        finally:
            if nxt is not None and not nxt.done():
                nxt.cancel()
        self._succeed()

    def _check_size(self, size: int) -> None:
        if size > self.policy.max_size:
            raise BackendError(
                "FILE_FAILED",
                f"{self.spec.path}: {human_size(size)} is over the server's limit of {human_size(self.policy.max_size)}",
            )

    def _run(self, work: asyncio.Future[None] | asyncio.Task[None] | object) -> None:
        assert asyncio.iscoroutine(work)
        self._work = work
        self._task = asyncio.get_running_loop().create_task(self._guarded(work))

    async def _guarded(self, work: object) -> None:
        try:
            await work  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            self._fail(_reason(exc))
        except Exception as exc:  # a bug must not take the server down
            log.exception("file transfer failed")
            self._fail(f"internal error: {type(exc).__name__}")
        finally:
            await self._cleanup(self._finished and not self._closed)

    async def _cleanup(self, finished: bool) -> None:
        """Release the file (and, for an unfinished ``put``, remove what was written)."""

    # ---------------------------------------------------------- backend protocol
    def write(self, data: bytes) -> None:
        """Input of a ``put`` (ignored for a ``get``: it takes none)."""
        if self.spec.op != "put" or self._finished:
            self.sink.input_written(len(data))
            return
        self._input.append(data)
        self._have_input.set()

    def eof(self) -> None:
        """The client sent everything of a ``put``."""
        self._eof = True
        self._have_input.set()

    def resize(self, cols: int, rows: int) -> None:
        """A file channel has no terminal."""

    def signal(self, sig: str) -> None:
        """A file channel has no process."""

    def pause(self, paused: bool) -> None:
        """Credit ran out (or came back): a ``get`` stops reading."""
        self._paused = paused
        if paused:
            self._unpaused.clear()
        else:
            self._unpaused.set()

    async def _next_input(self) -> bytes | None:
        """The next chunk of a ``put``'s input, ``None`` at eof."""
        while not self._input:
            if self._eof:
                return None
            self._have_input.clear()
            await self._have_input.wait()
        return self._input.popleft()

    async def _budget(self) -> int:
        """Wait until the channel has credit; return how much may be read now."""
        while True:
            n = 0 if self._paused else self.sink.read_budget()
            if n > 0:
                return n
            self._unpaused.clear()
            await self._unpaused.wait()

    def close(self) -> None:
        """Stop; an unfinished ``put`` leaves nothing behind.

        The transfer task may be cancelled before it ever ran (the channel
        closed while the backend started): its own clean-up would never run,
        so the release is a task of its own, after the transfer's (both idempotent).
        """
        if self._closed:
            return
        self._closed = True
        if not self._finished and self._task is not None:  # started and not done: the client gave up
            self._log("file_cancelled", bytes=self.done)
            self._observe("cancelled")
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        self._release = asyncio.get_running_loop().create_task(self._release_after(task))

    async def _release_after(self, task: asyncio.Task[None] | None) -> None:
        if task is not None:
            with contextlib.suppress(BaseException):
                await task
        work = getattr(self, "_work", None)
        if work is not None:
            work.close()  # never started (cancelled first): no "never awaited" warning
        await self._cleanup(False)

    async def wait_closed(self) -> None:
        """Wait until the file is released."""
        for t in (self._task, self._release):
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await t


class LocalFileBackend(FileBackendBase):
    """A file in the server user's filesystem (the PTY backend's file channels)."""

    def __init__(
        self,
        sink: BackendSink,
        spec: FileSpec,
        policy: FilePolicy,
        user: str,
        cwd: str | None = None,
    ) -> None:
        super().__init__(sink, spec, policy, user)
        self.cwd = cwd
        self._fd: int | None = None
        self._part: str | None = None
        self._inflight: concurrent.futures.Future[Any] | None = None

    async def start(self) -> None:
        """Open the file (``get``) or the temporary beside it (``put``); ``BackendError`` on refusal."""
        self.path = self.policy.resolve(self.spec.path, self.cwd)
        loop = asyncio.get_running_loop()
        try:
            if self.spec.op == "get":
                await loop.run_in_executor(None, self._open_get)
            else:
                await loop.run_in_executor(None, self._open_put)
        except OSError as exc:
            raise BackendError("FILE_FAILED", f"{self.spec.path}: {_reason(exc)}") from None
        self._log("file_start")
        self._run(self._get() if self.spec.op == "get" else self._put())

    def _open_get(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BackendError("FILE_FAILED", f"{self.spec.path}: not a regular file")
            self._check_size(st.st_size)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.file_size = st.st_size

    def _open_put(self) -> None:
        size = self.spec.size or 0
        self._check_size(size)
        parent, name = os.path.split(self.path)
        if os.path.isdir(self.path):
            raise BackendError("FILE_FAILED", f"{self.spec.path}: is a directory")
        part = os.path.join(parent, f".{name[:200]}.{secrets.token_hex(4)}{_PART}")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._fd, self._part = fd, part
        if size and size > _free_space(fd):
            # Told at once, before a byte moves.  Not reserved (posix_fallocate): reserving
            # 100 MB took 11 ms on tmpfs before the first byte could flow, and the writes
            # that follow fill the pages anyway; a disk that fills meanwhile is ENOSPC
            # from a write, reported the same way.
            self._discard()
            raise OSError(errno.ENOSPC, "no space")

    async def _get(self) -> None:
        fd = self._fd
        assert fd is not None
        await self._send_file(lambda off, n: self._io(os.pread, fd, n, off))

    async def _put(self) -> None:
        size = self.spec.size or 0
        fd = self._fd
        assert fd is not None and self._part is not None
        while (data := await self._next_input()) is not None:
            batch = [data]  # everything queued, in one write (one thread hop per batch)
            n = len(data)
            while self._input and n < WRITE_BATCH and len(batch) < 512:  # under IOV_MAX
                more = self._input.popleft()
                batch.append(more)
                n += len(more)
            if self.done + n > size:
                self._fail(f"more than the announced {size} bytes arrived")
                return
            await self._io(_writev_all, fd, batch)
            self.done += n
            self.sink.input_written(n)
        if self.done != size:
            self._fail(f"the upload ended after {self.done} of {size} bytes")
            return
        mode = self.spec.mode
        if mode is None:
            try:
                mode = stat.S_IMODE(os.stat(self.path).st_mode)
            except FileNotFoundError:
                mode = 0o666 & ~_UMASK
        await self._io(self._commit, fd, self._part, mode)
        self._part = None
        self._succeed()

    def _commit(self, fd: int, part: str, mode: int) -> None:
        os.ftruncate(fd, self.done)
        os.fchmod(fd, mode)
        os.fsync(fd)
        os.replace(part, self.path)

    def _io(self, fn: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        """Start ``fn(*args)`` in the I/O pool; the clean-up waits for it (no fd is closed under a thread)."""
        cf = _io_pool().submit(fn, *args)
        self._inflight = cf
        return asyncio.wrap_future(cf)

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._part is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._part)
            self._part = None

    async def _cleanup(self, finished: bool) -> None:
        cf = self._inflight
        if cf is not None and not cf.done():  # a cancelled await does not stop the thread
            await asyncio.get_running_loop().run_in_executor(None, concurrent.futures.wait, [cf])
        self._discard()


_T = TypeVar("_T")
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _io_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for file reads and writes (shared by every local file channel)."""
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="nimbus-file-io")
    return _pool


def _free_space(fd: int) -> int:
    """Bytes the server's user may still write on ``fd``'s filesystem (root: the reserve too)."""
    fs = os.fstatvfs(fd)
    return (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) * fs.f_frsize


def _writev_all(fd: int, bufs: list[bytes]) -> None:
    views = [memoryview(b) for b in bufs]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
