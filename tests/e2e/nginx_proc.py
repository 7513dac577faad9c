"""Debian's nginx on a free loopback port, with a configuration the test writes.

:class:`Nginx` writes ``nginx.conf`` into a temporary prefix directory (pid
file, logs and temp paths all inside it), starts ``nginx -p PREFIX -c CONF
-g 'daemon off;'``, waits (bounded) until a worker answers ``/ping``, and stops it.
The master runs as the test's user; started as root, its workers switch to
nginx's compiled-in default user (``nobody``), as a packaged nginx's run as
``www-data``: a proxied connection is not owned by the server's UID.

The proxy settings are the recipe of ``docs/deploy.md`` itself (the fenced
block starting ``# /etc/nginx/nimbus-ws.conf`` and the ``map`` block), so
the tests run what the documentation tells operators to write.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

from e2e_server import REPO_ROOT

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"


def have_nginx() -> bool:
    return os.path.isfile(NGINX) and os.access(NGINX, os.X_OK)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _doc_block(first_line: str) -> str:
    """The fenced ``nginx`` block of docs/deploy.md whose first line is ``first_line``."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    for body in re.findall(r"```nginx\n(.*?)```", text, re.S):
        if body.lstrip().startswith(first_line):
            return str(body)
    raise AssertionError(f"docs/deploy.md has no nginx block starting {first_line!r}")


def proxy_settings() -> str:
    """The documented ``/etc/nginx/nimbus-ws.conf``."""
    return _doc_block("# /etc/nginx/nimbus-ws.conf")


def upgrade_map() -> str:
    """The documented ``map $http_upgrade $connection_upgrade`` (for the ``http`` block)."""
    return _doc_block("# in the http { } block")


class Nginx:
    """One nginx master (and its worker) serving ``locations`` on ``127.0.0.1:port``."""

    def __init__(
        self,
        root: Path,
        locations: str,
        *,
        tls: tuple[Path, Path] | None = None,
        settings: str | None = None,
        port: int | None = None,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        (root / "nimbus-ws.conf").write_text(proxy_settings() if settings is None else settings)
        listen = f"127.0.0.1:{self.port}" + (" ssl" if tls else "")
        ssl_lines = f"ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};" if tls else ""
        temp = "\n    ".join(f"{k}_temp_path {root}/tmp-{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf = root / "nginx.conf"
        self.conf.write_text(
            f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {root}/access.log;
    {temp}
    {upgrade_map()}
    server {{
        listen {listen};
        server_name localhost;
        {ssl_lines}
        location = /ping {{ return 200 "pong\\n"; }}
{locations.replace("include /etc/nginx/nimbus-ws.conf;", f"include {root}/nimbus-ws.conf;")}
    }}
}}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            with contextlib.suppress(OSError):
                parts.append((self.root / name).read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def start(self, timeout: float = 20.0) -> Nginx:
        with (self.root / "stderr.log").open("wb") as err:
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.root), "-c", str(self.conf), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            if self._pong():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nginx did not listen on {self.port} within {timeout}s:\n{self.log()}")
            time.sleep(0.02)

    def _pong(self) -> bool:
        """True once a worker answers ``GET /ping`` (the master listens before it forks them)."""
        conn: http.client.HTTPConnection
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=2, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/ping")
            resp = conn.getresponse()
            return resp.status == 200 and resp.read() == b"pong\n"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def worker_uids(self) -> set[int]:
        """The real UIDs of the master's children (its workers)."""
        assert self.proc is not None
        uids: set[int] = set()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                status = (d / "status").read_text()
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                if int(fields["PPid"].strip()) == self.proc.pid:
                    uids.add(int(fields["Uid"].split()[0]))
        return uids

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: fast shutdown, the master stops its workers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
