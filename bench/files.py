"""File channels (issue 19): transfer MB/s up and down, nimbus against its baselines.

    .venv/bin/python bench/files.py [--quick] [--runs N] [--mb N] [--json OUT]
    .venv/bin/python bench/files.py --profile pty.up [--mb N]   # one transfer under cProfile
    .venv/bin/python bench/files.py --serve-bare                # the bare push server alone
    .venv/bin/python bench/files.py --only scp,sshproc          # some paths only (development)

One random file (``--mb`` MB: 100, ``--quick`` 20), in ``/dev/shm`` when
writable (``common.scratch_dir``), sent up and fetched down by four paths,
each transfer timed from its connection to its verdict (connect, open,
every byte, the far side's "done"):

* **bare WebSocket push** (the baseline of the PTY rows): a minimal
  ``websockets`` server in this process; upload = a text header, then the
  file as 256 KiB binary messages, each written to the destination file as
  it arrives, then the server's ``ok`` once the file is closed; download =
  the server streams the file in 256 KiB binary messages, the client writes
  each to a file.  Plain ``websockets`` client, no protocol, no flow control
  beyond TCP's and websockets' own;
* **nimbus, PTY backend** (the local filesystem): ``core.aio.upload`` /
  ``download`` through the reference server in this process, a fresh
  CPython client connection per transfer, default options;
* **scp** (the baseline of the SSH rows): the real OpenSSH ``scp`` (its
  default protocol: SFTP since OpenSSH 9) to the private ``sshd``
  (``tests/support/sshd.py``) with the test key, ``BatchMode``, its own
  ``UserKnownHostsFile``, no ``~/.ssh/config``; one login per transfer;
* **nimbus, SSH backend**: the same calls through the reference server with
  ``backend="ssh"`` to the same ``sshd`` (key auth), SFTP from the server
  (asyncssh), one SSH login per transfer as well;
* **own process**: the same, with ``nimbus-ws serve`` (PTY or SSH backend)
  and the bare push server (``--serve-bare``) each in a process of its own
  instead of sharing this process and its event loop with the client -- the
  shape of a deployment, and what the SSH rows compare with ``scp`` (two C
  processes) on equal terms.

Runs are interleaved (baseline, nimbus, baseline, nimbus, ...); each
transfer is checked byte for byte (sha256 of what arrived against the
source) and a mismatch fails the run.  Downloads write to a file on the
same tmpfs as every other path does.  Every transfer is bounded in time
(``_timeout``), every loop by a byte count; everything on 127.0.0.1, ports
chosen by the kernel.  ``bench/run.py`` adds the rows (section ``files``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import io
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.append(str(ROOT / "tests"))  # last: only for tests/support (the private sshd)

from common import cpu_seconds, machine, scratch_dir, table  # noqa: E402
from nimbus_websocket.core.aio import download, upload  # noqa: E402
from nimbus_websocket.node_runtime.client import WebsocketsImpl, connect  # noqa: E402
from nimbus_websocket.node_runtime.server import Server, ServerOptions, SshOptions  # noqa: E402
from support.sshd import TestSshd  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402
from websockets.asyncio.server import ServerConnection, serve  # noqa: E402

TOKEN = "bench-files-token"
AUTH = {"scheme": "bearer", "token": TOKEN}
PTY_TARGET = {"host": "localhost", "port": 22}
PTY_USER = {"username": "bench"}
#: Bytes per binary message of the bare WebSocket push (and per read of its source).
BARE_CHUNK = 256 * 1024
TARGET_RATIO = 0.8
#: The measured kinds, in the order of a run: each baseline right before what it is compared to
#: (the SSH rows with the server in its own process share the run's ``scp`` baseline).
KINDS = (
    "bare.up",
    "pty.up",
    "bare.down",
    "pty.down",
    "bareproc.up",
    "ptyproc.up",
    "bareproc.down",
    "ptyproc.down",
    "scp.up",
    "ssh.up",
    "sshproc.up",
    "scp.down",
    "ssh.down",
    "sshproc.down",
)
BASELINE = {
    "pty.up": "bare.up",
    "pty.down": "bare.down",
    "ptyproc.up": "bareproc.up",
    "ptyproc.down": "bareproc.down",
    "ssh.up": "scp.up",
    "ssh.down": "scp.down",
    "sshproc.up": "scp.up",
    "sshproc.down": "scp.down",
}
BASELINE_LABEL = {"bare": "bare push", "bareproc": "bare push (own process)", "scp": "scp"}
_UP, _DOWN = "upload", "download"
LABELS = {
    "bare.up": f"bare WebSocket push, {_UP} (`websockets` both ends, 256 KiB messages → file), one process",
    "bare.down": f"bare WebSocket push, {_DOWN} (file → 256 KiB messages → file), one process",
    "pty.up": "nimbus, PTY backend (local filesystem), `upload()`, one process",
    "pty.down": "nimbus, PTY backend (local filesystem), `download()`, one process",
    "bareproc.up": f"bare WebSocket push, {_UP}, server in its own process",
    "bareproc.down": f"bare WebSocket push, {_DOWN}, server in its own process",
    "ptyproc.up": "nimbus, PTY backend, `upload()`, `nimbus-ws serve` in its own process",
    "ptyproc.down": "nimbus, PTY backend, `download()`, `nimbus-ws serve` in its own process",
    "scp.up": f"OpenSSH `scp` to the private sshd, {_UP}",
    "scp.down": f"OpenSSH `scp` from the private sshd, {_DOWN}",
    "ssh.up": "nimbus, SSH backend (SFTP to the private sshd), `upload()`, one process",
    "ssh.down": "nimbus, SSH backend (SFTP from the private sshd), `download()`, one process",
    "sshproc.up": "nimbus, SSH backend, `upload()`, `nimbus-ws serve --backend ssh` in its own process",
    "sshproc.down": "nimbus, SSH backend, `download()`, `nimbus-ws serve --backend ssh` in its own process",
}
#: Kinds :func:`profile` can run (the server in this process, where cProfile sees it).
PROFILABLE = ("pty.up", "pty.down", "ssh.up", "ssh.down")


def params(quick: bool, runs: int | None = None, mb: int | None = None) -> dict[str, Any]:
    """Sizes and run counts; ``quick`` for a smoke run."""
    return {"quick": quick, "runs": runs or (3 if quick else 5), "mb": mb or (20 if quick else 100), "only": None}


def _timeout(size: int) -> float:
    """Seconds one transfer of ``size`` bytes may take (set-up plus >= 2 MB/s)."""
    return 30.0 + size / 2e6


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n


# ------------------------------------------------------------ bare push
class BarePush:
    """The baseline: a ``websockets`` server writing what it receives to a file / streaming a file.

    Protocol (text frames are control, binary frames are the file): ``put PATH SIZE`` then SIZE
    bytes of binary messages, answered ``ok`` once the file is closed; ``get PATH`` answered
    ``size N`` then N bytes in ``BARE_CHUNK`` messages.
    """

    def __init__(self) -> None:
        self.server: Any = None
        self.url = ""

    async def __aenter__(self) -> BarePush:
        self.server = await serve(
            self.handler, "127.0.0.1", 0, compression=None, max_size=1 << 20, ping_interval=None
        )
        port = next(iter(self.server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @staticmethod
    async def handler(ws: ServerConnection) -> None:
        head = await ws.recv()
        assert isinstance(head, str)
        verb, _, rest = head.partition(" ")
        if verb == "put":
            path, size_text = rest.rsplit(" ", 1)
            size = int(size_text)
            got = 0
            with open(path, "wb") as f:
                while got < size:  # bounded: every message carries >= 1 byte, the client times out
                    msg = await ws.recv()
                    if not isinstance(msg, bytes) or not msg or got + len(msg) > size:
                        await ws.close(1008, "bad upload")
                        return
                    f.write(msg)
                    got += len(msg)
            await ws.send("ok")
        elif verb == "get":
            with open(rest, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                await ws.send(f"size {size}")
                sent = 0
                while sent < size and (block := f.read(BARE_CHUNK)):
                    await ws.send(block)
                    sent += len(block)
        await ws.wait_closed()


async def serve_bare() -> None:
    """``--serve-bare``: the bare push server alone; prints its URL, serves until stdin closes."""
    async with BarePush() as bare:
        print(f"bare push serving {bare.url}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def bare_up(url: str, src: str, size: int, dst: str) -> None:
    async with ws_connect(url, compression=None, max_size=1 << 20, ping_interval=None) as ws:
        await ws.send(f"put {dst} {size}")
        with open(src, "rb") as f:
            while block := f.read(BARE_CHUNK):
                await ws.send(block)
        verdict = await ws.recv()
        if verdict != "ok":
            raise RuntimeError(f"bare upload: {verdict!r}")


async def bare_down(url: str, src: str, out: str) -> int:
    async with ws_connect(url, compression=None, max_size=1 << 20, ping_interval=None) as ws:
        await ws.send(f"get {src}")
        head = await ws.recv()
        assert isinstance(head, str) and head.startswith("size "), head
        size = int(head.split()[1])
        got = 0
        with open(out, "wb") as f:
            while got < size:
                msg = await ws.recv()
                assert isinstance(msg, bytes) and msg
                f.write(msg)
                got += len(msg)
        return got


class ServeProc:
    """A server in a process of its own; ``url`` from the first line of ``stream`` starting with ``prefix``."""

    def __init__(self, argv: list[str], prefix: str, stream: str = "stderr") -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
            stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.argv = argv
        self.url = ""
        self._prefix = prefix
        self._ready = threading.Event()
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:  # until the process ends (its pipe closes)
            if line.startswith(self._prefix) and not self.url:
                self.url = line[len(self._prefix) :].split()[0]
                self._ready.set()
        self._ready.set()

    def wait(self, timeout: float = 60) -> str:
        if not self._ready.wait(timeout) or not self.url:
            raise RuntimeError(f"{' '.join(self.argv[:4])} did not start (exit {self.proc.poll()})")
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()


# ---------------------------------------------------------------- nimbus
async def nimbus_up(url: str, target: Any, user: Any, src: str, size: int, dst: str) -> None:
    c = await connect(url, websocket_impl=WebsocketsImpl, auth=lambda: AUTH)
    try:
        with open(src, "rb") as f:
            await upload(c, target, user, f, size, dst)
    finally:
        await c.close()


async def nimbus_down(url: str, target: Any, user: Any, src: str, out: str) -> int:
    c = await connect(url, websocket_impl=WebsocketsImpl, auth=lambda: AUTH)
    try:
        with open(out, "wb") as f:
            return int(await download(c, target, user, src, f.write))
    finally:
        await c.close()


# ------------------------------------------------------------------- scp
def scp_argv(sshd: TestSshd) -> list[str]:
    return [
        "scp",
        "-q",
        "-B",
        "-F",
        "/dev/null",
        "-i",
        str(sshd.client_key_path),
        "-P",
        str(sshd.port),
        "-o",
        f"UserKnownHostsFile={sshd.known_hosts_path}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
    ]


async def scp(argv: list[str], timeout: float) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(
            f"scp exited {proc.returncode}: {err.decode(errors='replace').strip()[:300]}"
        )


def scp_version() -> str:
    try:
        out = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (out.stderr or out.stdout).strip().split(",")[0]


# ------------------------------------------------------------- the bench
class Bench:
    """Every server of a run (started once), the source file, one transfer per call of :meth:`one`.

    ``procs``: also start the own-process servers (``nimbus-ws serve``, ``--serve-bare``).
    """

    def __init__(self, mb: int, procs: bool = True) -> None:
        self.size = mb * 1_000_000
        self.procs = procs
        self.stack = contextlib.AsyncExitStack()
        self.tmp = Path()
        self.src = ""
        self.digest = ""
        self.urls: dict[str, str] = {}
        self.sshd: TestSshd | None = None
        self.ssh_why: str | None = None
        self._procs: dict[str, ServeProc] = {}
        #: kind prefix -> pid of its server process (own-process kinds)
        self.pids: dict[str, int] = {}

    async def __aenter__(self) -> Bench:
        try:
            await self._start()
        except BaseException:
            await self.stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        self.tmp = Path(
            self.stack.enter_context(
                tempfile.TemporaryDirectory(prefix="nimbus-bench-files-", dir=scratch_dir())
            )
        )
        self.src = str(self.tmp / "source.bin")
        _random_file(Path(self.src), self.size)
        self.digest = _sha256(self.src)
        self.urls["bare"] = (await self.stack.enter_async_context(BarePush())).url
        self.urls["pty"] = await self._server(ServerOptions(port=0, tokens=(TOKEN,)))
        tokens = self.tmp / "tokens"
        tokens.write_text(TOKEN + "\n")
        serve_argv = [
            sys.executable,
            "-m",
            "nimbus_websocket",
            "serve",
            "--port",
            "0",
            "--token-file",
            str(tokens),
        ]
        if self.procs:
            self._proc(
                "bareproc",
                ServeProc(
                    [sys.executable, str(Path(__file__).resolve()), "--serve-bare"],
                    "bare push serving ",
                    "stdout",
                ),
            )
            self._proc("ptyproc", ServeProc(serve_argv, "nimbus-ws serving "))
        if (why := TestSshd.unavailable_reason()) is not None or shutil.which("scp") is None:
            self.ssh_why = why or "scp not found"
        else:
            self.sshd = sshd = TestSshd(enable_password_user=False, log_level="ERROR")
            await asyncio.to_thread(sshd.start)
            self.stack.callback(sshd.stop)
            allow = f"{sshd.host}:{sshd.port}"
            self.urls["ssh"] = await self._server(
                ServerOptions(
                    port=0,
                    tokens=(TOKEN,),
                    backend="ssh",
                    ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)),
                    allow_targets=(allow,),
                )
            )
            if self.procs:
                self._proc(
                    "sshproc",
                    ServeProc(
                        [
                            *serve_argv,
                            "--backend",
                            "ssh",
                            "--known-hosts",
                            str(sshd.known_hosts_path),
                            "--allow-target",
                            allow,
                        ],
                        "nimbus-ws serving ",
                    ),
                )
        for key, proc in list(self._procs.items()):
            self.urls[key] = await asyncio.to_thread(proc.wait)
            self.pids[key] = proc.proc.pid

    def _proc(self, key: str, proc: ServeProc) -> None:
        self._procs[key] = proc
        self.stack.callback(proc.stop)

    async def _server(self, opts: ServerOptions) -> str:
        srv = Server(opts)
        await srv.start()
        self.stack.push_async_callback(srv.stop)
        return str(srv.url)

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()

    def available(self, kind: str) -> bool:
        return kind.split(".")[0] in self.urls or (
            kind.startswith("scp.") and self.sshd is not None
        )

    def ssh_target(self) -> tuple[dict[str, Any], dict[str, Any]]:
        assert self.sshd is not None
        return (
            {"host": self.sshd.host, "port": self.sshd.port},
            {
                "username": self.sshd.username,
                "auth": {"type": "key", "private_key": self.sshd.client_key_text},
            },
        )

    def job(self, kind: str, dst: str, out: str) -> Callable[[], Awaitable[Any]]:
        """The transfer ``kind`` as a coroutine function (upload to ``dst``, download into ``out``)."""
        size, src = self.size, self.src
        who, way = kind.split(".")
        if not self.available(kind):
            raise RuntimeError(
                f"{kind}: not available ({self.ssh_why or 'own-process servers not started'})"
            )
        if who == "scp":
            assert self.sshd is not None
            argv = scp_argv(self.sshd)
            remote = f"{self.sshd.username}@{self.sshd.host}:"
            pair = [src, remote + dst] if way == "up" else [remote + src, out]
            return lambda: scp([*argv, *pair], _timeout(size))
        url = self.urls[who]
        if who.startswith("bare"):
            return (
                (lambda: bare_up(url, src, size, dst))
                if way == "up"
                else (lambda: bare_down(url, src, out))
            )
        target, user = self.ssh_target() if who.startswith("ssh") else (PTY_TARGET, PTY_USER)
        if way == "up":
            return lambda: nimbus_up(url, target, user, src, size, dst)
        return lambda: nimbus_down(url, target, user, src, out)

    async def one(self, kind: str) -> dict[str, float]:
        """One timed transfer, verified by sha256: MB/s, seconds, CPU seconds of this process and
        (own-process kinds) of the server process."""
        dst, out = str(self.tmp / f"up-{kind}.bin"), str(self.tmp / f"down-{kind}.bin")
        for path in (dst, out):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        job = self.job(kind, dst, out)
        pid = self.pids.get(kind.split(".")[0])
        srv0 = cpu_seconds(pid) if pid else 0.0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.wait_for(job(), _timeout(self.size))
        dt = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        srv = cpu_seconds(pid) - srv0 if pid else None
        got = dst if kind.endswith(".up") else out
        try:
            size = os.path.getsize(got)
            if size != self.size or _sha256(got) != self.digest:
                raise RuntimeError(
                    f"{kind}: {got} differs from the source ({size} of {self.size} bytes)"
                )
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(got)
        r = {"mbps": self.size / dt / 1e6, "s": dt, "cpu_s": cpu}
        if srv is not None:
            r["server_cpu_s"] = srv
        return r


async def run_async(p: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {
        "runs": p["runs"],
        "mb": p["mb"],
        "scp": scp_version(),
        "samples": {k: [] for k in KINDS},
        "errors": {},
    }
    async with Bench(p["mb"]) as b:
        if b.ssh_why:
            res["errors"]["ssh"] = b.ssh_why
        for i in range(p["runs"]):  # interleaved: baseline, nimbus, baseline, nimbus, ...
            line = []
            for kind in KINDS:
                if not b.available(kind) or (p.get("only") and kind.split(".")[0] not in p["only"]):
                    continue
                r = await b.one(kind)
                res["samples"][kind].append(r)
                line.append(f"{kind} {r['mbps']:.0f}")
            print(f"  files run {i + 1}/{p['runs']}: " + ", ".join(line) + " MB/s", flush=True)
    return res


def run(p: dict[str, Any]) -> dict[str, Any]:
    """Every file-transfer figure (raw samples)."""
    return asyncio.run(run_async(p))


def series(res: dict[str, Any], kind: str, key: str = "mbps") -> list[float]:
    return [s[key] for s in res["samples"].get(kind, []) if key in s]


def cpu_per_gb(res: dict[str, Any], kind: str, key: str = "cpu_s") -> list[float]:
    return [x / (res["mb"] / 1000) for x in series(res, kind, key)]


def add_rows(f: Any, res: dict[str, Any]) -> None:
    """Rows of ``bench/run.py``'s :class:`Figures` (section ``files``)."""
    sec = "files"
    for kind in KINDS:
        xs = series(res, kind)
        if not xs:
            continue
        base = BASELINE.get(kind)
        f.add(
            sec,
            f"files.{kind}",
            LABELS[kind],
            "MB/s",
            xs,
            digits=0,
            baseline=series(res, base) if base else None,
            baseline_label=BASELINE_LABEL.get((base or "").split(".")[0], ""),
            target=("ratio>=", TARGET_RATIO) if base else None,
        )
    # CPU per GB where it is all in one place: this process (server and client), and the server
    # process of the own-process rows; no baseline for the SSH server (sshd's share is elsewhere).
    cpu_rows = [
        ("pty.up", "cpu_s", "this process (server + client)"),
        ("pty.down", "cpu_s", "this process (server + client)"),
        ("ptyproc.up", "server_cpu_s", "the server process"),
        ("ptyproc.down", "server_cpu_s", "the server process"),
        ("sshproc.up", "server_cpu_s", "the server process (sshd not counted)"),
        ("sshproc.down", "server_cpu_s", "the server process (sshd not counted)"),
    ]
    for kind, key, what in cpu_rows:
        xs = cpu_per_gb(res, kind, key)
        if not xs:
            continue
        base = {"pty": "bare", "ptyproc": "bareproc"}.get(kind.split(".")[0])
        bkind = f"{base}.{kind.split('.')[1]}" if base else None
        f.add(
            sec,
            f"files.{kind}.cpu",
            f"CPU per GB, {what}: {LABELS[kind].split(', `')[0]} {kind.split('.')[1]}",
            "s/GB",
            xs,
            baseline=cpu_per_gb(res, bkind, key) if bkind else None,
            baseline_label=BASELINE_LABEL.get(base or "", ""),
            digits=2,
        )
    for key, why in res.get("errors", {}).items():
        f.errors[f"files ({key})"] = why


def print_table(res: dict[str, Any]) -> None:
    rows = []
    for kind in KINDS:
        xs = series(res, kind)
        if not xs:
            continue
        base = BASELINE.get(kind)
        ratio = ""
        if base and series(res, base):
            rs = [m / b for m, b in zip(xs, series(res, base), strict=True)]
            ratio = f"{median(rs):.2f}× ({min(rs):.2f}–{max(rs):.2f})"
        cpu = cpu_per_gb(res, kind)
        srv = cpu_per_gb(res, kind, "server_cpu_s")
        rows.append(
            [
                kind,
                f"{median(xs):.0f} ({min(xs):.0f}–{max(xs):.0f})",
                ratio,
                f"{median(cpu):.2f}",
                f"{median(srv):.2f}" if srv else "–",
                len(xs),
            ]
        )
    print(
        table(
            [
                "path",
                "MB/s median (min–max)",
                f"ratio vs baseline (target ≥ {TARGET_RATIO}×)",
                "CPU s/GB this process",
                "server process",
                "n",
            ],
            rows,
        )
    )


# --------------------------------------------------------------- profile
def profile(kind: str, mb: int, top: int = 14) -> str:
    """One transfer of ``kind`` under cProfile (the transfer only: servers started before), top by own time.

    cProfile sees the event-loop thread only; the local backend's reads and writes in the default
    executor (``run_in_executor``) and ``sshd`` are other threads and processes.
    """
    if kind not in PROFILABLE:
        raise ValueError(f"{kind}: only {', '.join(PROFILABLE)} run their server in this process")

    async def go() -> tuple[cProfile.Profile, float]:
        async with Bench(mb, procs=False) as b:
            job = b.job(kind, str(b.tmp / "up.bin"), str(b.tmp / "down.bin"))
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            try:
                await asyncio.wait_for(job(), _timeout(b.size))
            finally:
                prof.disable()
            return prof, b.size / (time.perf_counter() - t0) / 1e6

    prof, mbps = asyncio.run(go())
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
    lines = s.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "function calls" in line), 0)
    body = []
    for line in lines[start:]:
        line = re.sub(r"/[^ ]*/site-packages/", "", line).replace(str(ROOT) + "/", "")
        line = line.replace(sys.base_prefix + "/lib/python3.11/", "")
        if line.strip():
            body.append(line.rstrip())
    return f"{kind}: one {mb} MB transfer, {mbps:.0f} MB/s under cProfile\n" + "\n".join(body)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="20 MB, 3 runs")
    ap.add_argument("--runs", type=int, help="runs (default 5; --quick 3)")
    ap.add_argument("--mb", type=int, help="file size in MB (default 100; --quick 20)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument(
        "--profile", choices=PROFILABLE, help="one transfer of this kind under cProfile instead"
    )
    ap.add_argument("--top", type=int, default=25, help="--profile: functions shown")
    ap.add_argument(
        "--only", help="comma-separated paths to run (e.g. scp,sshproc), for development runs"
    )
    ap.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_bare:
        asyncio.run(serve_bare())
        return 0
    p = params(args.quick, args.runs, args.mb)
    p["only"] = set(args.only.split(",")) if args.only else None
    if args.profile:
        print(profile(args.profile, p["mb"], args.top))
        return 0
    print(f"files: {machine()}; {p['mb']} MB, {p['runs']} runs; {scp_version()}", flush=True)
    res = run(p)
    print_table(res)
    if res["errors"]:
        print(f"errors: {res['errors']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
