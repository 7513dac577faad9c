"""Chaos: exactly-once delivery through a loopback proxy that cuts, stalls and delays on a seeded schedule.

One session carries three channels on pipes (no PTY: byte-exact) at once:

* ``cat`` -- random bytes in, the same bytes back (both directions);
* ``sha256sum`` -- random bytes in, the digest printed at EOF (client->server alone);
* a generator -- a seeded random stream out (server->client alone).

Every received chunk is compared with the expected bytes at its offset (so a
duplicate or a gap fails at the first wrong byte, with its offset), and the
sha256 of each direction is checked at the end.  Through the proxy, a
schedule drawn from one seed cuts the TCP connection (RST both ways),
black-holes it (only the client's heartbeat can notice: 50 ms x 3) and
delays frames; the client reconnects and resumes (``caps.ack``) each time.
The retry budget stays at the contract's 10 consecutive tries: it resets on
every successful resume, so hundreds of cuts do not exhaust it.

Also: cuts at exact points of the resume handshake, consecutive failed
reconnects (up to and past the budget), and a reconnect after the
retention window (4011, a typed CloseError, no hang).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shlex
import sys
import time
from typing import Any

import pytest
from nimbus_websocket.core import CloseError, Diagnostic, StateChanged
from nimbus_websocket.core.server import ServerConfig
from nimbus_websocket.node_runtime import ChannelError, RetryOptions, WebsocketsImpl, connect
from rel_util import TARGET, USER, figure, wait_for
from support.proxy import ChaosReport, TcpProxy, chaos_schedule, run_chaos

pytestmark = pytest.mark.timeout(300)

GEN_CHUNK = 65536


def gen_command(seed: int, n: int) -> str:
    """A command writing ``gen_bytes(seed, n)`` to stdout."""
    prog = (
        f"import random,sys\nr=random.Random({seed});o=sys.stdout.buffer;n={n}\n"
        f"while n>0:\n k=min(n,{GEN_CHUNK});o.write(r.randbytes(k));n-=k\no.flush()\n"
    )
    return f"exec {shlex.quote(sys.executable)} -c {shlex.quote(prog)}"


def gen_bytes(seed: int, n: int) -> bytes:
    r = random.Random(seed)
    out = bytearray()
    while n > 0:
        k = min(n, GEN_CHUNK)
        out += r.randbytes(k)
        n -= k
    return bytes(out)


class Stream:
    """Expected bytes of one channel's output, checked chunk by chunk as it arrives."""

    def __init__(self, name: str, expected: bytes) -> None:
        self.name = name
        self.expected = expected
        self.got = 0
        self.sha = hashlib.sha256()

    def take(self, chunk: bytes) -> None:
        want = self.expected[self.got : self.got + len(chunk)]
        if chunk != want:
            bad = next((i for i, (a, b) in enumerate(zip(chunk, want, strict=False)) if a != b), min(len(chunk), len(want)))
            raise AssertionError(
                f"{self.name}: wrong byte at offset {self.got + bad} of {len(self.expected)} "
                f"(chunk of {len(chunk)} at {self.got}; duplicate, gap or overrun)"
            )
        self.got += len(chunk)
        self.sha.update(chunk)

    @property
    def complete(self) -> bool:
        return self.got == len(self.expected)


class Transfer:
    """The three-channel bidirectional workload on one connection."""

    def __init__(self, conn: Any, seed: int, cat: int, up: int, down: int) -> None:
        rng = random.Random(seed)
        self.conn = conn
        self.cat_data = rng.randbytes(cat)
        self.up_data = rng.randbytes(up)
        self.gen_seed = rng.randrange(1 << 30)
        self.cat = Stream("cat (client->server->client)", self.cat_data)
        self.gen = Stream("generator (server->client)", gen_bytes(self.gen_seed, down))
        digest = hashlib.sha256(self.up_data).hexdigest()
        self.sha = Stream("sha256sum (client->server)", f"{digest}  -\n".encode())
        self.channels: dict[str, Any] = {}
        self.tasks: list[asyncio.Task[Any]] = []
        self.down = down

    async def start(self) -> None:
        c = self.conn
        self.channels["cat"] = await c.open_session(TARGET, USER, None, command="exec cat")
        self.channels["sha"] = await c.open_session(TARGET, USER, None, command="exec sha256sum")
        self.channels["gen"] = await c.open_session(TARGET, USER, None, command=gen_command(self.gen_seed, self.down))
        self.tasks = [
            asyncio.create_task(self._send(self.channels["cat"], self.cat_data, eof=False)),
            asyncio.create_task(self._send(self.channels["sha"], self.up_data, eof=True)),
            asyncio.create_task(self._read(self.channels["cat"], self.cat, until_complete=True)),
            asyncio.create_task(self._read(self.channels["sha"], self.sha, until_complete=False)),
            asyncio.create_task(self._read(self.channels["gen"], self.gen, until_complete=False)),
        ]

    @staticmethod
    async def _send(ch: Any, data: bytes, *, eof: bool) -> None:
        view = memoryview(data)
        for i in range(0, len(data), 256 * 1024):  # several writes, so cuts land between them too
            await ch.send(view[i : i + 256 * 1024])
        if eof:
            await ch.send_eof()

    @staticmethod
    async def _read(ch: Any, stream: Stream, *, until_complete: bool) -> None:
        async for chunk in ch:  # ends when the channel closes (after exit)
            stream.take(chunk)
            if until_complete and stream.complete:
                return
        assert stream.complete, f"{stream.name}: channel closed after {stream.got} of {len(stream.expected)} bytes"

    def done(self) -> bool:
        return all(t.done() for t in self.tasks)

    async def wait(self, timeout: float, also: list[asyncio.Task[Any]] = ()) -> None:  # type: ignore[assignment]
        """Wait for the workload (and ``also``, e.g. the chaos driver); re-raise the first failure."""
        tasks = [*self.tasks, *also]
        finished, pending = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
        for t in finished:
            t.result()  # re-raise the first failure
        pending -= set(also)
        assert not pending, (
            f"transfer stuck after {timeout}s: cat {self.cat.got}/{len(self.cat.expected)}, "
            f"sha {self.sha.got}/{len(self.sha.expected)}, gen {self.gen.got}/{len(self.gen.expected)}, "
            f"state {self.conn.state}, error {self.conn.error}"
        )

    async def check(self) -> None:
        assert self.cat.sha.hexdigest() == hashlib.sha256(self.cat_data).hexdigest()
        assert self.gen.sha.hexdigest() == hashlib.sha256(self.gen.expected).hexdigest()
        assert self.sha.complete  # the server-side digest of the uploaded bytes matched
        for name in ("sha", "gen"):
            ch = self.channels[name]
            assert await asyncio.wait_for(ch.wait_closed(), 10) == 0, name
        cat = self.channels["cat"]
        assert cat.state == "open", cat.state
        await cat.send(b"still alive\n")  # the channel survived every fault
        it = cat.__aiter__()
        tail = b""
        while len(tail) < 12:
            tail += await asyncio.wait_for(it.__anext__(), 10)
        assert tail == b"still alive\n"

    async def cancel(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _client(proxy: TcpProxy, events: list[Any], **kw: Any) -> Any:
    kw.setdefault("heartbeat_interval", 0.05)
    kw.setdefault("heartbeat_misses", 3)
    kw.setdefault("handshake_timeout", 2.0)
    kw.setdefault("retry", RetryOptions(base_ms=5, max_delay_ms=100))  # 10 tries, as the contract
    return await connect(
        f"ws://127.0.0.1:{proxy.port}/ws/ssh",
        websocket_impl=WebsocketsImpl,
        on={"statechange": events.append, "diagnostic": events.append},
        **kw,
    )


def _codes(events: list[Any]) -> list[str]:
    return [e.code for e in events if isinstance(e, Diagnostic)]


async def _chaos_run(make_server: Any, make_proxy: Any, *, seed: int, cuts: int, scale: int) -> tuple[ChaosReport, Transfer, float]:
    srv = await make_server()
    proxy = await make_proxy(srv.port)
    events: list[Any] = []
    conn = await _client(proxy, events)
    mib = 1 << 20
    t = Transfer(conn, seed, cat=5 * mib * scale, up=3 * mib * scale, down=3 * mib * scale)
    # Enough steps for `cuts` cuts (85 % of steps are cuts), each after 8-64 KiB of traffic.
    steps = chaos_schedule(seed, int(cuts / 0.85) + 40, gap=(8 << 10, 64 << 10))
    want = sum(1 for s in steps if s.kind == "cut")
    assert want >= cuts
    t0 = time.monotonic()
    try:
        await t.start()

        def ready() -> bool:
            return conn.state == "ready"

        chaos = asyncio.create_task(run_chaos(proxy, steps, ready=ready, done=t.done, step_timeout=30))
        await t.wait(timeout=240, also=[chaos])
        rep = await asyncio.wait_for(chaos, 30)
        await t.check()
        elapsed = time.monotonic() - t0
        # every fault was noticed and repaired by a resume, never by a fresh session
        codes = _codes(events)
        assert codes.count("resume_accepted") >= rep.cuts + rep.stalls
        assert "resume_rejected" not in codes and conn.error is None
        states = [e.new for e in events if isinstance(e, StateChanged)]
        assert states[-1] == "ready" and "closed" not in states
        assert len(srv.registry) == 1  # still the one session
    finally:
        await t.cancel()
        await conn.close()
    return rep, t, elapsed


async def test_chaos_200_cuts_exactly_once_both_directions(make_server: Any, make_proxy: Any) -> None:
    rep, t, elapsed = await _chaos_run(make_server, make_proxy, seed=2024, cuts=200, scale=1)
    assert rep.cuts >= 200, f"transfer ended after {rep.cuts} cuts (schedule: {rep.log[-5:]})"
    assert rep.stalls >= 5 and rep.delays >= 5
    figure(
        "chaos", run="fast", seed=2024, cuts=rep.cuts, stalls=rep.stalls, delays=rep.delays,
        seconds=round(elapsed, 1), bytes=len(t.cat_data) * 2 + len(t.up_data) + len(t.gen.expected),
    )


@pytest.mark.stress
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("seed", [1, 2])
async def test_stress_chaos_1000_cuts(make_server: Any, make_proxy: Any, seed: int) -> None:
    rep, t, elapsed = await _chaos_run(make_server, make_proxy, seed=seed, cuts=1000, scale=5)
    assert rep.cuts >= 1000, f"transfer ended after {rep.cuts} cuts"
    figure(
        "chaos", run="stress", seed=seed, cuts=rep.cuts, stalls=rep.stalls, delays=rep.delays,
        seconds=round(elapsed, 1), bytes=len(t.cat_data) * 2 + len(t.up_data) + len(t.gen.expected),
    )


# ------------------------------------------------------------ exact cut points


async def _started(make_server: Any, make_proxy: Any, **kw: Any) -> tuple[Any, TcpProxy, Any, Transfer, list[Any]]:
    srv = await make_server(**kw)
    proxy = await make_proxy(srv.port)
    events: list[Any] = []
    conn = await _client(proxy, events)
    mib = 1 << 20
    t = Transfer(conn, 7, cat=2 * mib, up=mib, down=mib)
    await t.start()
    await wait_for(lambda: t.cat.got > 128 * 1024, 20, "cat output flowing")
    return srv, proxy, conn, t, events


@pytest.mark.parametrize(
    "where",
    [
        "before_upgrade_response",  # the server accepted the TCP connection, the client never sees 101
        "before_hello",  # upgraded; the resuming hello never reaches the server
        "hello_ok_lost",  # the server resumed the session, its hello_ok is lost with the connection
        "after_hello_ok",  # hello_ok delivered, then the connection dies at once
    ],
)
async def test_cut_during_the_resume_handshake(make_server: Any, make_proxy: Any, where: str) -> None:
    srv, proxy, conn, t, events = await _started(make_server, make_proxy)
    try:
        target = proxy.accepted + 1  # the reconnection after our first cut
        hits: list[str] = []

        def intercept(pair: Any, up: bool, chunk: bytes) -> str | None:
            if pair.serial != target:
                return None
            verdict = None
            if where == "before_upgrade_response" and not up and pair.chunks_down == 0 or where == "before_hello" and up and pair.chunks_up == 1:
                verdict = "cut"
            elif where == "hello_ok_lost" and not up and pair.chunks_down == 1:
                assert pair.chunks_up >= 2  # the hello went through: the server resumed
                verdict = "cut"
            elif where == "after_hello_ok" and not up and pair.chunks_down == 1:
                verdict = "cut_after"
            if verdict:
                hits.append(verdict)
                proxy.intercept = None
            return verdict

        proxy.intercept = intercept
        resumes = srv.registry.resumes
        proxy.cut()
        await wait_for(lambda: hits and conn.state == "ready" and proxy.accepted >= target + 1, 20, "second reconnect")
        await t.wait(timeout=60)
        await t.check()
        codes = _codes(events)
        assert "resume_rejected" not in codes and conn.error is None
        # the server resumed twice when the hello reached it (the lost one counts), once otherwise
        assert srv.registry.resumes - resumes == (2 if where in ("hello_ok_lost", "after_hello_ok") else 1)
    finally:
        await t.cancel()
        await conn.close()


@pytest.mark.parametrize("failures", [2, 9])
async def test_consecutive_failed_reconnects_within_the_retry_budget(make_server: Any, make_proxy: Any, failures: int) -> None:
    """A cut, then ``failures`` reconnects cut in a row (2: two cuts in a row): the next one resumes."""
    srv, proxy, conn, t, events = await _started(make_server, make_proxy)
    try:
        first = proxy.accepted + 1
        proxy.intercept = lambda pair, up, chunk: "cut" if pair.serial < first + failures else None
        proxy.cut()
        await wait_for(lambda: proxy.accepted >= first + failures and conn.state == "ready", 30, "recovery")
        proxy.intercept = None
        await t.wait(timeout=60)
        await t.check()
        assert _codes(events).count("reconnect_attempt") >= failures + 1
    finally:
        await t.cancel()
        await conn.close()


async def test_retry_budget_exhausted_is_a_typed_error(make_server: Any, make_proxy: Any) -> None:
    """Ten failed reconnects in a row (the contract's budget): RETRIES_EXHAUSTED, channels fail, no hang."""
    srv, proxy, conn, t, events = await _started(make_server, make_proxy)
    try:
        proxy.intercept = lambda pair, up, chunk: "cut"  # every connection from now on
        proxy.cut()
        err = await asyncio.wait_for(conn.wait_closed(), 30)
        assert isinstance(err, CloseError) and err.code == "RETRIES_EXHAUSTED", err
        assert _codes(events).count("reconnect_attempt") == 10
        with pytest.raises((ChannelError, CloseError)):
            await asyncio.wait_for(t.channels["cat"].send(b"x"), 10)
    finally:
        proxy.intercept = None
        await t.cancel()
        await conn.close()


async def test_reconnect_after_the_retention_window_is_4011(make_server: Any, make_proxy: Any) -> None:
    """Cut, hold the reconnection until the server expired the session: clean 4011, typed error, no hang."""
    srv, proxy, conn, t, events = await _started(make_server, make_proxy, config=ServerConfig(retention=0.3))
    try:
        chan = t.channels["cat"]
        proxy.stall(True)  # the reconnection's TCP connect succeeds, then nothing passes
        proxy.cut()
        await wait_for(lambda: len(srv.registry) == 0, 10, "the session to expire on the server")
        proxy.stall(False)
        err = await asyncio.wait_for(conn.wait_closed(), 15)
        assert isinstance(err, CloseError), err
        assert (err.ws_code, err.app_code, err.code) == (4011, 4011, "RESUME_FAILED")
        assert conn.state == "closed"
        assert "resume_rejected" in _codes(events)
        await asyncio.wait_for(chan.wait_closed(raise_error=False), 5)
        assert chan.state == "closed" and chan.error is not None
        with pytest.raises((ChannelError, CloseError)):
            await chan.send(b"too late")
    finally:
        await t.cancel()
        await conn.close()
