"""Cluster benchmarks (issue 17): the relay against a direct connection, and one vs two workers.

Real parts: ``redis-server`` and ``nimbus-ws serve --redis`` processes (pipes, no PTY), the
CPython client in this process.

* **stream**: ``head -c N /dev/zero`` on a channel, MB/s from the trigger to the last byte:
  client -> owner (direct) vs client -> other instance -> relay -> owner (target >= 0.8x);
* **echo**: one byte through ``cat`` and back, p50/p99 ms, direct vs relayed (target <= 1.5x);
* **resume**: drop the socket, time until the session is ``ready`` again (no retry delay):
  resumed on the owner vs on another instance (relayed);
* **workers**: 100 sessions each streaming ``head -c M /dev/zero`` at once against
  ``nimbus-ws serve`` (1 process) and ``nimbus-ws serve --workers 2``: aggregate MB/s and
  fairness (slowest session's MB/s / fastest's). The client runs in this process on the same
  2 cores, so the aggregate is the machine's, client included.

Run alone: ``.venv/bin/python bench/cluster.py [--quick]`` prints the table;
``bench/run.py`` adds the rows (section ``cluster``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

from common import cpu_seconds, percentile
from nimbus_websocket.node_runtime import RetryOptions, WebsocketsImpl, connect

ROOT = Path(__file__).resolve().parents[1]

TOKEN = "bench-cluster-token-0123456789"
AUTH = {"scheme": "bearer", "token": TOKEN}
TARGET = {"host": "localhost", "port": 22}
NO_DELAY = RetryOptions(base_ms=1, max_delay_ms=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Proc:
    """A ``nimbus-ws serve`` subprocess; ``url`` from its start line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nimbus_websocket", "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.url = ""
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("nimbus-ws serving ") and not self.url:
                self.url = line.split()[2]
                self.ready.set()
        self.ready.set()

    def wait(self, timeout: float = 60) -> str:
        if not self.ready.wait(timeout) or not self.url:
            raise RuntimeError("server did not start")
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class _Switch:
    """A WHATWG socket factory whose target URL the bench chooses; :meth:`drop` aborts the socket."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.last: WebsocketsImpl | None = None

    def __call__(self, url: str, protocols: Any = None) -> WebsocketsImpl:
        self.last = WebsocketsImpl(self.url, protocols)
        return self.last

    def drop(self) -> None:
        conn = getattr(self.last, "_conn", None)
        if conn is not None:
            conn.transport.abort()


class _Cluster:
    def __init__(self, tmp: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.redis_port = _free_port()
        self.redis = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        (tmp / "secret").write_text("bench-cluster-secret-0123456789abcdef\n")
        (tmp / "tokens").write_text(TOKEN + "\n")
        common = [
            "--redis",
            f"redis://127.0.0.1:{self.redis_port}/0",
            "--cluster-secret-file",
            str(tmp / "secret"),
            "--token-file",
            str(tmp / "tokens"),
            "--drain-timeout",
            "0",
        ]
        self.a = _Proc(*common, "--instance-id", "a")
        self.b = _Proc(*common, "--instance-id", "b")

    def start(self) -> tuple[str, str]:
        return self.a.wait(), self.b.wait()

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()
        self.redis.terminate()
        self.redis.wait(10)


async def _wait(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.0005)


async def _session(owner: str, command: str) -> tuple[Any, Any, _Switch]:
    sw = _Switch(owner)
    conn = await connect(owner, websocket_impl=sw, auth=lambda: AUTH, retry=NO_DELAY)
    ch = await conn.open_session(target=TARGET, user={"username": "bench"}, command=command)
    return conn, ch, sw


async def _move(conn: Any, sw: _Switch, url: str) -> float:
    """Drop the socket, let the client resume at ``url``; seconds until ready again."""
    sw.url = url
    t0 = time.perf_counter()
    sw.drop()
    await _wait(lambda: conn.state != "ready", 5)
    await _wait(lambda: conn.state == "ready", 10)
    return time.perf_counter() - t0


async def stream_once(owner: str, via: str, nbytes: int) -> float:
    conn, ch, sw = await _session(owner, f"read x; exec head -c {nbytes} /dev/zero")
    try:
        if via != owner:
            await _move(conn, sw, via)
        t0 = time.perf_counter()
        await ch.send(b"\n")
        got = 0
        async for chunk in ch:
            got += len(chunk)
            if got >= nbytes:
                break
        return nbytes / (time.perf_counter() - t0) / 1e6
    finally:
        await conn.close()


async def echo_once(owner: str, via: str, n: int) -> list[float]:
    conn, ch, sw = await _session(owner, "exec cat")
    try:
        if via != owner:
            await _move(conn, sw, via)
        it = ch.__aiter__()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            await ch.send(b"x")
            got = await it.__anext__()
            out.append(time.perf_counter() - t0)
            assert got == b"x"
        return out
    finally:
        await conn.close()


async def resume_once(owner: str, via: str, n: int) -> list[float]:
    conn, ch, sw = await _session(owner, "exec cat")
    try:
        return [await _move(conn, sw, via) for _ in range(n)]
    finally:
        await conn.close()


async def many_streams(url: str, sessions: int, nbytes: int) -> tuple[float, float]:
    """``sessions`` connections streaming ``nbytes`` each at once: (aggregate MB/s, fairness)."""
    conns = await asyncio.gather(
        *(_session(url, f"read x; exec head -c {nbytes} /dev/zero") for _ in range(sessions))
    )
    try:
        t0 = time.perf_counter()

        async def one(ch: Any) -> float:
            await ch.send(b"\n")
            got = 0
            async for chunk in ch:
                got += len(chunk)
                if got >= nbytes:
                    break
            return time.perf_counter() - t0

        times = await asyncio.gather(*(one(ch) for _, ch, _ in conns))
        wall = max(times)
        rates = [nbytes / t for t in times]
        return sessions * nbytes / wall / 1e6, min(rates) / max(rates)
    finally:
        await asyncio.gather(*(c.close() for c, _, _ in conns), return_exceptions=True)


async def run_async(quick: bool) -> dict[str, Any]:
    runs = 3 if quick else 7
    mb = 50 if quick else 200
    echo_n = 100 if quick else 500
    resume_n = 10 if quick else 30
    res: dict[str, Any] = {"runs": runs, "stream_mb": mb, "echo_n": echo_n, "resume_n": resume_n}
    with tempfile.TemporaryDirectory(prefix="nimbus-bench-cluster-") as tmp:
        c = _Cluster(Path(tmp))
        try:
            a, b = await asyncio.to_thread(c.start)
            for key in (
                "stream_direct",
                "stream_relay",
                "echo_direct",
                "echo_relay",
                "resume_direct",
                "resume_relay",
            ):
                res[key] = []
            for i in range(runs):  # interleaved: direct, relayed, direct, relayed...
                res["stream_direct"].append(await stream_once(a, a, mb << 20))
                cpu0 = cpu_seconds(c.b.proc.pid)
                res["stream_relay"].append(await stream_once(a, b, mb << 20))
                res.setdefault("relay_cpu_s_per_gb", []).append(
                    (cpu_seconds(c.b.proc.pid) - cpu0) / (mb / 1024)
                )
                res["echo_direct"].append(await echo_once(a, a, echo_n))
                res["echo_relay"].append(await echo_once(a, b, echo_n))
                res["resume_direct"].append(await resume_once(a, a, resume_n))
                res["resume_relay"].append(await resume_once(a, b, resume_n))
                print(
                    f"  cluster run {i + 1}: stream {res['stream_direct'][-1]:.0f} vs relayed {res['stream_relay'][-1]:.0f} MB/s; "
                    f"echo p50 {percentile(res['echo_direct'][-1], 50) * 1e3:.3f} vs {percentile(res['echo_relay'][-1], 50) * 1e3:.3f} ms; "
                    f"resume p50 {percentile(res['resume_direct'][-1], 50) * 1e3:.1f} vs {percentile(res['resume_relay'][-1], 50) * 1e3:.1f} ms",
                    flush=True,
                )
        finally:
            await asyncio.to_thread(c.stop)
        sessions, each = (20, 2 << 20) if quick else (100, 4 << 20)
        res["workers_sessions"], res["workers_each_mb"] = sessions, each >> 20
        (Path(tmp) / "tokens").write_text(TOKEN + "\n")
        res["w1"], res["w2"] = [], []
        for i in range(runs):
            for key, extra in (("w1", []), ("w2", ["--workers", "2"])):
                p = _Proc(
                    "--token-file",
                    str(Path(tmp) / "tokens"),
                    "--drain-timeout",
                    "0",
                    "--max-sessions-per-client",
                    "0",
                    "--max-connections-per-ip",
                    "0",
                    *extra,
                )
                try:
                    url = await asyncio.to_thread(p.wait)
                    res[key].append(await many_streams(url, sessions, each))
                finally:
                    await asyncio.to_thread(p.stop)
            print(
                f"  workers run {i + 1}: 1 worker {res['w1'][-1][0]:.0f} MB/s (fairness {res['w1'][-1][1]:.2f}), "
                f"2 workers {res['w2'][-1][0]:.0f} MB/s (fairness {res['w2'][-1][1]:.2f})",
                flush=True,
            )
    res["cores"] = os.cpu_count()
    return res


def run(quick: bool = False) -> dict[str, Any]:
    """Every cluster figure (raw samples)."""
    return asyncio.run(run_async(quick))


def add_rows(f: Any, r: dict[str, Any]) -> None:
    """Rows of ``bench/run.py``'s :class:`Figures` (section ``cluster``)."""
    sec = "cluster"
    f.add(
        sec,
        "cluster.stream.relay",
        f"stream {r['stream_mb']} MB through a relay (client → other instance → owner)",
        "MB/s",
        r["stream_relay"],
        baseline=r["stream_direct"],
        baseline_label="direct to the owner",
        target=("ratio>=", 0.8),
        digits=0,
    )

    def q(key: str, p: float) -> list[float]:
        return [percentile(xs, p) * 1e3 for xs in r[key]]

    f.add(
        sec,
        "cluster.echo.relay.p50",
        "keystroke echo through a relay, p50",
        "ms",
        q("echo_relay", 50),
        baseline=q("echo_direct", 50),
        baseline_label="direct p50",
        target=("ratio<=", 1.5),
        digits=3,
    )
    f.add(
        sec,
        "cluster.echo.relay.p99",
        "keystroke echo through a relay, p99",
        "ms",
        q("echo_relay", 99),
        baseline=q("echo_direct", 99),
        baseline_label="direct p99",
        digits=3,
    )
    f.add(
        sec,
        "cluster.resume.relay.p50",
        "resume latency on another instance (relayed), drop → ready, p50",
        "ms",
        q("resume_relay", 50),
        baseline=q("resume_direct", 50),
        baseline_label="resumed on the owner",
        digits=1,
    )
    n, each = r["workers_sessions"], r["workers_each_mb"]
    f.add(
        sec,
        "cluster.workers.mbps",
        f"{n} sessions streaming {each} MB each at once: --workers 2",
        "MB/s",
        [x[0] for x in r["w2"]],
        baseline=[x[0] for x in r["w1"]],
        baseline_label="1 process",
        digits=0,
    )
    f.add(
        sec,
        "cluster.workers.fair2",
        "… fairness with --workers 2 (slowest / fastest session)",
        "ratio",
        [x[1] for x in r["w2"]],
        digits=2,
    )
    f.add(
        sec,
        "cluster.workers.fair1",
        "… fairness with 1 process (slowest / fastest session)",
        "ratio",
        [x[1] for x in r["w1"]],
        digits=2,
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    r = run(args.quick)
    m = median
    print(
        f"stream MB/s: direct {m(r['stream_direct']):.0f}, relayed {m(r['stream_relay']):.0f} "
        f"({m(r['stream_relay']) / m(r['stream_direct']):.2f}x)"
    )
    for key in ("echo", "resume"):
        d = m(percentile(xs, 50) for xs in r[f"{key}_direct"]) * 1e3
        rl = m(percentile(xs, 50) for xs in r[f"{key}_relay"]) * 1e3
        print(f"{key} p50 ms: direct {d:.3f}, relayed {rl:.3f} ({rl / d:.2f}x)")
    print(
        f"relay instance CPU: {m(r['relay_cpu_s_per_gb']):.2f} s per relayed GB (the relayed stream's client and owner share the 2 cores with it)"
    )
    print(
        f"workers: 1 process {m(x[0] for x in r['w1']):.0f} MB/s fairness {m(x[1] for x in r['w1']):.2f}; "
        f"2 workers {m(x[0] for x in r['w2']):.0f} MB/s fairness {m(x[1] for x in r['w2']):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
