#!/usr/bin/env python3
"""Assemble the demo site served by ``nimbus-ws serve --static build/site``.

Layout of the output folder (default ``build/site/``)::

    index.html app.mjs nimbus_adapter.mjs style.css favicon.svg   <- demo_site/
    site.json                       <- wheel file name and versions (for the page)
    vendor/xterm/xterm.js xterm.css addon-fit.js   <- node_modules/@xterm (pinned)
    nimbus/nimbus.mjs ...           <- web_runtime/js/ (the JavaScript facade)
    pyodide/...                     <- build/pyodide-dist/: only what the page loads
                                       (PAGE_PYODIDE_FILES, the project wheel and a
                                       lock file listing only that wheel)
    X.gz                            <- gzip -9 of each compressible file X (when it
                                       saves >= 10%); the server sends it for
                                       Accept-Encoding: gzip

Everything is local: the page loads no CDN.  The Pyodide files (~17 MB) are
**hard-linked** when both folders share a file system (copied otherwise), the
small source files are copied; nothing is symlinked:
the reference server's static handler resolves paths and refuses anything
outside its root, so a symlink pointing into ``build/pyodide-dist`` would 404.

Idempotent and fast: a file whose size and mtime already match (or which is
the same inode) is left alone, files that no longer belong are removed, and
``site.json`` is only rewritten when its content changed.  Prints one
summary line.  Run ``scripts/setup.sh`` (``make setup``) first so that
``node_modules`` and ``build/pyodide-dist`` exist.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_LOCK_NAME = "nimbus-websocket"

#: demo_site files that are served (build scripts and notes stay behind).
SITE_SUFFIXES = (".html", ".mjs", ".js", ".css", ".svg", ".png", ".ico")
#: The Pyodide dist files the page loads (recorded in Chromium: ``pyodide.mjs``
#: imports ``pyodide.asm.mjs``, which fetches the wasm, the stdlib and the lock
#: file); the project wheel is added from the lock.  The dist's other wheels
#: (micropip, pytest, pluggy, pygments, setuptools...) serve tests/pyodide only.
PAGE_PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip")
#: Files worth a precompressed ``.gz`` twin (wheels and zips are deflated already).
GZIP_SUFFIXES = (".html", ".mjs", ".js", ".css", ".svg", ".json", ".wasm")
GZIP_MIN_BYTES = 1024
GZIP_MIN_SAVING = 0.10


class BuildError(RuntimeError):
    """A source the site needs is missing."""


def _same(src: Path, dst: Path) -> bool:
    try:
        s, d = src.stat(), dst.lstat()
    except FileNotFoundError:
        return False
    if dst.is_symlink():
        return False
    if (s.st_ino, s.st_dev) == (d.st_ino, d.st_dev):
        return True
    return s.st_size == d.st_size and s.st_mtime_ns == d.st_mtime_ns


def _place(src: Path, dst: Path, link: bool) -> bool:
    """Hard-link (``link``) or copy ``src`` to ``dst`` unless it is already there; True if changed."""
    if _same(src, dst):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        if not link:
            raise OSError("copy")
        os.link(src, tmp)
    except OSError:  # a source file, another file system, or links not allowed: copy
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return True


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def _npm_version(pkg_dir: Path) -> str:
    try:
        return str(json.loads((pkg_dir / "package.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def plan(
    root: Path, pyodide_dist: Path, facade: Path | None = None
) -> tuple[dict[str, Path], dict[str, object], list[str]]:
    """``{relative output path: source}``, the ``site.json`` content and warnings."""
    files: dict[str, Path] = {}
    warnings: list[str] = []

    demo = root / "demo_site"
    for src in sorted(demo.iterdir()):
        if src.is_file() and src.suffix in SITE_SUFFIXES:
            files[src.name] = src
    if "index.html" not in files:
        raise BuildError(f"{demo}/index.html missing")

    xterm = root / "node_modules" / "@xterm" / "xterm"
    fit = root / "node_modules" / "@xterm" / "addon-fit"
    vendor = {
        "vendor/xterm/xterm.js": xterm / "lib" / "xterm.js",
        "vendor/xterm/xterm.css": xterm / "css" / "xterm.css",
        "vendor/xterm/addon-fit.js": fit / "lib" / "addon-fit.js",
    }
    for rel, src in vendor.items():
        if not src.is_file():
            raise BuildError(f"{src} missing; run `make setup` (npm ci)")
        files[rel] = src

    facade = facade or Path(os.environ.get("NIMBUS_FACADE_DIR") or root / "web_runtime" / "js")
    if (facade / "nimbus.mjs").is_file():
        for src in sorted(facade.rglob("*")):
            if src.is_file() and src.suffix in (".mjs", ".js", ".json") and "test" not in src.parts:
                files[f"nimbus/{src.relative_to(facade).as_posix()}"] = src
    else:
        warnings.append(f"{facade}/nimbus.mjs missing: the page will report that the runtime is absent")

    lock_path = pyodide_dist / "pyodide-lock.json"
    if not lock_path.is_file():
        raise BuildError(f"{pyodide_dist} incomplete; run `make setup`")
    for name in PAGE_PYODIDE_FILES:
        if not (pyodide_dist / name).is_file():
            raise BuildError(f"{pyodide_dist / name} missing; run `make setup`")
        files[f"pyodide/{name}"] = pyodide_dist / name
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    entry = lock.get("packages", {}).get(PROJECT_LOCK_NAME)
    if entry is None or not (pyodide_dist / entry["file_name"]).is_file():
        raise BuildError(f"{lock_path} has no usable {PROJECT_LOCK_NAME!r} wheel; run `make setup`")
    files[f"pyodide/{entry['file_name']}"] = pyodide_dist / entry["file_name"]

    meta: dict[str, object] = {
        "wheel": f"pyodide/{entry['file_name']}",
        "wheelSha256": entry.get("sha256"),
        "version": entry.get("version"),
        "pyodide": lock.get("info", {}).get("version") or _npm_version(root / "node_modules" / "pyodide"),
        "python": lock.get("info", {}).get("python"),
        "xterm": _npm_version(xterm),
        "facade": "nimbus/nimbus.mjs" if "nimbus/nimbus.mjs" in files else None,
        # What the page downloads with fetch() while booting (for its progress bar).
        "bootBytes": sum(
            (pyodide_dist / name).stat().st_size
            for name in ("pyodide.asm.wasm", "python_stdlib.zip", entry["file_name"])
            if (pyodide_dist / name).is_file()
        )
        + len(page_lock(pyodide_dist).encode()),  # the lock as shipped (only the project wheel)
    }
    return files, meta, warnings


def page_lock(pyodide_dist: Path) -> str:
    """The dist's ``pyodide-lock.json`` listing only the project wheel (all the page ships)."""
    lock = json.loads((pyodide_dist / "pyodide-lock.json").read_text(encoding="utf-8"))
    lock["packages"] = {PROJECT_LOCK_NAME: lock["packages"][PROJECT_LOCK_NAME]}
    return json.dumps(lock, indent=1) + "\n"


def _gzip_twin(path: Path) -> Path | None:
    """Write ``path.gz`` (gzip -9, no name or time in the header, the source's mtime) unless it is
    already there or would not save :data:`GZIP_MIN_SAVING`; the twin kept, or ``None``."""
    gz = path.with_name(path.name + ".gz")
    st = path.stat()
    if path.suffix not in GZIP_SUFFIXES or st.st_size < GZIP_MIN_BYTES:
        return None
    try:
        g = gz.stat()
        if g.st_mtime_ns == st.st_mtime_ns:
            return gz
    except FileNotFoundError:
        pass
    data = gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)
    if len(data) > st.st_size * (1 - GZIP_MIN_SAVING):
        gz.unlink(missing_ok=True)
        return None
    tmp = gz.with_name(f".{gz.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, gz)
    return gz


def build(
    out: Path,
    root: Path = REPO_ROOT,
    pyodide_dist: Path | None = None,
    facade: Path | None = None,
) -> tuple[int, int, int, list[str]]:
    """Bring ``out`` up to date; returns (files, changed, removed, warnings)."""
    files, meta, warnings = plan(root, pyodide_dist or root / "build" / "pyodide-dist", facade)
    out.mkdir(parents=True, exist_ok=True)
    # Only the (large, generated) Pyodide files are hard-linked; sources are
    # copied, so that an edit under build/site can never change the source tree.
    changed = sum(_place(src, out / rel, rel.startswith("pyodide/")) for rel, src in files.items())
    changed += _write_if_changed(out / "site.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    dist = pyodide_dist or root / "build" / "pyodide-dist"
    changed += _write_if_changed(out / "pyodide" / "pyodide-lock.json", page_lock(dist))
    keep = set(files) | {"site.json", "pyodide/pyodide-lock.json"}
    for rel in sorted(keep):
        gz = _gzip_twin(out / rel)
        if gz is not None:
            keep.add(gz.relative_to(out).as_posix())
    removed = 0
    for path in sorted(out.rglob("*"), reverse=True):  # children before their folders
        rel = path.relative_to(out).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif rel not in keep:
            path.unlink()
            removed += 1
    return len(keep), changed, removed, warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "site")
    ap.add_argument("--pyodide-dist", type=Path, default=None)
    ap.add_argument(
        "--facade",
        type=Path,
        default=None,
        help="folder holding nimbus.mjs (default web_runtime/js, or $NIMBUS_FACADE_DIR)",
    )
    ap.add_argument("--quiet", action="store_true", help="print nothing unless something changed")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        n, changed, removed, warnings = build(args.out.resolve(), REPO_ROOT, args.pyodide_dist, args.facade)
    except BuildError as e:
        print(f"[site] ERROR: {e}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"[site] WARNING: {w}", file=sys.stderr)
    if changed or removed or not args.quiet:
        ms = (time.monotonic() - t0) * 1000
        try:
            shown = args.out.resolve().relative_to(Path.cwd())
        except ValueError:
            shown = args.out
        print(f"[site] {shown}/: {n} files, {changed} updated, {removed} removed in {ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
