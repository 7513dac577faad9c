"""The Pyodide dist's ``python_stdlib.zip`` carries bytecode for what a boot loads; Pyodide uses it.

``scripts/build_pyodide_dist.py`` derives ``build/pyodide-dist/python_stdlib.zip``
from the npm package's source-only zip: every original entry unchanged plus
an unchecked-hash ``X.pyc`` next to each ``X.py`` that a Pyodide boot,
installing the project wheel and importing
``nimbus_websocket.web_runtime.bridge`` loads (zipimport tries ``X.pyc``
before ``X.py``).  Host tests, no pytest-pyodide:

* the zip: every entry of ``node_modules/pyodide/python_stdlib.zip`` is there
  with the same contents; the only additions are ``.pyc`` next to an original
  ``.py``, unchecked-hash with one magic; ``json/decoder.pyc`` among them;
* Pyodide in Node (``node`` run directly, bounded by a timeout), booted from
  the dist folder with its default stdlib zip, after ``loadPackage(<wheel>)``
  and importing the bridge: every module loaded from ``/lib/python314.zip``
  (frozen modules aside: their bytecode is in the binary) was loaded from
  its ``.pyc`` (``__file__`` and ``__spec__.origin`` end in ``.pyc``) and an audit hook installed right after the boot saw no
  ``compile`` of a stdlib source.  The same run with the original zip
  (``stdLibURL``) fails both checks, so they do discriminate;
* a traceback through a stdlib module still shows source lines: the frames of
  ``json.loads('{')``'s error in ``json/decoder.py`` carry the lines of the
  source in the zip.

Skipped when ``node``, the dist folder or ``node_modules/pyodide`` is missing
(``make setup`` builds them).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from .dist_node import DIST, NODE_TIMEOUT_SECONDS, ROOT, UNCHECKED_HASH, run_report

ORIGINAL_ZIP = ROOT / "node_modules" / "pyodide" / "python_stdlib.zip"
STDLIB_ZIP = "python_stdlib.zip"
ZIP_PREFIX = "/lib/python314.zip/"

pytestmark = pytest.mark.timeout(2 * NODE_TIMEOUT_SECONDS + 30)

REPORT_PY = """
import sys

loaded = {}
for name, module in sorted(sys.modules.items()):
    file = getattr(module, "__file__", None) or ""
    if file.startswith("/lib/python314.zip/"):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if origin != "frozen":  # frozen modules come from the binary, not the zip
            loaded[name] = {"file": file, "origin": origin}
stdlib_compiles = [f for f in compiled_files if f.startswith("/lib/python314.zip/")]

import json
import traceback

try:
    json.loads("{")
except ValueError as exc:
    frames = [
        {"filename": f.filename, "lineno": f.lineno, "line": f.line}
        for f in traceback.extract_tb(exc.__traceback__)
    ]
    text = "".join(traceback.format_exception(exc))
else:
    raise AssertionError("json.loads('{') did not raise")

json.dumps({
    "loaded": loaded,
    "stdlib_compiles": stdlib_compiles,
    "json_file": sys.modules["json.decoder"].__file__,
    "frames": frames,
    "traceback": text,
})
"""


def _dist_zip() -> Path:
    zip_path = DIST / STDLIB_ZIP
    if not (DIST / "pyodide.mjs").is_file() or not zip_path.is_file():
        pytest.skip(f"Pyodide dist folder {DIST} missing; run `make setup`")
    return zip_path


def _original_zip() -> Path:
    if not ORIGINAL_ZIP.is_file():
        pytest.skip(f"{ORIGINAL_ZIP} missing; run `npm ci`")
    return ORIGINAL_ZIP


def test_zip_is_the_original_plus_pyc_next_to_sources() -> None:
    dist_zip, original = _dist_zip(), _original_zip()
    with zipfile.ZipFile(original) as zo, zipfile.ZipFile(dist_zip) as zn:
        old, new_list = zo.namelist(), zn.namelist()
        new = set(new_list)
        assert len(new_list) == len(new), "duplicate entries"
        assert not [n for n in old if n.endswith(".pyc")], f"{original} is no longer source-only"
        missing = sorted(set(old) - new)
        assert not missing, f"{dist_zip}: original entries missing: {missing[:10]}"
        changed = [n for n in old if zo.read(n) != zn.read(n)]
        assert not changed, f"{dist_zip}: original entries changed: {changed[:10]}"
        added = sorted(new - set(old))
        assert "json/decoder.pyc" in added, f"{dist_zip}: no bytecode (run `make setup`)"
        stray = [n for n in added if not n.endswith(".pyc") or n[: -len("c")] not in old]
        assert not stray, f"{dist_zip}: added entries that are not a .pyc next to a .py: {stray}"
        magics = set()
        for name in added:
            header = zn.read(name)[:16]
            assert len(header) == 16, name
            assert int.from_bytes(header[4:8], "little") == UNCHECKED_HASH, (
                f"{name}: flags {header[4:8].hex()}, expected unchecked-hash (01000000)"
            )
            magics.add(header[:4])
    assert len(magics) == 1 and next(iter(magics)).endswith(b"\r\n"), magics


@pytest.fixture(scope="module")
def dist_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _dist_zip()
    return run_report(tmp_path_factory.mktemp("stdlib-dist"), REPORT_PY)


@pytest.fixture(scope="module")
def original_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _dist_zip()
    return run_report(tmp_path_factory.mktemp("stdlib-original"), REPORT_PY, stdlib_url=str(_original_zip()))


def _from_source(report: dict[str, Any]) -> list[str]:
    return sorted(
        name
        for name, info in report["loaded"].items()
        if not (info["file"].endswith(".pyc") and str(info["origin"]).endswith(".pyc"))
    )


def test_pyodide_loads_every_stdlib_module_from_bytecode(dist_report: dict[str, Any]) -> None:
    loaded = dist_report["loaded"]
    assert "json.decoder" in loaded and "asyncio" in loaded, sorted(loaded)
    assert not _from_source(dist_report), "stdlib modules loaded from source: " + ", ".join(
        f"{n} ({dist_report['loaded'][n]})" for n in _from_source(dist_report)
    )
    assert dist_report["stdlib_compiles"] == [], (
        "stdlib sources compiled after the boot: " + ", ".join(dist_report["stdlib_compiles"])
    )


def test_checks_fail_with_the_original_zip(original_report: dict[str, Any]) -> None:
    # The same checks against the npm package's source-only zip must fail:
    # otherwise they would prove nothing.
    from_source = _from_source(original_report)
    assert "json.decoder" in from_source and len(from_source) == len(original_report["loaded"])
    compiles = original_report["stdlib_compiles"]
    assert f"{ZIP_PREFIX}tarfile.py" in compiles, compiles  # loaded by loadPackage


def test_stdlib_traceback_shows_source_lines(dist_report: dict[str, Any]) -> None:
    assert dist_report["json_file"] == f"{ZIP_PREFIX}json/decoder.pyc"
    decoder = f"{ZIP_PREFIX}json/decoder.py"
    frames = [f for f in dist_report["frames"] if f["filename"] == decoder]
    assert frames, f"no frame in {decoder}: {dist_report['frames']}"
    with zipfile.ZipFile(_original_zip()) as zf:
        source = zf.read("json/decoder.py").decode("utf-8").splitlines()
    for frame in frames:
        expected = source[frame["lineno"] - 1].strip()
        assert expected and frame["line"] == expected, frame
        assert expected in dist_report["traceback"], dist_report["traceback"]
    assert f'File "{decoder}"' in dist_report["traceback"]
