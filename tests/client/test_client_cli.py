"""``nimbus-ws connect`` as a subprocess against the reference server (in this process)."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import struct
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from client_util import wait_for
from nimbus_websocket.node_runtime.server import Server, ServerOptions
from support.proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)

CLI = [sys.executable, "-m", "nimbus_websocket", "connect"]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """The reference server with bash (no rc files) as the channel's program."""
    srv = Server(ServerOptions(port=0, pty_command="exec bash --norc --noprofile -i", allow_client_command=True))
    await srv.start()
    yield srv
    await srv.stop()


async def run_cli(*args: str, stdin: bytes | None = None, timeout: float = 60) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_cli_copies_a_binary_file_byte_exactly_and_returns_the_exit_code(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    data = os.urandom(24 << 20) + bytes(range(256)) * 64 + b"\r\n\n\r\x03\x04\x1a"
    src.write_bytes(data)
    rc, out, err = await run_cli(server.url, "--command", f"cat {src}; exit 7")
    assert rc == 7, err
    assert len(out) == len(data) and hashlib.sha256(out).digest() == hashlib.sha256(data).digest()
    assert b"bash" not in err  # the shell's prompt noise before the command is dropped


async def test_cli_piped_stdin_ends_with_eof(server: Server) -> None:
    payload = os.urandom(500_000)
    rc, out, err = await run_cli(server.url, "--command", "wc -c; exit 9", stdin=payload)
    assert rc == 9, err
    assert out.split() == [b"500000"]


async def test_cli_streams_stdin_and_keeps_stderr_separate(server: Server) -> None:
    payload = os.urandom(300_000)
    rc, out, err = await run_cli(
        server.url, "--command", f"head -c {len(payload)}; echo to-stderr >&2; exit 3", stdin=payload
    )
    assert rc == 3, err
    assert out == payload
    assert b"to-stderr" in err


async def test_cli_signal_death_is_128_plus_n(server: Server) -> None:
    rc, _out, err = await run_cli(server.url, "--command", "kill -TERM $$")
    assert rc == 128 + 15, err


async def test_cli_failed_connect_is_255(unused_tcp_port: int) -> None:
    rc, _out, err = await run_cli(f"ws://127.0.0.1:{unused_tcp_port}/ws/ssh", "--command", "true")
    assert rc == 255 and b"cannot connect" in err


async def test_cli_bearer_token_from_environment(tmp_path: Path) -> None:
    srv = Server(ServerOptions(port=0, tokens=("s3cret",)))
    await srv.start()
    try:
        rc, _out, err = await run_cli(srv.url, "--command", "true")
        assert rc == 255 and b"AUTH_FAILED" in err
        os.environ["NIMBUS_TEST_TOKEN"] = "s3cret"
        try:
            rc, out, err = await run_cli(srv.url, "--token-env", "NIMBUS_TEST_TOKEN", "--command", "echo ok")
        finally:
            del os.environ["NIMBUS_TEST_TOKEN"]
        assert rc == 0 and out == b"ok\n", err
    finally:
        await srv.stop()


async def test_cli_survives_a_cut_and_reports_reconnecting(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    data = os.urandom(16 << 20)
    src.write_bytes(data)
    proxy = await TcpProxy(server.port).start()
    try:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            f"ws://127.0.0.1:{proxy.port}/ws/ssh",
            "--command",
            f"cat {src}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        got = bytearray()
        cut = False
        while True:
            chunk = await asyncio.wait_for(proc.stdout.read(1 << 16), 30)
            if not chunk:
                break
            got += chunk
            if not cut and len(got) > 4 << 20:
                cut = proxy.cut() == 1
        err = await asyncio.wait_for(proc.stderr.read(), 30)
        rc = await asyncio.wait_for(proc.wait(), 30)
        assert cut and rc == 0, err
        assert bytes(got) == data
        assert b"reconnecting" in err and b"reconnected" in err
    finally:
        await proxy.stop()


def _set_ctty() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def test_cli_interactive_raw_tty_resize_ctrl_c_and_exit_status(server: Server) -> None:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    before = termios.tcgetattr(slave)
    proc = await asyncio.create_subprocess_exec(
        *CLI, server.url, stdin=slave, stdout=slave, stderr=slave, preexec_fn=_set_ctty
    )
    os.set_blocking(master, False)
    buf = bytearray()
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            buf.extend(os.read(master, 65536))
        except OSError:
            loop.remove_reader(master)

    loop.add_reader(master, readable)

    async def until(needle: bytes) -> None:
        await wait_for(lambda: needle in buf, 20, what=f"{needle!r} (got {bytes(buf[-300:])!r})")

    try:
        await wait_for(lambda: termios.tcgetattr(slave)[3] & termios.ICANON == 0, 20, what="raw mode")
        os.write(master, b"stty size; echo T=$TERM\r")
        await until(b"30 100")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # SIGWINCH to the CLI
        await wait_for(lambda: any(b.proc and _winsize(b) == (40, 120) for b in server._backends.values()), 20, what="remote resize")  # type: ignore[attr-defined]
        buf.clear()
        os.write(master, b"stty size\r")
        await until(b"40 120")
        os.write(master, b"sleep 100\r")
        shell = next(iter(server._backends.values())).proc  # type: ignore[attr-defined]
        await wait_for(lambda: _has_child(shell.pid, "sleep"), 20, what="sleep to start")
        os.write(master, b"\x03")  # Ctrl-C travels as a byte and interrupts the remote job
        os.write(master, b"echo rc=$?\r")
        await until(b"rc=130")
        os.write(master, b"exit 5\r")
        rc = await asyncio.wait_for(proc.wait(), 20)
        assert rc == 5
        after = termios.tcgetattr(slave)
        assert after == before  # the local terminal was restored
    finally:
        loop.remove_reader(master)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
        os.close(slave)


def _winsize(backend: object) -> tuple[int, int] | None:
    fd = getattr(backend, "_master", None)
    if fd is None:
        return None
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def _has_child(ppid: int, name: str) -> bool:
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{d}/comm") as f:
                    if int(fields[1]) == ppid and f.read().strip() == name:
                        return True
            except OSError:
                continue
    return False
