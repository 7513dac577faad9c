"""Run the Node.js shim's own tests (``node --test tests/shim/``) as part of the pytest run.

They boot Pyodide under Node from the offline dist folder and talk to the
real reference server (started by the JavaScript tests themselves).  Skipped
when ``node`` or the dist folder is missing (``make setup`` builds it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = Path(os.environ.get("NIMBUS_PYODIDE_DIST", ROOT / "build" / "pyodide-dist"))

pytestmark = pytest.mark.timeout(240)


def test_node_shim_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found")
    if not (DIST / "pyodide.mjs").is_file() or not (DIST / "pyodide-lock.json").is_file():
        pytest.skip(f"Pyodide dist folder {DIST} missing; run `make setup`")
    nimbus_ws = Path(sys.executable).with_name("nimbus-ws")
    if not nimbus_ws.is_file():
        pytest.skip(f"{nimbus_ws} not found (pip install -e .)")
    env = {**os.environ, "NIMBUS_WS": str(nimbus_ws), "NIMBUS_PYODIDE_DIST": str(DIST)}
    proc = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(ROOT / "tests" / "shim")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    assert "ℹ fail 0" in output, output[-4000:]
