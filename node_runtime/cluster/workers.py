"""``nimbus-ws serve --workers N``: N server processes on one port, one session directory.

The command becomes a small supervisor (no event loop, no sessions of its own):

1. it reserves the port (a bound, not listening ``SO_REUSEPORT`` socket: with
   ``--port 0`` every worker gets the same free port);
2. without ``--redis`` it starts a **private** ``redis-server`` on a Unix
   socket in a 0700 temporary directory (no TCP port, nothing saved) -- the
   same directory code as a multi-machine cluster, so a session resumes across
   workers exactly as across machines; with ``--redis`` the workers join that
   cluster instead;
3. without ``--cluster-secret-file`` it writes a random secret (0600) there;
4. it starts N ``nimbus-ws serve ... --worker`` processes: each listens on
   the shared port with ``SO_REUSEPORT`` (the kernel spreads new connections
   over them) and on a private loopback port it advertises for relays;
5. it forwards their logs, prints ``nimbus-ws serving URL`` once all are
   up, forwards SIGTERM/SIGINT to them (each drains), and exits when they
   have: 0 if every worker exited 0; a worker that fails before it serves
   stops the others and its status is the command's.

A worker that dies takes its sessions with it (docs/scale.md); the others go on.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["run_workers", "worker_argv"]

log = logging.getLogger("nimbus_websocket.cluster")

#: Seconds the supervisor waits for its workers (and the private Redis) to be ready.
START_TIMEOUT = 30.0
#: Seconds past the drain timeout before a worker that does not exit is killed.
STOP_GRACE = 10.0
_SERVING = "nimbus-ws serving "
#: Options the supervisor sets itself on its workers (dropped from the command line given).
_OWN = ("--workers", "--port", "--worker", "--instance-id")


def worker_argv(argv: list[str], *, port: int, redis: str | None, secret_file: str | None, index: int) -> list[str]:
    """The ``serve`` command line of worker ``index``: ``argv`` without the supervisor's own options."""
    out: list[str] = []
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in _OWN:
            skip = "=" not in a and name != "--worker" and i + 1 < len(argv)
            continue
        out.append(a)
    out += ["--port", str(port), "--worker", "--instance-id", f"w{index}-{secrets.token_hex(3)}"]
    if redis is not None:
        out += ["--redis", redis]
    if secret_file is not None:
        out += ["--cluster-secret-file", secret_file]
    return out


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM when the supervisor dies (Linux ``PR_SET_PDEATHSIG``), so a
    killed supervisor leaves no worker or Redis behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def _reserve(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s


def _start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit(
            "nimbus-ws serve: --workers without --redis needs redis-server (Debian: apt install redis-server), or give --redis URL"
        )
    sock = tmp / "redis.sock"
    proc = subprocess.Popen(
        [exe, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:  # bounded: until the socket answers PING
        if proc.poll() is not None:
            raise SystemExit(f"nimbus-ws serve: the private redis-server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as c:
            c.settimeout(1)
            c.connect(str(sock))
            c.sendall(b"PING\r\n")
            if c.recv(16).startswith(b"+PONG"):
                return proc, f"unix://{sock}"
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("nimbus-ws serve: the private redis-server did not start")


def run_workers(args: argparse.Namespace) -> int:
    """Supervise ``args.workers`` server processes (see the module docstring); the exit status."""
    from .cli import drain_timeout

    argv = list(sys.argv[1:])
    if not argv or argv[0] != "serve":
        sys.stderr.write("nimbus-ws serve: --workers needs the command line `nimbus-ws serve ...`\n")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="nimbus-ws-workers-"))
    os.chmod(tmp, 0o700)
    redis_proc: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[str]] = []
    try:
        try:
            reserved = _reserve(args.host, args.port)
        except OSError as exc:
            sys.stderr.write(f"nimbus-ws serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}\n")
            return 2
        port = int(reserved.getsockname()[1])
        redis_url = args.redis
        if redis_url is None:
            try:
                redis_proc, redis_url = _start_redis(tmp)
            except SystemExit as exc:
                sys.stderr.write(f"{exc.code}\n")
                return 2
        secret_file = args.cluster_secret_file
        if secret_file is None:
            secret_file = str(tmp / "cluster-secret")
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        ready = threading.Semaphore(0)
        urls: list[str] = []
        for i in range(args.workers):
            cmd = [sys.executable, "-m", "nimbus_websocket", *worker_argv(
                argv, port=port, redis=redis_url if args.redis is None else None,
                secret_file=secret_file if args.cluster_secret_file is None else None, index=i,
            )]
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
            workers.append(proc)
            threading.Thread(target=_forward, args=(proc, i, ready, urls), daemon=True).start()
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            if stop.is_set():  # a second signal: pass it on (ends the workers' drain)
                for w in workers:
                    with contextlib.suppress(OSError):
                        w.send_signal(signal.SIGTERM)
            stop.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            status = _supervise(workers, ready, urls, stop, drain_timeout(args))
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        reserved.close()
        return status
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(5)
        if redis_proc is not None:
            redis_proc.terminate()
            try:
                redis_proc.wait(5)
            except subprocess.TimeoutExpired:
                redis_proc.kill()
                redis_proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def _forward(proc: subprocess.Popen[str], index: int, ready: threading.Semaphore, urls: list[str]) -> None:
    """Copy a worker's stderr to ours; its start line becomes a ``worker ready`` line."""
    assert proc.stderr is not None
    for line in proc.stderr:  # bounded by the worker's life
        if line.startswith(_SERVING):
            urls.append(line[len(_SERVING):].split()[0])
            sys.stderr.write(f"nimbus-ws worker {index} (pid {proc.pid}) ready\n")
            ready.release()
            continue
        sys.stderr.write(line)
    sys.stderr.flush()


def _supervise(
    workers: list[subprocess.Popen[str]], ready: threading.Semaphore, urls: list[str], stop: threading.Event, drain: float
) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    for _ in workers:
        while not ready.acquire(timeout=0.1):
            failed = [w for w in workers if w.poll() is not None]
            if failed or stop.is_set() or time.monotonic() > deadline:
                for w in workers:
                    if w.poll() is None:
                        w.send_signal(signal.SIGTERM)
                for w in workers:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        w.wait(STOP_GRACE)
                code = failed[0].returncode if failed else (0 if stop.is_set() else 1)
                return code if code else (0 if stop.is_set() else 1)
    sys.stderr.write(f"{_SERVING}{urls[0]}  workers: {len(workers)}\n")
    sys.stderr.flush()
    while not stop.wait(0.2):  # bounded by the supervisor's life (until a signal)
        for i, w in enumerate(workers):
            if w.returncode is None and w.poll() is not None:
                sys.stderr.write(f"nimbus-ws worker {i} (pid {w.pid}) exited with {w.returncode}\n")
        if all(w.poll() is not None for w in workers):
            return 1
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    status = 0
    give_up = time.monotonic() + drain + STOP_GRACE
    for w in workers:
        try:
            w.wait(max(0.1, give_up - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait(5)
        status = status or (w.returncode if w.returncode and w.returncode > 0 else (1 if w.returncode else 0))
    return status
