"""Every benchmark, one command: writes ``docs/benchmarks.md`` and ``docs/benchmarks.json``.

    .venv/bin/python bench/run.py            # full run (``make bench``), ~10-15 min on 2 cores
    .venv/bin/python bench/run.py --quick    # smoke run: small sizes, 2 runs -> build/bench-quick.*

Each figure is the median and min-max of ``--runs`` runs (>= 5 in a full
run), with its baseline measured in the same invocation, interleaved with it
run by run (baseline, measured, baseline, measured, ...) so that drift and
the load of other processes hit both alike; a ratio is the median of the
per-run ratios (each measured run against the baseline run next to it).

Sections (their own scripts print tables too):

* codec (``bench/codec.py``): encode/decode MB/s per wire profile vs a bare
  ``struct`` baseline;
* PTY ``cat`` stream (``bench/stream.py``): raw PTY read, bare websockets
  bridge, this server -> CPython client; in Chromium
  (``bench/browser_pty.py``): plain JS ``WebSocket`` <- the bridge vs the
  Pyodide client <- this server, same PTY and file;
* 64 KiB stream without a PTY (``bench/synthetic.py``, ``bench/browser.py``);
* keystroke echo (``bench/stream.py``, ``bench/synthetic.py``, browser);
* interrupt latency under a ``yes`` flood (``bench/interrupt.py``);
* Pyodide boot + wheel install (every Chromium launch, fresh profile) and
  the demo page's bytes (raw, gzipped);
* memory (``bench/memory.py``): server RSS per idle / streaming connection,
  client heap during a stream;
* peers (``bench/peers/``, ``--no-peers`` to skip): terminado, webssh, wetty
  and the bare bridge against nimbus, same command, one wire client each;
* file channels (``bench/files.py``, issue 19): upload/download MB/s through
  the PTY backend against a bare WebSocket push, and through the SSH backend
  (SFTP to a private sshd) against OpenSSH ``scp`` to the same sshd.

For a CPython figure that misses its target, one extra run under cProfile
goes into the document (its top functions), with notes on what limits it.
Browsers run without Playwright or DevTools attached (``bench/browser.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec
import interrupt
import memory
import pty_split
import stream
import synthetic
from common import percentile, scratch_dir
from peers import runner as peers_runner

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHROMIUM = os.environ.get("NIMBUS_CHROMIUM", "/usr/bin/chromium")
SITE = ROOT / "build" / "site"
DIST = ROOT / "build" / "pyodide-dist"
#: The "tried" row of the 64 KiB stream: a wider credit window than the client's defaults.
WIDE_WINDOW = 2 << 20
WIDE_MAX_WINDOW = 16 << 20


# ------------------------------------------------------------ parameters
def params(quick: bool, runs: int | None) -> dict[str, Any]:
    if quick:
        p = {
            "runs": 2, "codec_runs": 2, "browser_runs": 2, "codec_seconds": 0.05, "pty_mb": 20,
            "synthetic_mb": 20, "echo": 100, "browser_echo": 100, "interrupt_samples": 3, "mem_runs": 1,
            "mem_idle": 50, "mem_streams": 4, "mem_stream_seconds": 1.5, "mem_mb": 20, "browser_mb": 10,
            "browser_launches": 2, "render_mb": 5, "files_runs": 3, "files_mb": 20,
        }
    else:
        p = {
            # CPython stream/echo figures vary run to run on this VM (process placement on the
            # 2 cores): 7 runs; codec and browser figures are steadier (and dearer): 5.
            "runs": 7, "codec_runs": 5, "browser_runs": 5, "codec_seconds": 0.2, "pty_mb": 200,
            "synthetic_mb": 200, "echo": 1000, "browser_echo": 300, "interrupt_samples": 10, "mem_runs": 5,
            "mem_idle": 200, "mem_streams": 10, "mem_stream_seconds": 3.0, "mem_mb": 100, "browser_mb": 200,
            "browser_launches": 5, "render_mb": 20, "files_runs": 5, "files_mb": 100,
        }
    if runs is not None:
        p["runs"] = p["mem_runs"] = p["codec_runs"] = p["browser_runs"] = p["files_runs"] = runs
        p["browser_launches"] = max(2, runs)
    p["quick"] = quick
    return p


# --------------------------------------------------------------- figures
def stat(xs: Sequence[float]) -> dict[str, Any]:
    xs = [float(x) for x in xs]
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "samples": xs}


class Figures:
    """Rows of the document (and the JSON): measured, baseline, ratio, target."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.errors: dict[str, str] = {}
        self.notes: dict[str, list[str]] = {}
        self.profiles: dict[str, str] = {}

    def add(
        self,
        section: str,
        fid: str,
        label: str,
        unit: str,
        measured: Sequence[float],
        *,
        baseline: Sequence[float] | None = None,
        baseline_label: str = "",
        target: tuple[str, float] | None = None,
        digits: int = 1,
        note: str = "",
    ) -> dict[str, Any]:
        """``target``: ("ratio>=", x), ("ratio<=", x) or ("<=", x) on the measured median."""
        row: dict[str, Any] = {
            "section": section, "id": fid, "label": label, "unit": unit, "digits": digits,
            "measured": stat(measured), "baseline": None, "baseline_label": baseline_label,
            "ratio": None, "target": None, "met": None, "note": note,
        }
        if baseline:
            row["baseline"] = stat(baseline)
            if len(baseline) == len(measured):
                ratios = [m / b for m, b in zip(measured, baseline, strict=True) if b]
            else:  # not paired run by run: ratio of the medians
                ratios = [row["measured"]["median"] / row["baseline"]["median"]]
            row["ratio"] = stat(ratios)
        if target is not None:
            kind, value = target
            row["target"] = {"kind": kind, "value": value}
            if kind.startswith("ratio"):
                r = row["ratio"]["median"] if row["ratio"] else None
                row["met"] = None if r is None else (r >= value if kind == "ratio>=" else r <= value)
            elif kind == ">=":
                row["met"] = row["measured"]["median"] >= value
            else:
                row["met"] = row["measured"]["median"] <= value
        self.rows.append(row)
        return row

    def misses(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["met"] is False]


def fmt(x: float, digits: int) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def cell(s: dict[str, Any] | None, digits: int) -> str:
    if not s:
        return "–"
    if digits == 2 and s["median"] < 0.1:  # ratios like 0.004x
        digits = 3
    if s["n"] == 1:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


def one_line(text: str) -> str:
    """An error message fit for a table cell."""
    return text.strip().splitlines()[0][:240].replace("|", "/") if text.strip() else "?"


def target_text(row: dict[str, Any]) -> str:
    t = row["target"]
    if not t:
        return ""
    if t["kind"] == "ratio>=":
        return f"≥ {t['value']:g}×"
    if t["kind"] == "ratio<=":
        return f"≤ {t['value']:g}×"
    if t["kind"] == ">=":
        return f"≥ {t['value']:g} {row['unit']}"
    return f"≤ {t['value']:g} {row['unit']}"


def ratio_cell(row: dict[str, Any]) -> str:
    """The ratio cell; 3 decimals where 2 would round a miss up to its target."""
    r = row["ratio"]
    if not r:
        return ""
    t = row["target"]
    if row["met"] is False and t and t["kind"].startswith("ratio") and f"{r['median']:.2f}" == f"{t['value']:.2f}":
        return f"{r['median']:.3f} ({r['min']:.3f}–{r['max']:.3f})×"
    return cell(r, 2) + "×"


def met_text(row: dict[str, Any]) -> str:
    return {True: "yes", False: "**MISSED**", None: ""}[row["met"]]


# --------------------------------------------------------------- machine
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def chromium_version() -> str:
    try:
        out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "not found"
    m = re.search(r"(\d+\.\d+\.\d+\.\d+)", out)
    return m.group(1) if m else out.strip() or "?"


#: Per section: 1-min load average when it started, and the CPU (in cores) that
#: processes outside this benchmark used meanwhile.
LOAD_SAMPLES: list[dict[str, Any]] = []


@contextlib.contextmanager
def section_load(name: str) -> Any:
    """Record the load average at the start of ``name`` and, from a sampling monitor
    (``bench/cpumon.py``), the CPU this benchmark and everything else used during it."""
    la = loadavg()[0]
    mon = subprocess.Popen([sys.executable, str(HERE / "cpumon.py"), str(os.getpid())],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        sample: dict[str, Any] = {"section": name, "load1": la}
        try:
            out, _ = mon.communicate("", timeout=30)
            sample.update(json.loads(out))
        except (subprocess.TimeoutExpired, ValueError):
            mon.kill()
            mon.wait()
        LOAD_SAMPLES.append(sample)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def git_commit() -> str:
    """HEAD, plus the measured code's folders that differ from it (uncommitted edits)."""
    code = ["core", "node_runtime", "web_runtime", "nimbus_websocket", "demo_site", "pyproject.toml"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *code], capture_output=True,
                               text=True, cwd=ROOT, timeout=30).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "?"
    folders = sorted({line[3:].split("/")[0] for line in dirty if line.strip()})
    return (head or "?") + (f" + uncommitted changes in {', '.join(folders)}" if folders else "")


def machine_info() -> dict[str, Any]:
    import websockets

    site: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        site = json.loads((SITE / "site.json").read_text())
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "chromium": chromium_version(),
        "pyodide": site.get("pyodide", "?"),
        "pyodide_python": site.get("python", "?"),
        "xterm": site.get("xterm", "?"),
    }


def wait_quiet(threshold: float, max_wait: float) -> tuple[float, list[float]]:
    """Poll the 1-minute load average until below ``threshold`` or ``max_wait`` s passed."""
    t0 = time.monotonic()
    while True:
        la = loadavg()
        if la[0] < threshold or time.monotonic() - t0 >= max_wait:
            return time.monotonic() - t0, la
        print(f"  load {la[0]:.2f} >= {threshold}: waiting ({time.monotonic() - t0:.0f}/{max_wait:.0f} s)", flush=True)
        time.sleep(min(30.0, max(1.0, max_wait - (time.monotonic() - t0))))


# -------------------------------------------------------------- sections
def section_codec(f: Figures, p: dict[str, Any]) -> None:
    runs: list[list[dict[str, Any]]] = []
    for i in range(p["codec_runs"]):
        runs.append(codec.measure(p["codec_seconds"]))
        print(f"  codec run {i + 1}/{p['codec_runs']}", flush=True)
    for label, _size in codec.SIZES:
        for prof in codec.PROFILES:
            for way, name in (("enc", "encode"), ("dec", "decode")):
                meas = [next(r[way] for r in run if r["size"] == label and r["codec"] == prof) for run in runs]
                base = [next(r[way] for r in run if r["size"] == label and r["codec"] == "baseline struct") for run in runs]
                tgt = ("ratio>=", codec.TARGET_RATIO) if prof == "nimbus.v1" and label == "64 KiB" else None
                f.add("codec", f"codec.{prof}.{label}.{way}", f"{prof} {name}, {label}", "MB/s", meas,
                      baseline=base, baseline_label="struct", target=tgt, digits=0)


def make_file(mb: int) -> str:
    fd, path = tempfile.mkstemp(prefix="nimbus-bench-", suffix=".bin", dir=scratch_dir())
    size = mb * 1_000_000
    block = os.urandom(1 << 20)
    with os.fdopen(fd, "wb") as fh:
        left = size
        while left > 0:
            fh.write(block[: min(left, len(block))])
            left -= len(block)
    return path


async def section_pty(f: Figures, p: dict[str, Any], path: str) -> None:
    size = p["pty_mb"] * 1_000_000
    raw: list[float] = []
    base: list[float] = []
    ours: list[float] = []
    base2: list[float] = []
    ours2: list[float] = []
    for i in range(p["runs"]):  # interleaved
        raw.append(stream.raw_pty_read(path, size))
        base.append(await stream.bridge_stream(path, size))
        ours.append(await stream.nimbus_stream(path, size))
        base2.append(await pty_split.split_stream("bridge", path))
        ours2.append(await pty_split.split_stream("nimbus", path))
        print(f"  PTY run {i + 1}: raw {raw[-1]:.1f}, bridge {base[-1]:.1f}, nimbus {ours[-1]:.1f}; two processes: "
              f"bridge {base2[-1]:.1f}, nimbus {ours2[-1]:.1f} MB/s", flush=True)
    sec = "pty"
    f.add(sec, "pty.raw", "raw PTY read (no network, no asyncio)", "MB/s", raw)
    f.add(sec, "pty.bridge", "baseline bridge (bare websockets, no protocol) → websockets client, one process", "MB/s",
          base, baseline=raw, baseline_label="raw PTY")
    f.add(sec, "pty.cpython", "this server → CPython client, one process", "MB/s", ours,
          baseline=base, baseline_label="bridge", target=("ratio>=", 0.95))
    f.add(sec, "pty.bridge2", "baseline bridge → websockets client, server in its own process", "MB/s", base2,
          baseline=raw, baseline_label="raw PTY")
    f.add(sec, "pty.cpython2", "this server → CPython client, server in its own process", "MB/s", ours2,
          baseline=base2, baseline_label="bridge (own process)", target=("ratio>=", 0.95))
    # Issue 16 item 2: both servers as deployed (bench/peers/serve_local.py), one wire client each
    # (bench/peers/clients.py), `cat` of the same file; interleaved run by run.
    from peers import measure as peers_measure
    from peers import servers as peers_servers

    own: dict[str, list[float]] = {"bridge": [], "nimbus": []}
    argv = ["sh", "-c", f"cat {path}; exec sleep 600"]
    for i in range(p.get("own_runs", 5)):
        for kind, vals in own.items():
            srv = peers_servers.start(kind, argv)
            c = srv.client()
            try:  # connect to the file's last byte (random bytes: counted, no end marker)
                t0 = time.perf_counter()
                await c.open()
                await peers_measure.read_until(c, None, size, timeout=peers_measure.STREAM_TIMEOUT)
                vals.append(size / (time.perf_counter() - t0) / 1e6)
            finally:
                with contextlib.suppress(Exception):
                    await c.close()
                srv.stop(kill=True)
        print(f"  PTY own-process run {i + 1}: bridge {own['bridge'][-1]:.1f}, nimbus {own['nimbus'][-1]:.1f} MB/s",
              flush=True)
    f.add(sec, "pty.bridge3", "baseline bridge in its own process (`serve_local.py`) → wire client", "MB/s",
          own["bridge"])
    f.add(sec, "pty.wire3", "this server in its own process (`serve_local.py`) → wire client (the CPython client)",
          "MB/s", own["nimbus"], baseline=own["bridge"], baseline_label="bridge (own process, wire client)",
          target=("ratio>=", 0.95))


async def section_synthetic(f: Figures, p: dict[str, Any]) -> None:
    total = p["synthetic_mb"] * 1_000_000
    frame = 65536
    raw: list[float] = []
    syn: list[float] = []
    pipes: list[float] = []
    wide: list[float] = []
    for i in range(p["runs"]):
        raw.append(await synthetic.raw_stream(total, frame))
        syn.append(await synthetic.nimbus_synthetic(total, frame))
        pipes.append(await synthetic.nimbus_pipes(total, frame))
        wide.append(await synthetic.nimbus_synthetic(total, frame, window=WIDE_WINDOW, max_window=WIDE_MAX_WINDOW))
        print(f"  64K run {i + 1}: raw {raw[-1]:.0f}, synthetic {syn[-1]:.0f}, pipes {pipes[-1]:.0f}, "
              f"wide window {wide[-1]:.0f} MB/s", flush=True)
    sec = "stream64"
    f.add(sec, "s64.raw", "raw websockets loopback (CPython both ends)", "MB/s", raw, digits=0)
    f.add(sec, "s64.cpython", "this server (backend_factory, no process) → CPython client", "MB/s", syn,
          baseline=raw, baseline_label="raw websockets", target=("ratio>=", 0.6), digits=0)
    f.add(sec, "s64.cpython_pipes", "this server (`head -c` on pipes) → CPython client", "MB/s", pipes,
          baseline=raw, baseline_label="raw websockets", digits=0)
    f.add(sec, "s64.cpython_wide", f"tried: as the backend_factory row, client `window={WIDE_WINDOW >> 20} MiB, "
          f"max_window={WIDE_MAX_WINDOW >> 20} MiB` (defaults 256 KiB / 2 MiB)", "MB/s", wide,
          baseline=raw, baseline_label="raw websockets", digits=0)


async def section_echo(f: Figures, p: dict[str, Any]) -> None:
    n = p["echo"]
    res: dict[str, list[list[float]]] = {"bridge": [], "nimbus": [], "raw": []}
    for i in range(p["runs"]):
        res["bridge"].append(await stream.bridge_echo(n))
        res["nimbus"].append(await stream.nimbus_echo(n))
        res["raw"].append(await synthetic.raw_echo(n))
        print(f"  echo run {i + 1}: p50 bridge {percentile(res['bridge'][-1], 50) * 1e3:.3f}, "
              f"nimbus {percentile(res['nimbus'][-1], 50) * 1e3:.3f}, raw {percentile(res['raw'][-1], 50) * 1e3:.3f} ms",
              flush=True)

    def q(key: str, pct: float) -> list[float]:
        return [percentile(xs, pct) * 1e3 for xs in res[key]]

    sec = "echo"
    f.add(sec, "echo.raw.p50", "raw websockets echo (no PTY), p50", "ms", q("raw", 50), digits=3)
    f.add(sec, "echo.raw.p99", "raw websockets echo (no PTY), p99", "ms", q("raw", 99), digits=3)
    f.add(sec, "echo.bridge.p50", "baseline bridge (PTY `cat`), p50", "ms", q("bridge", 50), digits=3)
    f.add(sec, "echo.bridge.p99", "baseline bridge (PTY `cat`), p99", "ms", q("bridge", 99), digits=3)
    f.add(sec, "echo.cpython.p50", "this server (PTY `cat`) → CPython client, p50", "ms", q("nimbus", 50),
          baseline=q("bridge", 50), baseline_label="bridge p50", target=("ratio<=", 1.3), digits=3)
    f.add(sec, "echo.cpython.p99", "this server (PTY `cat`) → CPython client, p99", "ms", q("nimbus", 99),
          baseline=q("bridge", 99), baseline_label="bridge p99", digits=3)


async def section_interrupt(f: Figures, p: dict[str, Any]) -> None:
    res: dict[str, list[float]] = {"raw": [], "input": [], "signal": []}
    drained: dict[str, list[int]] = {"raw": [], "input": [], "signal": []}
    for i in range(p["interrupt_samples"]):  # interleaved, a fresh shell per sample
        lat, dr = interrupt.raw_pty(1, 1 << 20)
        res["raw"] += lat
        drained["raw"] += dr
        for via in ("input", "signal"):
            lat, dr = await interrupt.nimbus(1, 1 << 20, via)
            res[via] += lat
            drained[via] += dr
        print(f"  interrupt {i + 1}: raw {res['raw'][-1] * 1e3:.1f}, \\x03 {res['input'][-1] * 1e3:.1f}, "
              f"signal {res['signal'][-1] * 1e3:.1f} ms", flush=True)
    sec = "interrupt"

    def ms(key: str) -> list[float]:
        return [x * 1e3 for x in res[key]]

    def kib(key: str) -> str:
        n = statistics.median(drained[key])
        size = f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n:.0f} B"
        return f"median {size} arrived after the interrupt"

    f.add(sec, "int.raw", "raw PTY, `\\x03` written to the master (no network)", "ms", ms("raw"), digits=1, note=kib("raw"))
    f.add(sec, "int.input", "this server → CPython client, `\\x03` as input (a terminal's Ctrl-C)", "ms", ms("input"),
          target=("<=", 100.0), digits=1, note=kib("input"))
    f.add(sec, "int.signal", "this server → CPython client, `ch.signal(\"INT\")`", "ms", ms("signal"),
          target=("<=", 100.0), digits=1, note=kib("signal"))


async def section_memory(f: Figures, p: dict[str, Any]) -> None:
    res = await memory.measure(p["mem_runs"], p["mem_idle"], p["mem_streams"], p["mem_stream_seconds"], p["mem_mb"])
    sec = "memory"
    n, s, mb = p["mem_idle"], p["mem_streams"], p["mem_mb"]
    f.add(sec, "mem.idle.raw", f"server RSS per idle connection, bare websockets server (N={n})", "KiB",
          res["idle_kib"]["raw"])
    f.add(sec, "mem.idle", f"server RSS per idle connection, this server (N={n}, ready, no channel)", "KiB",
          res["idle_kib"]["nimbus"], baseline=res["idle_kib"]["raw"], baseline_label="bare websockets",
          target=("<=", 64.0))
    f.add(sec, "mem.stream.raw", f"server RSS per streaming connection, bare websockets sender (N={s})", "KiB",
          res["stream_kib"]["raw"], digits=0)
    f.add(sec, "mem.stream", f"server RSS per streaming connection, this server (N={s}, `cat /dev/zero` on pipes)", "KiB",
          res["stream_kib"]["nimbus"], baseline=res["stream_kib"]["raw"], baseline_label="bare websockets", digits=0,
          note="bounded by design: up to `write_high_water` (1 MiB) unsent per connection before backends pause, "
               "plus one 64 KiB read")
    f.add(sec, "mem.heap.raw", f"client tracemalloc peak, bare websockets client, {mb} MB stream", "KiB",
          res["heap_peak_kib"]["raw"], digits=0)
    f.add(sec, "mem.heap", f"client tracemalloc peak, CPython nimbus client, {mb} MB stream", "KiB",
          res["heap_peak_kib"]["nimbus"], baseline=res["heap_peak_kib"]["raw"], baseline_label="bare websockets", digits=0)
    f.add(sec, "mem.rss.raw", f"client RSS growth (VmHWM − RSS before), bare websockets client, {mb} MB", "KiB",
          res["heap_rss_kib"]["raw"], digits=0)
    f.add(sec, "mem.rss", f"client RSS growth (VmHWM − RSS before), CPython nimbus client, {mb} MB", "KiB",
          res["heap_rss_kib"]["nimbus"], baseline=res["heap_rss_kib"]["raw"], baseline_label="bare websockets", digits=0)
    f.raw_memory = res  # type: ignore[attr-defined]


# ---------------------------------------------------------------- browser
def run_json(cmd: list[str], out: Path, timeout: float, tries: int = 2) -> dict[str, Any]:
    """Run a browser benchmark with ``--json out`` (once more if it fails: a
    page that failed to load counts nothing, so a retry biases nothing)."""
    for attempt in range(1, tries + 1):
        try:
            return _run_json(cmd, out, timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            if attempt == tries:
                raise
            print(f"    failed ({str(exc)[:200]}); retrying once", flush=True)
    raise AssertionError("unreachable")


def _run_json(cmd: list[str], out: Path, timeout: float) -> dict[str, Any]:
    print("  $ " + " ".join(cmd[1:]), flush=True)
    out.unlink(missing_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip().startswith("[page]") or "error" in line.lower():
            print("    " + line.strip(), flush=True)
    if not out.is_file():
        raise RuntimeError(f"{cmd[1]} exited {proc.returncode} without results: {proc.stderr[-1500:]}")
    data = json.loads(out.read_text())
    if data.get("status"):
        raise RuntimeError(f"{cmd[1]} reported status {data['status']}: {proc.stderr[-1500:]}")
    return data


def section_browser(f: Figures, p: dict[str, Any], path: str, tmp: Path) -> dict[str, Any]:
    """Chromium launches (each a fresh profile, no driver attached); a failed
    launch is reported and the figures of the others are kept."""
    if not (DIST / "pyodide.mjs").is_file():
        raise RuntimeError(f"{DIST} missing (make setup)")
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"Chromium not found at {CHROMIUM}")
    py = sys.executable
    runs, echo = p["browser_runs"], p["browser_echo"]

    def launch(name: str, cmd: list[str], timeout: float) -> dict[str, Any] | None:
        out = tmp / f"{name}.json"
        try:
            return run_json([py, *cmd, "--json", str(out)], out, timeout)
        except Exception as exc:
            traceback.print_exc()
            f.errors[f"browser ({name})"] = f"{type(exc).__name__}: {exc}"
            return None

    # 1. PTY: plain JS <- bridge vs Pyodide <- this server, same file (+ echo, boot).
    # Streams on a page that is not cross-origin isolated (isolation slows both sides); echo on
    # isolated pages (performance.now() at 5 us instead of 100 us).
    pty_run = launch("browser_pty", ["bench/browser_pty.py", path, "--runs", str(runs), "--echo", "0"], 1800)
    # 2. bench/browser.py: 4/64 KiB streams without a PTY (+ its own echo, boot).
    # --profile: one more 64 KiB stream under cProfile inside Pyodide, after the measured runs.
    main_run = launch("browser", ["bench/browser.py", "--mb", str(p["browser_mb"]), "--runs", str(runs),
                                  "--echo", str(echo), "--profile"], 1800)
    # 3. More launches for boot and PTY echo samples (no streams).
    echo_runs = []
    for i in range(p["browser_launches"]):
        echo_runs.append(launch(f"browser_pty_echo{i}", ["bench/browser_pty.py", path, "--runs", "0",
                                                         "--echo", str(echo), "--isolated"], 600))

    def mbps(r: dict[str, Any]) -> float:
        return float(r["bytes"]) / (float(r["ms"]) / 1000) / 1e6

    def series(run: dict[str, Any] | None, who: str, size: int | None = None) -> list[float]:
        rs = [r for r in (run or {}).get("results", [])
              if r["kind"] == "stream" and r["who"] == who and (size is None or r["size"] == size)]
        return [mbps(r) for r in sorted(rs, key=lambda r: r["run"])]

    if pty_run:
        plain = series(pty_run, "plain")
        f.add("pty", "pty.plainjs", "plain-JS WebSocket in Chromium ← the bridge", "MB/s", plain)
        f.add("pty", "pty.pyodide", "this server → Pyodide client in Chromium (JS facade)", "MB/s",
              series(pty_run, "nimbus-reference"), baseline=plain, baseline_label="plain JS ← bridge")
    if main_run:
        for size in (65536, 4096):
            k = f"{size // 1024} KiB"
            plain = series(main_run, "plain", size)
            f.add("stream64", f"s64.plainjs.{size}", f"plain-JS WebSocket in Chromium ← bare websockets, {k} frames",
                  "MB/s", plain, digits=0)
            f.add("stream64", f"s64.pyodide.{size}", f"this server (`head -c` on pipes) → Pyodide client, {k} reads",
                  "MB/s", series(main_run, "nimbus-reference", size), baseline=plain, baseline_label="plain JS",
                  target=("ratio>=", 0.7), digits=0)  # 64 KiB; 4 KiB: issue 16 item 4
            f.add("stream64", f"s64.pyodide_syn.{size}", f"synthetic nimbus sender → Pyodide client, {k} frames",
                  "MB/s", series(main_run, "nimbus-synthetic", size), baseline=plain, baseline_label="plain JS",
                  digits=0)
            bare = series(main_run, "bare-python", size)
            if bare:  # bench/browser.py measures this ceiling once, after the interleaved runs
                f.add("stream64", f"s64.bare_python.{size}", f"ceiling: plain `WebSocket` into a bare Python handler "
                      f"in Pyodide (`to_bytes()` + a counter), {k} frames", "MB/s", bare, baseline=plain,
                      baseline_label="plain JS", digits=0, note="one run, after the interleaved ones")

    def echo_q(who: str, pct: float) -> list[float]:
        return [percentile(e["rtts"], pct) for run in echo_runs if run for e in run["results"]
                if e["kind"] == "echo" and e["who"] == who]

    if echo_q("plain", 50):
        # Key event -> byte on screen: xterm.js on both sides, term.input() -> xterm's write callback.
        f.add("echo", "echo.plainjs.p50", "plain JS + xterm.js ← bridge (PTY `cat`), key → xterm write callback, p50",
              "ms", echo_q("plain", 50), digits=2)
        f.add("echo", "echo.plainjs.p99", "plain JS + xterm.js ← bridge (PTY `cat`), key → xterm write callback, p99",
              "ms", echo_q("plain", 99), digits=2)
        f.add("echo", "echo.pyodide.p50", "this server (PTY `cat`) → Pyodide client + xterm.js, key → xterm write "
              "callback, p50", "ms", echo_q("nimbus", 50), baseline=echo_q("plain", 50), baseline_label="plain JS p50",
              target=("ratio<=", 1.5), digits=2)
        f.add("echo", "echo.pyodide.p99", "this server (PTY `cat`) → Pyodide client + xterm.js, key → xterm write "
              "callback, p99", "ms", echo_q("nimbus", 99), baseline=echo_q("plain", 99), baseline_label="plain JS p99",
              target=("ratio<=", 2.5), digits=2)
    if echo_q("plain-ws", 50):  # the same round trip without xterm.js: WebSocket send -> message event
        f.add("echo", "echo.plainws.p50", "plain-JS WebSocket ← bridge (PTY `cat`), no terminal, p50", "ms",
              echo_q("plain-ws", 50), digits=2)
        f.add("echo", "echo.pyodidews.p50", "this server (PTY `cat`) → Pyodide client, `await ch.send` → `data` "
              "listener, no terminal, p50", "ms", echo_q("nimbus-ws", 50), baseline=echo_q("plain-ws", 50),
              baseline_label="plain JS p50", digits=2)

    # 4. bench/browser_render.py: what the user sees -- a PTY stream rendered by xterm.js.
    render_run = launch("browser_render", ["bench/browser_render.py", "--mb", str(p["render_mb"]),
                                           "--runs", str(runs), "--tried", json.dumps({"window": WIDE_WINDOW})], 1800)
    if render_run:
        rs = render_run.get("results", [])

        def render_series(who: str, key: str | None = None) -> list[float]:
            xs = sorted((r for r in rs if r["kind"] == "render" and r["who"] == who), key=lambda r: r["run"])
            return [mbps(r) if key is None else float(r[key]) / 1e6 for r in xs]

        mb = render_run.get("expected", 0) / 1e6
        f.add("render", "render.plainjs", f"plain JS + xterm.js ← bridge (PTY `cat`, {mb:.0f} MB of text, no flow "
              "control)", "MB/s", render_series("plain"))
        f.add("render", "render.pyodide", "this server (PTY `cat`) → Pyodide client + xterm.js (credit follows "
              "xterm's write callback)", "MB/s", render_series("nimbus"), baseline=render_series("plain"),
              baseline_label="plain JS + xterm.js", target=("ratio>=", 0.9))
        if render_series("nimbus-tried"):
            f.add("render", "render.pyodide_wide", f"tried: as above, client `window={WIDE_WINDOW >> 20} MiB` "
                  "(default 256 KiB)", "MB/s", render_series("nimbus-tried"), baseline=render_series("plain"),
                  baseline_label="plain JS + xterm.js")
        f.add("render", "render.plainjs.unparsed", "plain JS: peak bytes handed to xterm, not yet parsed", "MB",
              render_series("plain", "peakInflight"), digits=2)
        f.add("render", "render.pyodide.unparsed", "Pyodide client: peak bytes handed to xterm, not yet parsed "
              "(bounded by the credit window, ≤ 2 MiB)", "MB", render_series("nimbus", "peakInflight"), digits=2)
        f.add("render", "render.plainjs.heap", "plain JS: peak JS heap growth during the stream", "MB",
              render_series("plain", "heapGrowth"), digits=1)
        f.add("render", "render.pyodide.heap", "Pyodide client: peak JS heap growth during the stream", "MB",
              render_series("nimbus", "heapGrowth"), digits=1)
        f.add("render", "render.pyodide.wasm", "Pyodide client: wasm memory (the Python heap), peak", "MB",
              render_series("nimbus", "wasmPeak"), digits=0)
    prof = [r for r in (main_run or {}).get("results", []) if r["kind"] == "profile"]
    if prof:
        f.browser_profile = (  # type: ignore[attr-defined]
            f"cProfile inside Pyodide of one {p['browser_mb']} MB stream, 64 KiB frames, synthetic sender "
            f"({mbps(prof[0]):.0f} MB/s under the profiler), from `bench/browser.py --profile`:\n\n"
            + prof[0]["text"].strip()
        )
    boots = [r for run in [pty_run, *echo_runs, main_run] if run for r in run["results"] if r["kind"] == "boot"]
    if boots:
        f.add("boot", "boot.total", "Pyodide boot + wheel install (`loadNimbus`), cold profile", "ms",
              [b["totalMs"] for b in boots], target=("<=", 3000.0), digits=0)
        f.add("boot", "boot.boot", "… of which Pyodide boot (`loadPyodide`)", "ms", [b["bootMs"] for b in boots],
              digits=0)
        f.add("boot", "boot.install", "… of which wheel install", "ms", [b["installMs"] for b in boots], digits=0)
    return {"pty": pty_run, "browser_py": main_run, "echo_launches": echo_runs, "render": render_run}


def page_bytes() -> dict[str, Any]:
    """What the demo page loads from build/site: index.html and every file under assets/ (the page,
    xterm.js, the facade, the Pyodide runtime, the wheel), raw and as the twin the server sends."""
    site: dict[str, Any] = json.loads((SITE / "site.json").read_text())
    files = ["index.html", *sorted(p.relative_to(SITE).as_posix() for p in (SITE / "assets").rglob("*")
                                   if p.is_file() and p.suffix not in (".gz", ".br"))]
    rows = []
    for rel in files:
        size = (SITE / rel).stat().st_size
        twins = {t: (SITE / f"{rel}.{t}").stat().st_size for t in ("gz", "br") if (SITE / f"{rel}.{t}").is_file()}
        rows.append({"file": rel, "bytes": size, "gzip": twins.get("gz", size), "br": twins.get("br", size)})
    return {
        "files": rows,
        "raw": sum(r["bytes"] for r in rows),
        "gzip": sum(r["gzip"] for r in rows),
        "br": sum(r["br"] for r in rows),
        "wheel": next(r for r in rows if r["file"] == site["wheel"]),
    }


# ---------------------------------------------------------------- profiles
def profile_text(fn: Callable[[], Any], top: int = 14) -> str:
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats("tottime").print_stats(top)
    text = s.getvalue()
    # Keep the table: from the header line on, paths shortened.
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "function calls" in line), 0)
    out = []
    for line in lines[start:]:
        line = re.sub(r"/[^ ]*/site-packages/", "", line)
        line = line.replace(str(ROOT) + "/", "").replace(sys.base_prefix + "/lib/python3.11/", "")
        if line.strip():
            out.append(line.rstrip())
    return "\n".join(out)


def profile_misses(f: Figures, p: dict[str, Any], path: str) -> None:
    missed = {r["id"] for r in f.misses()}
    if "s64.pyodide.65536" in missed and getattr(f, "browser_profile", None):
        f.profiles["s64.pyodide.65536"] = f.browser_profile  # type: ignore[attr-defined]
    size = p["pty_mb"] * 1_000_000
    jobs: dict[str, tuple[str, Callable[[], Any]]] = {
        "pty.cpython": (f"one `cat` of {p['pty_mb']} MB through this server → CPython client (server and client share the process)",
                        lambda: asyncio.run(stream.nimbus_stream(path, size))),
        "echo.cpython.p50": (f"{p['echo'] * 3} echoes through this server → CPython client",
                             lambda: asyncio.run(stream.nimbus_echo(p["echo"] * 3))),
        "s64.cpython": (f"{p['synthetic_mb']} MB, 64 KiB reads, synthetic backend → CPython client",
                        lambda: asyncio.run(synthetic.nimbus_synthetic(p["synthetic_mb"] * 1_000_000, 65536))),
        "int.input": ("one interrupt under flood", lambda: asyncio.run(interrupt.nimbus(1, 1 << 20, "input"))),
    }
    for fid, (what, job) in jobs.items():
        if fid in missed:
            print(f"  cProfile: {fid}", flush=True)
            try:
                f.profiles[fid] = f"cProfile of {what}, top functions by own time:\n\n" + profile_text(job)
            except Exception as exc:  # a profile is an extra; never lose the run for it
                f.profiles[fid] = f"(profile failed: {exc!r})"
    # File channels (bench/files.py): one transfer with the server in this process, where cProfile
    # sees it, once per kind (a missed own-process row shares the profile of its one-process twin).
    done: set[str] = set()
    for fid in sorted(i for i in missed if i.startswith("files.") and not i.endswith(".cpu")):
        import files

        kind = fid.removeprefix("files.").replace("proc.", ".")
        if kind not in files.PROFILABLE or kind in done:
            continue
        done.add(kind)
        print(f"  cProfile: {fid}", flush=True)
        try:
            f.profiles[fid] = ("cProfile of one transfer, server and client in this process (the executor's "
                               "file reads/writes and sshd are other threads/processes, not in it), top "
                               "functions by own time:\n\n" + files.profile(kind, p["files_mb"]))
        except Exception as exc:
            f.profiles[fid] = f"(profile failed: {exc!r})"


# ------------------------------------------------------------------- notes
#: What limits a figure when it misses, and what was tried (written from the
#: investigation; shown only for figures that missed in this run).
_PTY_NOTE = """
**What limits it.** A PTY hands out at most ~4 KiB per `read()` (the kernel's n_tty buffer) and a read of
the master waits for the tty layer's flush work, so the stream is bounded by the kernel for the bridge
and this server alike (~26 000 reads per 100 MB, most of the reader's time inside `posix.read`). `cat`
stops once the PTY's ~64 KiB of buffering is full, so any work done between two reads stalls the
writer. The bridge reads on the event loop and pays that stall once per frame (~0.1 ms: queue +
`ws.send`). Since 39a117a this server hands a streaming PTY to a pool thread (`backend.py`: once a
read fills a 64 KiB chunk; at most two chunks ahead; back to loop reads after 50 ms without output), so
its reads overlap the protocol work; what is left is the GIL: each of the ~16 reads per chunk must
re-take it from the loop thread, and on 2 cores the reader thread, the loop, `cat`, the kernel's flush
worker and (second pair of rows) the client process compete for the CPUs. Run-to-run spread on this
machine is ±15 % for both rows (see min–max), so a median of 7 can land either side of 0.95×.

**What was tried.** Before 39a117a (reads on the loop): 0.93× / 0.91× (previous `make bench`); a
read-ahead of one chunk per pool job (no second chunk in flight, a job per chunk): 0.93× -- the hop
between jobs is itself a stall; the current pipelined reader: 1.02–1.06× one process, 0.92–0.99× own
process over the development runs. Reading once per readiness instead of until `EAGAIN`: slower (78–84
vs 90–99 MB/s raw). A bigger `max_read` cannot help (the PTY never holds more than ~64 KiB) and would
break the "same message sizes" rule of the comparison.
"""

_FILES_GET_NOTE = """
**What limits it: Python work per 256 KiB frame, both ends on one core.** `LocalFileBackend._get` reads
256 KiB at a time (`file_max_read`) with one read kept ahead in the I/O pool, and sends each read as one
data frame as credit allows; with `nimbus-ws serve` in its own process the download runs at the bare push's
speed (the own-process row). With server and client sharing this process's one event loop, every frame
costs both ends' protocol work on the same thread: the 5-byte header joined to the payload (a 256 KiB copy
of a freshly read buffer, ~47 µs per frame under cProfile), credit accounting and grants, the client's
per-frame dispatch; the bare push sends the `pread` bytes as they are, with neither.
"""

_FILES_PUT_NOTE = """
**What limits it: the server's CPU per byte.** The server process uses 1.6–1.7 CPU s per GB of upload
against the bare push server's 1.1–1.2 (`perf` of the server process: ~15 % in context switches and
wake-ups of the hop to the I/O thread that writes, ~12 % in `memmove` of websockets' frame reassembly,
which the bare push pays too); with the client's copy gone (below) the client process is no longer the
busier one. Changed on 2026-12-04: the free-space check replaced `posix_fallocate`, which reserved the
whole size (11 ms per 100 MB on tmpfs) before the first byte could flow (A/B, 7 runs each, one process
0.68–0.74× → 0.79–0.80×, own process 0.64–0.66× → 0.74–0.85×); `Channel.send()` hands a `bytes` chunk
to the core as it is instead of copying it out of a `memoryview` (one process 0.79× → 0.84×, client
1.15–1.2 → 1.0 CPU s/GB). **Tried** (development runs, 100–300 MB, not kept): the write on the event loop
instead of the I/O pool (own process: server 2.1 CPU s/GB and 472 MB/s vs 1.6 and 640 -- worse, the
write no longer overlaps the socket reads); two or three `pwritev` in flight at their own offsets (no gain
beyond the noise); waiting up to 2 ms to gather 1 MiB per write (no change); 1 MiB upload frames (slower).
The own-process rows vary 0.60–1.04× from run to run on this 2-core machine.
"""

_FILES_SSH_NOTE = """
**What changed, and what limits it now: asyncssh's per-packet work in Python.** The SSH backend now offers
AES-GCM first where the CPU has AES instructions (`ssh_backend.ENCRYPTION_ALGS`; asyncssh's default puts
chacha20-poly1305 first, which it runs as a ChaCha20 call, a Poly1305 call and Python framing per packet;
AES-GCM is one OpenSSL call), and a download reads 1 MiB at a time (16 SFTP requests of 64 KiB in flight)
with one such read kept ahead, instead of 256 KiB. Before (same machine, the run before this change): up
0.63×, down 0.79× with the server in its own process. The server still spends 4–5 CPU s per GB in asyncssh
(packet framing, SFTP request bookkeeping) where `scp` and sshd are C; with server and client in one
process that CPU is shared with the client's. Quick runs (20 MB) flatter these rows: one asyncssh login
(~80 ms) against scp's fork/exec and OpenSSH's post-quantum key exchange (~270 ms).
"""

_PAGE_LOAD_NOTE = """
**What limits it: the 2 cores, more than the bytes.** Throttled, the 4.96 MB cross the 20 Mbit/s link in
~2.0 s, but the wasm's last byte arrives at ~2.7 s: its streaming compile reads the response as it goes, and
the boot (compile tail, interpreter, imports: ~0.9 s) and the connect to a prompt (~0.25 s) follow. On
loopback both cores are ~94 % busy from navigation to prompt (`/proc/stat`): the page's scripts, the
network service's brotli decoding, V8, the interpreter's start (~1.0 s), the project import (~0.27 s, most
of it creating the frozen dataclasses), the server and the shell. Each load starts on a quiet machine
(`bench/page_load.py`): navigating while the previous run's context was torn down added 0.3-0.6 s.
**Tried** (2026-12-04, measured, reverted): starting the runtime's boot from a module in `<head>`, before
xterm.js and the page's modules ran (no gain); importing the core's server modules lazily (no gain);
requesting `app.mjs` first (it arrives at ~0.1 s instead of ~0.4 s, the prompt no sooner). **Kept:** the
wheel imported from the archive instead of unpacked (install 318 → 268 ms). **Measured, not done:** a
stdlib cut to the static import closure (function-level imports included) of what the boot loads, Pyodide's
own modules and the project's browser modules drops 59 modules but only 137 KB of the 1.59 MB brotli
(~0.05 s throttled); an allow-list of the modules a boot loads would save ~0.5 MB but break any later
import of the rest.
"""

_RELAY_NOTE = """
**What limits it: three busy processes on two cores.** The relay already moves the bytes in the kernel
(`os.splice` between the two sockets, `node_runtime/cluster/relay.py`): no Python per byte. Relayed, the
owner, the relay instance and the client each need a core while the stream runs; direct, two do.
"""

_SHARE_SLOW_NOTE = """
**What limits it: the screen model's CPU on the owner's server.** A watched channel's output also feeds the
share hub's pyte screen model (~10 % duty, off the owner's path but in the same process); with the owner's
stream, the model and the client on 2 cores the owner loses 4-13 % from run to run (0.96× in the run before,
0.87× in this one).
"""

NOTES: dict[str, str] = {
    **peers_runner.NOTES,
    "page.first.s": _PAGE_LOAD_NOTE,
    "page.cold.s": _PAGE_LOAD_NOTE,
    "cluster.stream.relay": _RELAY_NOTE,
    "share.owner_slow": _SHARE_SLOW_NOTE,
    "files.pty.down": _FILES_GET_NOTE,
    "files.ptyproc.down": _FILES_GET_NOTE,
    "files.pty.up": _FILES_PUT_NOTE,
    "files.ptyproc.up": _FILES_PUT_NOTE,
    "files.ssh.up": _FILES_SSH_NOTE,
    "files.ssh.down": _FILES_SSH_NOTE,
    "files.sshproc.up": _FILES_SSH_NOTE,
    "files.sshproc.down": _FILES_SSH_NOTE,
    "pty.cpython": _PTY_NOTE,
    "pty.cpython2": _PTY_NOTE,
    "s64.cpython": """
**What limits it: per-frame Python work, and the credit window while it is small.** A 64 KiB frame
costs raw websockets ~50 µs for both ends in one process (serialize, send, recv, parse); this server
and client add the core and runtime around it: ~470 Python calls per frame across server core
(`backend_output`, `_flush`, `read_budget`, `next_deadline`), runtime (`flush`, `_write_loop`) and client
(`_pump`, `decode_data`, `_on_data`, channel queue, credit) -- see the profile below. The window
matters too: before commit 76e80d3 (the client pings as soon as it is ready, so the adaptive window
has an RTT from the start) the CPython client's window stayed at 256 KiB for a whole 100 MB stream
(763 grants; the backend paused and resumed after every second frame) and this row was 0.40×;
with a 2 MiB start / 16 MiB cap (the **tried** row) it was ~0.70×. Since 76e80d3 the window grows
to 2 MiB within the first megabytes (5 pauses per 100 MB), and the wider window adds nothing more.

**What was tried** (before 76e80d3; 100 MB, 3 runs each, ratio to raw websockets in the same batch):
wider client window 0.40× → ~0.70×; `ack=False` (no exactly-once acknowledgements): 0.42×, no change;
server `write_high_water` 4 MiB: 0.41×, no change; `max_read` 256 KiB (against 256 KiB raw frames):
0.45–0.65×, noisy.
""",
    "echo.cpython.p50": """
**What limits it: per-message Python work.** The bridge and this server take the same six event-loop
turns per round trip and the same system calls (two socket sends, one PTY write, two PTY reads); the
difference is the protocol work on those turns -- client `send` → core encode → socket; server parse
→ `BackendInput` → PTY write; PTY read → `backend_output` → `_flush` → encode → socket; client parse →
decode → `_on_data` → channel queue → consumer wake-up: about 20–40 µs of CPython per round trip on a
base of ~0.13 ms. cProfile shows no single hot spot (`_run_once`, `flush`, `_pump`, `read_budget`,
`next_deadline`). Input acknowledgements are timer-driven (16 KiB or 50 ms) and stay off the echo's
path. Nothing a caller can configure changes it.
""",
    "boot.total": """
**What limits it: Pyodide's own start-up.** `loadPyodide` -- compiling and instantiating the 9.6 MB
`pyodide.asm.wasm` (a fresh profile has no V8 code cache), unpacking the 2.5 MB stdlib and initialising
CPython 3.14 -- is ~90% of the figure (see the boot / install rows), and it alone moves between ~2.4 and
~3.5 s from launch to launch on this 2-core machine (2.5–3 s quiet, 5–9 s at load 7–10 during
development). Nothing in this project's wheel or facade can shorten the runtime boot; a returning visitor
with a warm HTTP and code cache is faster, but that is not what this row measures.

**What was done on our part.** Pyodide's `python_stdlib.zip` holds sources only, so every boot compiled
~140 stdlib modules inside WebAssembly: the dist's copy now adds unchecked-hash `.pyc` (compiled by
Pyodide itself, `scripts/pyodide_compile.mjs`) next to the sources of every module a boot and the bridge
import load (2.5 → 4.0 MB): `loadPyodide` ~2.3–3.3 s → ~0.8 s in Node, ~1.3 s in Chromium. The wheel in
the dist carries the same kind of bytecode for the modules the browser imports, and `loadNimbus` fetches
it (checked against the lock file's sha256) while Pyodide boots, then unpacks it instead of
`loadPackage`: install ~350 ms → ~190–250 ms.
""",
    "s64.pyodide.65536": """
**What limits it: the client's per-message work inside Pyodide, then the 2 cores.** Plain JS does
nothing per message but count bytes; the Pyodide client runs ~55 Python calls per 64 KiB message in
WebAssembly (`_js_message` → core `receive_data`/`decode_data`/`_on_data` → the channel → the facade's
`_hand` → the JS `data` listener, then credit: `consumed`, `_maybe_grant`), ~140 µs per message under
the profiler (profile below). From the synthetic sender, which costs nothing per frame, the client
reaches ~0.8× plain JS (the `synthetic nimbus sender` row); from this server it is lower, the server
(`head -c` on pipes, in the Python process of `bench/browser.py`) competing with Chromium's renderer and
network processes for the 2 cores. The `ceiling` row bounds what any Python receive path can do here:
handing each message to a bare Python function that only copies it out (`to_bytes()`) and counts.
With 4 KiB frames the per-message cost dominates (~0.4–0.5×).

**What was tried** (see `git log web_runtime/ node_runtime/client/ core/client.py`): `onmessage` passes
only `ev.data` and the connection takes it through the sockets' `onmessagedata` extension (no event
object); output is handed to JS as (buffer, offset, length) and viewed there -- one FFI call per chunk,
no copy back from Python; a lone data frame goes from the core straight to the channel
(`ClientSession.receive_data`, no drain round, no `_after_pump` when nothing was written): the receive
path went from ~70 to ~55 calls per message and (b') from ~0.65–0.7× to ~0.8×. What remains is the
JS↔Python crossing (the ceiling row), the core's per-frame bookkeeping, and the server's share of the
2 cores in row (b).
""",
    "echo.pyodide.p50": """
**What limits it: Python work on the two halves of the round trip.** Both sides pay the same xterm.js
work (`term.input` → `onData`, then parsing the echoed byte) and the same bridge-vs-server difference
(~0.03 ms in the CPython rows). The Pyodide side adds its Python in WebAssembly: on the way out
`ch.send` → `send_now` → `Channel.try_send` → core `send_input` → encode → `WebSocket.send` (one
JS→Python call, one Python→JS send); on the way back `onmessage` → `to_bytes()` → core
`receive_data` → channel → the facade's `deliver` → xterm, then after the write callback `release`
grants credit. **What was done** (issue 16 item 3): input no longer goes through a Python task (a
coroutine called from JS is a Task whose first step, and whose result, each wait one Pyodide
`call_soon` = one MessageChannel macrotask): `ch.send` tries the synchronous `send_now` first and
falls back to the waiting `send` only when the input buffer is full (order kept in the facade); a
chunk held by xterm is a `Hold` released synchronously from the write callback, instead of an asyncio
future + `gather` + two `call_soon` turns per chunk; `_consume` skips the pump when nothing is due.
Measured at load ~1 during development: p50 2.8× → 1.26×.
""",
    "echo.pyodide.p99": """
**What limits it.** The tail is the machine: 2 shared cores, a GC pause in Pyodide's heap or V8's, a
render frame of xterm.js. See the p50 row for what was done.
""",
    "s64.pyodide.4096": """
**What limits it: the per-message cost of Python in WebAssembly, most of it in the core.** Plain JS
does nothing per message but count bytes; the `ceiling` row (a bare Python handler: one JS→Python call
and `to_bytes()`) reaches ~0.85× at 4 KiB, so the crossing itself is cheap. The protocol path adds ~90
µs per 4 KiB message on this machine: under cProfile about half of it in the core (`receive_frame` →
`decode_data` slicing the payload, `_on_data` with three state-table checks, `consumed` →
`_maybe_grant`, two `time.time()` calls) and half in the runtime (`_js_message`, `_on_message_data`,
the channel's emitter, the facade's `_hand` and its JS `deliver`). At 64 KiB the same fixed cost is
spread over 16× the bytes (the 64 KiB rows are at ~0.7×). What would move it: a core fast path for a data
frame (header parsed without slicing, one state check, the clock read once) -- the core's to change;
batching messages in JS would save only the crossing and delay every keystroke by a macrotask.
""",
    "render.pyodide": """
**What limits it: arrival, not rendering or Python.** Both sides end within ~10 ms of their last
message (`receiveMs` ≈ `ms` in the raw results) and the bytes handed to xterm and not yet parsed stay
under ~0.3 MB: xterm.js keeps up and both sides wait for data. Chunks are large (40-60 KiB: the
server coalesces PTY reads), ~400 per 20 MB, so the Pyodide client's per-chunk Python costs ~0.1 s of
the run at most. What differs is the sender: the bridge reads the PTY as fast as `cat` writes it,
this server only as far as credit allows -- the window stays at 256 KiB here (it doubles only when grants
come within 2 RTT, and a renderer consuming at ~15 MB/s spaces them ~8 ms apart while the RTT is
~1 ms), so `cat` stops at every half window until the grant is back. The **tried** row (a 2 MiB
window) shows how much of the gap that is; run-to-run spread (±20 %, both sides) is of the same size
on 2 shared cores with Chromium's renderer, the server and `cat` competing.
""",
    "mem.idle": """
**What limits it.** One `websockets` connection with its buffers plus the session object, core machines
and their timers; compare the bare websockets row.
""",
    "int.input": """
**What limits it.** Output already in flight (the credit window and socket buffers) has to be drained
before the prompt arrives; see the "arrived after the interrupt" figure of the row.
""",
}


# --------------------------------------------------------------- document
SECTIONS = [
    ("codec", "Codec: payload MB/s per wire profile vs a bare `struct` baseline",
     "`bench/codec.py`: `profile.encode_data` / `profile.decode` of one data frame (max_frame 2 MiB) against "
     "`struct.pack('>BI') + payload` / `struct.unpack_from` + slice. Each run: best of 4 interleaved batches "
     "of ~{codec_seconds} s per cell. Target (bench/codec.py): nimbus.v1 ≥ 0.5× at 64 KiB, both ways."),
    ("pty", "PTY `cat` stream: {pty_mb} MB of random bytes, MB/s (spawn/connect to last byte)",
     "Same file, same PTY settings (80×24) for every row. CPython rows: server and client share one process "
     "and one event loop (`bench/stream.py`). Chromium rows: `bench/browser_pty.py` — Chromium launched "
     "directly (no Playwright/DevTools attached), the page's plain `WebSocket` reads the same bare bridge, the "
     "Pyodide client reads this server whose backend is a PTY running the same `cat` (timed first byte to last byte)."),
    ("stream64", "Stream without a PTY, MB/s",
     "CPython rows (`bench/synthetic.py`, {synthetic_mb} MB, 64 KiB frames, one process): a bare `websockets` "
     "server sending pre-built frames vs this server whose backend produces the same bytes from memory "
     "(`backend_factory`) or runs `head -c` on pipes. Chromium rows (`bench/browser.py`, {browser_mb} MB): plain JS "
     "`WebSocket` from a bare sender vs the Pyodide client from this server (`head -c N /dev/zero`, pipes, "
     "`max_read` = frame size) and from a synthetic credit-honouring nimbus sender."),
    ("echo", "Keystroke echo: one byte round trip, ms",
     "Per run {echo} round trips (CPython rows) or {browser_echo} (Chromium rows); each run's p50/p99, then median "
     "(min–max) over runs. PTY rows type into `cat` on a "
     "PTY (the terminal driver echoes). Chromium rows: one page launch per run (`bench/browser_pty.py --isolated`), "
     "the page cross-origin isolated (`performance.now()` at 5 µs; the stream pages are not: isolation slows both "
     "sides); the xterm.js rows are key event → byte on "
     "screen: `term.input()` (what xterm's key handler calls; `onData` fires) → `WebSocket.send` / `ch.send` → "
     "echo → xterm's write callback for the echoed byte, one 80×24 terminal per side, both sides open at once and "
     "measured in alternating blocks of 25 after 20 warm-up round trips."),
    ("render", "Rendered throughput: a PTY stream drawn by xterm.js in Chromium",
     "`bench/browser_render.py`: {render_mb} MB of 100-column text lines through a PTY running `cat`, rendered by "
     "xterm.js (80×24, DOM renderer) in headless Chromium (launched directly, `--enable-precise-memory-info`); "
     "timed from the first byte to xterm's write callback of the last one; runs alternate plain, Pyodide. The page "
     "samples its JS heap and Pyodide's wasm memory every 50 ms and counts the bytes handed to `term.write` whose "
     "callback has not fired yet (what the page holds unparsed)."),
    ("interrupt", "Interrupt under a `yes` flood: interrupt → prompt back, ms",
     "`bench/interrupt.py`: PTY running `bash --norc --noprofile -i` with a prompt marker; `yes` floods until "
     "≥ 1 MiB arrived, then the clock starts, the interrupt is sent, and the client reads (draining the flood) "
     "until the prompt marker. One fresh shell/connection per sample, {interrupt_samples} samples, interleaved."),
    ("boot", "Pyodide boot + wheel install",
     "`nimbus.timings` from `loadNimbus()` in every Chromium launch of this run (each a fresh profile: no HTTP "
     "or V8 code cache; files from a local HTTP server with `Cache-Control: no-store`)."),
    ("pageload", "Page load in Chromium: first load and reload (issue 14)",
     "`bench/page_load.py`: `nimbus-ws serve --static build/site` in its own process; Debian Chromium; time from "
     "navigation start to a usable prompt (attached, ready, the shell's prompt on screen: `performance.now()` in "
     "the page); bytes = CDP `encodedDataLength` of the HTTP responses (the terminal's WebSocket not counted). "
     "Throttled rows: CDP `Network.emulateNetworkConditions` 20 Mbit/s down, 5 Mbit/s up, 30 ms; the first load "
     "in a fresh context (empty cache), reloads in the same page (session resumed). Baseline: the figures "
     "measured before this work (issue 14 text and docs/deploy.md), not re-measured."),
    ("cluster", "Cluster: relay vs direct, one vs two workers (issue 17)",
     "`bench/cluster.py`: redis-server and two `nimbus-ws serve --redis` processes (pipes, no PTY); the CPython "
     "client in the bench process resumes its session on the other instance, which relays it to the owner "
     "(docs/scale.md); stream = `head -c` MB/s, echo = one byte through `cat`, resume = socket dropped to "
     "`ready` again (no retry delay). Workers: N sessions streaming at once against `nimbus-ws serve` vs "
     "`--workers 2`; client and servers share the 2 cores."),
    ("files", "File channels: upload / download MB/s (issue 19)",
     "`bench/files.py`: one {files_mb} MB random file in /dev/shm, each transfer timed from connect to the "
     "far side's verdict (connect, open, every byte, done) and checked by sha256; {files_runs} runs, baseline "
     "and nimbus interleaved. PTY rows: `core.aio.upload()`/`download()` (default options, a fresh CPython "
     "client connection per transfer) through the reference server's local-filesystem backend, against a bare "
     "`websockets` push (a server writing each 256 KiB binary message to a file / streaming the file in 256 KiB "
     "messages, a plain `websockets` client). SSH rows: the same calls through `backend=\"ssh\"` (SFTP from "
     "the server, one key login per transfer) to a private OpenSSH sshd (`tests/support/sshd.py`), against "
     "OpenSSH `scp` (its default SFTP protocol, same key and sshd, `BatchMode`, one login per transfer; scp "
     "negotiates chacha20-poly1305 in C, the server AES-GCM where the CPU has AES). \"One process\": server and client share this process and event loop; "
     "\"own process\": `nimbus-ws serve` (and the bare push server) in a process of its own. CPU rows: "
     "`time.process_time()` of this process, `/proc` of the server process."),
    ("share", "Sharing: the owner's stream with viewers (issue 18)",
     "`bench/share.py`: the reference server in its own process (PTY backend, `/bin/sh`); the owner (CPython "
     "client) streams `head -c N /dev/zero | tr '\\0' x` through its PTY, timed from the command to its end "
     "marker; alone, then with one share viewer reading at 64 KiB/s (its consumption earns its credit), then "
     "with one viewer reading at full speed; interleaved run by run. The viewers' screen model (pyte) and "
     "fan-out run in the server; its CPU seconds per run are the last rows."),
    ("memory", "Memory",
     "`bench/memory.py`: server in a subprocess, its `VmRSS` read from /proc; idle: one warm-up connection, then "
     "(RSS after N connections − RSS before) / N; streaming: peak RSS over {mem_stream_seconds} s with N "
     "connections streaming, minus before, / N; client: a fresh process receiving {mem_mb} MB (tracemalloc "
     "started before `connect`; RSS growth measured in a separate run without tracemalloc). "
     "{mem_runs} runs, bare websockets and this server interleaved."),
    ("sessions", "Sessions per machine: many sessions with a shell, a tenth of them streaming (issue 16 item 6)",
     "`bench/sessions.py`: the reference server in its own process (PTY backend, `exec /bin/sh` per session; "
     "per-address, per-client and total caps raised by options); every client in the bench process (the CPython "
     "client, one connection and channel per session). Memory: server `VmRSS` after one warm-up session, then "
     "(RSS with N sessions at their prompt − RSS before) / N, the shells not counted (other processes); the "
     "peer is terminado with the same shell and N, same method. Streaming: every tenth session runs `seq`; "
     "throughput per stream over a fixed window once all stream; every byte received compared with what `seq` "
     "prints. One run (each figure one sample); the load is in the machine table."),
    ("peers", "Peers: nimbus vs terminado, webssh, wetty and the bare bridge",
     "`bench/peers/` (issue 16): the same shell command through each server, in its own process. Rows with a "
     "target (nimbus ahead of each peer: ratio nimbus ÷ peer ≥ 1× for MB/s, ≤ 1× otherwise) are in the "
     "targets table above; all figures here."),
]


def render(f: Figures, meta: dict[str, Any]) -> str:
    p = meta["params"]
    m = meta["machine"]
    out: list[str] = []
    w = out.append
    w("# Benchmarks")
    w("")
    w(f"Generated by `make bench` (`python bench/run.py{' --quick' if p['quick'] else ''}`) on {meta['started']} UTC; "
      f"took {meta['duration_s'] / 60:.1f} min; code at `{meta.get('commit', '?')}`. Raw samples: [`{meta.get('json_name', 'benchmarks.json')}`]({meta.get('json_name', 'benchmarks.json')}). "
      "Do not edit by hand: the text comes from `bench/run.py`.")
    if meta.get("merged"):
        mg = meta["merged"]
        w("")
        w(f"Sections re-measured in this run (`--only {','.join(mg['sections'])}`): their rows and the load figures "
          f"below are from {meta['started']} UTC; every other row is from the run of {mg['previous']} UTC "
          f"(code at `{mg['previous_commit']}`).")
    w("")
    w("## Machine")
    w("")
    w(f"- {m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB RAM, Linux {m['kernel']}")
    w(f"- CPython {m['python']}, websockets {m['websockets']}; Chromium {m['chromium']} (headless, launched "
      f"directly); Pyodide {m['pyodide']} (Python {m['pyodide_python']}); xterm.js {m['xterm']}")
    if meta.get("scratch"):
        w(f"- scratch files (the stream files, Chromium's fresh profiles) in `{meta['scratch']}`, so no disk "
          "write-back runs during the measurements")
    la0, la1 = meta["load_start"], meta["load_end"]
    w(f"- load average (1/5/15 min) at start: {la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}; at end: "
      f"{la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f}" + (f" (waited {meta['waited_s']:.0f} s for a quiet machine first)"
                                                       if meta.get("waited_s") else ""))
    if meta.get("load_samples"):
        w("- per section: 1-min load average at its start; mean CPU (cores, of 2) used by this benchmark's "
          "processes / by other processes while it ran (sampled every 0.25 s by `bench/cpumon.py`; kernel "
          "threads not counted):")
        w("")
        w("| section | load at start | this benchmark | other processes | busiest others (CPU s) |")
        w("|---|---:|---:|---:|---|")
        for x in meta["load_samples"]:
            top = ", ".join(f"`{n}` {t:g}" for n, t in x.get("top_others", []) if t >= 0.5) or "–"
            w(f"| {x['section']} | {x['load1']:.2f} | {x.get('ours_cores', float('nan')):.2f} | "
              f"{x.get('other_cores', float('nan')):.2f} | {top} |")
        w("")
    if meta.get("load_note"):
        w(f"- {meta['load_note']}")
    w(f"- every figure: median (min–max) over runs -- the `n` column of each table says how many (CPython streams and "
      f"echo {p['runs']}, codec {p.get('codec_runs', p['runs'])}, Chromium {p.get('browser_runs', p['runs'])}, memory "
      f"{p['mem_runs']}); everything on 127.0.0.1, all figures from this one machine and this one invocation")
    w("")
    w("## Targets")
    w("")
    w("| figure | baseline (same run) | measured | ratio | target | met |")
    w("|---|---|---|---|---|---|")
    for r in f.rows:
        if r["target"] is None:
            continue
        base = f"{r['baseline_label']}: {cell(r['baseline'], r['digits'])}" if r["baseline"] else "–"
        w(f"| {r['label']} | {base} | {cell(r['measured'], r['digits'])} {r['unit']} | "
          f"{ratio_cell(r) or '–'} | {target_text(r)} | {met_text(r)} |")
    for sec, err in f.errors.items():
        w(f"| {sec} | – | not measured: {one_line(err)} | – | – | **ERROR** |")
    for peer, why in peers_runner.not_measured(meta["peers"]) if meta.get("peers") else []:
        w(f"| peers: nimbus vs {peer} | – | {one_line(why)} | – | – | **NOT MEASURED** |")
    w("")
    misses = f.misses()
    if misses:
        w("Missed: " + "; ".join(f"{r['label']} ({target_text(r)})" for r in misses) + ". See "
          "[what limits them](#where-targets-are-missed).")
        w("")
    for key, title, desc in SECTIONS:
        rows = [r for r in f.rows if r["section"] == key]
        extra = (key == "boot" and meta.get("page_bytes")) or (key == "peers" and meta.get("peers"))
        if not rows and key not in f.errors and not extra:
            continue
        w(f"## {title.format(**p)}")
        w("")
        w(desc.format(**p))
        w("")
        for sec, err in f.errors.items():
            if sec == key or (key == "boot" and sec.startswith("browser")):
                w(f"**Not measured ({sec})**: {one_line(err)}")
                w("")
        if key == "peers" and meta.get("peers"):
            w(peers_runner.markdown(meta["peers"]))
        elif rows:
            w("| | median (min–max) | unit | baseline | ratio | target | met | n |")
            w("|---|---|---|---|---|---|---|---|")
            for r in rows:
                base = f"{r['baseline_label']}" if r["baseline"] else ""
                label = r["label"] + (f" — {r['note']}" if r["note"] else "")
                w(f"| {label} | {cell(r['measured'], r['digits'])} | {r['unit']} | {base} | "
                  f"{ratio_cell(r)} | {target_text(r)} | {met_text(r)} | "
                  f"{r['measured']['n']} |")
            w("")
        if key == "boot" and meta.get("page_bytes"):
            pb = meta["page_bytes"]
            w(f"Demo page bytes (what `build/site/index.html` loads: page, xterm.js and addons, facade, Pyodide "
              f"runtime, stdlib, lock file, the wheel): **{pb['raw'] / 1e6:.2f} MB raw, {pb['gzip'] / 1e6:.2f} MB "
              f"as gzip twins, {pb.get('br', pb['gzip']) / 1e6:.2f} MB as brotli twins** (what the server sends for the "
              f"`Accept-Encoding` of the request); the wheel alone {pb['wheel']['bytes'] / 1e3:.1f} kB "
              f"({pb['wheel'].get('br', pb['wheel']['gzip']) / 1e3:.1f} kB br).")
            w("")
            w("| file | bytes | .gz | .br |")
            w("|---|---:|---:|---:|")
            for r in pb["files"]:
                w(f"| `{r['file']}` | {r['bytes']:,} | {r['gzip']:,} | {r.get('br', r['gzip']):,} |")
            w("")
    w("## Where targets are missed")
    w("")
    if not misses:
        w("Every target was met in this run.")
        w("")
    for r in misses:
        w(f"### {r['label']}: {cell(r['measured'], r['digits'])} {r['unit']}"
          + (f", {ratio_cell(r)} {r['baseline_label']}" if r["ratio"] else "")
          + f" (target {target_text(r)})")
        w("")
        note = NOTES.get(r["id"])
        if note:
            w(note.strip())
            w("")
        if r["id"] in f.profiles:
            w("```")
            w(f.profiles[r["id"]])
            w("```")
            w("")
        if not note and r["id"] not in f.profiles:
            w("No analysis recorded for this figure yet.")
            w("")
    w("## Method notes")
    w("")
    w("- Baselines are measured in the same invocation, interleaved with what they are compared to (run *i* of "
      "the baseline right before run *i* of the measured path); a ratio is the median of the per-run ratios.")
    w("- Nothing is warmed up and then reported as cold: Pyodide boots in a fresh Chromium profile each launch; "
      "each stream starts a new server, connection and process. Memory figures take one warm-up connection "
      "first (imports), then measure the first batch of N connections.")
    w("- Chromium runs with no Playwright/DevTools attached while measuring (an attached driver slows WebSocket "
      "delivery several-fold); the page reports results over HTTP POST.")
    w("- CPython stream/echo rows run server and client in one process and event loop, for the baseline and "
      "for this implementation alike; the machine has 2 cores.")
    w("")
    return "\n".join(out)


# -------------------------------------------------------------------- main
async def run_async(f: Figures, p: dict[str, Any], path: str, only: set[str] | None) -> None:
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("pty", lambda: section_pty(f, p, path)),
        ("stream64", lambda: section_synthetic(f, p)),
        ("echo", lambda: section_echo(f, p)),
        ("interrupt", lambda: section_interrupt(f, p)),
        ("memory", lambda: section_memory(f, p)),
    ]
    for key, step in steps:
        if only and key not in only:
            continue
        print(f"== {key}", flush=True)
        with section_load(key):
            try:
                await step()
            except Exception as exc:
                traceback.print_exc()
                f.errors[key] = f"{type(exc).__name__}: {exc}"[:300]


#: Rows ``section_browser`` makes (they sit in the pty, stream64, echo and boot sections).
_BROWSER_ROW = re.compile(r"^(pty\.(plainjs|pyodide)|s64\.(plainjs|pyodide|bare_python)|echo\.(plainjs|pyodide)|boot\.|render\.)")


def merge_previous(f: Figures, meta: dict[str, Any], js: Path, only: set[str]) -> None:
    """``--only``: keep what the previous full run (``js``) measured for the sections not run now.

    A row of the previous run stays unless this run measured it again (same id) or it is a row
    of a section this run measured (``browser`` rows by their ids); new rows go after the last
    row of their section.  The peers table and the page bytes are kept likewise.
    """
    if not js.is_file():
        return
    try:
        old = json.loads(js.read_text())
    except (OSError, ValueError):
        return
    new = {r["id"]: r for r in f.rows}
    browser = "browser" in only

    def rerun(r: dict[str, Any]) -> bool:
        return r["id"] in new or r["section"] in only or (browser and bool(_BROWSER_ROW.match(r["id"])))

    rows: list[dict[str, Any]] = []
    placed: set[str] = set()
    for r in old.get("figures", []):
        if r["id"] in new:
            rows.append(new[r["id"]])
            placed.add(r["id"])
        elif not rerun(r):
            rows.append(r)
    for r in f.rows:
        if r["id"] in placed:
            continue
        last = max((i for i, x in enumerate(rows) if x["section"] == r["section"]), default=len(rows) - 1)
        rows.insert(last + 1, r)
    f.rows = rows
    for k, v in old.get("profiles", {}).items():
        if k not in new and k not in f.profiles and any(r["id"] == k for r in rows):
            f.profiles[k] = v
    for k, v in old.get("errors", {}).items():
        if k not in only and not (browser and k.startswith("browser")) and k not in f.errors:
            f.errors[k] = v
    for key in ("peers", "page_bytes"):
        if key not in meta and old.get(key) is not None and key.split("_")[0] not in only:
            meta[key] = old[key]
    origin = old.get("merged") or {"previous": old.get("started", "?"), "previous_commit": old.get("commit", "?")}
    meta["merged"] = {"sections": sorted(only), "previous": origin["previous"],
                      "previous_commit": origin["previous_commit"]}


def rerender(js: Path, md: Path | None) -> int:
    """Write the markdown again from ``js`` (e.g. after editing NOTES); figures unchanged."""
    data = json.loads(js.read_text())
    f = Figures()
    f.rows, f.errors, f.profiles = data["figures"], data["errors"], data["profiles"]
    md = md or js.with_suffix(".md")
    md.write_text(render(f, data))
    print(f"wrote {md} from {js}")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, 2 runs (writes build/bench-quick.*)")
    ap.add_argument("--runs", type=int, help="runs per figure (default 5; --quick 2)")
    ap.add_argument("--out", help="markdown path (default docs/benchmarks.md; --quick: build/bench-quick.md)")
    ap.add_argument("--only", help="comma-separated sections: codec,pty,stream64,echo,interrupt,memory,browser,pageload,sessions,cluster,files,share,peers")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile runs of missed targets")
    ap.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                    help="the peers section (terminado, webssh, wetty, bridge; bench/peers/); on by default")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="first wait up to S seconds for the 1-min load average to drop below --load")
    ap.add_argument("--load", type=float, default=1.5, help="load threshold for --wait-quiet (default 1.5)")
    ap.add_argument("--render", metavar="JSON", help="only re-render the markdown from a saved JSON (no measuring)")
    args = ap.parse_args(argv)
    if args.render:
        return rerender(Path(args.render), Path(args.out) if args.out else None)
    p = params(args.quick, args.runs)
    md = Path(args.out) if args.out else (ROOT / "build" / "bench-quick.md" if args.quick else ROOT / "docs" / "benchmarks.md")
    js = md.with_suffix(".json")
    only = set(args.only.split(",")) if args.only else None
    meta: dict[str, Any] = {"params": p, "json_name": js.name}
    if args.wait_quiet > 0:
        waited, la = wait_quiet(args.load, args.wait_quiet)
        meta["waited_s"] = waited
        if la[0] >= args.load:
            meta["load_note"] = (f"the machine did not get quiet (1-min load {la[0]:.2f} ≥ {args.load} after "
                                 f"{waited:.0f} s): run anyway, other processes were competing for the 2 cores")
    t0 = time.monotonic()
    meta["started"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    meta["load_start"] = loadavg()
    meta["machine"] = machine_info()
    meta["scratch"] = scratch_dir() or tempfile.gettempdir()
    meta["commit"] = git_commit()
    print(f"bench: {meta['machine']['cores']} cores, {meta['machine']['cpu']}; load {meta['load_start']}; "
          f"params {p}", flush=True)
    f = Figures()

    def section(name: str, work: Callable[[], object]) -> None:
        """One section of ``--only``: its heading, its load figures, and a failure kept as the
        section's error (the other sections still run)."""
        if only and name not in only:
            return
        print(f"== {name}", flush=True)
        with section_load(name):
            try:
                work()
            except Exception as exc:
                traceback.print_exc()
                f.errors[name] = f"{type(exc).__name__}: {exc}"[:300]

    def browser() -> None:
        nonlocal browser_raw
        with tempfile.TemporaryDirectory(prefix="nimbus-bench-") as tmp:
            browser_raw = section_browser(f, p, path, Path(tmp))

    def pageload() -> None:
        import page_load

        page_load.add_rows(f, page_load.run(runs=2 if p["quick"] else 3, reloads=2))

    def sessions_() -> None:  # bench/sessions.py (issue 16 item 6)
        import sessions

        meta["sessions"] = asyncio.run(sessions.run(sessions.params(p["quick"])))
        sessions.add_figures(f, meta["sessions"])

    def cluster_() -> None:  # bench/cluster.py (issue 17)
        import cluster

        cluster.add_rows(f, cluster.run(p["quick"]))

    def files_() -> None:  # bench/files.py (issue 19)
        import files

        meta["files"] = files.run(files.params(p["quick"], p["files_runs"], p["files_mb"]))
        files.add_rows(f, meta["files"])

    def share_() -> None:  # bench/share.py (issue 18)
        import share

        meta["share"] = asyncio.run(share.run(share.params(p["quick"])))
        share.add_figures(f, meta["share"])

    def peers() -> None:
        meta["peers"] = asyncio.run(peers_runner.run(peers_runner.params(p["quick"])))
        peers_runner.add_figures(f, meta["peers"])

    section("codec", lambda: section_codec(f, p))
    path = make_file(p["pty_mb"])
    browser_raw: dict[str, Any] = {}
    try:
        asyncio.run(run_async(f, p, path, only))
        section("browser", browser)
        section("pageload", pageload)
        section("sessions", sessions_)
        section("cluster", cluster_)
        section("files", files_)
        section("share", share_)
        if args.peers:
            section("peers", peers)
        with contextlib.suppress(Exception):
            meta["page_bytes"] = page_bytes()
        if not args.no_profile and f.misses():
            print("== profiles of missed targets", flush=True)
            profile_misses(f, p, path)
    finally:
        os.unlink(path)
    meta["load_end"] = loadavg()
    meta["load_samples"] = LOAD_SAMPLES
    if meta["load_start"][0] >= args.load and not meta.get("load_note"):
        meta["load_note"] = (f"the 1-min load average was {meta['load_start'][0]:.2f} (≥ {args.load}) at the start: "
                             "other processes were competing for the 2 cores")
    meta["duration_s"] = time.monotonic() - t0
    if only:
        merge_previous(f, meta, js, only)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(render(f, meta))
    data = {
        **meta,
        "figures": f.rows,
        "errors": f.errors,
        "profiles": f.profiles,
        "memory_raw": getattr(f, "raw_memory", None),
        "browser_raw": browser_raw,
    }
    js.write_text(json.dumps(data, indent=1, default=str) + "\n")
    misses = f.misses()
    print(f"\nwrote {md.relative_to(ROOT) if md.is_relative_to(ROOT) else md} and {js.name} in "
          f"{meta['duration_s'] / 60:.1f} min; load {meta['load_start']} -> {meta['load_end']}")
    for r in f.rows:
        if r["target"] is not None:
            print(f"  {met_text(r).strip('*'):7} {r['label']}: {cell(r['measured'], r['digits'])} {r['unit']}"
                  + (f", {r['ratio']['median']:.2f}x" if r["ratio"] else "") + f" (target {target_text(r)})")
    if f.errors:
        print(f"errors: {f.errors}")
    print(f"{len(misses)} target(s) missed")
    return 1 if f.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
