"""Helpers shared by the benchmarks: statistics, tables, a PTY spawner, RSS."""

from __future__ import annotations

import fcntl
import os
import platform
import statistics
import struct
import subprocess
import termios
import time
from collections.abc import Sequence


def median_range(xs: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)``."""
    return statistics.median(xs), min(xs), max(xs)


def percentile(xs: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``xs``."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` (all its threads) has used (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_busy_total() -> tuple[int, int]:
    """``(busy, total)`` jiffies of all CPUs since boot (``/proc/stat``; idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def wait_cpu_quiet(limit: float = 0.15, window: float = 0.2, timeout: float = 5.0) -> bool:
    """Wait until the whole machine's CPUs are less than ``limit`` busy over ``window`` seconds
    (``/proc/stat``), at most ``timeout`` seconds; ``True`` when it got that quiet.

    For a measurement that must start from an idle machine (a page load, as a user opening a
    tab), not while the previous run's processes are still being torn down."""
    deadline = time.monotonic() + timeout
    while True:
        b0, t0 = _cpu_busy_total()
        time.sleep(window)  # the sampling window itself
        b1, t1 = _cpu_busy_total()
        if (b1 - b0) / max(1, t1 - t0) < limit:
            return True
        if time.monotonic() >= deadline:
            return False


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, columns padded."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    """One line describing this machine."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def spawn_pty(argv: Sequence[str], cols: int = 80, rows: int = 24) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``argv`` on a new PTY; returns the process and the non-blocking master fd."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(
        list(argv), stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    os.set_blocking(master, False)
    return proc, master


def scratch_dir() -> str | None:
    """Where benchmark scratch files go: ``/dev/shm`` (RAM) when writable, else the default temp dir.

    The 200 MB stream files and Chromium's fresh profiles would otherwise be
    written back to disk by kernel threads while the next runs measure, on
    the same 2 cores (kernel threads are not in the CPU table of the report).
    """
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
