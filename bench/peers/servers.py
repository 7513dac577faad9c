"""Start each peer's server as its own process, running one command on a PTY per session.

``start(peer, argv)`` returns a :class:`Running`: the server's PID (whose
RSS is the server's memory; the shells are other processes), a factory of
wire clients, and ``stop()``.  Same command, same PTY size (80x24, resized
by the client where the server starts otherwise) for every peer:

* **nimbus**: the reference server, local PTY backend (``serve_local.py``);
* **bridge**: the bare websockets bridge (``serve_local.py``);
* **terminado**: ``TermSocket`` + ``UniqueTermManager`` (``serve_terminado.py``, peers venv);
* **webssh**: ``wssh`` (peers venv) logging in with a key to a private
  ``sshd`` (``tests/support/sshd.py``) whose ``ForceCommand`` is the command;
* **wetty**: ``node wetty/build/main.js --command ...``: as root on a local
  host, wetty runs the command on a PTY itself (node-pty), no ssh.

A server that does not come up within ``START_TIMEOUT`` raises
:class:`PeerFailed` with a one-line reason (its log's last line).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.append(str(ROOT / "tests"))  # last: only for tests/support (the private sshd)
sys.path.insert(0, str(HERE.parent))

from memory import rss_kib  # noqa: E402
from support.sshd import TestSshd  # noqa: E402

from peers import install  # noqa: E402
from peers.clients import (  # noqa: E402
    BridgeClient,
    NimbusClient,
    TerminadoClient,
    WebsshClient,
    WettyClient,
    WireClient,
)

PEERS = ("nimbus", "bridge", "terminado", "webssh", "wetty")
START_TIMEOUT = 30.0


class PeerFailed(RuntimeError):
    """A peer's server did not start; the message is one line."""


def server_env() -> dict[str, str]:
    """The environment every server (and so every shell) starts with."""
    env = {k: v for k, v in os.environ.items() if k not in ("PS1", "PROMPT_COMMAND", "BASH_ENV", "ENV")}
    env["TERM"] = "xterm"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
        if lines:
            return lines[-1].strip()[:200]
    return "no output"


class Running:
    """A started server: ``pid`` (its RSS is the server's), ``client()``, ``stop()``."""

    def __init__(self, peer: str, proc: subprocess.Popen[bytes], client: Callable[[], WireClient],
                 cleanup: Callable[[], None] | None = None, tmp: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.peer = peer
        self.proc = proc
        self.pid = proc.pid
        self.client = client
        self._cleanup = cleanup
        self._tmp = tmp

    def rss(self) -> int:
        """Server RSS, KiB."""
        return rss_kib(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``: nothing left to measure, and a
        graceful shutdown would wait out a client that stopped reading); its PTYs hang up."""
        if self.proc.poll() is None and kill:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None


def _popen(argv: list[str], log: Path, *, stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if stdout_pipe else f,
                                stderr=f, env=server_env(), cwd=str(ROOT))


def _read_port(proc: subprocess.Popen[bytes], log: Path, what: str) -> int:
    """The ``PORT n`` line a server prints once listening (bounded)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.splitlines():
                if line.startswith(b"PORT "):
                    return int(line.split()[1])
        elif proc.poll() is not None:
            break
    raise PeerFailed(f"{what} did not start: {_last_line(log)}")


def _wait_port(proc: subprocess.Popen[bytes], port: int, log: Path, what: str) -> None:
    """Poll until ``port`` accepts (bounded); the server must stay alive meanwhile."""
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.01
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerFailed(f"{what} exited ({proc.returncode}): {_last_line(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise PeerFailed(f"{what} did not listen within {START_TIMEOUT:.0f} s: {_last_line(log)}")


def _kill_start_failure(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def start(peer: str, argv: list[str]) -> Running:
    """Start ``peer``'s server running ``argv`` on a PTY for each session."""
    tmp = tempfile.TemporaryDirectory(prefix=f"nimbus-peer-{peer}-")
    log = Path(tmp.name) / "server.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        if peer in ("nimbus", "bridge"):
            proc = _popen([sys.executable, str(HERE / "serve_local.py"), peer, json.dumps(argv)], log, stdout_pipe=True)
            port = _read_port(proc, log, peer)
            if peer == "nimbus":
                url = f"ws://127.0.0.1:{port}/ws/ssh"
                return Running(peer, proc, lambda: NimbusClient(url), tmp=tmp)
            burl = f"ws://127.0.0.1:{port}/"
            return Running(peer, proc, lambda: BridgeClient(burl), tmp=tmp)
        if peer == "terminado":
            if (why := install.ensure_python_peers()) is not None:
                raise PeerFailed(why)
            proc = _popen([str(install.venv_python()), str(HERE / "serve_terminado.py"), json.dumps(argv)], log,
                          stdout_pipe=True)
            port = _read_port(proc, log, "terminado")
            turl = f"ws://127.0.0.1:{port}/websocket"
            return Running(peer, proc, lambda: TerminadoClient(turl), tmp=tmp)
        if peer == "webssh":
            return _start_webssh(argv, tmp, log)
        if peer == "wetty":
            if (why := install.ensure_wetty()) is not None:
                raise PeerFailed(why)
            node = shutil.which("node")
            if node is None:
                raise PeerFailed("node not found")
            if os.geteuid() != 0:
                raise PeerFailed("wetty runs a local command only as root (else it logs in over ssh)")
            port = free_port()
            proc = _popen([node, str(install.WETTY_MAIN), "--host", "127.0.0.1", "--port", str(port),
                           "--ssh-host", "127.0.0.1", "--command", shlex.join(argv), "--log-level", "error"], log)
            _wait_port(proc, port, log, "wetty")
            wurl = f"ws://127.0.0.1:{port}"
            return Running(peer, proc, lambda: WettyClient(wurl), tmp=tmp)
        raise PeerFailed(f"unknown peer {peer}")
    except BaseException:
        if proc is not None:
            _kill_start_failure(proc)
        with contextlib.suppress(OSError):
            tmp.cleanup()
        raise


def _start_webssh(argv: list[str], tmp: tempfile.TemporaryDirectory[str], log: Path) -> Running:
    if (why := install.ensure_python_peers()) is not None:
        raise PeerFailed(why)
    if (why := TestSshd.unavailable_reason()) is not None:
        raise PeerFailed(f"needs the private sshd: {why}")
    # The command is sshd's ForceCommand: the login shell runs exactly it, as the PTY peers do.
    sshd = TestSshd(enable_password_user=False, log_level="ERROR", extra_config=f"ForceCommand exec {shlex.join(argv)}\n")
    try:
        sshd.start()
    except Exception as exc:
        raise PeerFailed(f"private sshd did not start: {str(exc).strip().splitlines()[0][:160]}") from None
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        # --encoding: webssh would otherwise run `locale charmap` over ssh (ForceCommand runs instead);
        # --xsrf=False: the wire client has no page to carry the cookie; --maxconn: 100 sessions from one address.
        proc = _popen([str(install.wssh()), "--address=127.0.0.1", f"--port={port}", "--xsrf=False",
                       "--encoding=utf-8", "--policy=reject", f"--hostfile={sshd.known_hosts_path}",
                       "--maxconn=1024", "--delay=60", "--logging=warning", "--fbidhttp=False"], log)
        _wait_port(proc, port, log, "webssh")
    except BaseException:
        if proc is not None:
            _kill_start_failure(proc)
        sshd.stop()
        raise
    key = sshd.client_key_text
    user = sshd.username
    ssh_port = sshd.port
    base = f"http://127.0.0.1:{port}"
    return Running("webssh", proc, lambda: WebsshClient(base, ssh_port, user, key), cleanup=sshd.stop, tmp=tmp)
