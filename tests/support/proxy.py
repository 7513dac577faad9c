"""A loopback TCP proxy for network-failure tests: cut, stall, delay -- by hand or on a seeded schedule.

    proxy = await TcpProxy(upstream_port).start()
    url = f"ws://127.0.0.1:{proxy.port}/ws/ssh"
    proxy.cut()          # abort every proxied connection (RST both ways)
    proxy.stall(True)    # stop forwarding (traffic held, as a black hole looks to both ends)
    proxy.stall(False)   # forward again (held bytes flow on, nothing is lost)
    proxy.stall_connections()   # black-hole only the connections open now (new ones flow)
    proxy.release_stalled(abort=False)  # ... and let them flow again (or abort them)
    proxy.intercept = fn # fn(pair, up, chunk) -> None | "cut" | "cut_after": cut at an exact chunk

Chaos on a schedule::

    steps = chaos_schedule(seed, 200, gap=(64 << 10, 256 << 10))
    report = await run_chaos(proxy, steps, ready=lambda: conn.state == "ready", done=finished)

Each step fires in the data path (:meth:`TcpProxy.arm`), before the chunk
that brings the bytes forwarded since the previous step to ``gap``, and
only while the client is ``ready``: it cuts, stalls (black-holes the
connection until the client noticed: ``ready()`` false; then aborts it or
lets its held bytes through late) or delays frames for a span of bytes.
Every wait is bounded by ``step_timeout``.  Everything is drawn from
``random.Random(seed)``: a failing seed replays the same schedule.

Only 127.0.0.1.  ``delay`` (seconds) is added before each forwarded chunk.
Memory: per direction one read of at most 64 KiB plus the stream buffers;
a stalled direction stops reading, so TCP backpressure holds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ChaosReport", "ChaosStep", "TcpProxy", "chaos_schedule", "run_chaos", "wait_until"]

CHUNK = 64 * 1024

#: ``intercept(pair, up, chunk)``: ``None`` forwards, ``"cut"`` aborts before
#: forwarding the chunk, ``"cut_after"`` forwards it and then aborts.
Intercept = Callable[["_Pair", bool, bytes], "str | None"]


class _Pair:
    def __init__(self, serial: int, down: asyncio.StreamWriter, up: asyncio.StreamWriter) -> None:
        self.serial = serial  # 1 for the first accepted connection, 2 for the next...
        self.down = down  # towards the client
        self.up = up  # towards the server
        self.tasks: list[asyncio.Task[None]] = []
        self.flowing = asyncio.Event()
        self.flowing.set()
        #: Chunks (reads) forwarded so far in each direction.
        self.chunks_up = 0
        self.chunks_down = 0
        self.dead = False

    def abort(self) -> None:
        self.dead = True
        self.flowing.set()  # wake a stalled pipe so its task ends
        for w in (self.down, self.up):
            with contextlib.suppress(Exception):
                w.transport.abort()


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``host:upstream_port``."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1", *, delay: float = 0.0) -> None:
        self.upstream = (host, upstream_port)
        self.delay = delay
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        #: Payload bytes forwarded client->server and server->client.
        self.bytes_up = 0
        self.bytes_down = 0
        self.intercept: Intercept | None = None
        self._trigger: tuple[int, Callable[[], bool], Callable[[], str | None], asyncio.Future[None]] | None = None
        self._pairs: set[_Pair] = set()
        self._stalled: list[_Pair] = []
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None

    async def start(self) -> TcpProxy:
        """Listen on 127.0.0.1 and a free port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and abort every connection."""
        if self._server is not None:
            self._server.close()
        self._flowing.set()
        self.cut()
        self.release_stalled(abort=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def connections(self) -> int:
        """Connections currently proxied."""
        return len(self._pairs)

    @property
    def forwarded(self) -> int:
        """Bytes forwarded in both directions so far."""
        return self.bytes_up + self.bytes_down

    def cut(self) -> int:
        """Abort every proxied connection on both sides; returns how many were cut."""
        pairs = list(self._pairs)
        for p in pairs:
            p.abort()
        self._pairs.clear()
        if pairs:
            self.cuts += 1
        return len(pairs)

    def stall(self, on: bool) -> None:
        """Stop (``True``) or restart (``False``) forwarding in both directions, for all connections."""
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

    def stall_connections(self) -> int:
        """Black-hole the connections open now (connections accepted later flow); returns how many."""
        pairs = [p for p in self._pairs if p.flowing.is_set()]
        for p in pairs:
            p.flowing.clear()
        self._stalled.extend(pairs)
        return len(pairs)

    def release_stalled(self, *, abort: bool) -> int:
        """End the black hole of :meth:`stall_connections`: forward the held bytes, or abort."""
        pairs, self._stalled = self._stalled, []
        for p in pairs:
            if abort:
                self._pairs.discard(p)
                p.abort()
            else:
                p.flowing.set()
        return len(pairs)

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        serial = self.accepted
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.transport.abort()
            return
        pair = _Pair(serial, c_writer, s_writer)
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(self._pipe(pair, c_reader, s_writer, up=True)),
            asyncio.create_task(self._pipe(pair, s_reader, c_writer, up=False)),
        ]
        try:
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        finally:
            self._pairs.discard(pair)
            pair.abort()

    async def _pipe(self, pair: _Pair, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                if self.delay:
                    await asyncio.sleep(self.delay)
                if pair.dead:
                    return  # cut while this chunk was in hand: it must not fire a fault either
                if self._trigger is not None and self._fire(pair, len(data)) == "cut":
                    return
                await self._flowing.wait()
                await pair.flowing.wait()
                if pair.dead or writer.transport.is_closing():
                    return
                verdict = self.intercept(pair, up, data) if self.intercept is not None else None
                if verdict == "cut":
                    self._cut_pair(pair)
                    return
                writer.write(data)
                if up:
                    self.bytes_up += len(data)
                    pair.chunks_up += 1
                else:
                    self.bytes_down += len(data)
                    pair.chunks_down += 1
                if verdict == "cut_after":
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(writer.drain(), 1.0)
                    self._cut_pair(pair)
                    return
                await writer.drain()
        except (ConnectionError, OSError):
            return

    def arm(self, at: int, ready: Callable[[], bool], action: Callable[[], str | None]) -> asyncio.Future[None]:
        """Run ``action()`` in the data path, before the chunk that brings :attr:`forwarded` to ``at``.

        It fires only while ``ready()`` holds (checked chunk by chunk), so
        the fault lands at an exact byte count whatever the speed.  ``action``
        returns ``"cut"`` when it aborted the connections (the chunk is
        dropped).  Returns a future done once it fired.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._trigger = (at, ready, action, fut)
        return fut

    def _fire(self, pair: _Pair, n: int) -> str | None:
        assert self._trigger is not None
        at, ready, action, fut = self._trigger
        if self.forwarded + n < at or not ready():
            return None
        self._trigger = None
        verdict = action()
        if not fut.done():
            fut.set_result(None)
        return verdict

    def _cut_pair(self, pair: _Pair) -> None:
        if pair in self._pairs:
            self._pairs.discard(pair)
            self.cuts += 1
        pair.abort()


# ------------------------------------------------------------------ schedules


@dataclass(frozen=True, slots=True)
class ChaosStep:
    """One scheduled fault: ``kind`` is ``cut``, ``stall`` or ``delay``.

    It fires once ``gap`` more bytes went through the proxy (and the client
    is ready).  ``stall``: ``abort`` says whether the black-holed connection
    is then aborted or released (its held bytes delivered late).
    ``delay``: ``seconds`` per forwarded chunk, for ``span`` bytes.
    """

    kind: str
    gap: int
    seconds: float = 0.0
    span: int = 0
    abort: bool = True


def chaos_schedule(
    seed: int,
    steps: int,
    *,
    gap: tuple[int, int] = (32 << 10, 256 << 10),
    weights: tuple[float, float, float] = (0.85, 0.07, 0.08),
    delay: tuple[float, float] = (0.001, 0.01),
    span: tuple[int, int] = (64 << 10, 512 << 10),
) -> list[ChaosStep]:
    """``steps`` faults drawn from ``random.Random(seed)`` (weights: cut, stall, delay)."""
    rng = random.Random(seed)
    out: list[ChaosStep] = []
    for _ in range(steps):
        kind = rng.choices(("cut", "stall", "delay"), weights)[0]
        g = rng.randint(*gap)
        if kind == "delay":
            out.append(ChaosStep(kind, g, seconds=rng.uniform(*delay), span=rng.randint(*span)))
        elif kind == "stall":
            out.append(ChaosStep(kind, g, abort=rng.random() < 0.5))
        else:
            out.append(ChaosStep(kind, g))
    return out


@dataclass
class ChaosReport:
    """What :func:`run_chaos` did."""

    cuts: int = 0
    stalls: int = 0
    delays: int = 0
    skipped: int = 0  # steps not reached because the transfer finished
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)


async def wait_until(pred: Callable[[], object], timeout: float, poll: float = 0.002) -> bool:
    """Poll ``pred`` until true (``True``) or ``timeout`` seconds passed (``False``)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


async def run_chaos(
    proxy: TcpProxy,
    steps: list[ChaosStep],
    *,
    ready: Callable[[], bool],
    done: Callable[[], bool],
    step_timeout: float = 30.0,
) -> ChaosReport:
    """Apply ``steps`` to ``proxy`` in order, as progress allows; stop early once ``done()``.

    ``ready()`` says the client is connected and usable; a ``stall`` lasts
    until ``ready()`` turns false (the client's heartbeat noticed), bounded
    by ``step_timeout``.  Raises ``TimeoutError`` when a step cannot fire in
    time (the transfer stopped moving) -- that is a failure of the system
    under test, not of the schedule.
    """
    rep = ChaosReport()
    t0 = time.monotonic()
    mark = proxy.forwarded

    def cut() -> str:
        proxy.cut()
        return "cut"

    def stall() -> None:
        proxy.stall_connections()  # the chunk in hand is held with the rest

    def delay(seconds: float) -> Callable[[], None]:
        def act() -> None:
            proxy.delay = seconds

        return act

    try:
        for i, step in enumerate(steps):
            action = {"cut": cut, "stall": stall}.get(step.kind) or delay(step.seconds)
            fired = proxy.arm(mark + step.gap, ready, action)
            if not await wait_until(lambda fired=fired: fired.done() or done(), step_timeout):
                raise TimeoutError(
                    f"chaos step {i} ({step.kind}) not reached in {step_timeout:g} s: "
                    f"forwarded {proxy.forwarded - mark}/{step.gap} bytes, ready={ready()}"
                )
            if not fired.done():  # the transfer finished first
                rep.skipped = len(steps) - i
                break
            if step.kind == "cut":
                rep.cuts += 1
            elif step.kind == "stall":
                if not await wait_until(lambda: not ready() or done(), step_timeout):
                    raise TimeoutError(f"chaos step {i}: a stalled connection was never noticed (heartbeat)")
                proxy.release_stalled(abort=step.abort)
                rep.stalls += 1
            else:
                end = proxy.forwarded + step.span
                await wait_until(lambda end=end: proxy.forwarded >= end or done(), step_timeout)
                proxy.delay = 0.0
                rep.delays += 1
            rep.log.append(step.kind)
            mark = proxy.forwarded
    finally:
        proxy._trigger = None
        proxy.delay = 0.0
        proxy.release_stalled(abort=True)
    rep.seconds = time.monotonic() - t0
    return rep
