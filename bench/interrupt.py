"""Interrupt latency under a ``yes`` flood: Ctrl-C until the shell prompt is back.

A PTY runs ``bash --norc --noprofile -i`` with ``PS1='__P$((6*7))__ '`` (the
marker ``__P42__`` appears only when the prompt is printed, never in the
echo of what was typed).  Each sample: type ``yes``, read until at least
``--flood`` bytes of ``y`` arrived (the flood is established and the
pipeline is full), then start the clock, interrupt, and read (draining the
flood) until the marker arrives.

* **raw PTY** -- no network: this process holds the PTY master, writes
  ``\\x03`` and reads (the floor: line discipline + bash + the PTY buffer);
* **nimbus, ``\\x03`` as input** -- reference server (local PTY backend) ->
  CPython client, ``ch.send(b"\\x03")`` as a terminal does;
* **nimbus, ``ch.signal("INT")``** -- the protocol's signal message.

Latency includes draining what was already in flight (the credit window,
the socket buffers).  Target (issue): <= 100 ms.

    python bench/interrupt.py [--samples 10] [--flood 1048576]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, median_range, spawn_pty, table
from nimbus_websocket.node_runtime import WebsocketsImpl, connect
from nimbus_websocket.node_runtime.server import Server, ServerOptions

TARGET = {"host": "localhost", "port": 22}
USER = {"username": "bench"}
TERM = {"cols": 80, "rows": 24, "env": {"TERM": "xterm"}}
SHELL = ["bash", "--norc", "--noprofile", "-i"]
SETUP = b"PS1='__P$((6*7))__ '; PROMPT_COMMAND=; unset HISTFILE\n"
MARK = b"__P42__"
TARGET_MS = 100.0
TIMEOUT = 20.0


class _Seen:
    """Finds a marker across chunk boundaries; counts bytes."""

    def __init__(self) -> None:
        self.tail = b""
        self.n = 0

    def feed(self, data: bytes, mark: bytes) -> bool:
        self.n += len(data)
        hit = mark in self.tail + data[: len(mark) - 1] or mark in data
        self.tail = data[-(len(mark) - 1) :] if len(data) >= len(mark) - 1 else (self.tail + data)[-(len(mark) - 1) :]
        return hit


# --------------------------------------------------------------- raw PTY
def raw_pty(samples: int, flood: int) -> tuple[list[float], list[int]]:
    """Latencies (s) and bytes drained after ^C, reading the PTY master directly."""
    env = {**os.environ, "TERM": "xterm", "HISTFILE": "/dev/null"}
    old = dict(os.environ)
    os.environ.update(env)
    try:
        proc, fd = spawn_pty(SHELL)
    finally:
        os.environ.clear()
        os.environ.update(old)
    lat: list[float] = []
    drained: list[int] = []

    def read_until(mark: bytes | None, min_bytes: int = 0) -> int:
        seen = _Seen()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                break
            hit = seen.feed(data, mark or b"\0\0")
            if mark is not None and hit:
                return seen.n
            if mark is None and seen.n >= min_bytes:
                return seen.n
        raise TimeoutError(f"raw PTY: no {mark!r} within {TIMEOUT} s")

    try:
        os.write(fd, SETUP)
        read_until(MARK)
        for _ in range(samples):
            os.write(fd, b"yes\n")
            read_until(None, flood)
            t0 = time.perf_counter()
            os.write(fd, b"\x03")
            n = read_until(MARK)
            lat.append(time.perf_counter() - t0)
            drained.append(n)
    finally:
        proc.kill()
        proc.wait()
        os.close(fd)
    return lat, drained


# ---------------------------------------------------------------- nimbus
async def nimbus(samples: int, flood: int, via: str) -> tuple[list[float], list[int]]:
    """Latencies (s) and bytes drained after the interrupt, through the reference server."""
    srv = Server(ServerOptions(port=0, pty_command="exec " + " ".join(SHELL)))
    await srv.start()
    lat: list[float] = []
    drained: list[int] = []
    try:
        conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
        ch = await conn.open_session(target=TARGET, user=USER, term=TERM)
        it = ch.__aiter__()

        async def read_until(mark: bytes | None, min_bytes: int = 0) -> int:
            seen = _Seen()
            async with asyncio.timeout(TIMEOUT):
                while True:
                    data = await it.__anext__()
                    hit = seen.feed(data, mark or b"\0\0")
                    if mark is not None and hit:
                        return seen.n
                    if mark is None and seen.n >= min_bytes:
                        return seen.n

        await ch.send(SETUP)
        await read_until(MARK)
        for _ in range(samples):
            await ch.send(b"yes\n")
            await read_until(None, flood)
            t0 = time.perf_counter()
            if via == "signal":
                await ch.signal("INT")
            else:
                await ch.send(b"\x03")
            n = await read_until(MARK)
            lat.append(time.perf_counter() - t0)
            drained.append(n)
        await conn.close()
    finally:
        await srv.stop()
    return lat, drained


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--flood", type=int, default=1 << 20, help="bytes of flood before the interrupt")
    args = ap.parse_args()
    res: dict[str, tuple[list[float], list[int]]] = {"raw": ([], []), "input": ([], []), "signal": ([], [])}
    for _ in range(args.samples):  # interleaved, one sample each
        for key in res:
            lat, dr = raw_pty(1, args.flood) if key == "raw" else await nimbus(1, args.flood, key)
            res[key][0].extend(lat)
            res[key][1].extend(dr)
    rows = []
    for key, label in (("raw", "raw PTY (no network)"), ("input", "nimbus, \\x03 as input"), ("signal", "nimbus, signal INT")):
        m, lo, hi = median_range([x * 1e3 for x in res[key][0]])
        dm = median_range(res[key][1])[0]
        ok = "" if key == "raw" else ("met" if m <= TARGET_MS else "MISSED")
        rows.append([label, f"{m:.1f} ({lo:.1f}-{hi:.1f})", f"{dm / 1024:.0f} KiB", ok])
    print(f"# interrupt under a yes flood, {args.samples} samples ({machine()})")
    print(table(["path", "ms median (min-max)", "drained after ^C", f"<= {TARGET_MS:.0f} ms"], rows))


if __name__ == "__main__":
    asyncio.run(main())
