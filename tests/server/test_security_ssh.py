"""Issue 13, items 3, 4 and 13: the SSH backend, attacked against the private sshd.

* 3 -- a client gets in with its own credentials only: the server process's
  ``~/.ssh/id_*`` and ``$SSH_AUTH_SOCK`` agent (both hold a key the sshd
  accepts) are never offered unless ``--ssh-server-credentials`` names the
  target.  The server runs as a subprocess so that HOME and SSH_AUTH_SOCK are
  really its own.
* 4 -- a key whose KDF cost is over the cap is refused at once; a slow but
  allowed decryption runs off the event loop (a neighbour's pings keep flowing).
* 13 -- by default only loopback port 22; closed, silent and non-SSH ports
  give the client the same text (details in the server log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.core import Open, OpenErr, OpenOk, Ping, Pong, Target, Term, User
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server, SshOptions
from nimbus_websocket.node_runtime.server.ssh_backend import UNREACHABLE_MESSAGE
from nimbus_websocket.node_runtime.server.ssh_keys import KeyCaps
from reliability.rel_util import ServerProcess
from support.sshd import TestSshd
from test_ssh_keys import pkcs8_pbkdf2, set_openssh_rounds, ssh_keygen

pytestmark = [pytest.mark.timeout(120), pytest.mark.sshd]

TOKEN = "ssh-security-test-token"


async def open_result(c: WireClient, cid: int, target: Target, user: User, timeout: float = 30) -> OpenOk | OpenErr:
    await c.send(Open(cid, target, user, Term(), command="true"))
    m = await c.until(lambda m: isinstance(m, (OpenOk, OpenErr)) and m.id == cid, timeout)
    assert isinstance(m, (OpenOk, OpenErr))
    return m


# ================================================================ item 3


@pytest.fixture
def operator(tmp_path: Path, sshd: TestSshd) -> Iterator[dict[str, str]]:
    """A HOME whose ``.ssh/id_ed25519`` logs in to the sshd, and an ssh-agent holding that key."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent / ssh-add not installed")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    key = home / ".ssh" / "id_ed25519"
    key.write_text(sshd.client_key_text)
    key.chmod(0o600)
    (home / ".ssh" / "id_ed25519.pub").write_text(sshd.client_public_key_text + "\n")
    empty_home = tmp_path / "empty-home"
    (empty_home / ".ssh").mkdir(parents=True, mode=0o700)
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert agent.poll() is None, "ssh-agent exited"
            assert time.monotonic() < deadline, "ssh-agent socket never appeared"
            time.sleep(0.01)
        env = {**os.environ, "SSH_AUTH_SOCK": sock}
        subprocess.run(["ssh-add", str(key)], check=True, capture_output=True, timeout=30, env=env)
        listed = subprocess.run(["ssh-add", "-L"], capture_output=True, text=True, timeout=30, env=env)
        assert sshd.client_public_key_text.split()[1] in listed.stdout
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        yield {"home": str(home), "empty_home": str(empty_home), "sock": sock, "token_file": str(token_file)}
    finally:
        agent.terminate()
        agent.wait(10)


def server_args(sshd: TestSshd, op: dict[str, str], *extra: str) -> list[str]:
    return [
        "--backend", "ssh", "--token-file", op["token_file"], "--known-hosts", str(sshd.known_hosts_path),
        "--allow-target", f"{sshd.host}:{sshd.port}", *extra,
    ]


def server_env(home: str, sock: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "NIMBUS_TOKEN")}
    env["HOME"] = home
    if sock:
        env["SSH_AUTH_SOCK"] = sock
    return env


async def test_clients_never_get_the_servers_own_ssh_identity(
    sshd: TestSshd, operator: dict[str, str], tmp_path: Path
) -> None:
    """HOME holds a key the sshd accepts and SSH_AUTH_SOCK an agent with it; nothing uses them."""
    stranger = ssh_keygen(tmp_path, None)  # a well-formed key the sshd does not know
    target = Target(sshd.host, sshd.port)
    # Rules that name other targets or another user do not enable this one.
    args = server_args(
        sshd, operator, "--ssh-server-credentials", f"{sshd.host}:1", "--ssh-server-credentials", f"nobody@{sshd.host}:{sshd.port}"
    )
    async with ServerProcess(args, env=server_env(operator["home"], operator["sock"])) as sp:
        c = await WireClient.connect(sp.url)
        await c.hello(TOKEN)
        tries: list[tuple[dict[str, Any], str, str]] = [
            ({}, "AUTH_FAILED", "auth type required"),
            ({"password": "x"}, "AUTH_FAILED", "auth type required"),
            ({"type": "agent"}, "POLICY_DENIED", "not enabled"),
            ({"type": "none"}, "AUTH_FAILED", "unknown auth type"),
            ({"type": "password", "password": "wrong"}, "AUTH_FAILED", "SSH authentication failed"),
            ({"type": "password"}, "AUTH_FAILED", "password"),
            ({"type": "key", "private_key": stranger}, "AUTH_FAILED", "SSH authentication failed"),
            ({"type": "key", "private_key": ""}, "AUTH_FAILED", "not a PEM"),
        ]
        for i, (auth, code, text) in enumerate(tries, 1):
            m = await open_result(c, i, target, User(sshd.username, auth))
            assert isinstance(m, OpenErr), (auth, m)
            assert m.code == code and text in m.msg, (auth, m)
        # the client's own key still works on the same server
        ok = await open_result(c, 50, target, User(sshd.username, {"type": "key", "private_key": sshd.client_key_text}))
        assert isinstance(ok, OpenOk), ok
        await c.close()


@pytest.mark.parametrize("where", ["agent", "default-keys"])
async def test_server_credentials_work_only_where_the_operator_enabled_them(
    sshd: TestSshd, operator: dict[str, str], where: str
) -> None:
    """With ``--ssh-server-credentials`` for the target, ``{"type": "agent"}`` logs in with
    the server's agent (HOME without keys) or its default keys (no agent)."""
    env = server_env(operator["empty_home"], operator["sock"]) if where == "agent" else server_env(operator["home"], None)
    args = server_args(sshd, operator, "--ssh-server-credentials", f"{sshd.username}@{sshd.host}:{sshd.port}")
    async with ServerProcess(args, env=env) as sp:
        c = await WireClient.connect(sp.url)
        await c.hello(TOKEN)
        ok = await open_result(c, 1, Target(sshd.host, sshd.port), User(sshd.username, {"type": "agent"}))
        assert isinstance(ok, OpenOk), ok
        # a user the rule does not name
        other = await open_result(c, 2, Target(sshd.host, sshd.port), User("nimbus-nobody", {"type": "agent"}))
        assert isinstance(other, OpenErr) and other.code == "POLICY_DENIED", other
        await c.close()
        assert any("event=ssh_server_credentials " in line for line in sp.lines), sp.lines[-10:]


def test_malformed_server_credentials_rules_stop_the_server() -> None:
    import sys

    for rule in ("db1", "db1:", "@db1:22", "db1:99999", "::1:22"):
        r = subprocess.run(
            [sys.executable, "-m", "nimbus_websocket", "serve", "--backend", "ssh", "--ssh-server-credentials", rule],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert r.returncode != 0 and "--ssh-server-credentials" in r.stderr, (rule, r.stderr)


# ================================================================ item 4


@pytest.fixture
async def key_server(make_server: Any, sshd: TestSshd) -> Server:
    srv: Server = await make_server(
        backend="ssh",
        ssh=SshOptions(known_hosts=str(sshd.known_hosts_path), key_caps=KeyCaps(max_pbkdf2_iterations=50_000_000)),
        allow_targets=(f"{sshd.host}:{sshd.port}",),
    )
    return srv


async def test_a_key_over_the_kdf_cap_is_refused_at_once(
    make_server: Any, sshd: TestSshd, tmp_path: Path
) -> None:
    srv: Server = await make_server(
        backend="ssh", ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)), allow_targets=(f"{sshd.host}:{sshd.port}",)
    )
    bcrypt_bomb = set_openssh_rounds(ssh_keygen(tmp_path, 16), 2**32 - 1)
    pbkdf2_bomb = pkcs8_pbkdf2(1, claimed=2**31 - 1)
    c = await WireClient.connect(srv.url)
    await c.hello()
    for i, (key, what) in enumerate([(bcrypt_bomb, "bcrypt rounds"), (pbkdf2_bomb, "PBKDF2 iterations")], 1):
        t = time.perf_counter()
        m = await open_result(c, i, Target(sshd.host, sshd.port), User(sshd.username, {"type": "key", "private_key": key, "passphrase": "pass"}))
        assert isinstance(m, OpenErr) and m.code == "AUTH_FAILED" and what in m.msg, m
        assert time.perf_counter() - t < 5  # refused before any decryption (which would take hours)
    # and the server is still responsive
    await c.send(Ping(1.0))
    await c.until(lambda m: isinstance(m, Pong), 5)
    await c.close()


async def test_neighbours_pings_flow_while_a_slow_key_decrypts(key_server: Server, sshd: TestSshd) -> None:
    """A PBKDF2 count the operator allowed (here 12 M, about 1.5 s of CPU) runs in a worker
    thread: another connection's ping round trips stay far below the decryption time."""
    slow = await asyncio.to_thread(pkcs8_pbkdf2, 12_000_000, "pass", key_text=sshd.client_key_text)
    neighbour = await WireClient.connect(key_server.url)
    await neighbour.hello()
    victim = await WireClient.connect(key_server.url)
    await victim.hello()
    user = User(sshd.username, {"type": "key", "private_key": slow, "passphrase": "pass"})
    started = time.perf_counter()
    opening = asyncio.create_task(open_result(victim, 1, Target(sshd.host, sshd.port), user, timeout=90))
    rtts: list[float] = []
    ts = 0.0
    while not opening.done():
        ts += 1
        t = time.perf_counter()
        await neighbour.send(Ping(ts))
        await neighbour.until(lambda m, ts=ts: isinstance(m, Pong) and m.ts == ts, 30)  # type: ignore[misc]
        rtts.append(time.perf_counter() - t)
        await asyncio.sleep(0.05)  # pacing under the 50/s control-rate limit, not synchronisation
    took = time.perf_counter() - started
    m = opening.result()
    assert isinstance(m, OpenOk), m  # the key was decrypted and logged in
    assert len(rtts) >= 3, (rtts, took)  # the pings overlapped the decryption
    assert max(rtts) < 0.5, (max(rtts), took)
    for c in (neighbour, victim):
        await c.close()


# ================================================================ item 13


@pytest.fixture
async def listeners() -> AsyncIterator[dict[str, int]]:
    """A closed port, a port that answers garbage and closes, and one that never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    g = await asyncio.start_server(garbage, "127.0.0.1", 0)
    s = await asyncio.start_server(silent, "127.0.0.1", 0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    yield {
        "closed": closed,
        "garbage": g.sockets[0].getsockname()[1],
        "silent": s.sockets[0].getsockname()[1],
    }
    for w in held:
        w.close()
    for srv in (g, s):
        srv.close()
        await srv.wait_closed()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_unreachable_targets_all_look_the_same(
    make_server: Any, sshd: TestSshd, listeners: dict[str, int]
) -> None:
    srv: Server = await make_server(
        backend="ssh",
        ssh=SshOptions(known_hosts=str(sshd.known_hosts_path), connect_timeout=2.0),
        allow_targets=("127.0.0.1:*",),
    )
    logger = logging.getLogger("nimbus_websocket.server.ssh")
    handler = _Records()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        c = await WireClient.connect(srv.url)
        await c.hello()
        user = User(sshd.username, {"type": "key", "private_key": sshd.client_key_text})
        answers: dict[str, tuple[str, str]] = {}
        for i, (name, port) in enumerate(listeners.items(), 1):
            m = await open_result(c, i, Target("127.0.0.1", port), user)
            assert isinstance(m, OpenErr), (name, m)
            answers[name] = (m.code, m.msg)
        assert set(answers.values()) == {("TARGET_UNREACHABLE", UNREACHABLE_MESSAGE)}, answers
        # an SSH server with bad credentials is (necessarily) told apart -- by the auth failure only
        bad = await open_result(c, 9, Target(sshd.host, sshd.port), User(sshd.username, {"type": "password", "password": "no"}))
        assert isinstance(bad, OpenErr) and bad.code == "AUTH_FAILED", bad
        await c.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [r for r in handler.records if getattr(r, "event", "") == "ssh_unreachable"]
    assert len(lines) == 3, [r.__dict__ for r in handler.records]
    for r in lines:
        assert r.exc_info is None and r.levelno == logging.WARNING
        assert getattr(r, "reason", "") and "\n" not in r.getMessage()
    reasons = {getattr(r, "target", ""): getattr(r, "reason", "") for r in lines}
    assert len(set(reasons.values())) == 3, reasons  # the log keeps the real, different reasons


async def test_default_targets_are_loopback_port_22_only(make_server: Any, sshd: TestSshd) -> None:
    srv: Server = await make_server(backend="ssh", ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)))
    c = await WireClient.connect(srv.url)
    await c.hello()
    user = User(sshd.username, {"type": "key", "private_key": sshd.client_key_text})
    codes = {}
    tries = [("127.0.0.1", sshd.port), ("127.0.0.1", 1), ("127.0.0.1", 2222), ("localhost", 8765), ("::1", 0), ("192.0.2.1", 22)]
    for i, (host, port) in enumerate(tries, 1):
        if port == 22 and host != "192.0.2.1":
            continue
        m = await open_result(c, i, Target(host, port), user)
        codes[(host, port)] = m.code if isinstance(m, OpenErr) else "OPEN_OK"
    expected_denied = {k for k in codes if not (k[1] == 22 and k[0] != "192.0.2.1")}
    assert all(codes[k] == "POLICY_DENIED" for k in expected_denied), codes
    # port 22 on loopback passes the policy (the auth check comes next: no type -> AUTH_FAILED)
    m = await open_result(c, 20, Target("127.0.0.1", 22), User("root", {}))
    assert isinstance(m, OpenErr) and m.code == "AUTH_FAILED", m
    await c.close()
