"""The test collection is the same in every process, whatever the hash seed.

pytest-xdist refuses to run when its workers collect different orders, and each
worker has its own random string-hash seed; pytest-pyodide keeps its runtimes in a
set.  tests/conftest.py sorts them; this test would catch the order coming back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collect(seed: int) -> list[str]:
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/pyodide",
            "--runtime=node,chrome",
            "--collect-only",
            "-q",
            "-p",
            "no:xdist",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    return [line for line in out.splitlines() if "::" in line]


def test_pyodide_runtimes_collect_in_one_order_for_every_hash_seed() -> None:
    # Seeds 10 and 11 put {"node", "chrome"} in opposite set orders on CPython 3.11.
    orders = {seed: _collect(seed) for seed in (10, 11)}
    assert orders[10], "nothing collected"
    assert any("[node]" in t for t in orders[10]) and any("[chrome]" in t for t in orders[10])
    assert orders[10] == orders[11]
