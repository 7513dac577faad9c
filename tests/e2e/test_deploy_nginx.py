"""Issue 14 item 2 in Chromium: the page behind real nginx, both prefix styles, over TLS.

Debian's nginx (``make setup`` installs it) runs the proxy recipe of
docs/deploy.md on a free loopback port; the reference server has a token
(nginx's workers are not the server's user, so anonymous access is refused
-- tests/e2e/test_deploy_nginx_wire.py), which the page gets as ``?token=``.

* (a) a prefix-stripping proxy (``location /term/ { proxy_pass
  http://127.0.0.1:PORT/; }``) needs nothing on the server: the page at
  ``/term/`` loads its assets under the prefix and opens
  ``ws://host/term/ws/ssh`` by itself; a command runs;
* (b) a proxy that keeps the prefix, and ``--base-path /term/``: the same,
  and ``/term`` (no slash) lands on the page;
* (c) TLS terminated at nginx (a certificate the test makes), the server on
  plain http with ``--allow-origin https://...``: the page at
  ``https://.../term/`` opens ``wss://.../term/ws/ssh``, a command runs, a
  reload resumes the same shell.

Every request the page made went through nginx under ``/term/`` (none
escaped to ``/``), and the server logged the browser as the client
(``--trust-proxy 127.0.0.1``: ``via=`` the proxy).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import PTY_COMMAND, ServerThread
from nginx_proc import Nginx, have_nginx

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not have_nginx(), reason="nginx is not installed (make setup installs Debian's nginx)"),
]

TOKEN = "deploy-" + secrets.token_hex(12)


class _Records(logging.Handler):
    """The server's ``connect`` log records (the server runs in another thread)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.connects: list[tuple[str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "connect":
            self.connects.append((str(getattr(record, "peer", "")), getattr(record, "via", None)))


@pytest.fixture
def records() -> Iterator[_Records]:
    logger = logging.getLogger("nimbus_websocket.server")
    handler = _Records()
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM), made now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _watch(page: Any) -> tuple[list[str], list[str]]:
    """Every request URL and every WebSocket URL ``page`` opens."""
    requests: list[str] = []
    sockets: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("websocket", lambda ws: sockets.append(ws.url))
    return requests, sockets


def _run_page(
    context: Any, nginx: Nginx, entry: str, server: ServerThread, records: _Records
) -> tuple[Demo, list[str], list[str]]:
    page = context.new_page()
    requests, sockets = _watch(page)
    demo = Demo(page).open(f"{nginx.base}{entry}?token={TOKEN}")
    demo.wait_ready()
    demo.set_prompt()
    demo.run("echo behind-$((6*7))-nginx", r"^behind-42-nginx$")
    scheme = "wss" if nginx.tls else "ws"
    assert sockets and set(sockets) == {f"{scheme}://127.0.0.1:{nginx.port}/term/ws/ssh"}, sockets
    outside = [u for u in requests[1:] if not u.startswith(f"{nginx.base}/term/")]  # [0]: the address typed
    assert outside == [], outside  # every asset, the runtime and the wheel under the prefix
    assert any(u.startswith(f"{nginx.base}/term/assets/") and u.endswith("pyodide.asm.wasm") for u in requests), requests
    # --trust-proxy 127.0.0.1: the browser (127.0.0.1, as nginx appended) is the client
    assert records.connects, "no connect logged"
    peer, via = records.connects[-1]
    assert peer == "127.0.0.1" and via is not None and via.startswith("127.0.0.1:"), records.connects
    return demo, requests, sockets


def test_a_prefix_stripping_proxy_just_works(context: Any, site_dir: Path, tmp_path: Path, records: _Records) -> None:
    server = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND, tokens=(TOKEN,), trust_proxy=("127.0.0.1",)).start()
    nginx = Nginx(
        tmp_path / "nginx",
        f"""
        location /term/ {{
            proxy_pass http://127.0.0.1:{server.server.port}/;
            include /etc/nginx/nimbus-ws.conf;
        }}""",
    )
    try:
        nginx.start()
        _run_page(context, nginx, "/term/", server, records)
    except BaseException:
        print(nginx.log())
        raise
    finally:
        nginx.stop()
        server.stop()


def test_a_proxy_keeping_the_prefix_with_base_path(context: Any, site_dir: Path, tmp_path: Path, records: _Records) -> None:
    server = ServerThread(
        static_dir=str(site_dir), pty_command=PTY_COMMAND, tokens=(TOKEN,), trust_proxy=("127.0.0.1",), base_path="/term/"
    ).start()
    nginx = Nginx(
        tmp_path / "nginx",
        f"""
        location /term {{
            proxy_pass http://127.0.0.1:{server.server.port};
            include /etc/nginx/nimbus-ws.conf;
        }}
        location / {{
            proxy_pass http://127.0.0.1:{server.server.port};
            include /etc/nginx/nimbus-ws.conf;
        }}""",
    )
    try:
        nginx.start()
        # /term (no slash) is the server's 301 to /term/, through nginx
        demo, _, _ = _run_page(context, nginx, "/term", server, records)
        assert demo.page.url.startswith(f"{nginx.base}/term/"), demo.page.url
        # outside the prefix the server has nothing, even through a proxy passing everything
        status = demo.page.evaluate("async (u) => (await fetch(u)).status", f"{nginx.base}/index.html")
        assert status == 404
    except BaseException:
        print(nginx.log())
        raise
    finally:
        nginx.stop()
        server.stop()


def test_tls_at_nginx_and_a_reload_resumes(browser: Any, site_dir: Path, tmp_path: Path, records: _Records) -> None:
    cert, key = _self_signed(tmp_path)
    nginx = Nginx(tmp_path / "nginx", "", tls=(cert, key))  # port drawn first: the origin names it
    server = ServerThread(
        static_dir=str(site_dir), pty_command=PTY_COMMAND, tokens=(TOKEN,), trust_proxy=("127.0.0.1",),
        allow_origins=(f"https://127.0.0.1:{nginx.port}",),
    ).start()
    nginx = Nginx(
        tmp_path / "nginx",
        f"""
        location /term/ {{
            proxy_pass http://127.0.0.1:{server.server.port}/;
            include /etc/nginx/nimbus-ws.conf;
        }}""",
        tls=(cert, key),
        port=nginx.port,
    )
    ctx = browser.new_context(viewport={"width": 1000, "height": 620}, ignore_https_errors=True)
    try:
        nginx.start()
        demo, _, sockets = _run_page(ctx, nginx, "/term/", server, records)
        pid = demo.shell_pid()
        demo.page.reload()
        demo.wait_ready()
        assert demo.shell_pid() == pid  # the same shell: resumed through the proxy
        assert set(sockets) == {f"wss://127.0.0.1:{nginx.port}/term/ws/ssh"}, sockets
    except BaseException:
        print(nginx.log())
        raise
    finally:
        ctx.close()
        nginx.stop()
        server.stop()
