"""Sessions per machine: N concurrent sessions, each with ``/bin/sh``, a tenth of them streaming.

    .venv/bin/python bench/sessions.py [--quick] [--n 1000] [--json OUT]
    .venv/bin/python bench/sessions.py --trace [--n 200]   # tracemalloc: what a session costs, by file:line

The reference server runs in its own process (this file with ``--serve``:
the PTY backend running ``exec /bin/sh`` per session; the per-address,
per-client and total caps raised *by options* to N plus a margin, nothing
else differs from the defaults).  This process holds every client: the
project's CPython client (``bench/peers/clients.py``), one connection and
one channel per session.

1. **idle**: one warm-up session, the server's ``VmRSS`` once it settled,
   then N sessions opened (``--parallel`` at a time), each until its shell
   answered ``echo __R$((6*7))__``; ``VmRSS`` again once settled:
   ``(after - before) / N`` is the server's memory per session, without
   its shell (the shells are other processes); server CPU over the settle
   time (cores);
2. **streaming**: every tenth session types ``seq 1 ...``; once all of them
   stream, the bytes each receives in a window of ``--window`` seconds
   give its throughput; fairness is min / median of those; server CPU
   over the window (cores) and its peak ``VmRSS``; every byte each stream
   received is compared with what ``seq`` prints (a PTY turns ``\\n`` into
   ``\\r\\n``): a lost, repeated or reordered byte is a mismatch;
3. **peer**: terminado (``UniqueTermManager``, the peers bench's server)
   with the same ``/bin/sh`` and N: server RSS per idle session, same
   method (``--no-peer`` to skip).

Every wait is bounded (open and read timeouts, the window); the whole run
takes ~1-2 min for N = 1000 on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from common import cpu_seconds, machine, table  # noqa: E402
from peers import servers  # noqa: E402
from peers.clients import NimbusClient, WireClient  # noqa: E402

#: The shell prints the marker, its echoed command line does not.
PROBE = b"echo __R$((6*7))__\n"
READY = b"__R42__"
#: ``_S_`` from octal escapes (the echoed command line holds the escapes, not the marker).
STREAM_CMD = b"printf '\\137S\\137\\n'; seq 1 999999999\n"
START = b"_S_\r\n"
#: Lines of ``seq`` kept to check the streams against (~26 MB; a stream that gets past it stops checking).
EXPECT_LINES = 3_000_000
OPEN_TIMEOUT = 30.0
READ_TIMEOUT = 30.0
SETTLE_S = 2.0


def params(quick: bool, n: int | None = None) -> dict[str, Any]:
    """Sizes; ``quick`` for a smoke run."""
    p: dict[str, Any] = {"quick": quick, "n": 100 if quick else 1000, "stream_every": 10,
                         "window": 2.0 if quick else 5.0, "parallel": 20}
    if n is not None:
        p["n"] = n
    return p


# ------------------------------------------------------------------ server
async def serve(n: int, trace_out: str | None) -> None:
    """The reference server with caps for ``n`` sessions; ``PORT p`` once listening; until SIGTERM.

    With ``trace_out``, tracemalloc runs from before the first session and
    SIGUSR1 writes a snapshot to ``trace_out`` + ``.N`` (N counts up).
    """
    from nimbus_websocket.core.server_config import ServerConfig
    from nimbus_websocket.node_runtime.server import Server, ServerOptions

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if trace_out:
        tracemalloc.start(1)
        shots = iter(range(1000))
        loop.add_signal_handler(
            signal.SIGUSR1, lambda: tracemalloc.take_snapshot().dump(f"{trace_out}.{next(shots)}"))
    cap = n + 64
    cfg = ServerConfig(max_sessions=cap, max_sessions_per_principal=cap, max_sessions_per_peer=cap)
    srv = Server(ServerOptions(port=0, pty_command="exec /bin/sh", max_connections=cap,
                               max_connections_per_ip=cap, config=cfg))
    await srv.start()
    print(f"PORT {srv.port}", flush=True)
    await asyncio.wait_for(stop.wait(), 3600)
    await srv.stop()


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


def start_nimbus(n: int, trace_out: str | None = None) -> servers.Running:
    """The reference server in its own process (this file with ``--serve``)."""
    _raise_nofile(4 * n + 256)  # inherited: a socket, a PTY master and pipes per session
    argv = [sys.executable, str(HERE), "--serve", "--n", str(n)] + (["--trace-out", trace_out] if trace_out else [])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=servers.server_env(), cwd=str(servers.ROOT))
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        proc.kill()
        proc.wait(10)
        raise RuntimeError("the server did not start")
    url = f"ws://127.0.0.1:{int(line.split()[1])}/ws/ssh"
    return servers.Running("nimbus", proc, lambda: NimbusClient(url))


async def settle(run: servers.Running, seconds: float) -> int:
    """RSS (KiB) once it stopped moving: the lowest of samples over ``seconds``."""
    samples = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        samples.append(run.rss())
        await asyncio.sleep(0.1)
    return min(samples)


# ------------------------------------------------------------------ clients
async def _read_until(c: WireClient, mark: bytes, timeout: float = READ_TIMEOUT) -> bytes:
    buf = b""
    async with asyncio.timeout(timeout):
        while mark not in buf:
            buf = (buf + await c.recv())[-4096:]
    return buf


async def open_sessions(run: servers.Running, n: int, parallel: int) -> list[WireClient]:
    """``n`` sessions, each until its shell answered the probe (``parallel`` at a time, bounded)."""
    clients: list[WireClient] = []

    async def one() -> WireClient:
        c = run.client()
        try:
            await asyncio.wait_for(c.open(), OPEN_TIMEOUT)
            await c.send(PROBE)
            await _read_until(c, READY)
        except BaseException:
            await close_all([c])
            raise
        return c

    try:
        for i in range(0, n, parallel):
            clients += await asyncio.wait_for(asyncio.gather(*(one() for _ in range(min(parallel, n - i)))), 120)
    except BaseException:
        await close_all(clients)
        raise
    return clients


async def close_all(clients: list[WireClient]) -> None:
    """Close every client (bounded), in batches."""
    for i in range(0, len(clients), 100):
        batch = clients[i : i + 100]
        await asyncio.wait_for(asyncio.gather(*(c.close() for c in batch), return_exceptions=True), 60)


class Stream:
    """One streaming session's reader: bytes after the start marker, checked against ``seq``."""

    def __init__(self, c: WireClient, expected: bytes) -> None:
        self.c = c
        self.expected = expected
        self.started = asyncio.Event()
        self.n = 0  # sequence bytes received
        self.checked = 0  # of which compared with the expected bytes
        self.mismatch: str | None = None
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        if self.mismatch is None and self.checked < len(self.expected):
            want = self.expected[self.checked : self.checked + len(data)]
            got = data[: len(want)]
            if got != want:
                at = next(i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b) if len(got) == len(
                    want) else min(len(got), len(want))
                self.mismatch = f"byte {self.checked + at}: got {got[at:at + 12]!r}, want {want[at:at + 12]!r}"
            self.checked += len(want)
        self.n += len(data)

    async def run(self) -> None:
        try:
            await self.c.send(STREAM_CMD)
            head = b""
            async with asyncio.timeout(READ_TIMEOUT):
                while START not in head:
                    head += await self.c.recv()
            self.started.set()
            self.feed(head.split(START, 1)[1])
            while True:
                self.feed(await self.c.recv())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported, not raised: the others go on
            self.error = f"{type(exc).__name__}: {exc}"[:200]
            self.started.set()


def expected_seq() -> bytes:
    """What ``seq 1 EXPECT_LINES`` prints through a PTY (``onlcr``: ``\\r\\n``)."""
    out = subprocess.run(["seq", "1", str(EXPECT_LINES)], capture_output=True, check=True, timeout=60).stdout
    return out.replace(b"\n", b"\r\n")


async def stream_phase(run: servers.Running, clients: list[WireClient], p: dict[str, Any]) -> dict[str, Any]:
    """Every ``stream_every``-th session streams ``seq``; throughput per stream over the window."""
    expected = expected_seq()
    streams = [Stream(c, expected) for c in clients[:: p["stream_every"]]]
    tasks = [asyncio.create_task(s.run()) for s in streams]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.started.wait() for s in streams)), READ_TIMEOUT + 5)
        await asyncio.sleep(0.5)  # every stream past its start
        n0 = [s.n for s in streams]
        c0, t0 = cpu_seconds(run.pid), time.monotonic()
        peak = run.rss()
        while (t := time.monotonic() - t0) < p["window"]:
            await asyncio.sleep(min(0.25, p["window"] - t))
            peak = max(peak, run.rss())
        n1 = [s.n for s in streams]
        dt = time.monotonic() - t0
        cpu = (cpu_seconds(run.pid) - c0) / dt
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    rates = [(b - a) / dt / 1e6 for a, b in zip(n0, n1, strict=True)]
    med = statistics.median(rates)
    return {
        "streams": len(streams), "window_s": dt, "mb_s": rates, "total_mb_s": sum(rates),
        "fairness": (min(rates) / med) if med else 0.0, "server_cpu_cores": cpu, "peak_rss_kib": peak,
        "checked_mb": sum(s.checked for s in streams) / 1e6, "received_mb": sum(s.n for s in streams) / 1e6,
        "mismatches": [s.mismatch for s in streams if s.mismatch],
        "errors": [s.error for s in streams if s.error],
    }


async def idle_phase(run: servers.Running, p: dict[str, Any]) -> tuple[dict[str, Any], list[WireClient]]:
    """N sessions at their prompt: server KiB per session, CPU while they idle."""
    warm = await open_sessions(run, 1, 1)
    await close_all(warm)
    before = await settle(run, SETTLE_S)
    t0 = time.monotonic()
    clients = await open_sessions(run, p["n"], p["parallel"])
    opened = time.monotonic() - t0
    try:
        c0, t1 = cpu_seconds(run.pid), time.monotonic()
        after = await settle(run, SETTLE_S + 1.0)
        idle_cpu = (cpu_seconds(run.pid) - c0) / (time.monotonic() - t1)
        if not run.alive():
            raise RuntimeError(f"{run.peer}: the server exited holding {p['n']} sessions")
    except BaseException:
        await close_all(clients)
        raise
    return {"before_kib": before, "after_kib": after, "kib_per_session": (after - before) / p["n"],
            "open_s": opened, "idle_cpu_cores": idle_cpu}, clients


async def run_nimbus(p: dict[str, Any]) -> dict[str, Any]:
    run = start_nimbus(p["n"])
    try:
        idle, clients = await idle_phase(run, p)
        try:
            streaming = await stream_phase(run, clients, p)
        finally:
            await close_all(clients)
        return {"idle": idle, "stream": streaming}
    finally:
        run.stop(kill=True)


async def run_peer(p: dict[str, Any]) -> dict[str, Any]:
    """terminado, same shell, same N, same method: server KiB per idle session."""
    run = servers.start("terminado", ["/bin/sh"])
    try:
        idle, clients = await idle_phase(run, p)
        await close_all(clients)
        return {"idle": idle}
    finally:
        run.stop(kill=True)


async def run(p: dict[str, Any], peer: bool = True) -> dict[str, Any]:
    """Measure; the JSON-able result."""
    t0 = time.monotonic()
    out: dict[str, Any] = {"params": p, "load_start": list(os.getloadavg())}
    out["nimbus"] = await run_nimbus(p)
    if peer:
        try:
            out["terminado"] = await run_peer(p)
        except Exception as exc:  # reported as not measured; nimbus's figures stand
            out["terminado_error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["load_end"] = list(os.getloadavg())
    out["seconds"] = time.monotonic() - t0
    return out


# ------------------------------------------------------------------ report
TARGET_KIB = 32.0
TARGET_FAIRNESS = 0.5


def add_figures(f: Any, data: dict[str, Any]) -> None:
    """Rows of ``bench/run.py``'s ``Figures`` (one run: each figure is one sample)."""
    p, nim = data["params"], data["nimbus"]
    n, s = p["n"], nim["stream"]
    sec = "sessions"
    peer = data.get("terminado", {}).get("idle", {}).get("kib_per_session")
    f.add(sec, "sessions.idle_kib", f"server RSS per session, {n} sessions each with `/bin/sh` at its prompt "
          "(server process only, not the shells)", "KiB", [nim["idle"]["kib_per_session"]],
          baseline=[peer] if peer else None, baseline_label="terminado, same N and shell",
          target=("<=", TARGET_KIB))
    f.add(sec, "sessions.open_s", f"open {n} sessions to the shell's answer ({p['parallel']} at a time)", "s",
          [nim["idle"]["open_s"]])
    f.add(sec, "sessions.idle_cpu", f"server CPU, {n} sessions idle", "cores", [nim["idle"]["idle_cpu_cores"]],
          digits=3)
    f.add(sec, "sessions.stream_total", f"{s['streams']} of them streaming `seq` at once: total", "MB/s",
          [s["total_mb_s"]])
    f.add(sec, "sessions.stream_median", "… per stream, median", "MB/s", [statistics.median(s["mb_s"])], digits=2)
    f.add(sec, "sessions.fairness", f"… fairness: slowest / median stream over {s['window_s']:.1f} s", "×",
          [s["fairness"]], target=(">=", TARGET_FAIRNESS), digits=2)
    f.add(sec, "sessions.stream_cpu", "… server CPU while streaming", "cores", [s["server_cpu_cores"]], digits=2)
    f.add(sec, "sessions.stream_rss", "… server RSS growth while streaming (peak − before the sessions) per session",
          "KiB", [(s["peak_rss_kib"] - nim["idle"]["before_kib"]) / n])
    f.add(sec, "sessions.lost", f"… bytes lost, repeated or reordered ({s['checked_mb']:.0f} MB compared with `seq`)",
          "streams", [len(s["mismatches"]) + len(s["errors"])], target=("<=", 0.0), digits=0)


def text_table(data: dict[str, Any]) -> str:
    p, nim = data["params"], data["nimbus"]
    s = nim["stream"]
    peer = data.get("terminado", {}).get("idle", {}).get("kib_per_session")
    rows = [
        ["server KiB per idle session with its shell", f"{nim['idle']['kib_per_session']:.1f}",
         f"terminado {peer:.1f}" if peer else data.get("terminado_error", "–")],
        ["open N sessions, s", f"{nim['idle']['open_s']:.1f}", ""],
        ["server CPU idle, cores", f"{nim['idle']['idle_cpu_cores']:.3f}", ""],
        [f"{s['streams']} streams: total MB/s", f"{s['total_mb_s']:.1f}", ""],
        ["per stream MB/s: min / median / max",
         f"{min(s['mb_s']):.2f} / {statistics.median(s['mb_s']):.2f} / {max(s['mb_s']):.2f}", ""],
        ["fairness (min / median)", f"{s['fairness']:.2f}", ">= 0.5"],
        ["server CPU streaming, cores", f"{s['server_cpu_cores']:.2f}", ""],
        ["server peak RSS growth streaming, KiB per session",
         f"{(s['peak_rss_kib'] - nim['idle']['before_kib']) / p['n']:.1f}", ""],
        ["streams with a lost/extra byte, or failed", f"{len(s['mismatches']) + len(s['errors'])}",
         f"{s['checked_mb']:.0f} MB checked"],
    ]
    return table(["figure", "nimbus", "peer / note"], rows)


# ------------------------------------------------------------------ trace
async def trace(n: int, top: int) -> None:
    """tracemalloc in the server: what ``n`` idle sessions with a shell hold, by file:line."""
    out = f"/tmp/nimbus-sessions-trace-{os.getpid()}"
    run = start_nimbus(n, trace_out=out)
    try:
        warm = await open_sessions(run, 1, 1)
        await close_all(warm)
        await settle(run, SETTLE_S)
        os.kill(run.pid, signal.SIGUSR1)
        await asyncio.sleep(1.0)
        clients = await open_sessions(run, n, 20)
        await settle(run, SETTLE_S)
        os.kill(run.pid, signal.SIGUSR1)
        await asyncio.sleep(2.0)
        await close_all(clients)
    finally:
        run.stop(kill=True)
    a, b = tracemalloc.Snapshot.load(f"{out}.0"), tracemalloc.Snapshot.load(f"{out}.1")
    for path in (f"{out}.0", f"{out}.1"):
        os.unlink(path)
    diff = b.compare_to(a, "lineno")
    total = sum(d.size_diff for d in diff)
    print(f"# tracemalloc: {n} sessions, {total / n / 1024:.1f} KiB of Python heap per session; top lines:")
    root = str(servers.ROOT) + "/"
    for d in diff[:top]:
        fr = d.traceback[0]
        name = fr.filename.replace(root, "").split("site-packages/")[-1].split("python3.11/")[-1]
        print(f"{d.size_diff / n:8.0f} B/session {d.count_diff / n:6.2f} blocks  {name}:{fr.lineno}")
    by_file: dict[str, int] = {}
    for d in b.compare_to(a, "filename"):
        name = d.traceback[0].filename.replace(root, "").split("site-packages/")[-1].split("python3.11/")[-1]
        by_file[name] = by_file.get(name, 0) + d.size_diff
    print("# by file:")
    for name, size in sorted(by_file.items(), key=lambda x: -x[1])[:top]:
        print(f"{size / n:8.0f} B/session  {name}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, help="sessions (default 1000; --quick 100)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--no-peer", action="store_true", help="skip terminado")
    ap.add_argument("--trace", action="store_true", help="tracemalloc by file:line in the server (N default 200)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trace-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.n or 1000, args.trace_out))
        return 0
    if args.trace:
        asyncio.run(trace(args.n or 200, args.top))
        return 0
    p = params(args.quick, args.n)
    data = asyncio.run(run(p, peer=not args.no_peer))
    print(f"# sessions ({machine()}), N={p['n']}, {data['seconds']:.0f} s, load {data['load_start']} -> "
          f"{data['load_end']}")
    print(text_table(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
