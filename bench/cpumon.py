"""CPU used by other processes while a benchmark section runs (a sampling monitor).

    python bench/cpumon.py ROOT_PID [--interval 0.25]   # prints JSON when stdin closes

Samples ``/proc/*/stat`` every ``--interval`` seconds in its own process (so
the benchmark's event loop is not held up).  Processes are split into
*ours* -- ``ROOT_PID`` and every process ever seen below it (a process that
is reparented when its parent dies stays ours) -- and *others* (user-space
processes only; kernel threads, including the tty work that serves the
benchmark's PTYs, are not counted).  Each process contributes the CPU time it
used between its first and last sighting (a process born meanwhile counts
from zero), so a process living less than one interval can be missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import defaultdict

TICK = os.sysconf("SC_CLK_TCK")


def snapshot() -> dict[tuple[int, int], tuple[int, int, str]]:
    """``(pid, starttime) -> (ppid, utime + stime, comm)`` of user-space processes."""
    out: dict[tuple[int, int], tuple[int, int, str]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        if ppid == 2 or int(d) == 2:
            continue  # kernel threads
        out[(int(d), int(fields[19]))] = (ppid, int(fields[11]) + int(fields[12]), comm)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=int)
    ap.add_argument("--interval", type=float, default=0.25)
    args = ap.parse_args()
    me = os.getpid()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    first = snapshot()
    base = {k: v[1] for k, v in first.items()}  # present at the start: count from here
    last: dict[tuple[int, int], tuple[int, str]] = {}
    ours_pids: set[int] = {args.root}
    ours_keys: set[tuple[int, int]] = set()
    t0 = time.monotonic()
    deadline = t0 + 7200  # bounded
    while True:
        snap = snapshot()
        for _ in range(64):  # grow the tree, one level per pass
            new = {k[0] for k, v in snap.items() if v[0] in ours_pids and k[0] not in ours_pids}
            if not new:
                break
            ours_pids |= new
        for k, (_, ticks, comm) in snap.items():
            last[k] = (ticks, comm)
            if k[0] in ours_pids:
                ours_keys.add(k)
        if stop.is_set() or time.monotonic() > deadline:
            break
        stop.wait(args.interval)
    wall = time.monotonic() - t0
    ours = others = 0
    by_name: dict[str, int] = defaultdict(int)
    for k, (ticks, comm) in last.items():
        used = ticks - base.get(k, 0)
        if k[0] == me:
            continue
        if k in ours_keys:
            ours += used
        else:
            others += used
            by_name[comm] += used
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:4]
    print(json.dumps({
        "wall": wall,
        "ours_cores": ours / TICK / wall,
        "other_cores": others / TICK / wall,
        "top_others": [[name, round(t / TICK, 1)] for name, t in top if t > 0],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
