"""Real parts for the cluster tests: redis-server, ``nimbus-ws serve --redis`` instances, nginx.

* :class:`RedisProc` -- Debian's ``redis-server`` on a free loopback port
  (``--save "" --appendonly no``), restartable on the same port;
* :class:`Instance` -- ``python -m nimbus_websocket serve --redis ... --advertise ...`` in a
  subprocess (tests/support/serve_cli.py), its metrics read over HTTP;
* :func:`balancer` -- nginx (tests/e2e/nginx_proc.py) balancing round robin over instances;
* :func:`owner_pid` -- which process owns a session: its channel runs ``echo $PPID``.

Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_E2E = str(Path(__file__).resolve().parents[1] / "e2e")
if _E2E not in sys.path:
    sys.path.insert(0, _E2E)

from nginx_proc import Nginx, free_port, have_nginx  # noqa: E402

try:
    from support.serve_cli import ServeProcess
    from support.waiting import wait_for
except ImportError:  # pragma: no cover
    from tests.support.serve_cli import ServeProcess
    from tests.support.waiting import wait_for

__all__ = [
    "TOKEN",
    "Cluster",
    "Instance",
    "RedisProc",
    "balancer",
    "free_port",
    "have_nginx",
    "owner_pid",
    "wait_for",
]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
TOKEN = "cluster-test-token-0123456789"
TARGET = {"host": "localhost", "port": 22}
#: A channel that names the process running it (its parent: the owning server), then echoes.
WHO_AND_CAT = "echo $PPID; exec cat"


def have_redis() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


class RedisProc:
    """``redis-server`` on ``127.0.0.1:port``, nothing saved."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProc:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        return self.command(b"PING").startswith(b"+PONG")

    def command(self, *words: bytes) -> bytes:
        """One command in RESP, the raw reply (empty when Redis is not there)."""
        req = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                c.sendall(req)
                return c.recv(65536)
        except OSError:
            return b""

    def session_keys(self) -> int:
        """How many ``nimbus:s:*`` keys Redis holds."""
        reply = self.command(b"KEYS", b"nimbus:s:*")
        m = re.match(rb"\*(\d+)", reply)
        return int(m.group(1)) if m else 0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Instance:
    """One ``nimbus-ws serve`` of the cluster (pipes, no PTY: ``cat`` echoes byte-exact)."""

    def __init__(self, name: str, redis: RedisProc, secret_file: Path, token_file: Path, *extra: str) -> None:
        self.name = name
        self.serve = ServeProcess(
            "--redis", redis.url,
            "--advertise", "ws://127.0.0.1:0/ws/ssh",
            "--cluster-secret-file", str(secret_file),
            "--token-file", str(token_file),
            "--instance-id", name,
            "--metrics",
            *extra,
        )
        self.url = ""
        self.port = 0

    @property
    def pid(self) -> int:
        return self.serve.proc.pid

    async def started(self) -> Instance:
        self.url = await self.serve.started()
        self.port = int(self.url.split(":")[2].split("/")[0])
        await wait_for(lambda: any("cluster joined" in line for line in self.serve.lines), 10, f"{self.name} joined")
        return self

    def metrics(self) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return str(r.read().decode())

    def metric(self, name: str, labels: str = "") -> float:
        """One sample (``name{labels}``) of :meth:`metrics`, 0 when absent."""
        want = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def kill(self) -> None:
        self.serve.proc.kill()
        self.serve.proc.wait(10)

    async def stop(self) -> int:
        return await self.serve.stop()


@dataclass
class Cluster:
    redis: RedisProc
    instances: list[Instance]
    nginx: Nginx
    root: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.nginx.port}/ws/ssh"

    def by_pid(self, pid: int) -> Instance:
        return next(i for i in self.instances if i.pid == pid)

    def relayed(self) -> float:
        return sum(i.metric("nimbus_cluster_relayed_connections_total", 'direction="out"') for i in self.instances if i.serve.proc.poll() is None)


def balancer(root: Path, ports: list[int]) -> Nginx:
    """nginx on a free port balancing ``ports`` round robin, with the documented proxy settings."""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;" for p in ports)
    n = Nginx(root, "        location / {\n            proxy_pass http://nimbus;\n            include /etc/nginx/nimbus-ws.conf;\n        }\n")
    text = n.conf.read_text()
    n.conf.write_text(text.replace("    server {", f"    upstream nimbus {{\n{servers}\n    }}\n    server {{", 1))
    return n.start()


async def owner_pid(ch: Any, timeout: float = 10.0) -> int:
    """The first line of a :data:`WHO_AND_CAT` channel: the pid of the server that runs it."""
    buf = b""
    async with asyncio.timeout(timeout):
        async for chunk in ch:
            buf += chunk
            if b"\n" in buf:
                break
    line, _, rest = buf.partition(b"\n")
    assert not rest, rest
    return int(line)


async def echo(ch: Any, text: bytes, timeout: float = 10.0) -> None:
    """Send ``text`` to a ``cat`` channel and read exactly it back."""
    await ch.send(text)
    got = b""
    async with asyncio.timeout(timeout):
        async for chunk in ch:
            got += chunk
            if len(got) >= len(text):
                break
    assert got == text, (got, text)


def write_files(root: Path) -> tuple[Path, Path]:
    """The cluster secret and the token file (0600)."""
    root.mkdir(parents=True, exist_ok=True)
    secret, tokens = root / "cluster-secret", root / "tokens"
    secret.write_text("s3cret-shared-by-every-instance-0123456789\n")
    tokens.write_text(TOKEN + "\n")
    for f in (secret, tokens):
        os.chmod(f, 0o600)
    return secret, tokens
