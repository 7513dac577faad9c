"""Issue 13, item 6, in Chromium: the page never sends credentials to a foreign WebSocket,
and ``?token=`` leaves the address bar and never sits in storage in clear.

* ``?ws=`` (or the form's WebSocket URL) pointing at an attacker's listener is
  refused in the page, visibly, and the listener gets no connection -- under
  the reference server (whose CSP would also block it) and from a plain static
  server without any CSP (only the page's own check stands);
* ``?token=T``: the address bar and every later fetch see no token, no request
  carries a Referer, sessionStorage/localStorage hold nothing containing ``T``,
  the token-protected server runs a command, and a reload resumes the same
  shell (the token is kept wrapped under a non-extractable WebCrypto key);
* without WebCrypto the token is kept in memory only: a reload asks for it,
  and typing it resumes the same shell.
"""

from __future__ import annotations

import http.server
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import PTY_COMMAND, ServerThread

pytestmark = pytest.mark.timeout(180)

#: Every value of both storages of the page, as one string.
STORAGE_DUMP = """() => JSON.stringify([
  Object.entries(sessionStorage), Object.entries(localStorage)])"""

#: Records location.href at every fetch() and every WebSocket the page creates.
RECORD_HREFS = """(() => {
  const hrefs = (window.__hrefs = []);
  const f = window.fetch;
  window.fetch = function (...a) { hrefs.push(['fetch', location.href]); return f.apply(this, a); };
  const W = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = new Proxy(W, { construct(t, args) {
    window.__sockets.push(String(args[0])); hrefs.push(['ws', location.href]); return new t(...args); } });
})();"""

#: A context without WebCrypto (as on http:// to a LAN address: not a secure context).
NO_WEBCRYPTO = "Object.defineProperty(Crypto.prototype, 'subtle', {configurable: true, get: () => undefined});"


class Listener:
    """An attacker's TCP listener on 127.0.0.1: counts every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    self.accepted.append(conn.recv(4096))
                except OSError:
                    self.accepted.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def attacker() -> Iterator[Listener]:
    lst = Listener()
    try:
        yield lst
    finally:
        lst.close()




def wait_refusals(demo: Demo, n: int) -> str:
    """Until the page refused ``n`` WebSocket URLs and shows the form; returns the note."""
    demo.wait(
        "(n) => window.nimbusDemo.refusals >= n && window.nimbusDemo.phase === 'form'",
        n,
        timeout=60_000,
        what=f"refusal #{n}",
    )
    assert demo.page.is_visible("#connect-note")
    return str(demo.page.inner_text("#connect-note"))


def submit(demo: Demo) -> None:
    demo.page.click("#connect-form button[type=submit]")


def test_foreign_ws_is_refused_and_the_password_never_leaves(
    context: Any, site_server: ServerThread, attacker: Listener
) -> None:
    evil = f"ws://127.0.0.1:{attacker.port}/x"
    page = context.new_page()
    page.add_init_script(RECORD_HREFS)
    demo = Demo(page).open(f"{site_server.http_url}?target=127.0.0.1:22&user=alice&ws={evil}")
    note = wait_refusals(demo, 1)
    assert "Refused to connect" in note and evil in note, note
    assert "Refused to connect" in page.inner_text("#st-msg")
    # The user types the SSH password into the gateway's own form and submits.
    assert page.input_value("input[name=ws]") == evil
    page.fill("input[name=password]", "hunter2-secret")
    submit(demo)
    wait_refusals(demo, 2)
    # Other spellings of a foreign endpoint, typed into the form.
    port = site_server.server.port
    foreign = [
        f"//127.0.0.1:{attacker.port}/x",  # protocol-relative
        f"http://127.0.0.1:{attacker.port}/x",
        f"wss://127.0.0.1:{port}/ws/ssh",  # this host and port, another scheme
        f"ws://localhost:{port}/ws/ssh",  # another host name for the same server
        f"ws://u:p@127.0.0.1:{port}/ws/ssh",  # credentials in the URL
        "ws://evil.example/ws/ssh",
    ]
    for n, url in enumerate(foreign, start=3):
        page.fill("input[name=ws]", url)
        page.fill("input[name=password]", "hunter2-secret")
        submit(demo)
        note = wait_refusals(demo, n)
        assert "Refused to connect" in note, (url, note)
    assert page.evaluate("() => window.__sockets") == []
    # The same origin, spelled relatively, still works (the PTY backend: a local shell).
    page.check("input[name=mode][value=local]")
    page.fill("input[name=ws]", "/ws/ssh")
    submit(demo)
    demo.wait_ready()
    demo.run("echo same-origin-$((6*7))", r"^same-origin-42$")
    assert page.evaluate("() => window.__sockets") == [f"ws://127.0.0.1:{port}/ws/ssh"]
    assert attacker.accepted == [], attacker.accepted


class _Recorder(http.server.SimpleHTTPRequestHandler):
    """A static server with no security headers (no CSP): records path and Referer."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }
    seen: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Referer")))
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


def test_foreign_ws_is_refused_without_any_csp(context: Any, site_dir: Path, attacker: Listener) -> None:
    """Served by a server that sends no CSP and no Referrer-Policy: only the page's check stands."""
    seen: list[tuple[str, str | None]] = []
    handler = type("H", (_Recorder,), {"seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(site_dir)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    token = "tok-" + secrets.token_hex(16)
    try:
        page = context.new_page()
        page.add_init_script(RECORD_HREFS)
        evil = f"ws://127.0.0.1:{attacker.port}/x"
        response = page.goto(
            f"http://127.0.0.1:{httpd.server_address[1]}/?target=127.0.0.1:22&user=alice&token={token}&ws={evil}"
        )
        assert response is not None and "content-security-policy" not in response.headers
        demo = Demo(page)
        note = wait_refusals(demo, 1)
        assert "Refused to connect" in note, note
        page.fill("input[name=password]", "hunter2-secret")
        submit(demo)
        wait_refusals(demo, 2)
        assert page.evaluate("() => window.__sockets") == []
        assert token not in page.url
        assert [h for h in page.evaluate("() => window.__hrefs") if token in h[1]] == []
        # No request after the document's own carried the token, and none had a Referer.
        assert seen and token in seen[0][0]
        assert [p for p, _ in seen[1:] if token in p] == []
        assert [(p, r) for p, r in seen if r is not None] == []
        assert attacker.accepted == [], attacker.accepted
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def token_server(site_dir: Path) -> Iterator[tuple[ServerThread, str]]:
    token = "tok-" + secrets.token_hex(16)
    st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND, tokens=(token,)).start()
    try:
        yield st, token
    finally:
        st.stop()


def assert_token_gone(demo: Demo, token: str) -> None:
    assert token not in demo.page.url and "token=" not in demo.page.url, demo.page.url
    dump = demo.js(STORAGE_DUMP)
    assert token not in dump, dump


def test_url_token_leaves_the_address_bar_and_storage_and_reload_resumes(
    context: Any, token_server: tuple[ServerThread, str]
) -> None:
    server, token = token_server
    page = context.new_page()
    page.add_init_script(RECORD_HREFS)
    referers: list[str] = []
    page.on("request", lambda r: referers.extend(v for k, v in r.headers.items() if k.lower() == "referer" and v))
    demo = Demo(page).open(f"{server.http_url}?x=1&token={token}")
    demo.wait_ready()
    assert "x=1" in page.url
    assert_token_gone(demo, token)
    hrefs = page.evaluate("() => window.__hrefs")
    assert [h for h in hrefs if h[0] == "fetch"], "the page fetched nothing?"
    assert [h for h in hrefs if token in h[1]] == [], hrefs  # no fetch and no socket saw it
    assert referers == [], referers
    assert demo.demo("tokenStorage") == "wrapped"
    # The wrapping key is a non-extractable AES-GCM key in IndexedDB.
    key = demo.js(
        """() => new Promise((resolve, reject) => {
            const req = indexedDB.open('nimbus-demo');
            req.onerror = () => reject(req.error);
            req.onsuccess = () => {
              const get = req.result.transaction('keys').objectStore('keys').get('token-wrap');
              get.onsuccess = async () => {
                const k = get.result;
                let exported = 'no';
                try { await crypto.subtle.exportKey('raw', k); exported = 'yes'; } catch (e) { exported = e.name; }
                resolve({type: k.type, alg: k.algorithm.name, extractable: k.extractable, exported});
              };
            };
        })"""
    )
    assert key == {"type": "secret", "alg": "AES-GCM", "extractable": False, "exported": "InvalidAccessError"}
    demo.set_prompt()
    pid = demo.shell_pid()
    demo.run("echo token-ok-$((6*7))", r"^token-ok-42$")
    demo.wait_prompt()
    page.reload()
    demo.wait_ready()
    assert demo.demo("resumed") is True, demo.demo("events")
    assert demo.shell_pid() == pid
    assert_token_gone(demo, token)
    assert referers == [], referers


def test_without_webcrypto_the_token_stays_in_memory_and_a_reload_asks_for_it(
    context: Any, token_server: tuple[ServerThread, str]
) -> None:
    server, token = token_server
    page = context.new_page()
    page.add_init_script(NO_WEBCRYPTO)
    demo = Demo(page).open(f"{server.http_url}?token={token}")
    demo.wait_ready()
    assert demo.demo("tokenStorage") == "memory"
    assert_token_gone(demo, token)
    demo.set_prompt()
    pid = demo.shell_pid()
    page.reload()
    # No token to send: the page does not try (no 4003), it asks.
    demo.wait("() => window.nimbusDemo.phase === 'form'", timeout=60_000, what="the form")
    assert "bearer token" in page.inner_text("#connect-note")
    assert demo.demo("conn") is None
    page.fill("input[name=token]", token)
    submit(demo)
    demo.wait_ready()
    assert demo.demo("resumed") is True, demo.demo("events")
    assert demo.shell_pid() == pid
    assert_token_gone(demo, token)
