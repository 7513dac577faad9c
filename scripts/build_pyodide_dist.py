#!/usr/bin/env python3
"""Assemble a self-sufficient, offline Pyodide distribution folder.

The npm ``pyodide`` package only ships the interpreter core (no package
wheels, not even ``micropip``); every ``loadPackage`` would otherwise go to
the CDN, which is unreachable here.  This script builds one folder (default
``build/pyodide-dist/``) that Node, the demo page and pytest-pyodide all use:

1. the core files, copied from ``node_modules/pyodide`` (``npm ci`` first;
   ``python_stdlib.zip`` is derived instead, see 4.);
2. the pure-Python wheels of ``micropip``, ``pytest`` and ``tblib`` plus their
   dependency closure *as listed in pyodide-lock.json*, fetched from PyPI with
   ``pip download`` at exactly the lock's version (cached in
   ``build/wheel-cache/`` so reruns are offline and fast; a package without a
   wheel on PyPI, e.g. ``atomicwrites``, is built from its sdist);
3. the project wheel ``nimbus_websocket-*.whl`` (from ``build/wheel/``;
   ``--build-wheel`` (re)builds it there first when the sources changed),
   with precompiled bytecode added for the modules the browser runtime
   imports: Pyodide itself, in Node (``scripts/pyodide_compile.mjs``), imports
   ``nimbus_websocket.web_runtime.bridge`` (what the JS facade imports) from
   the unpacked wheel, and each ``pkg/mod.py`` that import loaded (packages'
   ``__init__.py`` included) gets a ``pkg/__pycache__/mod.cpython-314.pyc``
   (unchecked-hash, so no source mtime check after unpacking), which saves
   compiling those sources inside WebAssembly at import time.  Host-only
   modules (server, CLIs, conformance kit, ``websockets_impl``) get no
   bytecode: it would only add to every page's download.  The sources stay in
   the wheel (tracebacks), ``RECORD`` lists the added files, and the pure pip
   wheel in ``build/wheel/`` is left as it is.  Recompiled only when the
   wheel, the Pyodide version, the helper, the npm package's
   ``python_stdlib.zip`` or :data:`BYTECODE_FORMAT` changed (stamp
   ``.project-wheel.sha256`` in the dist folder, which also covers 4.);
4. ``python_stdlib.zip``: the npm package's zip holds only ``.py`` sources,
   so Pyodide compiled ~150 stdlib modules inside WebAssembly on every boot
   (~1.5-2 s in Node).  The dist's zip (same name, so ``loadPyodide`` uses it
   by default) has every entry of the original unchanged plus, next to each
   ``X.py`` that a Pyodide boot, installing the project wheel and importing
   :data:`BROWSER_ROOT_MODULE` loads, an unchecked-hash ``X.pyc`` (the
   legacy location zipimport tries before ``X.py``; ``co_filename`` stays
   ``/lib/python314.zip/X.py``, so tracebacks still show source lines).
   That set is determined in the same Node run as 3., booted with the
   ORIGINAL zip, and the new zip is always derived from the original in
   ``node_modules`` (reruns give the same bytes); see
   :func:`write_stdlib_with_bytecode` and :func:`check_stdlib_zip`;
5. a rewritten ``pyodide-lock.json`` that lists only the packages present,
   with ``file_name``/``sha256`` of the files actually in the folder (PyPI
   files hash differently from Pyodide's CDN builds and Chromium refuses a
   mismatching integrity hash), plus an entry ``nimbus-websocket`` for the
   project wheel.

Loading the project inside Pyodide, all equivalent:

* ``await pyodide.loadPackage("nimbus-websocket")`` (via the lock entry),
* ``await pyodide.loadPackage("<indexURL>/nimbus_websocket-<ver>-py3-none-any.whl")``,
* ``await micropip.install("<http or file URL of the wheel>", deps=False)``.

More pure packages from the lock can be added with ``--extra NAME``.
Idempotent: unchanged files are not rewritten.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_LOCK_NAME = "nimbus-websocket"
PROJECT_IMPORT_NAME = "nimbus_websocket"
PYODIDE_PYTHON = "3.14"
# Bytecode of the project wheel and python_stdlib.zip in the dist folder (see add_bytecode).
PYC_TAG = "cpython-" + PYODIDE_PYTHON.replace(".", "")
PYC_FLAGS_UNCHECKED_HASH = 0b01
COMPILE_HELPER = REPO_ROOT / "scripts" / "pyodide_compile.mjs"
COMPILE_TIMEOUT_SECONDS = 300
BYTECODE_STAMP = ".project-wheel.sha256"
# Bump when the way the dist wheel is derived changes (forces a recompile).
# 2: bytecode only for the modules importing BROWSER_ROOT_MODULE loads.
# 3: plus unchecked-hash .pyc in python_stdlib.zip for the stdlib modules loaded.
# 4: without the host-only modules (HOST_ONLY_PREFIXES): the browser wheel is client only.
BYTECODE_FORMAT = "4"
# Files of the pip wheel that the browser's dist wheel leaves out: the server,
# the CLI, the conformance kit and the CPython socket (node_runtime), the
# console-script entry point.  Nothing the browser runtime imports lives there
# (tests/test_layers.py: web_runtime never imports node_runtime).
HOST_ONLY_PREFIXES = (
    f"{PROJECT_IMPORT_NAME}/node_runtime/",
    f"{PROJECT_IMPORT_NAME}/__main__.py",
)
HOST_ONLY_SUFFIXES = (".dist-info/entry_points.txt",)
STDLIB_ZIP = "python_stdlib.zip"
# What the JS facade imports (web_runtime/js/nimbus.mjs); scripts/pyodide_compile.mjs
# compiles exactly the project modules this import loads in Pyodide.
BROWSER_ROOT_MODULE = "nimbus_websocket.web_runtime.bridge"
BROWSER_ROOT_FILE = BROWSER_ROOT_MODULE.replace(".", "/") + ".py"

# Needed by micropip users and by pytest-pyodide's @run_in_pyodide (which
# loads "pytest" and "tblib" whenever the lock file names them).
DEFAULT_PACKAGES = ("micropip", "pytest", "tblib")

CORE_FILES = (
    "pyodide.js",
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    # python_stdlib.zip: derived, with bytecode (see add_bytecode).
    "pyodide.js.map",
    "pyodide.mjs.map",
    # Keeps pyodide.js CommonJS for Node even below a "type": "module" folder.
    "package.json",
)
OPTIONAL_CORE_FILES = frozenset({"pyodide.js.map", "pyodide.mjs.map"})

# Root files and package roots staged for the wheel build (see stage_sources).
ROOT_BUILD_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in")
ROOT_BUILD_GLOBS = ("README*", "LICENSE*", "LICENCE*", "COPYING*", "NOTICE*")


class BuildError(RuntimeError):
    """A step failed; the message says which and how to fix it."""


def log(msg: str, *, verbose: bool) -> None:
    if verbose:
        print(f"[pyodide-dist] {msg}", flush=True)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_name_version(filename: str) -> tuple[str, str]:
    parts = filename[: -len(".whl")].split("-")
    if len(parts) < 5:
        raise BuildError(f"not a wheel file name: {filename}")
    return canonical(parts[0]), parts[1]


def is_pure_wheel(filename: str) -> bool:
    return filename.endswith("-none-any.whl")


def copy_if_changed(src: Path, dst: Path) -> bool:
    if dst.exists():
        s, d = src.stat(), dst.stat()
        if s.st_size == d.st_size and int(s.st_mtime) == int(d.st_mtime):
            return False
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return True


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def run(cmd: list[str], *, what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
        )


# --------------------------------------------------------------------------
# Project wheel
# --------------------------------------------------------------------------


def package_roots(pyproject: dict[str, object]) -> list[str]:
    """Top-level source folders of the packages pyproject maps."""
    tool = pyproject.get("tool", {})
    setuptools_cfg = tool.get("setuptools", {}) if isinstance(tool, dict) else {}
    roots: set[str] = set()
    package_dir = setuptools_cfg.get("package-dir", {}) if isinstance(setuptools_cfg, dict) else {}
    for folder in package_dir.values():
        roots.add(str(folder).strip("/").split("/")[0])
    packages = setuptools_cfg.get("packages", []) if isinstance(setuptools_cfg, dict) else []
    if isinstance(packages, list):
        for pkg in packages:
            if str(pkg) not in package_dir:
                roots.add(str(pkg).split(".")[0])
    roots.discard("")
    if not roots:
        raise BuildError("pyproject.toml maps no packages ([tool.setuptools] packages/package-dir)")
    return sorted(roots)


def source_files(root: Path) -> list[Path]:
    """Files that go into the wheel build, relative to root (no caches, no build output)."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    files: set[Path] = set()
    for name in ROOT_BUILD_FILES:
        if (root / name).is_file():
            files.add(Path(name))
    for pattern in ROOT_BUILD_GLOBS:
        files.update(p.relative_to(root) for p in root.glob(pattern) if p.is_file())
    for top in package_roots(pyproject):
        base = root / top
        if not base.is_dir():
            raise BuildError(f"package folder {top}/ named in pyproject.toml does not exist")
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [
                d
                for d in dirnames
                if d not in {"__pycache__", "node_modules"} and not d.endswith(".egg-info")
            ]
            for fn in filenames:
                if fn.endswith((".pyc", ".pyo")):
                    continue
                files.add((Path(dirpath) / fn).relative_to(root))
    return sorted(files)


def sources_digest(root: Path, files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for rel in files:
        h.update(str(rel).encode() + b"\0")
        h.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return h.hexdigest()


def build_project_wheel(root: Path, wheel_dir: Path, *, force: bool, verbose: bool) -> Path:
    """Build the project wheel into wheel_dir from a staged copy of the sources.

    Building from a fresh copy keeps setuptools' ``build/lib`` and ``*.egg-info``
    out of the working tree and stops stale modules (deleted from the sources
    but still in an old ``build/lib``) from sneaking into the wheel.
    Skipped when the sources' digest matches the previous build.
    """
    files = source_files(root)
    digest = sources_digest(root, files)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    stamp = wheel_dir / ".sources.sha256"
    existing = sorted(wheel_dir.glob(f"{PROJECT_IMPORT_NAME}-*.whl"))
    if not force and len(existing) == 1 and stamp.exists() and stamp.read_text().strip() == digest:
        log(f"project wheel up to date: {existing[0].name}", verbose=verbose)
        return existing[0]
    with tempfile.TemporaryDirectory(prefix="nimbus-wheel-") as tmp:
        stage = Path(tmp) / "src"
        out = Path(tmp) / "out"
        for rel in files:
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dst)
        run(
            [
                sys.executable,
                "-m",
                "build",
                "--wheel",
                "--no-isolation",
                "--outdir",
                str(out),
                str(stage),
            ],
            what="project wheel build (python -m build --wheel --no-isolation)",
        )
        built = sorted(out.glob("*.whl"))
        if len(built) != 1:
            raise BuildError(f"expected one wheel, got {[p.name for p in built]}")
        for old in existing:
            old.unlink()
        target = wheel_dir / built[0].name
        shutil.copy2(built[0], target)
    stamp.write_text(digest + "\n")
    log(f"built project wheel {target.name}", verbose=verbose)
    return target


# --------------------------------------------------------------------------
# Third-party wheels from PyPI at the lock's versions
# --------------------------------------------------------------------------


def closure(lock_packages: dict[str, dict[str, object]], roots: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    todo = [canonical(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in lock_packages:
            raise BuildError(f"package {name!r} is not in pyodide-lock.json")
        seen.add(name)
        depends = lock_packages[name].get("depends", [])
        assert isinstance(depends, list)
        todo.extend(canonical(str(d)) for d in depends)
    return sorted(seen)


def find_cached(cache: Path, name: str, version: str) -> Path | None:
    for path in cache.glob("*.whl"):
        if wheel_name_version(path.name) == (canonical(name), version) and is_pure_wheel(path.name):
            return path
    return None


def pip_base() -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def fetch_wheels(cache: Path, wanted: dict[str, str], *, verbose: bool) -> None:
    """Make sure cache holds a pure wheel for each {name: version}."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = {n: v for n, v in wanted.items() if find_cached(cache, n, v) is None}
    if not missing:
        return
    log(
        f"downloading {len(missing)} wheel(s) from PyPI: {', '.join(sorted(missing))}",
        verbose=verbose,
    )
    download = pip_base() + [
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        PYODIDE_PYTHON,
        "--implementation",
        "py",
        "--platform",
        "any",
        "--dest",
    ]
    with tempfile.TemporaryDirectory(prefix="nimbus-pip-") as tmp:
        tmpdir = Path(tmp)
        specs = [f"{n}=={v}" for n, v in sorted(missing.items())]
        batch = subprocess.run(download + [str(tmpdir)] + specs, capture_output=True, text=True)
        if batch.returncode != 0:
            # One at a time; a package without a wheel is built from its sdist.
            for name, version in sorted(missing.items()):
                spec = f"{name}=={version}"
                one = subprocess.run(download + [str(tmpdir), spec], capture_output=True, text=True)
                if one.returncode == 0:
                    continue
                log(f"{spec}: no wheel on PyPI, building it from the sdist", verbose=verbose)
                run(
                    pip_base()
                    + ["wheel", "--no-deps", "--no-binary=:all:", "--wheel-dir", str(tmpdir), spec],
                    what=f"building {spec} from its sdist",
                )
        for whl in tmpdir.glob("*.whl"):
            if not is_pure_wheel(whl.name):
                raise BuildError(f"{whl.name} is not a pure-Python wheel; Pyodide cannot use it")
            shutil.move(str(whl), cache / whl.name)
    still = [f"{n}=={v}" for n, v in missing.items() if find_cached(cache, n, v) is None]
    if still:
        raise BuildError(f"could not obtain wheels for: {', '.join(still)}")


# --------------------------------------------------------------------------
# Project wheel for the dist folder: the same files plus Pyodide bytecode
# --------------------------------------------------------------------------


def wheel_modules(names: Iterable[str]) -> list[str]:
    """The ``.py`` files of a wheel's packages (not under ``*.dist-info/``/``*.data/``).

    Only those the browser runtime imports get bytecode (see :func:`compile_with_pyodide`).
    """
    return sorted(
        n
        for n in names
        if n.endswith(".py") and not n.split("/", 1)[0].endswith((".dist-info", ".data"))
    )


def pyc_name(module: str) -> str:
    """Where Pyodide's importer looks for the bytecode of ``module`` (a path inside the wheel)."""
    folder, _, file = module.rpartition("/")
    cached = f"__pycache__/{file[: -len('.py')]}.{PYC_TAG}.pyc"
    return f"{folder}/{cached}" if folder else cached


def record_hash(data: bytes) -> str:
    """The ``sha256=...`` field of a wheel ``RECORD`` line (urlsafe base64, no padding)."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _read_pycs(base: Path, names: Iterable[str], magic: bytes, *, what: str) -> dict[str, bytes]:
    """``{name: bytes}`` of the pycs under ``base``; each must be unchecked-hash of ``magic``."""
    pycs: dict[str, bytes] = {}
    for name in sorted(names):
        data = (base / name).read_bytes()
        flags = int.from_bytes(data[4:8], "little")
        if len(data) < 16 or data[:4] != magic or flags != PYC_FLAGS_UNCHECKED_HASH:
            raise BuildError(
                f"{what}: {name} is not an unchecked-hash pyc of magic {magic.hex()} "
                f"(magic {data[:4].hex()}, flags {flags:#b})"
            )
        pycs[name] = data
    return pycs


def compile_with_pyodide(
    dist: Path, wheel: Path, lock_file: Path, stdlib_zip: Path, *, verbose: bool
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Compile the wheel's browser-runtime modules and the stdlib modules a boot loads.

    Pyodide runs in Node from ``dist`` with ``stdLibURL`` = ``stdlib_zip``,
    which must be the npm package's original, source-only zip.
    ``lock_file`` is any valid Pyodide lock file (the npm package's: the
    dist's own is written later); nothing is loaded from it.

    The helper (``scripts/pyodide_compile.mjs``) installs the wheel and
    imports :data:`BROWSER_ROOT_MODULE` as the JS facade does, then compiles
    the project modules and the stdlib modules (from ``stdlib_zip``) that
    were loaded; it reports them (``modules``, ``stdlib.modules``) and the
    pycs it wrote (``files``, ``stdlib.files``).  Returns ``({pyc path inside
    the wheel: bytes}, {pyc path inside the stdlib zip: bytes})``.  Raises
    BuildError when ``node`` is missing, the helper fails or times out, the
    reported modules are empty, lack :data:`BROWSER_ROOT_FILE` or name a file
    that is not a module of the wheel / a ``.py`` of the zip, the helper did
    not boot from ``stdlib_zip`` (sha256), the pycs written are not exactly
    those of the reported modules, or a pyc lacks the expected tag, magic and
    flags.
    """
    node = shutil.which("node")
    if node is None:
        raise BuildError(
            "node not found: Node (>= 20) runs Pyodide to precompile the project wheel"
        )
    with zipfile.ZipFile(wheel) as zf:
        modules_in_wheel = set(wheel_modules(zf.namelist()))
    with zipfile.ZipFile(stdlib_zip) as zf:
        stdlib_names = set(zf.namelist())
    what = f"precompiling {wheel.name} and {stdlib_zip.name} with Pyodide in Node"
    with tempfile.TemporaryDirectory(prefix="nimbus-pyc-") as tmp:
        cmd = [
            node,
            str(COMPILE_HELPER),
            str(dist),
            str(wheel),
            tmp,
            str(lock_file),
            str(stdlib_zip),
        ]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=COMPILE_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildError(
                f"{what} timed out after {COMPILE_TIMEOUT_SECONDS} s: {' '.join(cmd)}"
            ) from exc
        if proc.returncode != 0:
            raise BuildError(
                f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
            )
        try:
            report = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError) as exc:
            raise BuildError(
                f"{what}: {COMPILE_HELPER.name} printed no JSON result\n"
                f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
            ) from exc
        if report.get("cacheTag") != PYC_TAG:
            raise BuildError(
                f"{what}: Pyodide's cache tag is {report.get('cacheTag')!r}, expected {PYC_TAG!r} "
                f"(update PYODIDE_PYTHON = {PYODIDE_PYTHON!r} in {Path(__file__).name})"
            )
        if report.get("root") != BROWSER_ROOT_MODULE:
            raise BuildError(
                f"{what}: {COMPILE_HELPER.name} imported {report.get('root')!r}, "
                f"expected {BROWSER_ROOT_MODULE!r}"
            )
        reported = report.get("modules")
        if not isinstance(reported, dict) or not reported:
            raise BuildError(
                f"{what}: {COMPILE_HELPER.name} reported no imported module "
                f"(modules = {reported!r}); refusing to ship a wheel without bytecode"
            )
        sources = {str(src) for src in reported.values()}
        if BROWSER_ROOT_FILE not in sources:
            raise BuildError(
                f"{what}: the compiled modules lack {BROWSER_ROOT_FILE}: {sorted(sources)}"
            )
        if not sources <= modules_in_wheel:
            raise BuildError(
                f"{what}: reported modules that are not in the wheel: "
                f"{sorted(sources - modules_in_wheel)}"
            )
        expected = {pyc_name(src) for src in sources}
        got = set(report.get("files", []))
        if got != expected:
            raise BuildError(
                f"{what}: missing pyc {sorted(expected - got)}, unexpected {sorted(got - expected)}"
            )
        magic = bytes.fromhex(str(report.get("magic", "")))
        if len(magic) != 4 or not magic.endswith(b"\r\n"):
            raise BuildError(f"{what}: implausible magic number {magic.hex()!r}")
        pycs = _read_pycs(Path(tmp) / "wheel", expected, magic, what=what)

        std = report.get("stdlib")
        if not isinstance(std, dict):
            raise BuildError(f"{what}: {COMPILE_HELPER.name} reported no stdlib result")
        if std.get("sha256") != sha256_file(stdlib_zip):
            raise BuildError(
                f"{what}: Pyodide booted from a stdlib zip with sha256 {std.get('sha256')}, "
                f"not {stdlib_zip} (the original, source-only zip)"
            )
        std_modules = std.get("modules")
        if not isinstance(std_modules, dict) or not std_modules:
            raise BuildError(f"{what}: no stdlib module reported as loaded ({std_modules!r})")
        std_sources = {str(src) for src in std_modules.values()}
        not_in_zip = sorted(
            s for s in std_sources if not s.endswith(".py") or s not in stdlib_names
        )
        if not_in_zip:
            raise BuildError(f"{what}: reported stdlib modules not in {stdlib_zip}: {not_in_zip}")
        std_expected = {stdlib_pyc_name(src) for src in std_sources}
        std_got = set(std.get("files", []))
        if std_got != std_expected:
            raise BuildError(
                f"{what}: stdlib pyc missing {sorted(std_expected - std_got)}, "
                f"unexpected {sorted(std_got - std_expected)}"
            )
        stdlib_pycs = _read_pycs(Path(tmp) / "stdlib", std_expected, magic, what=what)
    log(
        f"compiled the {len(pycs)} module(s) of {wheel.name} that {BROWSER_ROOT_MODULE} imports "
        f"(of {len(modules_in_wheel)}) and the {len(stdlib_pycs)} stdlib module(s) loaded "
        f"with Pyodide {report.get('pyodide')} (Python {report.get('python')})",
        verbose=verbose,
    )
    return pycs, stdlib_pycs


def stdlib_pyc_name(module: str) -> str:
    """The legacy-location pyc zipimport tries before ``module`` (``X.py`` -> ``X.pyc``)."""
    if not module.endswith(".py"):
        raise BuildError(f"not a Python source: {module}")
    return module[: -len(".py")] + ".pyc"


def write_stdlib_with_bytecode(src: Path, dst: Path, pycs: dict[str, bytes]) -> bytes:
    """The bytes of ``src`` (a stdlib zip) with each ``X.pyc`` of ``pycs`` added after ``X.py``.

    Every entry of ``src`` is kept (name, contents, time stamp, compression,
    attributes, order); an added pyc takes its source entry's time stamp and
    attributes and is deflated, so equal inputs give equal bytes.  The result
    is checked with :func:`check_stdlib_zip`; ``dst`` is only named in errors.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as zin:
        infos = zin.infolist()
        names = {i.filename for i in infos}
        orphans = sorted(n for n in pycs if n[: -len(".pyc")] + ".py" not in names)
        if orphans:
            raise BuildError(f"{dst.name}: pyc files without a .py in {src}: {orphans}")
        with zipfile.ZipFile(buf, "w") as zout:
            for info in infos:
                zout.writestr(_zip_entry(info.filename, info), zin.read(info))
                if info.filename.endswith(".py"):
                    pyc = stdlib_pyc_name(info.filename)
                    if pyc in pycs:
                        entry = _zip_entry(pyc, info)
                        entry.compress_type = zipfile.ZIP_DEFLATED
                        zout.writestr(entry, pycs[pyc])
    data = buf.getvalue()
    magics = {pyc[:4] for pyc in pycs.values()}
    if len(magics) != 1:
        raise BuildError(f"{dst.name}: pycs of {len(magics)} different magic numbers")
    check_stdlib_zip(src, data, magic=magics.pop(), what=str(dst))
    return data


def check_stdlib_zip(original: Path, data: bytes, *, magic: bytes, what: str) -> int:
    """Check a derived stdlib zip against ``original``; returns the number of pycs added.

    Every entry of ``original`` must be present with the same contents, and
    every other entry must be an ``X.pyc`` next to an ``X.py`` of the
    original, unchecked-hash with ``magic``.  Raises BuildError otherwise.
    """
    problems: list[str] = []
    with zipfile.ZipFile(original) as zo, zipfile.ZipFile(io.BytesIO(data)) as zn:
        if zn.testzip() is not None:
            raise BuildError(f"{what}: corrupt entry {zn.testzip()}")
        new_names = zn.namelist()
        if len(new_names) != len(set(new_names)):
            problems.append("duplicate entries")
        new = set(new_names)
        old = set(zo.namelist())
        problems += [f"{n}: missing" for n in sorted(old - new)]
        problems += [f"{n}: changed" for n in sorted(old & new) if zo.read(n) != zn.read(n)]
        added = sorted(new - old)
        for name in added:
            if not name.endswith(".pyc") or name[: -len(".pyc")] + ".py" not in old:
                problems.append(f"{name}: added, but not a .pyc next to a .py of the original")
                continue
            header = zn.read(name)[:16]
            flags = int.from_bytes(header[4:8], "little")
            if len(header) < 16 or header[:4] != magic or flags != PYC_FLAGS_UNCHECKED_HASH:
                problems.append(
                    f"{name}: magic {header[:4].hex()}, flags {flags:#b} "
                    f"(expected {magic.hex()}, unchecked hash {PYC_FLAGS_UNCHECKED_HASH:#b})"
                )
    if problems:
        raise BuildError(
            f"{what} is not {original} plus bytecode:\n  " + "\n  ".join(problems[:20])
        )
    return len(added)


def _zip_entry(name: str, like: zipfile.ZipInfo) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=like.date_time)
    info.compress_type = like.compress_type
    info.create_system = like.create_system
    info.external_attr = like.external_attr
    return info


def host_only(name: str) -> bool:
    """Whether wheel entry ``name`` stays out of the browser's dist wheel (:data:`HOST_ONLY_PREFIXES`)."""
    return name.startswith(HOST_ONLY_PREFIXES) or name.endswith(HOST_ONLY_SUFFIXES)


def write_wheel_with_bytecode(src: Path, dst: Path, pycs: dict[str, bytes]) -> None:
    """Write ``dst``: every browser file of ``src``, each module in ``pycs`` followed by its pyc.

    Host-only files (:func:`host_only`: server, CLI, kit) are left out, with
    their ``RECORD`` lines.

    ``pycs`` maps pyc paths (:func:`pyc_name`) to bytes; modules without an
    entry get none, and a pyc whose module is not in ``src`` is an error.
    ``RECORD`` gets a line (sha256, size) per added pyc, right after its
    module's line, and stays the last entry.  Entries keep the order, time
    stamps and compression of ``src``, so equal inputs give an equal wheel.
    Written to a temporary file first, then renamed over ``dst``.
    """
    with zipfile.ZipFile(src) as zin:
        infos = [i for i in zin.infolist() if not host_only(i.filename)]
        modules = wheel_modules(i.filename for i in infos)
        pyc_of = {m: pyc_name(m) for m in modules if pyc_name(m) in pycs}
        if set(pyc_of.values()) != set(pycs):
            raise BuildError(
                f"{src.name}: compiled files without a module in the wheel: "
                f"{sorted(set(pycs) - set(pyc_of.values()))}"
            )
        records = [i for i in infos if i.filename.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise BuildError(f"{src.name}: expected one *.dist-info/RECORD, found {len(records)}")
        record_info = records[0]
        record_text = zin.read(record_info).decode("utf-8")
        lines: list[str] = []
        recorded: set[str] = set()
        for line in record_text.splitlines():
            path = next(csv.reader([line]))[0] if line.strip() else ""
            if path and host_only(path):
                continue
            lines.append(line)
            if path in pyc_of:
                pyc = pyc_of[path]
                lines.append(f"{pyc},{record_hash(pycs[pyc])},{len(pycs[pyc])}")
                recorded.add(path)
        if recorded != set(pyc_of):
            raise BuildError(f"{src.name}: RECORD lacks {sorted(set(pyc_of) - recorded)}")
        tmp = dst.with_name(dst.name + ".tmp")
        try:
            with zipfile.ZipFile(tmp, "w") as zout:
                for info in infos:
                    if info is record_info:
                        continue
                    zout.writestr(_zip_entry(info.filename, info), zin.read(info))
                    if info.filename in pyc_of:
                        pyc = pyc_of[info.filename]
                        zout.writestr(_zip_entry(pyc, info), pycs[pyc])
                zout.writestr(
                    _zip_entry(record_info.filename, record_info),
                    "\n".join(lines) + ("\n" if record_text.endswith("\n") else ""),
                )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, dst)


def bytecode_key(project_wheel: Path, stdlib_zip: Path, dist: Path) -> str:
    """Digest of what the dist wheel and the dist stdlib zip are derived from.

    The pure wheel (so also the set of modules it imports), the original
    stdlib zip, the Pyodide version, the helper and the compile rule
    (:data:`BYTECODE_FORMAT`, :data:`BROWSER_ROOT_MODULE`).
    """
    pyodide_version = json.loads((dist / "package.json").read_text(encoding="utf-8"))["version"]
    h = hashlib.sha256()
    for part in (
        BYTECODE_FORMAT,
        BROWSER_ROOT_MODULE,
        project_wheel.name,
        sha256_file(project_wheel),
        sha256_file(stdlib_zip),
        str(pyodide_version),
        sha256_file(COMPILE_HELPER),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def add_bytecode(
    project_wheel: Path, stdlib_zip: Path, dist: Path, lock_file: Path, *, verbose: bool
) -> int:
    """Put the project wheel and ``python_stdlib.zip``, both with bytecode, into ``dist``.

    ``stdlib_zip`` is the npm package's original (source-only) zip.  Returns
    the number of files changed.  Nothing is compiled (Node is not even
    started) when the stamp records the same :func:`bytecode_key` and both
    dist files still have the sha256 written with it; otherwise both are
    recompiled in one Node run and rewritten if their bytes differ, and any
    failure raises BuildError (no file without bytecode is ever shipped).
    """
    target = dist / project_wheel.name
    target_stdlib = dist / STDLIB_ZIP
    stamp = dist / BYTECODE_STAMP
    with zipfile.ZipFile(project_wheel) as zf:
        if any(n.endswith(".pyc") for n in zf.namelist()):
            raise BuildError(
                f"{project_wheel} already contains bytecode; pass the pure wheel "
                f"(build/wheel/, --build-wheel), not a dist folder's copy"
            )
    with zipfile.ZipFile(stdlib_zip) as zf:
        if any(n.endswith(".pyc") for n in zf.namelist()):
            raise BuildError(
                f"{stdlib_zip} already contains bytecode; pass the npm package's original zip"
            )
    key = bytecode_key(project_wheel, stdlib_zip, dist)
    if target.is_file() and target_stdlib.is_file() and stamp.is_file():
        recorded = stamp.read_text(encoding="utf-8").split()
        if recorded == [key, sha256_file(target), sha256_file(target_stdlib)]:
            log(f"{target.name} and {STDLIB_ZIP} with bytecode up to date", verbose=verbose)
            return 0
    pycs, stdlib_pycs = compile_with_pyodide(
        dist, project_wheel, lock_file, stdlib_zip, verbose=verbose
    )
    changed = 0
    old_wheel = sha256_file(target) if target.is_file() else None
    write_wheel_with_bytecode(project_wheel, target, pycs)
    changed += sha256_file(target) != old_wheel
    data = write_stdlib_with_bytecode(stdlib_zip, target_stdlib, stdlib_pycs)
    if not target_stdlib.is_file() or target_stdlib.read_bytes() != data:
        # A new file, never written in place: the old one may be a hard link
        # (build/site) or even the npm package's own file.
        tmp = target_stdlib.with_name(target_stdlib.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target_stdlib)
        changed += 1
    write_if_changed(stamp, f"{key} {sha256_file(target)} {sha256_file(target_stdlib)}\n")
    log(
        f"wrote {target.name} with {len(pycs)} pyc file(s) and {STDLIB_ZIP} "
        f"({stdlib_zip.stat().st_size} -> {len(data)} bytes) with {len(stdlib_pycs)} into {dist}",
        verbose=verbose,
    )
    return changed


# --------------------------------------------------------------------------
# Dist folder
# --------------------------------------------------------------------------


def integrity(sha256_hex: str) -> str:
    return "sha256-" + base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def assemble(
    *,
    node_modules: Path,
    dist: Path,
    cache: Path,
    project_wheel: Path,
    extra: list[str],
    verbose: bool,
) -> dict[str, object]:
    src = node_modules / "pyodide"
    if not (src / "pyodide-lock.json").is_file():
        raise BuildError(f"{src} is missing or incomplete; run `npm ci` first")
    dist.mkdir(parents=True, exist_ok=True)

    changed = 0
    if not (src / STDLIB_ZIP).is_file():
        raise BuildError(f"{src / STDLIB_ZIP} missing from the npm package")
    for name in CORE_FILES:
        if not (src / name).is_file():
            if name in OPTIONAL_CORE_FILES:
                continue
            raise BuildError(f"{src / name} missing from the npm package")
        changed += copy_if_changed(src / name, dist / name)

    lock = json.loads((src / "pyodide-lock.json").read_text(encoding="utf-8"))
    lock_packages: dict[str, dict[str, object]] = {
        canonical(k): v for k, v in lock["packages"].items()
    }
    names = closure(lock_packages, [*DEFAULT_PACKAGES, *extra])
    wanted = {str(lock_packages[n]["name"]): str(lock_packages[n]["version"]) for n in names}
    fetch_wheels(cache, wanted, verbose=verbose)

    new_packages: dict[str, dict[str, object]] = {}
    keep_files: set[str] = set()
    for key in names:
        entry = dict(lock_packages[key])
        cached = find_cached(cache, str(entry["name"]), str(entry["version"]))
        assert cached is not None
        changed += copy_if_changed(cached, dist / cached.name)
        entry["file_name"] = cached.name
        entry["sha256"] = sha256_file(dist / cached.name)
        new_packages[key] = entry
        keep_files.add(cached.name)

    # The project itself (with bytecode), loadable by name:
    # pyodide.loadPackage("nimbus-websocket").
    if not project_wheel.is_file():
        raise BuildError(f"project wheel {project_wheel} not found; build it with --build-wheel")
    if not is_pure_wheel(project_wheel.name):
        raise BuildError(f"{project_wheel.name} is not py3-none-any")
    changed += add_bytecode(
        project_wheel, src / STDLIB_ZIP, dist, src / "pyodide-lock.json", verbose=verbose
    )
    _, project_version = wheel_name_version(project_wheel.name)
    new_packages[PROJECT_LOCK_NAME] = {
        "name": PROJECT_LOCK_NAME,
        "version": project_version,
        "file_name": project_wheel.name,
        "install_dir": "site",
        "sha256": sha256_file(dist / project_wheel.name),
        "package_type": "package",
        "imports": [PROJECT_IMPORT_NAME],
        "depends": [],
        "unvendored_tests": False,
        "tool": {},
    }
    keep_files.add(project_wheel.name)
    with zipfile.ZipFile(dist / project_wheel.name) as zf:
        project_pycs = sum(n.endswith(f".{PYC_TAG}.pyc") for n in zf.namelist())
    with zipfile.ZipFile(dist / STDLIB_ZIP) as zf:
        stdlib_pycs = sum(n.endswith(".pyc") for n in zf.namelist())

    # Drop wheels left over from earlier versions.
    for stale in dist.glob("*.whl"):
        if stale.name not in keep_files:
            stale.unlink()
            changed += 1

    lock["packages"] = dict(sorted(new_packages.items()))
    changed += write_if_changed(
        dist / "pyodide-lock.json", json.dumps(lock, indent=1, sort_keys=False) + "\n"
    )

    summary = {
        "dist": str(dist),
        "pyodide": json.loads((src / "package.json").read_text())["version"],
        "python": lock["info"]["python"],
        "packages": {k: v["file_name"] for k, v in lock["packages"].items()},
        "project_wheel": project_wheel.name,
        "project_integrity": integrity(str(new_packages[PROJECT_LOCK_NAME]["sha256"])),
        "project_pyc_files": project_pycs,
        "stdlib_pyc_files": stdlib_pycs,
        "stdlib_zip_bytes": (dist / STDLIB_ZIP).stat().st_size,
        "changed_files": changed,
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dist", type=Path, default=REPO_ROOT / "build" / "pyodide-dist")
    parser.add_argument("--node-modules", type=Path, default=REPO_ROOT / "node_modules")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "build" / "wheel-cache")
    parser.add_argument("--wheel-dir", type=Path, default=REPO_ROOT / "build" / "wheel")
    parser.add_argument(
        "--wheel", type=Path, help="project wheel to include (default: the one in --wheel-dir)"
    )
    parser.add_argument(
        "--build-wheel",
        action="store_true",
        help="(re)build the project wheel into --wheel-dir if sources changed",
    )
    parser.add_argument(
        "--force-wheel", action="store_true", help="rebuild the project wheel even if unchanged"
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME",
        help="another pure package from the lock",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    verbose = not args.quiet

    try:
        if args.build_wheel or args.force_wheel:
            wheel = build_project_wheel(
                REPO_ROOT, args.wheel_dir, force=args.force_wheel, verbose=verbose
            )
        elif args.wheel is not None:
            wheel = args.wheel
        else:
            found = sorted(args.wheel_dir.glob(f"{PROJECT_IMPORT_NAME}-*.whl"))
            if len(found) != 1:
                raise BuildError(
                    f"expected exactly one {PROJECT_IMPORT_NAME}-*.whl in {args.wheel_dir}, "
                    f"found {len(found)}; pass --build-wheel"
                )
            wheel = found[0]
        summary = assemble(
            node_modules=args.node_modules,
            dist=args.dist,
            cache=args.cache,
            project_wheel=wheel.resolve(),
            extra=args.extra,
            verbose=verbose,
        )
    except BuildError as exc:
        print(f"[pyodide-dist] ERROR: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    elif verbose:
        print(
            f"[pyodide-dist] {summary['dist']}: Pyodide {summary['pyodide']} (Python {summary['python']}), "
            f"{len(summary['packages'])} packages incl. {summary['project_wheel']}; "  # type: ignore[arg-type]
            f"{summary['changed_files']} file(s) updated",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
