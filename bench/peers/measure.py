"""The peer measurements, one function per figure, the same for every peer.

Each takes a :class:`~peers.servers.Running` (a server already started on the
figure's command) and uses only its wire clients and its PID:

* ``stream_once``: connect to the end marker of ``cat FILE`` (letters, no
  newline), MB/s of the file's size;
* ``echo_run``: one byte typed into ``cat`` on a PTY, until it is echoed;
* ``interrupt_once``: ``yes`` in a shell until >= 1 MiB arrived, then
  ``\\x03`` until the prompt marker is back (latency, bytes drained);
* ``connect_once``: connect until the shell's prompt marker arrived;
* ``slow_reader``: ``yes`` read at 64 KiB per 100 ms; server RSS growth;
* ``idle_sessions``: N sessions at their prompt, held; server RSS per session.

Every read is bounded by a timeout; every loop by a count or a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from interrupt import _Seen as Seen
from memory import _settle as settle

from peers.clients import WireClient
from peers.servers import Running

MARK = b"__P42__"  # printed by the prompt only: PS1='__P$((6*7))__ '
RC = "PS1='__P$((6*7))__ '\nPROMPT_COMMAND=\nunset HISTFILE\n"
END = b"__END__"  # the stream file's last bytes; never in its body (letters only)
READ_TIMEOUT = 20.0
STREAM_TIMEOUT = 180.0
FLOOD = 1 << 20


def shell_argv(rc_path: str) -> list[str]:
    """An interactive bash with the marker prompt, no profile, no history (same for every peer)."""
    return ["bash", "--noprofile", "--rcfile", rc_path, "-i"]


async def read_until(c: WireClient, mark: bytes | None, min_bytes: int = 0, timeout: float = READ_TIMEOUT) -> int:
    """Read until ``mark`` (or, with ``mark=None``, ``min_bytes``); bytes read. Bounded by ``timeout``."""
    seen = Seen()
    async with asyncio.timeout(timeout):
        while True:
            hit = seen.feed(await c.recv(), mark or b"\0\0")
            if mark is not None and hit:
                return seen.n
            if mark is None and seen.n >= min_bytes:
                return seen.n


async def _closing(c: WireClient) -> None:
    with contextlib.suppress(Exception):
        await c.close()


async def stream_once(run: Running, size: int) -> float:
    """MB/s of ``cat FILE`` (``size`` bytes + the end marker): connect to last byte."""
    c = run.client()
    try:
        t0 = time.perf_counter()
        await c.open()
        n = await read_until(c, END, timeout=STREAM_TIMEOUT)
        dt = time.perf_counter() - t0
    finally:
        await _closing(c)
    if n < size:
        raise RuntimeError(f"{run.peer}: stream ended after {n} of {size} bytes")
    return size / dt / 1e6


async def echo_run(run: Running, samples: int) -> list[float]:
    """Seconds per keystroke round trip (``cat`` on a PTY, the terminal driver echoes)."""
    c = run.client()
    out: list[float] = []
    try:
        await c.open()
        await c.send(b"#")  # the session is up end to end before the clock runs
        await read_until(c, b"#")
        for i in range(samples):
            b = bytes([97 + i % 26])
            t0 = time.perf_counter()
            await c.send(b)
            async with asyncio.timeout(READ_TIMEOUT):
                while b not in await c.recv():
                    pass
            out.append(time.perf_counter() - t0)
    finally:
        await _closing(c)
    return out


async def interrupt_once(run: Running) -> tuple[float, int]:
    """(seconds from ``\\x03`` to the prompt under a ``yes`` flood, bytes drained meanwhile)."""
    c = run.client()
    try:
        await c.open()
        await read_until(c, MARK)
        await c.send(b"yes\n")
        await read_until(c, None, FLOOD)
        t0 = time.perf_counter()
        await c.send(b"\x03")
        n = await read_until(c, MARK)
        return time.perf_counter() - t0, n
    finally:
        await _closing(c)


async def connect_once(run: Running) -> float:
    """Seconds from connecting to the shell's prompt marker."""
    c = run.client()
    try:
        t0 = time.perf_counter()
        await c.open()
        await read_until(c, MARK)
        return time.perf_counter() - t0
    finally:
        await _closing(c)


async def slow_reader(run: Running, seconds: float, chunk: int = 65536, period: float = 0.1) -> dict[str, Any]:
    """Server RSS growth (KiB) while one client reads ``yes`` at ``chunk`` bytes per ``period``.

    One warm-up session first (imports, first-use caches); the RSS before is
    taken once it settled.  Returns the peak growth, the growth at half time
    and at the end (to tell "bounded" from "still growing"), and what the
    reader got.
    """
    warm = run.client()
    try:
        await warm.open()
        await read_until(warm, None, FLOOD)
    finally:
        await _closing(warm)
    before = await settle(run, 2.0)  # type: ignore[arg-type]
    c = run.client()
    got = 0
    await c.open()

    async def read() -> None:
        nonlocal got
        tick = time.monotonic()
        budget = chunk
        while True:
            data = await c.recv()
            got += len(data)
            budget -= len(data)
            while budget <= 0:
                tick += period
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
                budget += chunk

    task = asyncio.create_task(read())
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    try:
        while (t := time.monotonic() - t0) < seconds:
            if task.done():
                task.result()  # the reader failed: raise its error
                raise RuntimeError(f"{run.peer}: the slow reader's session ended after {got} bytes")
            samples.append((t, run.rss() - before))
            await asyncio.sleep(0.25)
        samples.append((time.monotonic() - t0, run.rss() - before))
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        run.stop(kill=True)  # it floods a reader that stopped reading: stop it first, then close
        await _closing(c)
    half = next(g for tt, g in samples if tt >= seconds / 2)
    return {"peak_kib": max(g for _, g in samples), "half_kib": half, "end_kib": samples[-1][1],
            "read_mb": got / 1e6, "seconds": samples[-1][0]}


async def idle_sessions(run: Running, n: int, parallel: int = 10) -> float:
    """Server KiB per idle session: N sessions at their prompt, held (first batch after one warm-up)."""
    await connect_once(run)
    before = await settle(run, 2.0)  # type: ignore[arg-type]
    clients: list[WireClient] = []

    async def one() -> WireClient:
        c = run.client()
        try:
            await c.open()
            await read_until(c, MARK)
        except BaseException:
            await _closing(c)
            raise
        return c

    async def drain(c: WireClient) -> None:  # answers a protocol's pings; nothing else arrives
        with contextlib.suppress(EOFError, Exception):
            while True:
                await c.recv()

    drains: list[asyncio.Task[None]] = []
    try:
        # The first session alone: webssh loses sessions when its first logins from one
        # address run concurrently (each POST installs its own per-address worker table).
        sizes = [1] + [min(parallel, n - i) for i in range(1, n, parallel)]
        for size in sizes:
            batch = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(size))), 120)
            clients += batch
            drains += [asyncio.create_task(drain(c)) for c in batch]
        after = await settle(run, 3.0)  # type: ignore[arg-type]
        if not run.alive():
            raise RuntimeError(f"{run.peer}: server exited while holding {n} sessions")
    finally:
        for t in drains:
            t.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        await asyncio.wait_for(asyncio.gather(*(_closing(c) for c in clients), return_exceptions=True), 60)
    return (after - before) / n
