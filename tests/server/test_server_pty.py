"""The reference server on the local PTY backend, driven over the raw wire."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from nimbus_websocket.core import Close, DataFrame, Exit, Flow, Resize, Signal, Term
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server

pytestmark = pytest.mark.timeout(60)


async def test_open_stream_exit_close(pty_server: Server) -> None:
    c = await WireClient.connect(pty_server.url)
    ok = await c.hello()
    assert ok.caps.ack and ok.resume is not None and ok.caps.max_frame == 1 << 20
    await c.open(1)
    await c.type(1, "echo nimbus-$((6*7)); exit 7\n")
    await c.until_output(1, b"nimbus-42")
    ex = await c.until_exit(1)
    assert ex.code == 7
    await c.close_channel(1)
    assert isinstance(await c.until(lambda m: isinstance(m, Close)), Close)
    await c.close()


async def test_resize_changes_stty_size(pty_server: Server) -> None:
    c = await WireClient.connect(pty_server.url)
    await c.hello()
    await c.open(1, term=Term(100, 30, {"TERM": "xterm-256color"}))
    await c.type(1, "stty size\n")
    await c.until_output(1, b"30 100")
    await c.send(Resize(1, 132, 43))
    await c.type(1, "stty size; echo TERM=$TERM\n")
    out = await c.until_output(1, b"43 132")
    await c.until_output(1, b"TERM=xterm-256color")
    assert b"43 132" in out
    await c.close()


def _children_named(ppid: int, name: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{d}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if int(fields[1]) == ppid and comm == name:
                out.append(int(d))
    return out


async def test_signal_int_interrupts_foreground_job(pty_server: Server) -> None:
    c = await WireClient.connect(pty_server.url)
    await c.hello()
    await c.open(1)
    await c.type(1, "sleep 100\n")
    shell = next(iter(pty_server._backends.values())).proc  # type: ignore[attr-defined]
    for _ in range(500):  # wait (bounded) until bash has started the job
        if _children_named(shell.pid, "sleep"):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("sleep never started")
    await c.send(Signal(1, "INT"))
    await c.type(1, "echo rc=$?\n")
    await c.until_output(1, b"rc=130")
    await c.close()


async def test_no_data_without_credit_and_exact_spend(pty_server: Server) -> None:
    c = await WireClient.connect(pty_server.url)
    await c.hello()
    await c.open(1, credit=0)
    await c.type(1, "head -c 100000 /dev/zero | tr '\\0' x; echo\n")
    # Without credit nothing may arrive: only the input ack (flow) is allowed.
    with pytest.raises(TimeoutError):
        await c.until(lambda m: isinstance(m, DataFrame), timeout=0.5)
    await c.send(Flow(1, 1000))
    got = 0
    while got < 1000:  # the credit is spent (bounded wait: the shell may be slow to produce)
        m = await c.recv(timeout=10)
        if isinstance(m, DataFrame):
            got += len(m.payload)
    with pytest.raises(TimeoutError):  # observation window: not a byte beyond it
        while True:
            m = await c.recv(timeout=0.5)
            if isinstance(m, DataFrame):
                got += len(m.payload)
    assert got == 1000
    await c.close()


async def test_pipes_mode_is_binary_exact(make_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3_000_000)
    path = str(tmp_path / "nimbus-bin")
    with open(path, "wb") as f:
        f.write(data)
    try:
        srv: Server = await make_server(pty_command=f"cat {path}; echo done >&2; exit 3")
        c = await WireClient.connect(srv.url)
        await c.hello()
        await c.open(1, term=None, credit=256 * 1024)
        granted = 256 * 1024
        while True:
            m = await c.recv()
            if isinstance(m, DataFrame) and m.stream == "stdout":
                got = len(c.out.get(1, b""))
                if granted - got < 128 * 1024:
                    await c.send(Flow(1, 256 * 1024))
                    granted += 256 * 1024
            if isinstance(m, Exit):
                assert m.code == 3
                break
        assert hashlib.sha256(bytes(c.out[1])).digest()[:8] != b""
        # stdout and stderr share the channel: split them back out
        assert bytes(c.out[1]).endswith(b"done\n")
        assert bytes(c.out[1])[: len(data)] == data
        await c.close()
    finally:
        os.unlink(path)


async def test_neighbour_unaffected_by_abuse(pty_server: Server) -> None:
    good = await WireClient.connect(pty_server.url)
    await good.hello()
    await good.open(1)
    bad = await WireClient.connect(pty_server.url)
    await bad.hello()
    await bad.ws.send(b"\x07\x00\x00\x00\x01garbage")  # reserved stream byte
    assert await bad.expect_close() == 4014
    await good.type(1, "echo still-$((40+2))\n")
    await good.until_output(1, b"still-42")
    await good.close()


async def test_close_1000_ends_session_and_process(pty_server: Server) -> None:
    c = await WireClient.connect(pty_server.url)
    await c.hello()
    await c.open(1)
    await c.type(1, "echo pid=$((1*$$))end\n")
    pid = int((await c.until_match(1, rb"pid=(\d+)end")).group(1))
    await c.close(1000)
    for _ in range(200):
        if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("shell still running after an explicit close")
    assert len(pty_server.registry) == 0


async def test_open_command_and_eof(make_server) -> None:  # type: ignore[no-untyped-def]
    from nimbus_websocket.core import Eof, Open, OpenErr, Target, User

    srv: Server = await make_server()
    c = await WireClient.connect(srv.url)
    ok = await c.hello()
    assert ok.caps.command and ok.caps.eof
    await c.send(Open(1, Target("localhost", 22), User("me"), None, "wc -c; echo err >&2; exit 4"))
    await c.until(lambda m: getattr(m, "t", "") == "open_ok")
    await c.send(Flow(1, 1 << 20))
    payload = os.urandom(300_000)
    await c.type(1, payload)
    await c.send(Eof(1))
    ex = await c.until_exit(1)
    assert ex.code == 4
    assert bytes(c.out[1]).split() == [b"300000", b"err"]
    await c.close()
    # an operator-chosen command cannot be replaced by the client
    fixed: Server = await make_server(pty_command="exec bash --norc --noprofile -i")
    f = await WireClient.connect(fixed.url)
    ok2 = await f.hello()
    assert not ok2.caps.command
    await f.send(Open(1, Target("localhost", 22), User("me"), None, "id"))
    err = await f.until(lambda m: isinstance(m, OpenErr))
    assert isinstance(err, OpenErr) and err.code == "POLICY_DENIED"
    await f.close()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_close_ends_a_foreground_job_that_ignores_hangup(pty_server: Server) -> None:
    """The terminal's foreground job has a process group of its own (job control), so the
    shell's group is not all there is to end.  Here the shell and the job both ignore
    SIGHUP (so the shell never passes it on): a close must still end the job -- it
    gets the hangup and, once ``KILL_GRACE`` is over, SIGKILL, like the shell's group."""
    c = await WireClient.connect(pty_server.url)
    await c.hello()
    await c.open(1)
    await c.type(1, "trap '' HUP; (trap '' HUP; echo job=$BASHPID.; exec sleep 1000)\n")
    pid = int((await c.until_match(1, rb"job=(\d+)\.")).group(1))
    assert os.getpgid(pid) == pid  # a job of its own: not in the shell's process group
    await c.close(1000)
    for _ in range(300):  # KILL_GRACE (1 s) plus slack, bounded
        if _gone(pid):
            break
        await asyncio.sleep(0.02)
    else:
        os.kill(pid, 9)
        pytest.fail("the foreground job outlived its closed terminal")
