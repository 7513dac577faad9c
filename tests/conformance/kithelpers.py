"""Helpers of the conformance-kit tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Test oracles: independent servers written from PROTOCOL.md alone.
ORACLES = REPO / "tests" / "oracles"
#: The minimal server, also a starting point for other languages (``--profile json-base64.v1|lenpfx.v1``).
MINIMAL_SERVER = ORACLES / "minimal_server.py"
#: The shell every test channel runs: bash without rc files (fast, predictable).
SHELL = "bash --norc --noprofile -i"


async def stderr_text(proc: asyncio.subprocess.Process) -> str:
    """What the process wrote on stderr so far (for assertion messages)."""
    if proc.stderr is None:
        return ""
    with contextlib.suppress(TimeoutError):
        return (await asyncio.wait_for(proc.stderr.read(4096), 2)).decode(errors="replace")
    return ""


def load_example(script: str = MINIMAL_SERVER.name) -> ModuleType:
    """Import an oracle script (default: the minimal server) as a module, to subclass its Connection."""
    name = "nimbus_oracle_" + Path(script).stem
    spec = importlib.util.spec_from_file_location(name, ORACLES / script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


async def run_cli(*args: str, timeout: float = 90) -> tuple[int, str]:
    """``nimbus-ws conformance ARGS`` in a subprocess (the server may live in this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nimbus_websocket",
        "conformance",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"the kit did not finish within {timeout} s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
