"""Issue 13, "what held up and must keep holding": the gaps in the existing tests, attacked for real.

docs/security.md ("What held up, and the tests that keep it") maps each of
the 15 properties to its tests; most live elsewhere.  This file adds the ones
that had no test against the real server:

* static files: more traversal spellings (backslash, double and overlong
  encodings, ``;``, symlinked directories) and no directory listing;
* constant-time comparison: every secret the server checks from a client
  (bearer token in ``hello`` and on ``/metrics``, resume secret, channel
  ``resumeKey``) reaches ``hmac.compare_digest`` on the real server, and no
  server module compares a secret with ``==``/``in`` (an AST check -- no
  timing test: timings are flaky);
* resume: the channel ``resumeKey`` is >= 128 random bits too (the token's
  256-bit secret and its single use are in tests/reliability/test_rel_security.py);
* host keys are checked by default (no ``known_hosts`` configured, an empty
  ``HOME``): in process and through ``nimbus-ws serve``;
* ``open.command`` is refused under ``nimbus-ws serve --pty-command``;
* slowloris handshakes neither block a neighbour nor outlive the handshake
  timeout;
* a 100 KB header line and too many headers get 431;
* deep JSON from a client that has not authenticated yet is refused (4014);
* ``permessage-deflate`` is not negotiated by default (in process and CLI);
* the page never hands a string to an HTML parser (``innerHTML`` & co.):
  a static check over ``demo_site`` and ``web_runtime/js``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.core import (
    Auth,
    Hello,
    HelloCaps,
    Open,
    OpenErr,
    OpenOk,
    ResumeChannel,
    ResumeRequest,
    Target,
    Term,
    User,
    get_profile,
)
from nimbus_websocket.node_runtime.conformance.wire import Wire, WireClient
from nimbus_websocket.node_runtime.server import Server, SshOptions
from nimbus_websocket.node_runtime.server import app as app_mod
from reliability.rel_util import RawWs, ServerProcess
from support.sshd import TestSshd

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
P = get_profile("nimbus.v1")
ANY_CODE = set(range(1000, 5000))
TOKEN = "regression-token-" + "x" * 16


async def http(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
    """Send one hand-written request; ``(status, head, body)`` of what came back (status 0: nothing).

    The request is written from a task that ignores a reset: a server that refuses a
    request early may close before it has read all of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()

    sender = asyncio.create_task(send())
    data = b""
    try:
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(timeout):
                while b"\r\n\r\n" not in data or not _complete(data):
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    data += chunk
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, head, body


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return m is None or len(body) >= int(m.group(1))


def get(port: int, target: str | bytes, extra: str = "") -> bytes:
    raw = target.encode("latin-1") if isinstance(target, str) else target
    return b"GET " + raw + f" HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode("latin-1")


# ================================================================ static files


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A static root with a file next to it (``../secret.txt``), links out of it, and directories
    without ``index.html``."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<h1>page</h1>")
    (tmp_path / "secret.txt").write_text("OUTSIDE-SECRET")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("OUTSIDE-SECRET")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)  # a directory link out of the root
    (root / "passwd").symlink_to("/etc/passwd")  # a file link out of the root
    files = root / "files"
    (files / "deeper").mkdir(parents=True)
    (files / "alpha-listed.txt").write_text("alpha")
    (files / "deeper" / "beta-listed.txt").write_text("beta")
    return root


TRAVERSALS = [
    "/../secret.txt",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/%2e%2e/secret.txt",
    "/.%2e/secret.txt",
    "/%2e./secret.txt",
    "/..%5csecret.txt",
    "/..%5Csecret.txt",
    "/..\\secret.txt",
    "/files/..\\..\\secret.txt",
    "/%252e%252e/secret.txt",  # double-encoded: decoded once, it is a name, never a step up
    "/%252e%252e%252fsecret.txt",
    "/%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 for "." (not UTF-8: 400)
    "/%e0%80%ae%e0%80%ae/secret.txt",
    "/files/../../secret.txt",
    "/files/%2e%2e/%2e%2e/secret.txt",
    "/files/deeper/../../../secret.txt",
    "//../secret.txt",
    "/./../secret.txt",
    "/....//secret.txt",
    "/..;/secret.txt",
    "/..%00/secret.txt",
    "/%2e%2e%00/secret.txt",
    "/linkdir/secret.txt",
    "/linkdir/",
    "/passwd",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/%2F%2Fetc%2Fpasswd",
    "http://127.0.0.1/../secret.txt",  # absolute-form request target
    "/index.html/../../secret.txt",
]


@pytest.mark.parametrize("spelling", TRAVERSALS)
async def test_path_traversal_spellings_never_leave_the_root(make_server: Any, site: Path, spelling: str) -> None:
    srv: Server = await make_server(static_dir=str(site))
    status, _, body = await http(srv.port, get(srv.port, spelling))
    assert status in (400, 404), (spelling, status, body[:200])
    assert b"OUTSIDE-SECRET" not in body and b"root:" not in body, spelling


async def test_directories_are_never_listed(make_server: Any, site: Path, tmp_path: Path) -> None:
    srv: Server = await make_server(static_dir=str(site))
    p = srv.port
    for path in ("/files/", "/files", "/files/deeper/", "/files/deeper", "/files/?C=N;O=D", "/files/./", "/files//"):
        status, _, body = await http(p, get(p, path))
        assert status == 404, (path, status)
        assert b"listed" not in body and b"deeper" not in body, (path, body[:200])
    # a file inside is served (the refusal above is not a blanket one)
    status, _, body = await http(p, get(p, "/files/alpha-listed.txt"))
    assert (status, body) == (200, b"alpha")
    # a root without index.html: no listing of the root either
    bare = tmp_path / "bare"
    (bare / "sub").mkdir(parents=True)
    (bare / "only-file-listed.txt").write_text("x")
    srv2: Server = await make_server(static_dir=str(bare))
    for path in ("/", "/sub/", "//"):
        status, _, body = await http(srv2.port, get(srv2.port, path))
        assert status == 404 and b"listed" not in body and b"sub" not in body, (path, status, body[:200])


# ================================================================ constant-time comparison

#: Server-side modules: where a secret a client presents is checked.
SERVER_MODULES = [
    *sorted((REPO / "core").glob("server*.py")),
    REPO / "core" / "registry.py",
    REPO / "core" / "resume.py",
    *sorted((REPO / "node_runtime" / "server").rglob("*.py")),
]
SECRET_NAME = re.compile(r"token|secret|resume_?key|password|passphrase|credential|authorization", re.I)
#: Names that match SECRET_NAME but hold no secret (a file path, a flag, a count, a kind...).
NOT_A_SECRET = re.compile(r"_(file|files|env|path|len|count|bytes|kind|type|scheme|auth)$|^(has|n|num|max|min)_", re.I)


def _named(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_secret(node: ast.expr) -> bool:
    name = _named(node)
    return name is not None and bool(SECRET_NAME.search(name)) and not NOT_A_SECRET.search(name)


def _plain_value(node: ast.expr) -> bool:
    """``None``, a number, or a bool: comparing a secret with one is no timing leak."""
    return isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (int, float, bool)))


def _keyed_by_secret(node: ast.AST) -> bool:
    """``table[secret]`` or ``table.get(secret)``: a hash lookup, not a constant-time comparison."""
    if isinstance(node, ast.Subscript):
        return _is_secret(node.slice)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and bool(node.args)
        and _is_secret(node.args[0])
    )


def test_no_server_module_compares_a_secret_with_eq_or_in() -> None:
    """``==``, ``!=``, ``in`` on a secret-named value, or a dict lookup keyed by one, in the server's modules."""
    assert len(SERVER_MODULES) > 10
    found: list[str] = []
    for path in SERVER_MODULES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                for op, left, right in zip(node.ops, operands[:-1], operands[1:], strict=True):
                    if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                        continue
                    if (_is_secret(left) or _is_secret(right)) and not (_plain_value(left) or _plain_value(right)):
                        found.append(f"{where}: {ast.unparse(node)}")
            elif _keyed_by_secret(node):
                found.append(f"{where}: {ast.unparse(node)}")
    assert not found, "secrets compared in variable time:\n" + "\n".join(found)


def test_the_secret_checks_are_compare_digest() -> None:
    """The two comparison sites call ``hmac.compare_digest``; the resume checks go through them."""

    def calls(path: Path, func: str) -> set[str]:
        tree = ast.parse(path.read_text())
        (fn,) = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func]
        return {ast.unparse(c.func) for c in ast.walk(fn) if isinstance(c, ast.Call)}

    assert "hmac.compare_digest" in calls(REPO / "node_runtime" / "server" / "policy.py", "authenticate")
    assert "hmac.compare_digest" in calls(REPO / "core" / "resume.py", "secrets_equal")
    assert "secrets_equal" in calls(REPO / "core" / "server_session.py", "secret_matches")
    assert "secrets_equal" in calls(REPO / "core" / "server_session.py", "check_resume")


async def test_every_secret_a_client_presents_reaches_compare_digest(
    make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the real server: the bearer token (``hello``, ``/metrics``), the resume secret and the
    channel ``resumeKey`` a client sends are each an argument of ``hmac.compare_digest``."""
    seen: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.extend(x if isinstance(x, bytes) else str(x).encode() for x in (a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    srv: Server = await make_server(tokens=(TOKEN,), pty_command="exec cat", metrics=True)

    def compared(secret: str) -> bool:
        return secret.encode() in seen

    # the bearer token of a hello (a wrong one, then the right one)
    wrong_bearer = TOKEN[:-1] + "y"
    w = await Wire.open(srv.url, P, timeout=10)
    await w.send(Hello(auth=Auth("bearer", wrong_bearer), caps=HelloCaps("nimbus.v1", True)))
    assert await w.expect_close(ANY_CODE, "a wrong bearer token") == 4003
    assert compared(wrong_bearer)
    w = await Wire.open(srv.url, P, timeout=10)
    ok = await w.hello(Hello(auth=Auth("bearer", TOKEN), caps=HelloCaps("nimbus.v1", True)))
    await w.send(Open(1, Target("127.0.0.1", 22), User("u"), None))
    opened = await w.expect_ctl(OpenOk, 1)
    assert isinstance(opened, OpenOk) and ok.resume is not None and opened.resume_key
    w.abort()  # a drop: the session waits for its resume
    sid = ok.resume.token.split(".")[0]

    # a wrong resume secret for the real session id
    wrong_secret = secrets.token_urlsafe(32)
    r = await Wire.open(srv.url, P, timeout=10)
    await r.send(Hello(auth=Auth("bearer", TOKEN), caps=HelloCaps("nimbus.v1", True),
                       resume=ResumeRequest(f"{sid}.{wrong_secret}", (ResumeChannel(1, opened.resume_key, 0),))))
    assert await r.expect_close(ANY_CODE, "a wrong resume secret") == 4011
    assert compared(wrong_secret)

    # the right secret with a wrong resumeKey
    wrong_key = secrets.token_urlsafe(18)
    r = await Wire.open(srv.url, P, timeout=10)
    await r.send(Hello(auth=Auth("bearer", TOKEN), caps=HelloCaps("nimbus.v1", True),
                       resume=ResumeRequest(ok.resume.token, (ResumeChannel(1, wrong_key, 0),))))
    assert await r.expect_close(ANY_CODE, "a wrong resumeKey") == 4011
    assert compared(ok.resume.token.split(".")[1]) and compared(wrong_key)

    # the bearer token of /metrics
    metrics_try = TOKEN + "-metrics"
    status, _, _ = await http(srv.port, get(srv.port, "/metrics", f"Authorization: Bearer {metrics_try}\r\n"))
    assert status in (401, 403)
    assert compared(metrics_try)


# ================================================================ resume keys


async def test_channel_resume_keys_are_random_and_at_least_128_bits(make_server: Any) -> None:
    """The token's 256-bit secret: test_rel_security.py; the per-channel ``resumeKey`` the resume also needs."""
    srv: Server = await make_server(pty_command="exec cat")
    keys: set[str] = set()
    for _ in range(6):
        c = await WireClient.connect(srv.url)
        await c.hello()
        opened = await c.open(1, credit=0)
        key = opened.resume_key
        assert key and re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", key), key
        assert len(key.rstrip("=")) * 6 >= 128, key
        keys.add(key)
        await c.close()
    assert len(keys) == 6


# ================================================================ host keys


def _key_user(sshd: TestSshd) -> User:
    return User(sshd.username, {"type": "key", "private_key": sshd.client_key_text})


async def _open_code(url: str, target: Target, user: User) -> str:
    c = await WireClient.connect(url)
    try:
        await c.hello()
        await c.send(Open(1, target, user, Term(), command="true"))
        m = await c.until(lambda m: isinstance(m, (OpenOk, OpenErr)) and m.id == 1, 30)
        return m.code if isinstance(m, OpenErr) else "OPEN_OK"
    finally:
        await c.close()


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``HOME`` without ``.ssh``: the default ``known_hosts`` location holds no key."""
    home = tmp_path / "empty-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.mark.sshd
async def test_host_keys_are_checked_by_default(make_server: Any, sshd: TestSshd, empty_home: Path) -> None:
    """No ``known_hosts`` configured: the private sshd's key is unknown, the open fails with
    ``HOST_KEY_UNKNOWN`` -- the right user key notwithstanding; with its known_hosts, it opens."""
    target = Target(sshd.host, sshd.port)
    default: Server = await make_server(backend="ssh", allow_targets=(f"{sshd.host}:{sshd.port}",))
    assert await _open_code(default.url, target, _key_user(sshd)) == "HOST_KEY_UNKNOWN"
    known: Server = await make_server(
        backend="ssh", ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)), allow_targets=(f"{sshd.host}:{sshd.port}",)
    )
    assert await _open_code(known.url, target, _key_user(sshd)) == "OPEN_OK"


@pytest.mark.sshd
async def test_cli_checks_host_keys_without_known_hosts(sshd: TestSshd, empty_home: Path) -> None:
    env = {**os.environ, "HOME": str(empty_home)}
    async with ServerProcess(["--backend", "ssh", "--allow-target", f"{sshd.host}:{sshd.port}"], env=env) as sp:
        assert await _open_code(sp.url, Target(sshd.host, sshd.port), _key_user(sshd)) == "HOST_KEY_UNKNOWN"


# ================================================================ nimbus-ws serve defaults


async def test_cli_pty_command_refuses_open_command_and_negotiates_no_deflate() -> None:
    """``nimbus-ws serve --pty-command``: ``open.command`` is refused and not advertised, the
    operator's command runs; an offered ``permessage-deflate`` is not accepted."""
    async with ServerProcess(["--pty-command", "exec cat"]) as sp:
        c = await WireClient.connect(sp.url)
        ok = await c.hello()
        assert not ok.caps.command
        for i, cmd in enumerate(("id", "exec bash -i", "cat /etc/shadow"), 1):
            await c.send(Open(i, Target("127.0.0.1", 22), User("u"), None, cmd))
            m = await c.until(lambda m, i=i: isinstance(m, (OpenOk, OpenErr)) and m.id == i)
            assert isinstance(m, OpenErr) and m.code == "POLICY_DENIED", (cmd, m)
        await c.open(9, term=None)
        marker = "cat-" + secrets.token_hex(4) + "\n"
        await c.type(9, marker)
        await c.until_output(9, marker.encode())
        await c.close()
        offer = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
        r = await RawWs.connect(sp.port)
        try:
            assert await r.handshake(RawWs.upgrade_request(sp.port, headers=offer)) == 101
        finally:
            r.abort()
        assert b"sec-websocket-extensions" not in r.response.lower(), r.response


async def test_permessage_deflate_is_off_by_default(make_server: Any) -> None:
    srv: Server = await make_server(pty_command="exec cat")
    offers = [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "x-webkit-deflate-frame, permessage-deflate",
    ]
    for offer in offers:
        r = await RawWs.connect(srv.port)
        try:
            status = await r.handshake(RawWs.upgrade_request(srv.port, headers=[("Sec-WebSocket-Extensions", offer)]))
        finally:
            r.abort()
        assert status == 101, offer
        assert b"sec-websocket-extensions" not in r.response.lower(), (offer, r.response)


# ================================================================ slowloris handshakes


async def test_slowloris_handshakes_block_nobody_and_are_cut_by_the_handshake_timeout(
    make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients that trickle their upgrade request a byte at a time: a neighbour still connects and
    gets its shell, and each trickler is closed once the handshake timeout passes, however it
    keeps trickling.  The server's handshake timeout (``app.OPEN_TIMEOUT``, 10 s, applied in its
    connection's ``handshake``; ``websockets``' own ``open_timeout`` is off so that a streamed
    static file can stop the clock) is shortened to 1 s to stay fast."""
    assert 0 < app_mod.OPEN_TIMEOUT <= 10
    monkeypatch.setattr(app_mod, "OPEN_TIMEOUT", 1.0)
    srv: Server = await make_server(pty_command="exec cat")

    request = RawWs.upgrade_request(srv.port)
    lorises: list[RawWs] = []
    try:
        for _ in range(20):  # under the 64 connections per address
            r = await RawWs.connect(srv.port)
            await r.send(request[:20])
            lorises.append(r)
        t0 = time.monotonic()
        # the neighbour: upgrade, hello, a shell that echoes
        c = await WireClient.connect(srv.url)
        await c.hello()
        await c.open(1, term=None)
        await c.type(1, "neighbour\n")
        await c.until_output(1, b"neighbour\n")

        async def closed_after(r: RawWs) -> float:
            """Keep trickling (one byte per 0.1 s: pacing, not synchronisation) until the server closes."""
            for b in request[20:]:
                try:
                    await r.send(bytes([b]))
                    if await asyncio.wait_for(r.reader.read(1024), 0.1) == b"":
                        break
                except TimeoutError:
                    continue
                except ConnectionError:
                    break
            return time.monotonic() - t0

        cut = await asyncio.wait_for(asyncio.gather(*(closed_after(r) for r in lorises)), 20)
        assert max(cut) < 8.0, cut  # 1 s timeout, far below the ~20 s the request would take at this pace
        # the neighbour is still served
        await c.type(1, "still\n")
        await c.until_output(1, b"still\n")
        await c.close()
    finally:
        for r in lorises:
            r.abort()


# ================================================================ 431


async def test_100_kb_header_and_too_many_headers_get_431(make_server: Any, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("page")
    srv: Server = await make_server(pty_command="exec cat", static_dir=str(tmp_path))
    p = srv.port
    big = "X-Big: " + "a" * 100_000 + "\r\n"
    many = "".join(f"X-H{i}: v\r\n" for i in range(200))
    cookie = "Cookie: " + "; ".join(f"c{i}={'b' * 90}" for i in range(1100)) + "\r\n"  # ~100 KB, one line
    cases = {
        "100 KB header, upgrade": RawWs.upgrade_request(p).replace(b"\r\n\r\n", b"\r\n" + big.encode() + b"\r\n"),
        "100 KB header, page": get(p, "/", big),
        "100 KB cookie, upgrade": RawWs.upgrade_request(p).replace(b"\r\n\r\n", b"\r\n" + cookie.encode() + b"\r\n"),
        "200 headers, upgrade": RawWs.upgrade_request(p).replace(b"\r\n\r\n", b"\r\n" + many.encode() + b"\r\n"),
        "200 headers, page": get(p, "/", many),
    }
    statuses = {name: (await http(p, req))[0] for name, req in cases.items()}
    assert statuses == dict.fromkeys(cases, 431), statuses
    # a 100 KB request line: refused too (414)
    status, _, _ = await http(p, get(p, "/" + "a" * 100_000))
    assert status == 414, status
    # and the server still serves everyone else
    status, _, body = await http(p, get(p, "/"))
    assert (status, body) == (200, b"page")
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.close()


# ================================================================ deep JSON


async def test_deep_json_before_authentication_is_refused(make_server: Any) -> None:
    """Nesting past the limit (PROTOCOL.md 11) in the very first message, from a client without a
    token: 4014 at once; brackets inside a string are not nesting; a legitimate hello still works."""
    srv: Server = await make_server(tokens=(TOKEN,), pty_command="exec cat")
    bombs = {
        "arrays 100000 deep": '{"t":"hello","proto":1,"x":' + "[" * 100_000 + "]" * 100_000 + "}",
        "objects 10000 deep": '{"t":"hello","proto":1,"x":' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}",
        "never closed": "[" * 200_000,
        "just past the limit": '{"t":"hello","proto":1,"x":' + "[" * 9 + "]" * 9 + "}",
    }
    for name, frame in bombs.items():
        w = await Wire.open(srv.url, P, timeout=10)
        await w.send_frame(frame, note=name)
        assert await w.expect_close(ANY_CODE, name) == 4014, name
    w = await Wire.open(srv.url, P, timeout=10)
    hello = (
        '{"t":"hello","proto":1,"auth":{"scheme":"bearer","token":"' + TOKEN + '"},'
        '"caps":{"profile":"nimbus.v1"},"x":"' + "[" * 50_000 + '","y":[[[1]]]}'
    )
    await w.send_frame(hello, note="brackets in a string")
    ok = await w.expect_hello_ok()
    assert ok.server
    await w.close()


# ================================================================ textContent only

PAGE_SCRIPTS = sorted([*(REPO / "demo_site").glob("*.mjs"), *(REPO / "web_runtime" / "js").glob("*.mjs")])
#: What turns a string into markup or code: never given anything in the page's own scripts.
HTML_SINKS = re.compile(
    r"\.(innerHTML|outerHTML)\b"
    r"|\binsertAdjacentHTML\b"
    r"|\bdocument\s*\.\s*write(ln)?\b"
    r"|\bcreateContextualFragment\b"
    r"|\bsetHTMLUnsafe\b|\bparseHTMLUnsafe\b"
    r"|\bDOMParser\b"
    r"|\bsrcdoc\b"
    r"|\beval\s*\("
    r"|\bnew\s+Function\b"
    r"|\bsetAttribute\s*\(\s*[\"']on"
)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group().count("\n"), text, flags=re.DOTALL)
    return re.sub(r"(?m)^\s*//.*$", "", text)


def test_the_page_puts_server_strings_in_text_content_only() -> None:
    """Close reasons, ``open_err`` texts, policy reasons, refused URLs...: the page shows them with
    ``textContent``; no script of the page has an HTML sink (static check over ``demo_site/*.mjs``
    and ``web_runtime/js/*.mjs``, and the page itself has no inline script)."""
    names = {p.name for p in PAGE_SCRIPTS}
    assert {"app.mjs", "nimbus.mjs"} <= names, names
    found = []
    for path in PAGE_SCRIPTS:
        for n, line in enumerate(_strip_comments(path.read_text()).splitlines(), 1):
            if HTML_SINKS.search(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "HTML sinks in the page's scripts:\n" + "\n".join(found)
    app = (REPO / "demo_site" / "app.mjs").read_text()
    assert app.count(".textContent =") >= 5  # the page does show text: through textContent
    html = (REPO / "demo_site" / "index.html").read_text()
    for m in re.finditer(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.DOTALL | re.I):
        assert "src=" in m.group(1) and not m.group(2).strip(), m.group()  # no inline script
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I), "inline event handler in index.html"
