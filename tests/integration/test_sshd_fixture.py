"""The private-sshd test fixture works, and what OpenSSH really does.

Findings pinned here (Debian bookworm, OpenSSH 9.2, asyncssh 2.24):

* The SSH ``signal`` channel request (RFC 4254 6.9) IS implemented by sshd,
  but only for sessions that run under post-auth privilege separation, i.e.
  NOT for root: as root sshd logs "session signalling requires privilege
  separation" and silently drops it (want_reply is false, so the client
  learns nothing).
* For other users sshd does ``killpg(session_leader_pid, sig)``.  That kills
  an exec'd command (``sleep 100`` -> exit_signal INT), but in an
  interactive PTY shell the foreground job has its own process group (job
  control), so the signal reaches only bash, which ignores SIGINT: the
  ``sleep`` keeps running.
* What always works, for every user: write ``\\x03`` to the PTY; the tty
  line discipline sends SIGINT to the foreground process group ($? == 130).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time

import asyncssh
import pytest

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(60)]

T = 10.0  # seconds; upper bound for any single await


async def connect(sshd, **overrides) -> asyncssh.SSHClientConnection:
    return await asyncio.wait_for(asyncssh.connect(**sshd.connect_kwargs(**overrides)), T)


async def connect_password_user(sshd) -> asyncssh.SSHClientConnection:
    if not sshd.password_user:
        pytest.skip("no password test user (needs root and useradd/chpasswd)")
    return await connect(
        sshd, username=sshd.password_user, password=sshd.password, client_keys=None
    )


async def read_until(stream, needle: str, timeout: float = T) -> str:
    """Read ``stream`` until ``needle`` appears; fail with what was seen on timeout."""
    out = ""
    deadline = asyncio.get_running_loop().time() + timeout
    while needle not in out:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            chunk = await asyncio.wait_for(stream.read(4096), max(remaining, 0))
        except TimeoutError:
            pytest.fail(f"timed out waiting for {needle!r}; got {out!r}")
        if not chunk:
            pytest.fail(f"EOF while waiting for {needle!r}; got {out!r}")
        out += chunk
    return out


async def read_to_eof(stream, timeout: float = T) -> str:
    return await asyncio.wait_for(stream.read(), timeout)


def pids_running(argv: list[str]) -> list[int]:
    """PIDs whose command line is exactly ``argv`` (sshd runs on this host)."""
    want = ("\0".join(argv) + "\0").encode()
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if f.read() == want:
                        pids.append(int(name))
            except OSError:
                pass
    return pids


def kill_all(argv: list[str]) -> None:
    for pid in pids_running(argv):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


async def wait_for_condition(cond, what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def unique_sleep() -> list[str]:
    """A ``sleep`` argv nobody else runs, so it can be found in /proc."""
    return ["sleep", f"100.{secrets.randbelow(10**6):06d}"]


# --- basics ---------------------------------------------------------------------------


async def test_exec_echo(sshd):
    async with await connect(sshd) as conn:
        result = await asyncio.wait_for(conn.run("echo hi", check=True), T)
    assert result.stdout == "hi\n"
    assert result.exit_status == 0


async def test_fixture_attributes(sshd):
    assert sshd.host == "127.0.0.1"
    assert 1024 <= sshd.port <= 65535
    assert sshd.username == "root" or os.geteuid() != 0
    assert sshd.client_key_text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert sshd.known_hosts_path.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    assert sshd.log_path.exists()
    # The key text works on its own, without the file.
    key = asyncssh.import_private_key(sshd.client_key_text)
    async with await connect(sshd, client_keys=[key]) as conn:
        result = await asyncio.wait_for(conn.run("id -un", check=True), T)
    assert result.stdout.strip() == sshd.username


async def test_pty_stty_size(sshd):
    async with await connect(sshd) as conn:
        proc = await asyncio.wait_for(
            conn.create_process(term_type="xterm-256color", term_size=(100, 30)), T
        )
        proc.stdin.write("echo TERM=$TERM; stty size; exit\n")
        out = await read_to_eof(proc.stdout)
        await asyncio.wait_for(proc.wait(), T)
    assert "30 100" in out
    assert "TERM=xterm-256color" in out


async def test_pty_resize(sshd):
    async with await connect(sshd) as conn:
        proc = await asyncio.wait_for(
            conn.create_process(term_type="xterm-256color", term_size=(100, 30)), T
        )
        proc.stdin.write("stty size\n")
        await read_until(proc.stdout, "30 100")
        proc.change_terminal_size(120, 40)
        proc.stdin.write("stty size; exit\n")
        out = await read_to_eof(proc.stdout)
        await asyncio.wait_for(proc.wait(), T)
    assert "40 120" in out


# --- authentication -------------------------------------------------------------------


async def test_password_auth(sshd):
    async with await connect_password_user(sshd) as conn:
        result = await asyncio.wait_for(conn.run("id -un", check=True), T)
    assert result.stdout.strip() == sshd.password_user


async def test_wrong_password_denied(sshd):
    if not sshd.password_user:
        pytest.skip("no password test user (needs root and useradd/chpasswd)")
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(
            sshd, username=sshd.password_user, password="not-the-password", client_keys=None
        )


async def test_wrong_key_denied(sshd):
    other = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(sshd, client_keys=[other])


async def test_root_password_login_refused(sshd):
    # PermitRootLogin prohibit-password: root only with a key.
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(sshd, client_keys=None, password="anything")


async def test_unknown_host_key_rejected(sshd, tmp_path):
    other = asyncssh.generate_private_key("ssh-ed25519")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {other.export_public_key().decode().strip()}\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await connect(sshd, known_hosts=str(kh))


# --- signals: what OpenSSH 9.2 does -----------------------------------------------------


async def test_ctrl_c_on_pty_interrupts_foreground_job(sshd):
    """The portable way to interrupt: ^C through the PTY (works for root too)."""
    argv = unique_sleep()
    async with await connect(sshd) as conn:
        proc = await asyncio.wait_for(
            conn.create_process(term_type="xterm-256color", term_size=(80, 24)), T
        )
        proc.stdin.write(" ".join(argv) + "\n")
        await wait_for_condition(lambda: pids_running(argv), "sleep to start")
        proc.stdin.write("\x03")
        await wait_for_condition(lambda: not pids_running(argv), "sleep to be interrupted")
        proc.stdin.write("echo rc=$?; exit\n")
        out = await read_to_eof(proc.stdout)
        await asyncio.wait_for(proc.wait(), T)
    assert "^C" in out
    assert "rc=130" in out


async def _log_contains(sshd, text: str) -> None:
    await wait_for_condition(lambda: text in sshd.log_text(), f"sshd log line {text!r}")


async def test_signal_request_refused_for_root(sshd):
    """As root, sshd drops the "signal" request: root sessions are not privsep'd."""
    if sshd.username != "root":
        pytest.skip("only meaningful for root logins")
    argv = unique_sleep()
    async with await connect(sshd) as conn:
        proc = await asyncio.wait_for(conn.create_process(" ".join(argv)), T)
        await wait_for_condition(lambda: pids_running(argv), "sleep to start")
        before = sshd.log_text().count("session signalling requires privilege separation")
        proc.send_signal("INT")
        await wait_for_condition(
            lambda: (
                sshd.log_text().count("session signalling requires privilege separation") > before
            ),
            "sshd to log the refused signal",
        )
        # Give a (wrongly) delivered signal a moment to show; the sleep must live on.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.5)
        assert pids_running(argv)
    # Without a PTY, closing the channel does not stop the command (see below).
    kill_all(argv)


@pytest.mark.parametrize("pty", [False, True], ids=["no-pty", "pty"])
async def test_signal_request_kills_exec_command_for_non_root(sshd, pty):
    """For a non-root user sshd does killpg(session leader): exec'd commands die."""
    argv = unique_sleep()
    async with await connect_password_user(sshd) as conn:
        kw = {"term_type": "xterm"} if pty else {}
        proc = await asyncio.wait_for(conn.create_process(" ".join(argv), **kw), T)
        await wait_for_condition(lambda: pids_running(argv), "sleep to start")
        proc.send_signal("INT")
        result = await asyncio.wait_for(proc.wait(), T)
    assert result.exit_signal is not None and result.exit_signal[0] == "INT"
    assert result.exit_status == -1  # asyncssh's value when the exit was by signal


async def test_signal_request_misses_foreground_job_in_interactive_shell(sshd):
    """In an interactive PTY shell the signal reaches bash, not the foreground job."""
    argv = unique_sleep()
    async with await connect_password_user(sshd) as conn:
        proc = await asyncio.wait_for(
            conn.create_process(term_type="xterm-256color", term_size=(80, 24)), T
        )
        proc.stdin.write(" ".join(argv) + "\n")
        await wait_for_condition(lambda: pids_running(argv), "sleep to start")
        before = sshd.log_text().count("session_signal_req: signal INT, killpg(")
        proc.send_signal("INT")
        await wait_for_condition(
            lambda: sshd.log_text().count("session_signal_req: signal INT, killpg(") > before,
            "sshd to deliver the signal (LogLevel DEBUG1)",
        )
        await asyncio.sleep(0.3)
        assert pids_running(argv), "signal request reached the foreground job after all"
        # ...and the ^C fallback does reach it.
        proc.stdin.write("\x03")
        await wait_for_condition(lambda: not pids_running(argv), "sleep to be interrupted")
        proc.stdin.write("echo rc=$?; exit\n")
        out = await read_to_eof(proc.stdout)
        await asyncio.wait_for(proc.wait(), T)
    assert "rc=130" in out


@pytest.mark.parametrize("pty", [False, True], ids=["no-pty", "pty"])
async def test_command_after_client_disconnect(sshd, pty):
    """Trap: without a PTY, a command outlives the client's disconnect.

    With a PTY the hang-up SIGHUPs it; without one sshd only closes its pipes,
    so e.g. ``sleep`` runs on, reparented away from sshd (TestSshd.stop()
    cannot find it either).
    """
    argv = unique_sleep()
    try:
        conn = await connect(sshd)
        kw = {"term_type": "xterm"} if pty else {}
        await asyncio.wait_for(conn.create_process(" ".join(argv), **kw), T)
        await wait_for_condition(lambda: pids_running(argv), "sleep to start")
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), T)
        if pty:
            await wait_for_condition(lambda: not pids_running(argv), "SIGHUP to end sleep")
        else:
            await asyncio.sleep(0.5)
            assert pids_running(argv)
    finally:
        kill_all(argv)


# --- the helper itself ------------------------------------------------------------------


async def test_stop_kills_sessions_and_cleans_up(sshd):
    """stop() must not leave session processes behind even with a live client."""
    server = type(sshd)(enable_password_user=False)
    await asyncio.to_thread(server.start)
    workdir, port = server.workdir, server.port
    argv = unique_sleep()
    try:
        conn = await connect(server)
        await asyncio.wait_for(conn.create_process(" ".join(argv)), T)
        await wait_for_condition(lambda: pids_running(argv), "sleep to start")
    finally:
        await asyncio.to_thread(server.stop)
    await wait_for_condition(lambda: not pids_running(argv), "session processes to die")
    await asyncio.wait_for(conn.wait_closed(), T)
    assert not workdir.exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_connection_setup_time(sshd, record_property):
    """Measure asyncssh connect (TCP + kex + ed25519 auth) against the local sshd."""
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        conn = await connect(sshd)
        samples.append(time.perf_counter() - t0)
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), T)
    samples.sort()
    record_property("asyncssh_connect_seconds", samples)
    print(f"asyncssh connect: min {samples[0] * 1e3:.1f} ms, median {samples[2] * 1e3:.1f} ms")
    assert samples[2] < 2.0
