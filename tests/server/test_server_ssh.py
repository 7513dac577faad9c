"""The SSH backend against a real OpenSSH sshd on 127.0.0.1 (tests/support/sshd.py)."""

from __future__ import annotations

import pytest
from nimbus_websocket.core import OpenErr, Resize, Signal, Target, Term, User
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server, SshOptions
from nimbus_websocket.node_runtime.server.ssh_backend import UNREACHABLE_MESSAGE
from support.sshd import TestSshd

pytestmark = [pytest.mark.timeout(60), pytest.mark.sshd]


@pytest.fixture
async def ssh_server(make_server, sshd: TestSshd) -> Server:  # type: ignore[no-untyped-def]
    # The default allow-list is loopback port 22 only: the private sshd's random port is named.
    return await make_server(
        backend="ssh", ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)), allow_targets=(f"{sshd.host}:{sshd.port}",)
    )


def _key_user(sshd: TestSshd) -> User:
    return User(sshd.username, {"type": "key", "private_key": sshd.client_key_text})


async def test_ssh_shell_resize_interrupt_exit(ssh_server: Server, sshd: TestSshd) -> None:
    c = await WireClient.connect(ssh_server.url)
    await c.hello()
    await c.open(1, target=Target(sshd.host, sshd.port), user=_key_user(sshd), term=Term(100, 30, {"TERM": "xterm-256color"}))
    await c.type(1, "stty size; echo ssh-$((6*7))\n")
    await c.until_output(1, b"30 100")
    await c.until_output(1, b"ssh-42")
    await c.send(Resize(1, 120, 40))
    await c.type(1, "stty size\n")
    await c.until_output(1, b"40 120")
    # The job prints a marker once it runs in the foreground; the echo of the
    # typed line cannot match it (the quotes split the word).
    await c.type(1, "sh -c 'echo job-sta\"\"rted; exec sleep 100'\n")
    await c.until_output(1, b"job-started")
    await c.send(Signal(1, "INT"))  # a PTY's Ctrl-C: delivered as \x03
    await c.type(1, "echo rc=$?\n")
    await c.until_match(1, rb"rc=13\d")
    await c.type(1, "exit 5\n")
    assert (await c.until_exit(1)).code == 5
    await c.close()


async def test_ssh_password_auth(ssh_server: Server, sshd: TestSshd) -> None:
    if sshd.password_user is None:
        pytest.skip("no password user (not root)")
    c = await WireClient.connect(ssh_server.url)
    await c.hello()
    user = User(sshd.password_user, {"type": "password", "password": sshd.password})
    await c.open(1, target=Target(sshd.host, sshd.port), user=user)
    await c.type(1, "whoami\n")
    await c.until_output(1, sshd.password_user.encode() + b"\r\n")
    await c.close()


async def _open_err(c: WireClient, target: Target, user: User) -> OpenErr:
    from nimbus_websocket.core import Open

    await c.send(Open(1, target, user, Term()))
    m = await c.until(lambda m: isinstance(m, OpenErr) or getattr(m, "t", "") == "open_ok")
    assert isinstance(m, OpenErr), m
    return m


async def test_ssh_failures_are_open_err(make_server, ssh_server: Server, sshd: TestSshd) -> None:  # type: ignore[no-untyped-def]
    c = await WireClient.connect(ssh_server.url)
    await c.hello()
    bad = User(sshd.username, {"type": "password", "password": "nope"})
    assert (await _open_err(c, Target(sshd.host, sshd.port), bad)).code == "AUTH_FAILED"
    # only the allow-listed target
    assert (await _open_err(c, Target("127.0.0.1", 1), _key_user(sshd))).code == "POLICY_DENIED"
    assert (await _open_err(c, Target("192.0.2.1", 22), _key_user(sshd))).code == "POLICY_DENIED"
    # a port where nothing listens (any loopback port allowed)
    anyport: Server = await make_server(
        backend="ssh", ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)), allow_targets=("127.0.0.1:*",)
    )
    a = await WireClient.connect(anyport.url)
    await a.hello()
    err = await _open_err(a, Target("127.0.0.1", 1), _key_user(sshd))
    assert (err.code, err.msg) == ("TARGET_UNREACHABLE", UNREACHABLE_MESSAGE)
    # without an allow-list: loopback port 22 only
    default: Server = await make_server(backend="ssh", ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)))
    d = await WireClient.connect(default.url)
    await d.hello()
    assert (await _open_err(d, Target("192.0.2.1", 22), _key_user(sshd))).code == "POLICY_DENIED"
    if sshd.port != 22:
        assert (await _open_err(d, Target(sshd.host, sshd.port), _key_user(sshd))).code == "POLICY_DENIED"
    strict: Server = await make_server(
        backend="ssh", ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)), allow_targets=("127.0.0.1:2",)
    )
    s = await WireClient.connect(strict.url)
    await s.hello()
    assert (await _open_err(s, Target(sshd.host, sshd.port), _key_user(sshd))).code == "POLICY_DENIED"
    # a host key that is not in known_hosts
    unknown: Server = await make_server(
        backend="ssh", ssh=SshOptions(known_hosts="/dev/null"), allow_targets=(f"{sshd.host}:{sshd.port}",)
    )
    u = await WireClient.connect(unknown.url)
    await u.hello()
    assert (await _open_err(u, Target(sshd.host, sshd.port), _key_user(sshd))).code == "HOST_KEY_UNKNOWN"
    for x in (c, s, u, a, d):
        await x.close()


async def test_ssh_prefers_aes_gcm_where_the_cpu_has_aes(ssh_server: Server, sshd: TestSshd) -> None:
    """The negotiated cipher, as the real sshd logs it (DEBUG1: ``kex: client->server cipher: ...``)."""
    from nimbus_websocket.node_runtime.server.ssh_backend import ENCRYPTION_ALGS, _cpu_has_aes

    start = len(sshd.log_text())
    c = await WireClient.connect(ssh_server.url)
    await c.hello()
    await c.open(1, target=Target(sshd.host, sshd.port), user=_key_user(sshd), term=Term(80, 24, {}))
    await c.type(1, "echo cipher-$((6*7))\n")
    await c.until_output(1, b"cipher-42")
    await c.close()
    kex = [line for line in sshd.log_text()[start:].splitlines() if "client->server cipher:" in line]
    assert kex, sshd.log_text()[start:][-2000:]
    expected = "aes128-gcm@openssh.com" if _cpu_has_aes() else "chacha20-poly1305@openssh.com"
    assert f"cipher: {expected}" in kex[-1], kex
    assert bool(ENCRYPTION_ALGS) == _cpu_has_aes()


def test_cpu_aes_flag_is_read_from_cpuinfo(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nimbus_websocket.node_runtime.server.ssh_backend import _cpu_has_aes

    x86, arm, none = tmp_path / "x86", tmp_path / "arm", tmp_path / "none"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 aes avx2\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd aes pmull sha1\n")
    none.write_text("processor\t: 0\nflags\t\t: fpu sse2 aesx avx2\n")
    assert _cpu_has_aes(str(x86)) and _cpu_has_aes(str(arm))
    assert not _cpu_has_aes(str(none)) and not _cpu_has_aes(str(tmp_path / "missing"))
