"""The peers section: every figure for nimbus, the bare bridge, terminado, webssh and wetty.

    .venv/bin/python bench/peers/runner.py [--quick] [--json OUT]

Figures (median and min-max over runs; in each run every peer once, in a
fixed order, so drift hits all alike; a ratio is nimbus / peer, paired run
by run):

* stream MB/s: ``cat`` of a file of letters without newlines (100 MB, plus
  an end marker), connect to the marker;
* keystroke echo p50 / p99: one byte typed into ``cat`` on a PTY;
* Ctrl-C under a ``yes`` flood: ``\\x03`` until the prompt is back;
* server memory under a slow reader: ``yes``, the client reading 64 KiB per
  100 ms for 10 s: server RSS growth (peak), "still growing" when the
  second half of the run added more than a fifth;
* server memory per idle session: 100 sessions at their prompt, server RSS
  growth / 100 (the shells are other processes, not counted);
* connect to prompt p50.

Targets: nimbus ahead of each of terminado, webssh and wetty on every row
(ratio >= 1 for MB/s, <= 1 for the others).  The bridge is the no-protocol
baseline: its ratio is shown, without a target.  A peer that fails to start
is reported as "failed to start: <reason>".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, percentile, scratch_dir, table

from peers import install, measure, servers

PEERS = servers.PEERS
RIVALS = ("terminado", "webssh", "wetty")  # the targets; the bridge is the baseline

#: (key, label, unit, higher is better, digits)
METRICS: list[tuple[str, str, str, bool, int]] = [
    ("stream", "stream, `cat` of {mb} MB without newlines (connect to last byte)", "MB/s", True, 1),
    ("echo_p50", "keystroke echo p50 (`cat` on a PTY)", "ms", False, 3),
    ("echo_p99", "keystroke echo p99 (`cat` on a PTY)", "ms", False, 3),
    ("interrupt", "Ctrl-C under a `yes` flood → prompt back", "ms", False, 1),
    ("slow", "server RSS growth, slow reader of `yes` (64 KiB per 100 ms, {slow_s:g} s)", "MiB", False, 1),
    ("idle", "server RSS per idle session ({idle} sessions at their prompt)", "KiB", False, 1),
    ("connect", "connect → prompt p50", "ms", False, 1),
]


#: What limits a row that misses its target (``bench/run.py`` shows it for missed rows only),
#: written from the development runs of this section (2 cores, shared with other jobs).
_ECHO = """
**What limits it.** A keystroke round trip is ~0.4–0.6 ms for every Python server here; nimbus adds its
protocol work (client encode → server parse → PTY write; PTY read → frame → client decode, ~20–40 µs of
CPython, see the echo section) on top of what the bare bridge does, and terminado does about as little as
the bridge (one JSON text frame each way, no flow control). Rows that miss do so by a few tens of µs at
p50, or at p99 (the run's 2nd-worst of 200 samples) by one scheduling hiccup on the 2 shared cores: the
min–max of nimbus's and terminado's p99 overlapped in both full development runs.
"""
_IDLE = """
**What limits it.** tracemalloc in the server process with 100 sessions at their prompt: ~32 KiB of Python
heap per session (of ~40 KiB RSS), spread thin -- the `websockets` connection and its handshake state
~9 KiB (the bare bridge pays that too: its whole per-session figure is ~13 KiB), the server app and PTY
backend ~6 KiB, asyncio's subprocess transport, protocol and pipes ~3 KiB, threading locks/conditions
~2.6 KiB, the core's session, flow and registry objects ~2.5 KiB. terminado keeps a tornado handler and a
`ptyprocess` per session and lands level with it (0.98–1.07× over the development runs); webssh (a paramiko
transport thread per session) and wetty (node + socket.io) keep 2–3× more.
"""
_CONNECT = """
**What limits it.** Connect to prompt is dominated by starting the shell (fork/exec of bash, reading its rc
file, the first prompt) -- the bare bridge's row is that floor plus one WebSocket handshake. nimbus adds
its session handshake and channel open on top of the WebSocket handshake before the PTY starts; wetty
spawns the PTY from node-pty right on the socket.io connect, so the two land within a few ms of each
other (0.8–0.95× in the full development runs).
"""
_STREAM = """
**What limits it.** The PTY (~4 KiB per read, see the PTY section): every server here reads it as fast as
the kernel hands it out, and with 2 shared cores the run-to-run spread (see min–max) is as wide as the gap
between nimbus and wetty (which batches output for 2 ms into one socket.io message, up to 512 KiB).
"""
_INTERRUPT = """
**What limits it.** What is in flight when the interrupt is typed has to drain first (nimbus: its credit
window; webssh: the SSH channel window); a run's figure is one or two samples, so one slow sample on the
shared cores moves the median.
"""
NOTES: dict[str, str] = {
    **{f"peers.echo_p50.{x}": _ECHO for x in ("terminado", "webssh", "wetty")},
    **{f"peers.echo_p99.{x}": _ECHO for x in ("terminado", "webssh", "wetty")},
    **{f"peers.idle.{x}": _IDLE for x in ("terminado", "webssh", "wetty")},
    **{f"peers.connect.{x}": _CONNECT for x in ("terminado", "webssh", "wetty")},
    **{f"peers.stream.{x}": _STREAM for x in ("terminado", "webssh", "wetty")},
    **{f"peers.interrupt.{x}": _INTERRUPT for x in ("terminado", "webssh", "wetty")},
}


def params(quick: bool) -> dict[str, Any]:
    """Sizes and counts; ``quick`` for a smoke run."""
    if quick:
        return {"quick": True, "runs": 2, "stream_runs": 2, "mem_runs": 1, "mb": 10, "echo": 100, "interrupt": 1,
                "connect": 3, "slow_s": 2.0, "idle": 10}
    # The section's budget is ~4 min on 2 cores: the 100 MB streams (~5 s a run for the slower
    # peers) and the 10 s slow readers dominate, so those take fewer runs than the cheap rows.
    return {"quick": False, "runs": 3, "stream_runs": 2, "mem_runs": 1, "mb": 100, "echo": 200, "interrupt": 2,
            "connect": 5, "slow_s": 10.0, "idle": 100}


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class Results:
    """Per figure and peer: the per-run values, or the error that stopped them."""

    def __init__(self, p: dict[str, Any]) -> None:
        self.p = p
        self.values: dict[str, dict[str, list[float]]] = {m[0]: {x: [] for x in PEERS} for m in METRICS}
        self.errors: dict[str, dict[str, str]] = {m[0]: {} for m in METRICS}
        self.extra: dict[str, dict[str, list[Any]]] = {m[0]: {x: [] for x in PEERS} for m in METRICS}
        #: Wall seconds per group of figures and peer (server starts included).
        self.seconds: dict[str, dict[str, float]] = {}

    def fail(self, metrics: Sequence[str], peer: str, why: str) -> None:
        for m in metrics:
            self.errors[m].setdefault(peer, why)

    def as_json(self) -> dict[str, Any]:
        return {"params": self.p, "values": self.values, "errors": self.errors, "extra": self.extra,
                "group_seconds": self.seconds}


def make_stream_file(mb: int) -> str:
    """``mb`` MB of letters, no newline, then the end marker; in RAM when possible."""
    table_ = bytes(97 + b % 26 for b in range(256))
    fd, path = tempfile.mkstemp(prefix="nimbus-peers-", suffix=".txt", dir=scratch_dir())
    size = mb * 1_000_000
    block = os.urandom(1 << 20).translate(table_)
    with os.fdopen(fd, "wb") as fh:
        left = size
        while left > 0:
            fh.write(block[: min(left, len(block))])
            left -= len(block)
        fh.write(measure.END)
    return path


async def _group(res: Results, metrics: Sequence[str], argv: list[str], runs: int,
                 step: Callable[[servers.Running, str, int], Any], fresh: bool = False) -> None:
    """Run ``step(server, peer, run)`` for each run and each peer in turn.

    ``fresh``: a new server per run and peer (memory figures); otherwise one
    server per peer for the whole group, all started first.
    """
    live: dict[str, servers.Running] = {}
    spent = res.seconds.setdefault("/".join(metrics), dict.fromkeys(PEERS, 0.0))
    try:
        if not fresh:
            for peer in PEERS:
                if res.errors[metrics[0]].get(peer, "").startswith("failed to start"):
                    continue
                t0 = time.monotonic()
                try:
                    live[peer] = servers.start(peer, argv)
                except Exception as exc:
                    res.fail(metrics, peer, f"failed to start: {_one_line(exc)}")
                spent[peer] += time.monotonic() - t0
        for i in range(runs):
            for peer in PEERS:
                if res.errors[metrics[0]].get(peer, "").startswith("failed to start"):
                    continue
                run = live.get(peer)
                t0 = time.monotonic()
                try:
                    if fresh:
                        try:
                            run = servers.start(peer, argv)
                        except Exception as exc:
                            res.fail(metrics, peer, f"failed to start: {_one_line(exc)}")
                            continue
                    assert run is not None
                    await step(run, peer, i)
                except Exception as exc:
                    traceback.print_exc()
                    res.fail(metrics, peer, f"failed: {_one_line(exc)}")
                finally:
                    if fresh and run is not None:
                        run.stop()
                    spent[peer] += time.monotonic() - t0
    finally:
        for run in live.values():
            run.stop()


def _status(res: Results, metrics: Sequence[str], i: int) -> str:
    parts = []
    for m in metrics:
        cells = []
        for peer in PEERS:
            v = res.values[m][peer]
            cells.append(f"{peer} {v[-1]:.3g}" if len(v) > i else f"{peer} –")
        parts.append(f"{m}: " + ", ".join(cells))
    return "; ".join(parts)


async def measure_all(p: dict[str, Any]) -> Results:
    """Every figure, every peer; bounded by the per-step timeouts."""
    res = Results(p)
    ready = install.ensure_all()
    for peer, why in ready.items():
        if why is not None:
            res.fail([m[0] for m in METRICS], peer, f"failed to start: {why}")
    work = tempfile.mkdtemp(prefix="nimbus-peers-", dir=scratch_dir())
    rc = os.path.join(work, "rc")
    Path(rc).write_text(measure.RC)
    shell = measure.shell_argv(rc)
    path = make_stream_file(p["mb"])
    size = p["mb"] * 1_000_000
    try:
        # The stream's command stays alive after `cat`: wetty (node-pty) drops the last
        # output of a process that exits, so "connect to the end marker" is the figure.
        stream_argv = ["sh", "-c", f"cat {path}; exec sleep 600"]

        async def stream_step(run: servers.Running, peer: str, i: int) -> None:
            res.values["stream"][peer].append(await measure.stream_once(run, size))

        async def echo_step(run: servers.Running, peer: str, i: int) -> None:
            xs = await measure.echo_run(run, p["echo"])
            res.values["echo_p50"][peer].append(percentile(xs, 50) * 1e3)
            res.values["echo_p99"][peer].append(percentile(xs, 99) * 1e3)

        async def shell_step(run: servers.Running, peer: str, i: int) -> None:
            lat, drained = [], []
            for _ in range(p["interrupt"]):
                t, n = await measure.interrupt_once(run)
                lat.append(t * 1e3)
                drained.append(n)
            res.values["interrupt"][peer].append(statistics.median(lat))
            res.extra["interrupt"][peer].append({"drained": drained})
            conn = [await measure.connect_once(run) * 1e3 for _ in range(p["connect"])]
            res.values["connect"][peer].append(percentile(conn, 50))

        async def slow_step(run: servers.Running, peer: str, i: int) -> None:
            out = await measure.slow_reader(run, p["slow_s"])
            res.values["slow"][peer].append(out["peak_kib"] / 1024)
            res.extra["slow"][peer].append(out)

        async def idle_step(run: servers.Running, peer: str, i: int) -> None:
            res.values["idle"][peer].append(await measure.idle_sessions(run, p["idle"]))

        groups: list[tuple[Sequence[str], list[str], int, Callable[..., Any], bool]] = [
            (["stream"], stream_argv, p["stream_runs"], stream_step, False),
            (["echo_p50", "echo_p99"], ["cat"], p["runs"], echo_step, False),
            (["interrupt", "connect"], shell, p["runs"], shell_step, False),
            (["slow"], ["yes"], p["mem_runs"], slow_step, True),
            (["idle"], shell, p["mem_runs"], idle_step, True),
        ]
        for metrics, argv, runs, step, fresh in groups:
            t0 = time.monotonic()
            await _group(res, metrics, argv, runs, step, fresh)
            n = max((len(res.values[metrics[0]][x]) for x in PEERS), default=0)
            took = ", ".join(f"{x} {t:.0f}" for x, t in res.seconds["/".join(metrics)].items())
            print(f"  peers {'/'.join(metrics)} ({time.monotonic() - t0:.0f} s: {took}): "
                  f"{_status(res, metrics, n - 1) if n else 'nothing measured'}", flush=True)
    finally:
        os.unlink(path)
        for name in os.listdir(work):
            os.unlink(os.path.join(work, name))
        os.rmdir(work)
    return res


# ------------------------------------------------------------------ report
def labels(p: dict[str, Any]) -> dict[str, str]:
    return {m[0]: m[1].format(**p) for m in METRICS}


def ratios(nim: Sequence[float], peer: Sequence[float]) -> list[float]:
    """nimbus / peer, run by run when both have every run, else of the medians."""
    if not nim or not peer:
        return []
    if len(nim) == len(peer):
        return [a / b for a, b in zip(nim, peer, strict=True) if b]
    b = statistics.median(peer)
    return [statistics.median(nim) / b] if b else []


def met(key: str, r: float) -> bool:
    higher = next(m[3] for m in METRICS if m[0] == key)
    return r >= 1.0 if higher else r <= 1.0


def _fmt(x: float, digits: int) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{digits}f}"


def _cell(xs: Sequence[float], digits: int) -> str:
    if not xs:
        return "–"
    m = statistics.median(xs)
    if len(xs) == 1:
        return _fmt(m, digits)
    return f"{_fmt(m, digits)} ({_fmt(min(xs), digits)}–{_fmt(max(xs), digits)})"


def still_growing(extra: Sequence[dict[str, Any]]) -> bool:
    """True when a slow-reader run's second half added > 1/5 of its growth and > 1 MiB."""
    return any(e["end_kib"] - e["half_kib"] > max(1024, 0.2 * e["end_kib"]) for e in extra)


def cells(data: dict[str, Any], key: str, peer: str, digits: int, md: bool) -> str:
    """One cell of the comparison: value, ratio nimbus/peer, or why there is none."""
    err = data["errors"][key].get(peer)
    vals = data["values"][key][peer]
    if not vals:
        return (err or "not measured").replace("|", "/")
    out = _cell(vals, digits)
    if key == "slow" and still_growing(data["extra"][key][peer]):
        out += ", still growing"
    if peer != "nimbus":
        rs = ratios(data["values"][key]["nimbus"], vals)
        if rs:
            r = statistics.median(rs)
            txt = f"{r:.2f}×" if r >= 0.01 else f"{r:.4f}×"
            if peer in RIVALS and not met(key, r):
                txt = f"**{txt} behind**" if md else f"{txt} BEHIND"
            out += f"; {txt}"
    if err:
        out += f" ({err})"
    return out


def markdown(data: dict[str, Any]) -> str:
    """The comparison table and its notes, for ``docs/benchmarks.md``."""
    p = data["params"]
    lab = labels(p)
    lines = [
        "Each peer is its own server process running the same command on a PTY (80×24) per session; the "
        "clients are one wire client per protocol, all on the `websockets` library (`bench/peers/clients.py`): "
        "the nimbus CPython client; binary frames for the bridge; terminado's JSON `[\"stdin\"|\"stdout\", s]`; "
        "webssh's `POST /` then `/ws?id=` (key login to a private `sshd` whose `ForceCommand` is the command); "
        "wetty's socket.io v4 / engine.io v4 on the WebSocket transport with its `commit` flow control. "
        f"Runs: {p['runs']} (stream {p.get('stream_runs', p['runs'])}, memory rows {p['mem_runs']}), every peer "
        "once per run in the order of the columns; "
        f"echo {p['echo']} keystrokes per run (the run's p50/p99), Ctrl-C {p['interrupt']} and connect "
        f"{p['connect']} samples per run (their median / p50); shells are `bash --noprofile --rcfile RC -i` with "
        "a prompt marker. Memory: server `VmRSS` after one warm-up session, slow reader = peak growth over the "
        "run, idle = growth / sessions. Cells: median (min–max), then nimbus ÷ peer (the median of the per-run "
        "ratios): ≥ 1× is nimbus ahead for MB/s, ≤ 1× for the others. Peers installed by the bench into "
        "`build/bench-peers/`: " + ", ".join(data.get("versions", {}).get(x, x) for x in RIVALS) + ".",
        "",
        "| figure | unit | " + " | ".join(PEERS) + " |",
        "|---|---|" + "---|" * len(PEERS),
    ]
    for key, _label, unit, _hb, digits in METRICS:
        lines.append(f"| {lab[key]} | {unit} | " + " | ".join(cells(data, key, x, digits, True) for x in PEERS) + " |")
    return "\n".join(lines) + "\n"


def text_table(data: dict[str, Any]) -> str:
    lab = labels(data["params"])
    rows = [[lab[k], u, *(cells(data, k, x, d, False) for x in PEERS)] for k, _l, u, _h, d in METRICS]
    return table(["figure", "unit", *PEERS], rows)


def add_figures(f: Any, data: dict[str, Any]) -> None:
    """Rows of ``bench/run.py``'s ``Figures``: nimbus measured, each peer as its baseline."""
    lab = labels(data["params"])
    for key, _label, unit, higher, digits in METRICS:
        nim = data["values"][key]["nimbus"]
        if not nim:
            continue
        for peer in PEERS[1:]:
            vals = data["values"][key][peer]
            if not vals:
                continue
            target = ("ratio>=" if higher else "ratio<=", 1.0) if peer in RIVALS else None
            f.add("peers", f"peers.{key}.{peer}", f"{lab[key]}: nimbus vs {peer}", unit, nim, baseline=vals,
                  baseline_label=peer, target=target, digits=digits)


def not_measured(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(peer, reason) for each rival with a figure it has no value for."""
    out = []
    for peer in RIVALS:
        for key, *_ in METRICS:
            if not data["values"][key][peer]:
                out.append((peer, f"{key}: {data['errors'][key].get(peer, 'not measured')}"))
                break
    return out


def versions() -> dict[str, str]:
    """Installed peer versions (from the pins)."""
    out = {x.split("==")[0]: x.replace("==", " ") for x in install.PY_PEERS}
    out.update({x.split("@")[0]: x.replace("@", " ") for x in install.NPM_PEERS})
    return out


async def run(p: dict[str, Any]) -> dict[str, Any]:
    """Measure; the JSON-able result (values, errors, extra, params, versions, seconds)."""
    t0 = time.monotonic()
    res = await measure_all(p)
    data = res.as_json()
    data["versions"] = versions()
    data["seconds"] = time.monotonic() - t0
    return data


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args(argv)
    data = asyncio.run(run(params(args.quick)))
    print(f"# peers ({machine()}), {data['seconds']:.0f} s")
    print(text_table(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
