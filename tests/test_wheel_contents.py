"""The wheel ships exactly the namespaced packages: nothing missing, nothing stray.

Builds the wheel from a copy of the sources (so no stale ``build/lib`` and no
``*.egg-info`` from the working tree can leak in) and compares its file list
with one computed from the source tree:

* every ``*.py`` of a *package* (a folder with ``__init__.py``) under
  ``nimbus_websocket/``, ``core/``, ``web_runtime/`` and ``node_runtime/``,
  mapped to ``nimbus_websocket/...`` -- so a sub-package that pyproject.toml
  forgets to declare fails here;
* except ``node_runtime/shim/`` (the Node.js shim, shipped separately), test
  folders and plain script folders without ``__init__.py`` (e.g. examples);
* plus declared package data (``py.typed``) and the ``.dist-info`` files.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "nimbus_websocket"
# source folder -> its place inside the namespace
SOURCE_ROOTS = {
    "nimbus_websocket": "nimbus_websocket",
    "core": "nimbus_websocket/core",
    "web_runtime": "nimbus_websocket/web_runtime",
    "node_runtime": "nimbus_websocket/node_runtime",
}
NOT_SHIPPED = {"node_runtime/shim"}
SKIP_DIR_NAMES = {"__pycache__", "node_modules", "tests", "test"}
ROOT_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in")
ROOT_GLOBS = ("README*", "LICENSE*", "LICENCE*", "COPYING*", "NOTICE*")
SLOW_BUILD_SECONDS = 20.0


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _walk_packages(src_root: str) -> Iterator[tuple[Path, str]]:
    """(source folder, wheel folder) of every package below src_root."""
    base = REPO_ROOT / src_root
    for dirpath, dirnames, _ in os.walk(base):
        here = Path(dirpath)
        rel = here.relative_to(REPO_ROOT).as_posix()
        if rel in NOT_SHIPPED or here.name in SKIP_DIR_NAMES or here.name.endswith(".egg-info"):
            dirnames[:] = []
            continue
        if not (here / "__init__.py").is_file():
            dirnames[:] = []  # not a package: a script/examples folder, not shipped
            continue
        dirnames.sort()
        sub = here.relative_to(base).as_posix()
        yield here, SOURCE_ROOTS[src_root] + ("" if sub == "." else f"/{sub}")


def expected_package_files() -> set[str]:
    expected: set[str] = set()
    data: dict[str, list[str]] = _pyproject()["tool"]["setuptools"].get("package-data", {})
    for src_root in SOURCE_ROOTS:
        for folder, wheel_folder in _walk_packages(src_root):
            dotted = wheel_folder.replace("/", ".")
            patterns = list(data.get(dotted, [])) + list(data.get("*", []))
            for entry in folder.iterdir():
                if not entry.is_file():
                    continue
                if entry.suffix == ".py" or any(fnmatch.fnmatch(entry.name, p) for p in patterns):
                    expected.add(f"{wheel_folder}/{entry.name}")
    return expected


def _stage_sources(dest: Path) -> None:
    for name in ROOT_FILES:
        if (REPO_ROOT / name).is_file():
            shutil.copy2(REPO_ROOT / name, dest / name)
    for pattern in ROOT_GLOBS:
        for path in REPO_ROOT.glob(pattern):
            if path.is_file():
                shutil.copy2(path, dest / path.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "node_modules")
    for src_root in SOURCE_ROOTS:
        shutil.copytree(REPO_ROOT / src_root, dest / src_root, ignore=ignore)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = tmp / "src", tmp / "out"
    src.mkdir()
    _stage_sources(src)
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, (
        "wheel build failed (is the build backend installed? `make setup`)\n"
        + proc.stdout[-3000:]
        + proc.stderr[-3000:]
    )
    if elapsed > SLOW_BUILD_SECONDS:
        print(f"NOTE: wheel build took {elapsed:.1f} s (> {SLOW_BUILD_SECONDS:.0f} s)")
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _dist_info(wheel: Path) -> str:
    name, version = wheel.name.split("-")[:2]
    return f"{name}-{version}.dist-info"


def test_wheel_is_pure_python(wheel: Path) -> None:
    assert wheel.name.startswith(f"{NAMESPACE}-")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(f"{_dist_info(wheel)}/WHEEL").decode()
    assert "Root-Is-Purelib: true" in meta
    assert "Tag: py3-none-any" in meta


def test_wheel_contains_exactly_the_namespaced_packages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
    dist_info = _dist_info(wheel)
    package_files = {n for n in names if not n.startswith(f"{dist_info}/")}
    expected = expected_package_files()
    missing = sorted(expected - package_files)
    stray = sorted(package_files - expected)
    assert not missing, (
        f"missing from the wheel (declare the package in pyproject.toml?): {missing}"
    )
    assert not stray, f"unexpected files in the wheel: {stray}"
    assert {n.split("/")[0] for n in names} == {NAMESPACE, dist_info}
    assert f"{NAMESPACE}/py.typed" in names


def test_dist_info(wheel: Path) -> None:
    dist_info = _dist_info(wheel)
    with zipfile.ZipFile(wheel) as zf:
        names = {n for n in zf.namelist() if n.startswith(f"{dist_info}/")}
        top_level = zf.read(f"{dist_info}/top_level.txt").decode().split()
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        record = zf.read(f"{dist_info}/RECORD").decode()
        all_names = {n for n in zf.namelist() if not n.endswith("/")}
    required = {
        f"{dist_info}/{n}"
        for n in ("METADATA", "WHEEL", "RECORD", "top_level.txt", "entry_points.txt")
    }
    assert required <= names
    extra = {n for n in names - required if not n.startswith(f"{dist_info}/licenses/")}
    assert not extra, f"unexpected dist-info files: {sorted(extra)}"
    assert top_level == [NAMESPACE]
    assert "nimbus-ws = nimbus_websocket.__main__:main" in entry_points
    recorded = {line.split(",")[0] for line in record.splitlines() if line}
    assert recorded == all_names


# ------------------------------------------------------- the companion site wheel
# Issue 14, item 3: ``pip install 'nimbus-websocket[server]'`` installs the page
# from the data-only distribution nimbus-websocket-site (scripts/build_wheels.py).


def _build_wheels_module() -> Any:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import build_wheels
    finally:
        sys.path.pop(0)
    return build_wheels


def test_server_extra_pins_the_site_wheel_of_this_version() -> None:
    project = _pyproject()["project"]
    server = project["optional-dependencies"]["server"]
    assert f"nimbus-websocket-site=={project['version']}" in server, server
    # the client-only installs never download the page
    assert not any("site" in d for d in project["optional-dependencies"]["client"])
    assert project["dependencies"] == []


def test_site_wheel_is_the_built_page_and_reproducible(tmp_path: Path) -> None:
    bw = _build_wheels_module()
    dist = REPO_ROOT / "build" / "pyodide-dist"
    if not (dist / "pyodide-lock.json").is_file() or not (REPO_ROOT / "node_modules" / "@xterm").is_dir():
        pytest.skip("build/pyodide-dist or node_modules missing: make setup")
    site = tmp_path / "site"
    bw.build_site.build(site, REPO_ROOT, dist)
    version = bw.project_version()
    first = bw.write_site_wheel(site, tmp_path / "a", version)
    again = bw.write_site_wheel(site, tmp_path / "b", version)
    assert first.name == f"nimbus_websocket_site-{version}-py3-none-any.whl"
    assert first.read_bytes() == again.read_bytes()  # sorted entries, fixed timestamps
    dist_info = f"nimbus_websocket_site-{version}.dist-info"
    with zipfile.ZipFile(first) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
        wheel_meta = zf.read(f"{dist_info}/WHEEL").decode()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        record = zf.read(f"{dist_info}/RECORD").decode()
        for line in record.splitlines():
            name, digest, size = line.rsplit(",", 2)
            if digest:
                data = zf.read(name)
                assert int(size) == len(data), name
                want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={want}", name
    assert "Root-Is-Purelib: true" in wheel_meta and "Tag: py3-none-any" in wheel_meta
    assert "Name: nimbus-websocket-site\n" in metadata and f"Version: {version}\n" in metadata
    assert {line.split(",")[0] for line in record.splitlines()} == names
    assert {n.split("/")[0] for n in names} == {"nimbus_websocket_site", dist_info}
    page = {f"nimbus_websocket_site/site/{p.relative_to(site).as_posix()}" for p in site.rglob("*") if p.is_file()}
    assert {n for n in names if n.startswith("nimbus_websocket_site/site/")} == page
    assert "nimbus_websocket_site/site/index.html" in names
    assert "nimbus_websocket_site/__init__.py" in names
    assert not [n for n in names if re.search(r"/(pytest|pluggy|pygments|setuptools|micropip)-", n)]
