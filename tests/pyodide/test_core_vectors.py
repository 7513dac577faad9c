"""The golden wire vectors inside Pyodide (Node and Chromium), against the installed wheel.

Same data and same checks as tests/core/test_vectors.py: the vector files and
tests/vectors/load.py are not in the Pyodide file system, so both travel into
the runtime as arguments (the loader is exec'd there as a module).  They go
zlib-compressed and base64-encoded: pytest-pyodide's Node runner feeds
arguments through a pty 128 characters per round trip, and the raw JSON
(~270 KB, mostly the depth-10000 nesting bombs) would take longer than its
60 s timeout; compressed it is ~20 KB.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import pytest
from pytest_pyodide import run_in_pyodide

try:
    from vectors import load
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.vectors import load


def _pack(text: str) -> str:
    return base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")


@pytest.fixture(scope="module")
def vector_bundle_json() -> str:
    """The vector bundle (valid.json + invalid.json) as packed JSON text."""
    return _pack(load.bundle_json())


@pytest.fixture(scope="module")
def vector_loader_source() -> str:
    """tests/vectors/load.py, packed."""
    return _pack(load.loader_source())


@run_in_pyodide
def _run_vectors(selenium: Any, loader_source: str, bundle_json: str) -> dict[str, Any]:
    import base64
    import json
    import sys
    import types
    import zlib

    def unpack(s: str) -> str:
        return zlib.decompress(base64.b64decode(s)).decode("utf-8")

    mod = types.ModuleType("nimbus_vectors_load")
    sys.modules[mod.__name__] = mod
    exec(compile(unpack(loader_source), "tests/vectors/load.py", "exec"), mod.__dict__)
    result: dict[str, Any] = mod.run_bundle(json.loads(unpack(bundle_json)))
    result["platform"] = sys.platform
    result["recursionlimit"] = sys.getrecursionlimit()
    return result


def test_core_vectors_in_pyodide(
    selenium_nimbus: Any, vector_loader_source: str, vector_bundle_json: str
) -> None:
    bundle = load.load_bundle()
    result = _run_vectors(selenium_nimbus, vector_loader_source, vector_bundle_json)
    assert result["platform"] == "emscripten"
    assert result["failures"] == [], "\n".join(f"{n}: {e}" for n, e in result["failures"])
    assert (result["valid"], result["invalid"]) == (len(bundle["valid"]), len(bundle["invalid"]))
