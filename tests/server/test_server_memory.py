"""Server memory stays bounded by the credit window, whatever the client does."""

from __future__ import annotations

import os

import pytest
from nimbus_websocket.core import DataFrame, Exit, Flow
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server

pytestmark = pytest.mark.timeout(120)


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def test_100mb_stream_with_slow_credit_keeps_server_rss_bounded(make_server) -> None:  # type: ignore[no-untyped-def]
    # The server runs in this process: its RSS is ours.  The client grants
    # credit slowly (64 KiB at a time, only after consuming), the producer is
    # far faster; the server must stop reading the pipe instead of buffering.
    total = 100 * 1024 * 1024
    srv: Server = await make_server(pty_command=f"head -c {total} /dev/zero")
    c = await WireClient.connect(srv.url, max_size=2 << 20)
    await c.hello(ack=True)
    await c.open(1, term=None, credit=64 * 1024)
    base = _rss()
    peak = base
    got = 0
    step = 64 * 1024
    while True:
        m = await c.recv(timeout=30)
        if isinstance(m, DataFrame):
            got += len(m.payload)
            c.out.pop(1, None)  # the test client keeps nothing either
            if got % step == 0 or got == total:
                await c.send(Flow(1, step, ack=got))
                peak = max(peak, _rss())
        elif isinstance(m, Exit):
            break
    assert got == total
    assert peak - base < 32 * 1024 * 1024, f"server RSS grew by {(peak - base) >> 20} MiB"
    await c.close()


async def test_stalled_consumer_stops_the_producer(make_server) -> None:  # type: ignore[no-untyped-def]
    counter = f"/tmp/nimbus-count-{os.getpid()}"
    # A producer that records how much it managed to write.
    script = (
        "python3 -c \"import sys,os\n"
        "n=0\n"
        "b=b'x'*4096\n"
        f"fd=os.open('{counter}',os.O_WRONLY|os.O_CREAT|os.O_TRUNC)\n"
        "while n < 200*1024*1024:\n"
        "    sys.stdout.buffer.write(b); sys.stdout.buffer.flush(); n+=4096\n"
        "    os.pwrite(fd, str(n).encode().ljust(20), 0)\n\""
    )
    srv: Server = await make_server(pty_command=script)
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.open(1, term=None, credit=256 * 1024)
    got = 0
    with pytest.raises(TimeoutError):
        while True:
            m = await c.recv(timeout=1.0)
            if isinstance(m, DataFrame):
                got += len(m.payload)
    assert got == 256 * 1024
    written = int(open(counter).read().strip() or 0)
    # credit + one read + the pipe buffer (64 KiB) + the producer's own buffer
    assert written <= 256 * 1024 + 64 * 1024 + 64 * 1024 + 8192, written
    await c.close()
    os.unlink(counter)
