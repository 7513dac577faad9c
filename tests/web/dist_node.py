"""Run Python inside Pyodide in Node from the dist folder, for the dist bytecode tests.

:func:`run_report` boots Pyodide from ``build/pyodide-dist`` (its default
stdlib zip, or ``stdlib_url``), installs an audit hook that records every
``compile()`` of a source file in ``compiled_files`` (importlib and zipimport
compile sources with the builtin, which raises the ``compile`` audit event; a
``.pyc`` is unmarshalled instead), installs the project wheel by path (as
``node_runtime/shim`` does), imports ``nimbus_websocket.web_runtime.bridge``
and returns the JSON value of the last expression of ``report_py``.  Skips
when ``node`` is missing; bounded by :data:`NODE_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = Path(os.environ.get("NIMBUS_PYODIDE_DIST", ROOT / "build" / "pyodide-dist"))
PROJECT_PACKAGE = "nimbus-websocket"
UNCHECKED_HASH = 0b01
NODE_TIMEOUT_SECONDS = 150

_NODE_SCRIPT = r"""
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [dist, wheel, stdLibURL, before, report] = process.argv.slice(2);
const { loadPyodide } = await import(pathToFileURL(path.join(dist, "pyodide.mjs")).href);
const toStderr = (line) => process.stderr.write(`${line}\n`);
const pyodide = await loadPyodide({
  indexURL: dist + path.sep,
  ...(stdLibURL ? { stdLibURL } : {}),
  stdout: toStderr,
  stderr: toStderr,
});
pyodide.runPython(readFileSync(before, "utf8"));
const errors = [];
await pyodide.loadPackage(path.resolve(wheel), {
  messageCallback: () => {},
  errorCallback: (m) => errors.push(m),
});
if (errors.length) throw new Error(`loadPackage(${wheel}): ${errors.join("; ")}`);
pyodide.pyimport("nimbus_websocket.web_runtime.bridge");
process.stdout.write(`${pyodide.runPython(readFileSync(report, "utf8"))}\n`);
"""

_AUDIT_PY = """
import sys

compiled_files = []


def _audit(event, args):
    if event == "compile" and len(args) > 1:
        compiled_files.append(str(args[1]))


sys.addaudithook(_audit)
"""


def dist_wheel_path() -> Path:
    """The project wheel named by the dist's lock file."""
    packages = json.loads((DIST / "pyodide-lock.json").read_text(encoding="utf-8"))["packages"]
    return DIST / str(packages[PROJECT_PACKAGE]["file_name"])


def run_report(tmp: Path, report_py: str, *, wheel: Path | None = None, stdlib_url: str = "") -> dict[str, Any]:
    """Boot, audit, install, import the bridge, evaluate ``report_py`` (see the module doc)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found")
    script, before, report = tmp / "check.mjs", tmp / "before.py", tmp / "report.py"
    script.write_text(_NODE_SCRIPT, encoding="utf-8")
    before.write_text(_AUDIT_PY, encoding="utf-8")
    report.write_text(report_py, encoding="utf-8")
    proc = subprocess.run(
        [node, str(script), str(DIST), str(wheel or dist_wheel_path()), stdlib_url, str(before), str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(lines[-1])
    return result
