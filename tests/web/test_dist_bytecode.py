"""The Pyodide dist's project wheel carries bytecode for what the browser imports; Pyodide uses it.

``scripts/build_pyodide_dist.py`` adds ``<dir>/__pycache__/<mod>.cpython-314.pyc``
(compiled by Pyodide itself, unchecked-hash) next to each module of the copy
of the wheel in ``build/pyodide-dist`` that importing
``nimbus_websocket.web_runtime.bridge`` (what the JS facade imports) loads in
Pyodide; host-only modules (server, CLIs, conformance kit, ``websockets_impl``)
get none.  Host tests, no pytest-pyodide:

* the wheel: its pycs are unchecked-hash with one magic, each next to its
  module, the bridge's among them; host-only modules have no pyc; RECORD
  lists every file with the right sha256 and size; the lock file's sha256 is
  the file's;
* Pyodide in Node (``node`` run directly, bounded by a timeout): after
  ``loadPackage(<wheel path>)`` (as ``node_runtime/shim`` does) and importing
  ``nimbus_websocket.web_runtime.bridge``, every imported ``nimbus_websocket``
  module has its pyc on disk -- the wheel's bytes, Pyodide's magic, flags
  ``0b01`` (unchecked hash), the hash of the installed source, ``co_filename``
  = the installed file -- and an audit hook saw no ``compile`` of any of their
  sources (a control module without pyc shows that the hook does see one);
  the wheel's pycs are exactly those of the imported modules.

Skipped when ``node`` or the dist folder is missing (``make setup`` builds it).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from .dist_node import DIST, NODE_TIMEOUT_SECONDS, PROJECT_PACKAGE, UNCHECKED_HASH, run_report

PACKAGE = "nimbus_websocket"
PYC_TAG = "cpython-314"
BRIDGE_FILE = f"{PACKAGE}/web_runtime/bridge.py"
pytestmark = pytest.mark.timeout(NODE_TIMEOUT_SECONDS + 30)

REPORT_PY = """
import hashlib
import importlib.util
import json
import marshal
import os
import sys

modules = {}
for name, module in sorted(sys.modules.items()):
    if name != "nimbus_websocket" and not name.startswith("nimbus_websocket."):
        continue
    cached = getattr(module, "__cached__", None)
    info = {
        "file": module.__file__,
        "cached": cached,
        "spec_cached": module.__spec__.cached,
        "cached_exists": bool(cached) and os.path.isfile(cached),
    }
    if info["cached_exists"]:
        with open(cached, "rb") as fh:
            pyc = fh.read()
        with open(module.__file__, "rb") as fh:
            source = fh.read()
        info.update(
            magic_ok=pyc[:4] == importlib.util.MAGIC_NUMBER,
            flags=int.from_bytes(pyc[4:8], "little"),
            source_hash_ok=pyc[8:16] == importlib.util.source_hash(source),
            co_filename=marshal.loads(pyc[16:]).co_filename,
            sha256=hashlib.sha256(pyc).hexdigest(),
        )
    modules[name] = info

# Control: a module without a pyc must show up as a source compile.
control_dir = "/tmp/nimbus_bytecode_control"
os.makedirs(control_dir, exist_ok=True)
control_file = f"{control_dir}/nimbus_bytecode_control.py"
with open(control_file, "w") as fh:
    fh.write("VALUE = 1\\n")
sys.path.insert(0, control_dir)
import nimbus_bytecode_control  # noqa: E402

json.dumps({
    "site_dir": os.path.dirname(os.path.dirname(sys.modules["nimbus_websocket"].__file__)),
    "modules": modules,
    "source_compiles": [f for f in compiled_files if "nimbus_websocket" in f],
    "control_seen": control_file in compiled_files,
})
"""


def _dist_ready() -> bool:
    return (DIST / "pyodide.mjs").is_file() and (DIST / "pyodide-lock.json").is_file()


@pytest.fixture(scope="module")
def lock_entry() -> dict[str, Any]:
    if not _dist_ready():
        pytest.skip(f"Pyodide dist folder {DIST} missing; run `make setup`")
    packages = json.loads((DIST / "pyodide-lock.json").read_text(encoding="utf-8"))["packages"]
    if PROJECT_PACKAGE not in packages:
        pytest.fail(f"{DIST}/pyodide-lock.json has no {PROJECT_PACKAGE!r} entry; run `make setup`")
    return dict(packages[PROJECT_PACKAGE])


@pytest.fixture(scope="module")
def dist_wheel(lock_entry: dict[str, Any]) -> Path:
    wheel = DIST / str(lock_entry["file_name"])
    assert wheel.is_file(), f"{wheel} (named by the lock file) missing; run `make setup`"
    return wheel


def _pyc_name(module: str) -> str:
    folder, _, file = module.rpartition("/")
    return f"{folder}/__pycache__/{file[: -len('.py')]}.{PYC_TAG}.pyc"


def _modules(names: list[str]) -> list[str]:
    return [
        n
        for n in names
        if n.endswith(".py") and not n.split("/", 1)[0].endswith((".dist-info", ".data"))
    ]


def test_bytecode_is_unchecked_hash_next_to_its_module(dist_wheel: Path) -> None:
    with zipfile.ZipFile(dist_wheel) as zf:
        names = zf.namelist()
        modules = _modules(names)
        assert BRIDGE_FILE in modules
        pycs = {n for n in names if n.endswith(".pyc")}
        assert _pyc_name(BRIDGE_FILE) in pycs, (
            f"{dist_wheel.name}: no bytecode for {BRIDGE_FILE} (run `make setup`)"
        )
        stray = sorted(pycs - {_pyc_name(m) for m in modules})
        assert not stray, f"{dist_wheel.name}: pyc files without a module: {stray}"
        magics = set()
        for name in sorted(pycs):
            header = zf.read(name)[:16]
            assert len(header) == 16, name
            assert int.from_bytes(header[4:8], "little") == UNCHECKED_HASH, (
                f"{name}: flags {header[4:8].hex()}, expected unchecked-hash (01000000)"
            )
            magics.add(header[:4])
    assert len(magics) == 1 and next(iter(magics)).endswith(b"\r\n"), magics


def test_browser_wheel_carries_no_host_module(dist_wheel: Path) -> None:
    """The browser's wheel is the client only: no server, CLI, kit or CPython socket."""
    with zipfile.ZipFile(dist_wheel) as zf:
        names = set(zf.namelist())
    host = sorted(n for n in names if n.startswith((f"{PACKAGE}/node_runtime/", f"{PACKAGE}/__main__")))
    assert not host, f"{dist_wheel.name} carries host-only files: {host}"
    assert not [n for n in names if n.endswith("entry_points.txt")]
    assert f"{PACKAGE}/core/aio/connection.py" in names
    assert BRIDGE_FILE in names


def test_record_lists_every_file_with_its_hash(dist_wheel: Path) -> None:
    with zipfile.ZipFile(dist_wheel) as zf:
        files = [n for n in zf.namelist() if not n.endswith("/")]
        (record_name,) = [n for n in files if n.endswith(".dist-info/RECORD")]
        rows = list(csv.reader(io.StringIO(zf.read(record_name).decode("utf-8"))))
        recorded = {row[0]: row for row in rows if row}
        assert len(recorded) == len([r for r in rows if r]), "duplicate RECORD lines"
        assert set(recorded) == set(files)
        assert recorded[record_name][1:] == ["", ""]
        for name in files:
            if name == record_name:
                continue
            data = zf.read(name)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert recorded[name][1:] == [f"sha256={digest.decode()}", str(len(data))], name


def test_lock_sha256_is_the_file_hash(lock_entry: dict[str, Any], dist_wheel: Path) -> None:
    assert lock_entry["sha256"] == hashlib.sha256(dist_wheel.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pyodide_report(dist_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_report(tmp_path_factory.mktemp("dist-bytecode"), REPORT_PY, wheel=dist_wheel)


def test_pyodide_imports_the_bridge_from_the_wheels_bytecode(
    pyodide_report: dict[str, Any], dist_wheel: Path
) -> None:
    site_dir = pyodide_report["site_dir"]
    modules: dict[str, dict[str, Any]] = pyodide_report["modules"]
    assert f"{PACKAGE}.web_runtime.bridge" in modules
    with zipfile.ZipFile(dist_wheel) as zf:
        wheel_pycs = {
            n: hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist() if n.endswith(".pyc")
        }
    problems = []
    for name, info in modules.items():
        file = info["file"]
        rel = os.path.relpath(file, site_dir)
        if info["cached"] is None or info["spec_cached"] != info["cached"]:
            problems.append(f"{name}: no __cached__ ({info})")
        elif not info["cached_exists"]:
            problems.append(f"{name}: {info['cached']} does not exist")
        elif not (info["magic_ok"] and info["source_hash_ok"]):
            problems.append(
                f"{name}: stale pyc (magic ok {info['magic_ok']}, hash ok {info['source_hash_ok']})"
            )
        elif info["flags"] != UNCHECKED_HASH:
            problems.append(f"{name}: pyc flags {info['flags']:#b}, expected unchecked hash")
        elif wheel_pycs.get(_pyc_name(rel)) != info["sha256"]:
            problems.append(f"{name}: {info['cached']} is not the wheel's {_pyc_name(rel)}")
        elif info["co_filename"] != file:
            problems.append(f"{name}: pyc names {info['co_filename']!r}, installed as {file!r}")
    assert not problems, "\n".join(problems)


def test_wheel_bytecode_is_exactly_the_imported_modules(
    pyodide_report: dict[str, Any], dist_wheel: Path
) -> None:
    site_dir = pyodide_report["site_dir"]
    imported = {
        _pyc_name(os.path.relpath(info["file"], site_dir))
        for info in pyodide_report["modules"].values()
        if info["file"]
    }
    with zipfile.ZipFile(dist_wheel) as zf:
        pycs = {n for n in zf.namelist() if n.endswith(".pyc")}
    assert not sorted(pycs - imported), (
        f"{dist_wheel.name}: bytecode for modules the bridge does not import: "
        f"{sorted(pycs - imported)}"
    )
    assert not sorted(imported - pycs), (
        f"{dist_wheel.name}: imported modules without bytecode: {sorted(imported - pycs)}"
    )


def test_pyodide_compiles_no_project_source(pyodide_report: dict[str, Any]) -> None:
    assert pyodide_report["control_seen"], "the audit hook did not see a source compile at all"
    assert pyodide_report["source_compiles"] == [], (
        "imported from source, not bytecode: " + ", ".join(pyodide_report["source_compiles"])
    )
