"""Channel backends: what a channel's terminal actually is.

A backend is started for a :class:`~nimbus_websocket.core.BackendOpen` and
then driven by the other backend requests.  It reports through a
:class:`BackendSink` (output, input consumed, exit).  Two kinds ship:

* :class:`LocalProcessBackend` -- the embedded default: a command or the
  user's shell on a local PTY (or, when ``open.term`` is absent, on pipes,
  so binary output is not mangled by the terminal line discipline);
* :class:`~.ssh_backend.SshBackend` -- an asyncssh session to ``open.target``.

Reads honour the session's credit: a backend reads only while
``sink.read_budget()`` is positive, at most that many bytes, coalescing what
is already waiting into one chunk (up to 64 KiB) without waiting for more,
so a lone keystroke echo is not delayed.

A PTY delivers at most 4 KiB per read, and each read waits for the kernel
to move the next 4 KiB into the line discipline, so a 64 KiB chunk costs
about sixteen such waits; any pause between reads lets the writer block.
So once a read fills a whole chunk (output streams),
:class:`LocalProcessBackend` hands reading to a pool thread (one shared
pool of :data:`PTY_READ_WORKERS` threads; at most one job per PTY), which
keeps reading while the event loop sends what it read, at most
``_MAX_INFLIGHT`` (2) chunks ahead, until credit runs out, the PTY closes
or its output pauses for :data:`PTY_STREAM_IDLE`; then the loop watches
the descriptor again, so interactive keystroke echo never takes a thread
hop.  The pool reads whole chunks while the budget is positive, so output
read but not yet sendable exceeds the credit by less than four chunks
(``4 * max_read``): while streaming, the chunk that used up the budget (all
but its first byte may lie beyond it) and the two the pool read meanwhile;
once the process has exited and hung the PTY up, one last read that tells
whether any output is left.  Memory per backend: three read chunks (two in flight,
one being sent), plus input queued for the process, which the core bounds
(``max_input_buffer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import pwd
import re
import select
import signal
import struct
import subprocess
import termios
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from ...core.errors import BackendError
from ...core.messages import Stream, Term

__all__ = [
    "KILL_GRACE",
    "PTY_READ_WORKERS",
    "Backend",
    "BackendError",
    "BackendSink",
    "LocalProcessBackend",
    "read_burst",
    "signal_number",
]

#: Seconds between the SIGHUP of a closed channel's process group and its SIGKILL.
KILL_GRACE = 1.0
#: Seconds between checks whether a hung-up process group is empty yet.
_GROUP_POLL = 0.02
#: Process ids of the running leaders of every local backend: a group whose
#: leader was reaped is not signalled if its number now leads a newer one.
_LEADERS: dict[int, LocalProcessBackend] = {}

#: Threads shared by every PTY for reading ahead while output streams (each
#: PTY has at most one read in flight, which waits at most
#: :data:`PTY_STREAM_IDLE` for output and ends at the first ``EAGAIN``).  A job
#: waiting for a slow producer holds its thread meanwhile, and the other
#: streaming PTYs queue behind it.  100 streams among 1000 sessions
#: (bench/sessions.py, 2 cores), the slowest stream's rate over the median's:
#: 8 threads 0.43 / 0.45 (two runs), 32 threads 0.75 / 0.58, 64 threads
#: 0.66 / 0.66, the total the same.  Threads start only as needed (at most
#: one per streaming PTY; each a stack the kernel maps on demand).
PTY_READ_WORKERS = 64
#: Seconds without output after which a streaming PTY goes back to event-loop reads.
PTY_STREAM_IDLE = 0.05
#: Chunks a streaming PTY may have read ahead of the loop.
_MAX_INFLIGHT = 2
_pty_pool: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _pty_pool
    if _pty_pool is None:
        _pty_pool = ThreadPoolExecutor(PTY_READ_WORKERS, thread_name_prefix="nimbus-pty-read")
    return _pty_pool


def read_burst(fd: int, limit: int, wait: float = 0.0) -> tuple[bytes, bool]:
    """Read what ``fd`` (non-blocking) has, up to ``limit`` bytes, in one chunk.

    With ``wait`` > 0, first wait up to that many seconds for it to become
    readable (``b""`` if it does not).  Stops at ``EAGAIN`` without waiting
    for more.  Returns ``(data, eof)``; end of file, ``EIO`` (a PTY whose
    last writer left) and other read errors count as the end.  Safe to
    call from any thread.
    """
    if wait > 0:
        p = select.poll()
        p.register(fd, select.POLLIN)
        if not p.poll(wait * 1e3):  # milliseconds
            return b"", False
    chunks: list[bytes] = []
    got = 0
    eof = False
    while got < limit:
        try:
            data = os.read(fd, limit - got)
        except BlockingIOError:
            break
        except OSError as exc:
            if exc.errno != errno.EIO:
                log.debug("read error on fd %d: %s", fd, exc)
            eof = True
            break
        if not data:
            eof = True
            break
        chunks.append(data)
        got += len(data)
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), eof

log = logging.getLogger("nimbus_websocket.server.backend")


class BackendSink(Protocol):
    """Where a backend reports (implemented by the server runtime per channel)."""

    def read_budget(self) -> int:
        """Bytes the backend may read now (0: stop reading)."""
        ...

    def output(self, stream: Stream, data: bytes) -> None:
        """Bytes the process wrote."""
        ...

    def input_written(self, n: int) -> None:
        """The process consumed ``n`` more input bytes."""
        ...

    def exited(self, code: int | None, sig: str | None) -> None:
        """The process ended (called once, after all its output)."""
        ...


class Backend(Protocol):
    """One channel's terminal."""

    async def start(self) -> None:
        """Start it; raise :class:`BackendError` on failure."""
        ...

    def write(self, data: bytes) -> None:
        """Queue input for the process."""
        ...

    def eof(self) -> None:
        """No more input: close stdin after the queued input (a PTY gets ^D)."""
        ...

    def resize(self, cols: int, rows: int) -> None:
        """Change the terminal size."""
        ...

    def signal(self, sig: str) -> None:
        """Deliver a signal to the foreground process group."""
        ...

    def pause(self, paused: bool) -> None:
        """Stop or restart reading output."""
        ...

    def close(self) -> None:
        """Hang up and release everything (idempotent)."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the process (or remote session) is gone after :meth:`close`."""
        ...


_SIGNALS = {
    name: getattr(signal, f"SIG{name}")
    for name in (
        "INT", "TERM", "HUP", "QUIT", "KILL", "TSTP", "CONT", "STOP", "USR1", "USR2", "WINCH", "ALRM", "PIPE",
    )
}


def signal_number(name: str) -> int | None:
    """The signal number for ``INT``/``SIGINT``-style names (``None`` if unknown)."""
    name = name.upper().removeprefix("SIG")
    return _SIGNALS.get(name)


def signal_name(num: int) -> str:
    """``INT`` for ``SIGINT``."""
    try:
        return signal.Signals(num).name.removeprefix("SIG")
    except ValueError:
        return str(num)


def _killpg(pgid: int, sig: int) -> bool | None:
    """``os.killpg``: True when sent, None when the group has no member left, False on
    another error (logged at debug)."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return None
    except OSError:
        log.debug("cannot signal process group %d", pgid, exc_info=True)
        return False
    return True


def _set_ctty() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _winsize(cols: int, rows: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


class _Proc(Protocol):
    """What the backend needs of its process: ``asyncio.subprocess.Process`` or :class:`_Child`."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class _Child:
    """A child process reaped through a pidfd the event loop watches.

    asyncio's default child watcher (3.11: ``ThreadedChildWatcher``) keeps one
    thread blocked in ``waitpid`` per process -- with its stack, about
    10 KiB of RSS per session -- plus a transport, a protocol and a
    ``Process`` around it; this is one descriptor and a callback.  The
    ``Popen`` is kept until the reap, which sets its ``returncode`` (so that
    ``subprocess`` neither warns nor reaps the process itself).
    """

    __slots__ = ("_loop", "_on_exit", "_pidfd", "_popen", "_waiters", "pid", "returncode")

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int, on_exit: Callable[[int], None]) -> None:
        self._popen: subprocess.Popen[bytes] | None = popen
        self.pid = popen.pid
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._on_exit = on_exit
        self._waiters: list[asyncio.Future[None]] | None = None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(pidfd, self._reap)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else (a waitpid(-1) child watcher)
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return  # not yet
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        rc = os.waitstatus_to_exitcode(status)
        self.returncode = rc
        if self._popen is not None:
            self._popen.returncode = rc
            self._popen = None
        for fut in self._waiters or ():
            if not fut.done():
                fut.set_result(None)
        self._waiters = None
        self._on_exit(rc)

    async def wait(self) -> int:
        """The exit code, once the process was reaped."""
        if self.returncode is None:
            fut = self._loop.create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(fut)
            await fut
        assert self.returncode is not None
        return self.returncode


async def _spawn(
    argv: list[str],
    stdio: tuple[int, int, int],
    env: dict[str, str],
    on_exit: Callable[[int], None],
    preexec_fn: Callable[[], None] | None = None,
) -> _Proc:
    """Start ``argv`` leading a new session; ``on_exit(rc)`` once it is reaped.

    Watched through a pidfd (:class:`_Child`) where the kernel has them
    (Linux >= 5.3), else through asyncio's child watcher.
    """
    cwd = env.get("HOME", "/")
    if hasattr(os, "pidfd_open"):
        # fork + exec, synchronous on the loop exactly as asyncio's subprocess_exec does it.
        popen = subprocess.Popen(  # noqa: ASYNC220
            argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], env=env, cwd=cwd, start_new_session=True,
            preexec_fn=preexec_fn)
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError:  # no pidfd here (an old kernel): a thread waits for it
            return _PopenWatch(popen, on_exit)
        return _Child(popen, pidfd, on_exit)
    aproc = await asyncio.create_subprocess_exec(*argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], env=env,
                                                 cwd=cwd, start_new_session=True, preexec_fn=preexec_fn)
    return _AsyncioChild(aproc, on_exit)


class _AsyncioChild:
    """An ``asyncio.subprocess.Process`` with the ``on_exit`` callback of :class:`_Child`."""

    def __init__(self, proc: asyncio.subprocess.Process, on_exit: Callable[[int], None]) -> None:
        self._proc = proc
        self.pid = proc.pid
        self._task = asyncio.get_running_loop().create_task(self._watch(on_exit))

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def _watch(self, on_exit: Callable[[int], None]) -> None:
        on_exit(await self._proc.wait())

    async def wait(self) -> int:
        return await self._proc.wait()


class _PopenWatch:
    """A started ``Popen`` without a pidfd: reaped by a thread in ``waitpid`` (as asyncio's watcher does)."""

    def __init__(self, popen: subprocess.Popen[bytes], on_exit: Callable[[int], None]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.returncode: int | None = None
        self._done = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def reaped(rc: int) -> None:
            self.returncode = rc
            if not self._done.done():
                self._done.set_result(None)
            on_exit(rc)

        def wait() -> None:
            rc = popen.wait()
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(reaped, rc)

        threading.Thread(target=wait, name=f"nimbus-waitpid-{popen.pid}", daemon=True).start()

    async def wait(self) -> int:
        await self._done
        assert self.returncode is not None
        return self.returncode


class LocalProcessBackend:
    """A local process on a PTY (``term`` given) or on pipes (``term`` absent).

    The process leads a new session and process group.  :meth:`close` ends
    the whole group, whether or not its leader is still running: SIGHUP,
    then SIGKILL after :data:`KILL_GRACE` to whatever of the group is left;
    on a PTY the same for the terminal's foreground job, which job control
    put in a process group of its own (a shell passes its hangup on to its
    jobs, but not one that ignores SIGHUP or is killed first);
    :meth:`wait_closed` returns once the leader is reaped and the groups are
    empty (or the kill was sent), so no process of the channel outlives it.
    """

    def __init__(
        self,
        sink: BackendSink,
        term: Term | None,
        command: str | None = None,
        *,
        max_read: int = 64 * 1024,
    ) -> None:
        self.sink = sink
        self.term = term
        self.command = command
        self.max_read = max_read
        self.proc: _Proc | None = None
        self._readers: dict[int, Stream] = {}
        self._reading = False  # reading is wanted (credit allows it)
        self._watching = False  # the loop watches the readers
        self._streaming = False  # the pool reads (output keeps coming)
        # Shared with the pool thread, under _lock: whether it may read on,
        # whether its job runs, chunks read but not yet handed to the sink.
        self._lock = threading.Lock()
        self._go = False
        self._job_running = False
        self._inflight = 0
        #: Chunks the pool read, in order, not yet handed to the sink (at most
        #: ``_MAX_INFLIGHT``), and whether a drain is scheduled on the loop: one
        #: wake-up of the loop serves every chunk queued before it runs.
        self._ready: list[tuple[int, bytes, bool]] = []  # a list: at most two items
        self._drain_pending = False
        self._deferred_close: set[int] = set()  # closed once no job can read them
        #: Times the output streamed hard enough to be read in the pool.
        self.stream_starts = 0
        #: Input the process has not taken yet; allocated the first time it falls behind.
        self._input: deque[memoryview] | None = None
        self._in_fd: int | None = None
        self._writer_on = False
        self._master: int | None = None
        self._exit: tuple[int | None, str | None] | None = None
        self._exit_reported = False
        self._closed = False
        self._eof = False
        self._pgid: int | None = None  # the process group, while it may have members
        self._job_pgid: int | None = None  # the terminal's foreground job's group, at close
        self._group_gone: asyncio.Event | None = None  # set when the group is empty (or killed)
        self._ender: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------- start
    async def start(self) -> None:
        """Spawn the process (``BackendError("BACKEND_FAILED")`` if it cannot start)."""
        env = self._env()
        if self.command:
            argv = ["/bin/sh", "-c", self.command]
        else:
            shell = env.get("SHELL", "/bin/sh")
            argv = [shell, "-l"] if self.term is not None else [shell]
        try:
            if self.term is not None:
                master, slave = os.openpty()
                fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize(self.term.cols, self.term.rows))
                self.proc = await _spawn(argv, (slave, slave, slave), env, self._exited, preexec_fn=_set_ctty)
                os.close(slave)
                os.set_blocking(master, False)
                self._master = master
                self._in_fd = master
                self._readers = {master: "stdout"}
            else:
                in_r, in_w = os.pipe()
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                self.proc = await _spawn(argv, (in_r, out_w, err_w), env, self._exited)
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
                for fd in (in_w, out_r, err_r):
                    os.set_blocking(fd, False)
                self._in_fd = in_w
                self._readers = {out_r: "stdout", err_r: "stderr"}
        except OSError as exc:
            raise BackendError("BACKEND_FAILED", f"could not start {argv[0]}: {exc.strerror}") from None
        self._pgid = self.proc.pid
        _LEADERS[self.proc.pid] = self

    def cwd(self) -> str | None:
        """The process's working directory now (Linux ``/proc``), ``None`` once it is gone."""
        if self.proc is None or self.proc.returncode is not None:
            return None
        try:
            return os.readlink(f"/proc/{self.proc.pid}/cwd")
        except OSError:
            return None

    def _env(self) -> dict[str, str]:
        try:
            pw = pwd.getpwuid(os.getuid())
            home, shell, user = pw.pw_dir, pw.pw_shell or "/bin/sh", pw.pw_name
        except KeyError:
            home, shell, user = "/", "/bin/sh", "nobody"
        env = {
            "HOME": home,
            "SHELL": os.environ.get("SHELL", shell) if shell == "/bin/sh" else shell,
            "USER": user,
            "LOGNAME": user,
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TERM": "xterm-256color" if self.term is not None else "dumb",
        }
        if self.term is not None:
            env.update(_safe_env(self.term.env))
        return env

    # ------------------------------------------------------------ output
    def pause(self, paused: bool) -> None:
        """Stop or restart reading (the core asks when credit runs out or returns)."""
        want = not paused and not self._closed
        if want == self._reading:
            return
        self._reading = want
        self._steer()

    def _steer(self) -> None:
        """Decide who reads: nobody (paused), the pool (streaming) or the loop."""
        streaming = self._streaming and self._reading and not self._closed
        if streaming:
            with self._lock:
                self._go = True
                start = not self._job_running and self._inflight < _MAX_INFLIGHT
                if start:
                    self._job_running = True
            if start and self._master is not None:
                _pool().submit(self._stream_job, self._master)
        else:
            with self._lock:
                self._go = False
        want = self._reading and not self._streaming and not self._closed
        if want != self._watching:
            self._watching = want
            for fd in self._readers:
                if want:
                    self._loop.add_reader(fd, self._on_readable, fd)
                else:
                    self._loop.remove_reader(fd)

    def _on_readable(self, fd: int) -> None:
        stream = self._readers.get(fd)
        if stream is None:
            return
        budget = min(self.max_read, self.sink.read_budget())
        if budget <= 0:
            self.pause(True)
            return
        data, eof = read_burst(fd, budget)
        if not eof and budget == self.max_read and len(data) == budget and fd == self._master:
            self._streaming = True  # the pool reads the next chunks meanwhile
            self.stream_starts += 1
            self._steer()
        self._deliver(fd, stream, data, eof)

    def _stream_job(self, fd: int) -> None:
        """Pool thread: read chunks while the loop allows, hand each to the loop.

        After a full chunk more output is usually waiting, so the next read
        goes straight to ``read()`` (no ``poll`` first); only a read that finds
        nothing waits, up to :data:`PTY_STREAM_IDLE`.  A chunk is queued in
        ``_ready``; the loop is woken (``call_soon_threadsafe``: a write to its
        self-pipe) only when no drain is already scheduled.
        """
        loop = self._loop
        full = True
        while True:
            with self._lock:
                if self._closed or not self._go or self._inflight >= _MAX_INFLIGHT:
                    self._job_running = False
                    closed = self._closed
                    break
            data, eof = read_burst(fd, self.max_read, 0.0 if full else PTY_STREAM_IDLE)
            if full and not data and not eof:
                data, eof = read_burst(fd, self.max_read, PTY_STREAM_IDLE)
            full = len(data) >= self.max_read
            with self._lock:
                self._inflight += 1
                self._ready.append((fd, data, eof))
                wake = not self._drain_pending
                self._drain_pending = True
                if not data or eof:
                    self._job_running = False
            if wake:
                try:
                    loop.call_soon_threadsafe(self._drain_ready)
                except RuntimeError:  # the loop is gone
                    with self._lock:
                        self._job_running = False
                    return
            if not data or eof:
                return
        if closed:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._close_deferred)

    def _drain_ready(self) -> None:
        """Loop: hand every chunk the pool queued to the sink, in order."""
        while True:
            with self._lock:
                if not self._ready:
                    self._drain_pending = False
                    return
                fd, data, eof = self._ready.pop(0)
            self._chunk_ready(fd, data, eof)

    def _chunk_ready(self, fd: int, data: bytes, eof: bool) -> None:
        with self._lock:
            self._inflight -= 1
        if self._closed:
            self._close_deferred()
            return
        stream = self._readers.get(fd)
        if stream is None:
            return
        if not data and not eof:  # output paused: back to the loop's watch
            self._streaming = False
        self._deliver(fd, stream, data, eof)
        if not self._closed:
            self._steer()

    def _close_deferred(self) -> None:
        with self._lock:
            busy = self._job_running or self._inflight > 0
        if not busy:
            for fd in self._deferred_close:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._deferred_close.clear()

    def _deliver(self, fd: int, stream: Stream, data: bytes, eof: bool) -> None:
        if data:
            self.sink.output(stream, data)
        if self._closed:
            return
        if eof:
            self._streaming = False
            self._drop_reader(fd)
        elif self._reading and self.sink.read_budget() <= 0:
            self.pause(True)
        self._maybe_report_exit()

    def _drop_reader(self, fd: int) -> None:
        if self._watching:
            self._loop.remove_reader(fd)
        self._readers.pop(fd, None)
        if fd != self._in_fd:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _exited(self, rc: int) -> None:
        """The process was reaped with ``rc`` (``-N``: killed by signal N)."""
        assert self.proc is not None
        if _LEADERS.get(self.proc.pid) is self:
            del _LEADERS[self.proc.pid]
        self._exit = (rc, None) if rc >= 0 else (None, signal_name(-rc))
        self._maybe_report_exit()

    def _maybe_report_exit(self) -> None:
        if self._exit is None or self._exit_reported or self._streaming:
            return  # (the pool's last chunk reports again)
        if self._master is not None and self._master in self._readers:
            # Once no process holds the PTY's slave side (POLLHUP), a read of the
            # master returns what the kernel still holds -- the flip buffer may
            # not have reached FIONREAD yet -- and then EIO: read once now, so
            # the last output is neither lost nor waits for credit to end.
            # Children may keep the slave open after the process exited: what
            # it wrote is already buffered, so the output ends once that is read.
            if self._pty_has_data():
                return  # read as credit allows
            master = self._master
            if self._pty_hung_up():
                with self._lock:
                    busy = self._job_running or self._inflight > 0
                if busy:
                    return  # the pool's last chunk reports again
                # One read even past the budget: whether output is left can only be
                # learnt by reading, and the exit must not wait for credit that a
                # client that has read everything has no reason to grant.
                data, eof = read_burst(master, self.max_read)
                if data or eof:
                    self._deliver(master, "stdout", data, eof)  # reports the exit once at the end
                    return
            self._drop_reader(master)
        if self._readers:
            return
        self._exit_reported = True
        self.sink.exited(*self._exit)

    def _pty_hung_up(self) -> bool:
        assert self._master is not None
        p = select.poll()
        p.register(self._master, select.POLLIN)
        return any(ev & select.POLLHUP for _, ev in p.poll(0))

    def _pty_has_data(self) -> bool:
        assert self._master is not None
        try:
            buf = fcntl.ioctl(self._master, termios.FIONREAD, b"\0\0\0\0")
            (pending,) = struct.unpack("i", buf)
            return int(pending) > 0
        except OSError:
            return False

    # ------------------------------------------------------------- input
    def write(self, data: bytes) -> None:
        """Queue input; written as the process drains it, reported via ``input_written``."""
        if self._closed or self._in_fd is None:
            self.sink.input_written(len(data))
            return
        view = memoryview(data)
        if not self._input:  # nothing queued: straight to the process; only a remainder waits
            try:
                n = os.write(self._in_fd, view)
            except BlockingIOError:
                n = 0
            except OSError:  # the process is gone: discarded, counted as consumed
                self.sink.input_written(len(view))
                return
            if n:
                self.sink.input_written(n)
            if n == len(view):
                return
            view = view[n:]
        if self._input is None:
            self._input = deque()
        self._input.append(view)
        self._flush_input()

    def _flush_input(self) -> None:
        fd = self._in_fd
        written = 0
        queue = self._input
        while queue and fd is not None:
            chunk = queue[0]
            try:
                n = os.write(fd, chunk)
            except BlockingIOError:
                break
            except OSError:
                # The process is gone: input is discarded but counted as consumed.
                written += sum(len(c) for c in queue)
                queue.clear()
                break
            written += n
            if n == len(chunk):
                queue.popleft()
            else:
                queue[0] = chunk[n:]
        if written:
            self.sink.input_written(written)
        if self._eof and not self._input and fd is not None and fd != self._master:
            self._close_stdin()
            return
        want = bool(self._input) and fd is not None and not self._closed
        if want != self._writer_on and fd is not None:
            self._writer_on = want
            if want:
                self._loop.add_writer(fd, self._flush_input)
            else:
                self._loop.remove_writer(fd)

    def eof(self) -> None:
        """Pipes: close stdin once the queued input is written; PTY: type ^D."""
        if self._closed or self._eof:
            return
        if self._master is not None:
            self.write(b"\x04")
            return
        self._eof = True
        self._flush_input()

    def _close_stdin(self) -> None:
        fd, self._in_fd = self._in_fd, None
        if fd is None:
            return
        if self._writer_on:
            self._loop.remove_writer(fd)
            self._writer_on = False
        with contextlib.suppress(OSError):
            os.close(fd)

    # ------------------------------------------------------------ control
    def resize(self, cols: int, rows: int) -> None:
        """TIOCSWINSZ on the PTY (the kernel sends SIGWINCH to the foreground group)."""
        if self._master is not None and not self._closed:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, _winsize(cols, rows))

    def signal(self, sig: str) -> None:
        """Signal the PTY's foreground process group (pipes: the process group)."""
        num = signal_number(sig)
        if num is None or self.proc is None or self._closed:
            return
        try:
            pgrp = os.tcgetpgrp(self._master) if self._master is not None else self.proc.pid
            os.killpg(pgrp, num)
        except OSError:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, num)

    def close(self) -> None:
        """Hang up: SIGHUP to the process group, close the descriptors, SIGKILL
        what is left of the group after :data:`KILL_GRACE`; reaped by :meth:`wait_closed`."""
        if self._closed:
            return
        self._closed = True
        self.pause(True)
        if self._writer_on and self._in_fd is not None:
            self._loop.remove_writer(self._in_fd)
            self._writer_on = False
        self._input = None
        self._group_gone = asyncio.Event()
        self._job_pgid = self._foreground_job()
        hup_job = self._signal_job(signal.SIGHUP)
        if self._signal_group(signal.SIGHUP) or hup_job:
            self._ender = self._loop.create_task(self._end_group())
        else:
            self._group_gone.set()
        for fd in set(self._readers) | ({self._in_fd} if self._in_fd is not None else set()):
            if fd == self._master and self._streaming:
                self._deferred_close.add(fd)  # a pool thread may be reading it: no reuse of the number
                continue
            with contextlib.suppress(OSError):
                os.close(fd)
        self._readers.clear()
        self._in_fd = None
        self._master = None
        self._close_deferred()

    async def wait_closed(self) -> None:
        """Wait until the process is reaped and its group is empty or was sent
        SIGKILL (:data:`KILL_GRACE` after the SIGHUP of :meth:`close`)."""
        if self.proc is not None:
            await self.proc.wait()
        if self._group_gone is not None:
            await self._group_gone.wait()

    def _signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the process group; False when the group is gone.

        A group whose leader was reaped is only signalled while its id is not
        the pid of another backend's running leader (the kernel does not reuse
        the id while the group has members; once it is empty the id is free).
        """
        pgid = self._pgid
        if pgid is None or self.proc is None:
            return False
        if self.proc.returncode is not None and _LEADERS.get(pgid, self) is not self:
            self._pgid = None
            return False
        sent = _killpg(pgid, sig)
        if sent is None:  # no member left
            self._pgid = None
        return bool(sent)

    def _foreground_job(self) -> int | None:
        """The PTY's foreground process group when it is not the shell's own (a job)."""
        if self._master is None or self._pgid is None:
            return None
        try:
            fg = os.tcgetpgrp(self._master)
        except OSError:
            return None
        return fg if fg > 0 and fg != self._pgid else None

    def _signal_job(self, sig: int) -> bool:
        """Send ``sig`` to the foreground job's group; False when it is gone.

        Only while the job's leader is alive and still in this terminal's
        session (the shell leads it): a group whose leader exited may have
        members left, but its id can no longer be told from a newer group's.
        """
        pgid = self._job_pgid
        if pgid is None or self.proc is None:
            return False
        try:
            ours = os.getsid(pgid) == self.proc.pid
        except OSError:
            ours = False
        sent = _killpg(pgid, sig) if ours else None
        if sent is None:  # gone, or no longer this terminal's
            self._job_pgid = None
        return bool(sent)

    async def _end_group(self) -> None:
        """After the SIGHUP: wait (bounded by :data:`KILL_GRACE`) for the group (and the
        foreground job's) to empty, then SIGKILL whatever is left of them."""
        loop = self._loop
        deadline = loop.time() + KILL_GRACE
        try:
            if self.proc is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.proc.wait()), KILL_GRACE)
            # Members other than the leader are not our children: nothing to wait
            # on but the group's existence (a signal 0 probe), a few times a tick.
            for _ in range(int(KILL_GRACE / _GROUP_POLL) + 1):
                alive = self._signal_group(0) | self._signal_job(0)
                if loop.time() >= deadline or not alive:
                    break
                await asyncio.sleep(_GROUP_POLL)
            job = self._job_pgid
            if self._signal_job(signal.SIGKILL):
                log.info("foreground job %d outlived SIGHUP by %.1f s: killed", job, KILL_GRACE)
            if self._signal_group(signal.SIGKILL):
                log.info("process group %d outlived SIGHUP by %.1f s: killed", self.proc.pid if self.proc else -1, KILL_GRACE)
        finally:
            self._pgid = None
            self._job_pgid = None
            assert self._group_gone is not None
            self._group_gone.set()


#: ``open.term.env`` names passed to the process; everything else is dropped (and counted,
#: see :func:`filter_term_env`): ``PYTHONINSPECT``, ``SHELLOPTS``/``PS4``, ``BASH_ENV``,
#: ``LD_PRELOAD``... would let a client escape a ``--pty-command`` kiosk.
TERM_ENV_ALLOWED = frozenset({"TERM", "COLORTERM", "LANG"})
_LC_NAME = re.compile(r"LC_[A-Z]{1,20}")
#: Values too: no ``/`` (glibc loads a locale named by a path), no spaces or controls.
_ENV_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def filter_term_env(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``term.env`` reduced to the allow-list: ``(kept, dropped names)``.

    Kept: ``TERM``, ``COLORTERM``, ``LANG`` and ``LC_*``, each with a plain value
    (letters, digits, ``._@+-``, at most 64 characters). Everything else is dropped.
    """
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for k, v in env.items():
        if (k in TERM_ENV_ALLOWED or _LC_NAME.fullmatch(k)) and isinstance(v, str) and _ENV_VALUE.fullmatch(v):
            kept[k] = v
        else:
            dropped.append(k)
    return kept, dropped


def _safe_env(env: Mapping[str, str]) -> dict[str, str]:
    """``term.env`` minus everything outside the allow-list (:func:`filter_term_env`)."""
    return filter_term_env(env)[0]
