"""A PTY whose output streams: the backend reads ahead in its pool thread
(``backend.py``).  The bytes stay exact and in order, credit still rules
what is sent, what is read ahead stays bounded, and a channel closed in the
middle of a stream leaves no descriptor or process behind."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nimbus_websocket.core import Close, DataFrame, Exit, Flow
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.backend import LocalProcessBackend

pytestmark = pytest.mark.timeout(60)

CHUNK = 64 * 1024
# stty -opost: no \n -> \r\n on the way out, so the PTY passes the bytes unchanged.
RAW_CAT = "stty -opost; cat {path}; exit 3"


async def _until(pred: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def _backend(srv: Server) -> LocalProcessBackend:
    be = next(iter(srv._backends.values()))  # type: ignore[attr-defined]
    assert isinstance(be, LocalProcessBackend)
    return be


async def test_stream_is_exact_and_credit_bounds_read_ahead(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(6_000_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    srv: Server = await make_server(pty_command=RAW_CAT.format(path=path))
    c = await WireClient.connect(srv.url)
    await c.hello(ack=False)
    grant = 512 * 1024
    await c.open(1, credit=grant)
    granted = grant
    be = _backend(srv)
    ch = srv.registry.sessions()[0].channels[1]
    worst = 0
    while True:
        m = await c.recv()
        got = len(c.out.get(1, b""))
        assert got <= granted  # never more than the credit
        worst = max(worst, ch.pending - ch.credit)
        if isinstance(m, Exit):
            break
        if isinstance(m, DataFrame) and got == granted:
            # Out of credit: the backend must stop reading, then resume on the grant.
            await _until(lambda: not be._reading, "the backend to pause")
            await c.send(Flow(1, grant))
            granted += grant
    assert m.code == 3
    assert bytes(c.out[1]) == data
    assert be.stream_starts >= 1  # the pool path was taken
    # Read ahead beyond the credit: the chunk that used the budget up (all but one of its
    # bytes may be beyond it), the pool's two in flight, and the one read at exit.
    assert worst < 4 * CHUNK
    await c.close()


async def test_close_mid_stream_releases_descriptors_and_process(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = await make_server(pty_command="stty -opost; exec cat /dev/zero")
    fds_before = set(os.listdir("/proc/self/fd"))
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.open(1, credit=16 << 20)
    be = _backend(srv)
    while len(c.out.get(1, b"")) < 4 << 20:
        await c.recv()
    assert be.stream_starts >= 1 and be._streaming
    proc = be.proc
    assert proc is not None
    await c.send(Close(1))
    await c.until(lambda m: isinstance(m, Close))
    await asyncio.wait_for(proc.wait(), 10)
    # The master is closed once the pool thread let go of it (deferred close).
    await _until(lambda: not be._deferred_close and not be._job_running, "the read-ahead job to end")
    await c.close()
    await _until(lambda: set(os.listdir("/proc/self/fd")) <= fds_before, "descriptors to be released")
    assert set(c.out[1]) == {0}


async def test_echo_after_a_stream_goes_back_to_loop_reads(pty_server: Server) -> None:
    c = await WireClient.connect(pty_server.url)
    await c.hello()
    await c.open(1, credit=8 << 20)
    await c.type(1, "head -c 3000000 /dev/zero; echo stream-$((40+2))\n")
    await c.until_output(1, b"stream-42", timeout=20)
    be = _backend(pty_server)
    assert be.stream_starts >= 1
    await _until(lambda: not be._streaming and be._watching, "the stream to end (idle)")
    await c.type(1, "echo typed-$((6*7))\n")
    await c.until_output(1, b"typed-42")
    await c.close()
