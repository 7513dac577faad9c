"""Sharing (issue 18): the owner's stream alone, with a slow viewer, with a fast viewer.

The reference server runs in its own process (this file with ``--serve``,
PTY backend, ``/bin/sh``). The owner (the CPython client) streams N bytes of
``x`` through its PTY (``head -c N /dev/zero | tr '\\0' x``); measured from
the command to its end marker, interleaved run by run:

* alone (the baseline);
* with one viewer reading at 64 KiB/s (its consumption earns its credit) --
  the target: the owner within 10 % of alone;
* with one viewer reading as fast as it can.

Server CPU seconds per run show what the screen model and the fan-out cost.

    .venv/bin/python bench/share.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

from common import cpu_seconds, median_range, table  # noqa: E402

TARGET = 0.9  # owner with a slow viewer / owner alone
T = {"host": "localhost", "port": 22}
TERM = {"cols": 80, "rows": 24, "env": {"TERM": "xterm-256color"}}


def params(quick: bool) -> dict[str, Any]:
    """Sizes and run counts (``--quick``: a smoke run)."""
    return {
        "bytes": 20_000_000 if quick else 100_000_000,
        "runs": 2 if quick else 5,
        "quick": quick,
    }


async def serve() -> None:
    """The reference server (PTY backend); prints ``PORT p`` once listening; until SIGTERM."""
    from nimbus_websocket.node_runtime.server import Server, ServerOptions

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    srv = Server(ServerOptions(port=0, pty_command="exec /bin/sh"))
    await srv.start()
    print(f"PORT {srv.port}", flush=True)
    await asyncio.wait_for(stop.wait(), 3600)
    await srv.stop()


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--serve"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError("the server did not start")
    return proc, f"ws://127.0.0.1:{int(line.split()[1])}/ws/ssh"


async def _wait(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


async def one_run(url: str, pid: int, n: int, viewer: str | None) -> dict[str, float]:
    """One owner stream of ``n`` bytes; ``viewer``: None, ``"slow"`` (64 KiB/s) or ``"fast"``."""
    from nimbus_websocket.node_runtime import WebsocketsImpl, connect

    owner = await connect(url, websocket_impl=WebsocketsImpl)
    tail = bytearray()
    got = 0

    def on_data(d: bytes) -> None:
        nonlocal got
        got += len(d)
        tail.extend(d)
        del tail[: max(0, len(tail) - 4096)]

    ch = await owner.open_session(T, {"username": "owner"}, TERM, on={"data": on_data})
    await ch.send("stty -echo; echo go-$((1+1))\n")
    await _wait(lambda: b"go-2" in tail, 20)
    watcher = None
    if viewer is not None:
        link = await ch.share("read")
        watcher = await connect(
            url,
            websocket_impl=WebsocketsImpl,
            auth=lambda: {"scheme": "bearer", "token": link.token},
        )
        vtail = bytearray()

        def gulp(d: bytes) -> None:
            vtail.extend(d)
            del vtail[: max(0, len(vtail) - 4096)]

        async def sip(d: bytes) -> None:  # 64 KiB/s: its consumption earns its credit
            gulp(d)
            await asyncio.sleep(len(d) / 65536)

        await watcher.open_session(
            T, {"username": "viewer"}, TERM, on={"data": sip if viewer == "slow" else gulp}
        )
        await _wait(lambda: b"go-2" in vtail, 20)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await ch.send(f"head -c {n} /dev/zero | tr '\\0' x; echo; echo end-$((6*7))\n")
    await _wait(lambda: b"end-42" in tail, 300)
    took, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    if watcher is not None:
        await watcher.close()
    await owner.close()
    return {"mb_s": n / took / 1e6, "cpu_s": cpu}


async def run(p: dict[str, Any]) -> dict[str, Any]:
    """Every run, interleaved: alone, slow viewer, fast viewer."""
    proc, url = start_server()
    out: dict[str, list[dict[str, float]]] = {"alone": [], "slow": [], "fast": []}
    try:
        for _ in range(p["runs"]):
            out["alone"].append(await one_run(url, proc.pid, p["bytes"], None))
            out["slow"].append(await one_run(url, proc.pid, p["bytes"], "slow"))
            out["fast"].append(await one_run(url, proc.pid, p["bytes"], "fast"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    ratios = [s["mb_s"] / a["mb_s"] for a, s in zip(out["alone"], out["slow"], strict=True)]
    return {
        "params": p,
        "runs": out,
        "slow_ratio": statistics.median(ratios),
        "slow_ratios": ratios,
    }


def rows(data: dict[str, Any]) -> list[list[str]]:
    """The printed table's rows."""
    out = []
    alone = median_range([r["mb_s"] for r in data["runs"]["alone"]])
    for key, label in (
        ("alone", "owner alone"),
        ("slow", "owner + a 64 KiB/s viewer"),
        ("fast", "owner + a full-speed viewer"),
    ):
        mb = median_range([r["mb_s"] for r in data["runs"][key]])
        cpu = median_range([r["cpu_s"] for r in data["runs"][key]])
        ratio = "" if key == "alone" else f"{mb[0] / alone[0]:.2f}×"
        out.append([label, f"{mb[0]:.0f} ({mb[1]:.0f}–{mb[2]:.0f})", ratio, f"{cpu[0]:.2f}"])
    return out


def add_figures(f: Any, data: dict[str, Any]) -> None:
    """Rows of ``bench/run.py``'s ``Figures``."""
    mb = data["params"]["bytes"] / 1e6
    runs = data["runs"]
    f.add(
        "share",
        "share.owner_slow",
        f"owner's {mb:.0f} MB PTY stream with a 64 KiB/s viewer",
        "MB/s",
        [r["mb_s"] for r in runs["slow"]],
        baseline=[r["mb_s"] for r in runs["alone"]],
        baseline_label="the owner alone, same run",
        target=("ratio>=", TARGET),
    )
    f.add(
        "share",
        "share.owner_fast",
        "… with a viewer reading at full speed",
        "MB/s",
        [r["mb_s"] for r in runs["fast"]],
        baseline=[r["mb_s"] for r in runs["alone"]],
        baseline_label="the owner alone, same run",
    )
    f.add(
        "share",
        "share.server_cpu_slow",
        "server CPU for the stream, with the slow viewer",
        "s",
        [r["cpu_s"] for r in runs["slow"]],
        baseline=[r["cpu_s"] for r in runs["alone"]],
        baseline_label="alone",
        digits=2,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    data = asyncio.run(run(params(args.quick)))
    print(table(["owner stream", "MB/s median (min–max)", "vs alone", "server CPU s"], rows(data)))
    print(
        f"target: with a slow viewer >= {TARGET:.1f}× alone; measured {data['slow_ratio']:.2f}× "
        f"(runs {', '.join(f'{r:.2f}' for r in data['slow_ratios'])})"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
