#!/usr/bin/env python3
"""Assemble the demo site served by ``nimbus-ws serve --static build/site``.

Layout of the output folder (default ``build/site/``; issue 14, item 4)::

    index.html                      <- demo_site/index.html, its relative src/href
                                       rewritten to the hashed folders below, plus
                                       <meta name="nimbus-site"> (= site.json)
    site.json                       <- the hashed paths, versions, boot bytes
    recordings.html                 <- demo_site/recordings.html (the recordings
                                       player, served at <base>/recordings/ by
                                       ``serve --record``), its refs rewritten to
                                       ``../assets/<hA>/``
    assets/<hA>/                    <- the page: demo_site/*.mjs|css|svg...,
                                       vendor/xterm/ (xterm.js + addons, pinned),
                                       vendor/asciinema-player/ (the player, pinned),
                                       nimbus/ (web_runtime/js, the facade)
    assets/<hR>/                    <- the Pyodide runtime the page loads
                                       (PAGE_PYODIDE_FILES; python_stdlib.zip
                                       trimmed and stored, see page_stdlib) and
                                       a lock file listing no package
    assets/<hW>/<project wheel>
    X.br, X.gz                      <- brotli (q 11) and gzip (-9) twins of each
                                       compressible X (when they save >= 10%);
                                       the server picks one by Accept-Encoding

``<h>`` is the first 16 hex digits of a SHA-256 over the folder's file names
and contents, so a folder's name changes exactly when its content does: the
server serves ``assets/<h>/`` ``immutable`` for a year and everything else
``no-cache`` (node_runtime/server/static.py).  A reload costs one
revalidated ``index.html``; a new build, only the folders that changed.

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
import concurrent.futures
import csv
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import sys
import time
import zipfile
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
#: The xterm.js addons the page loads (``node_modules/@xterm/<name>/lib/<name>.js``).
XTERM_ADDONS = ("addon-fit", "addon-serialize", "addon-web-links", "addon-clipboard", "addon-unicode11")
#: The recordings player (npm ``asciinema-player``, pinned): its standalone bundle and stylesheet.
PLAYER_FILES = {
    "vendor/asciinema-player/asciinema-player.min.js": ("dist", "bundle", "asciinema-player.min.js"),
    "vendor/asciinema-player/asciinema-player.css": ("dist", "bundle", "asciinema-player.css"),
}
#: Pages written at the top of the site besides ``index.html`` (refs rewritten with this
#: prefix before the page folder: ``recordings.html`` is served at ``<base>/recordings/``).
EXTRA_PAGES = {"recordings.html": "../"}
#: Entry modules of the pages: never preloaded by ``index.html`` (app.mjs is its own entry;
#: recordings.mjs belongs to the recordings page only).
ENTRY_MODULES = ("app.mjs", "recordings.mjs")
#: Files worth precompressed twins (wheels are deflated already; the page's stdlib zip is stored).
GZIP_SUFFIXES = (".html", ".mjs", ".js", ".css", ".svg", ".json", ".wasm", ".zip", ".whl")
GZIP_MIN_BYTES = 1024
GZIP_MIN_SAVING = 0.10
#: Brotli quality and window of the ``.br`` twins (11 = smallest; ~45 s for the wasm, once).
BROTLI_QUALITY = 11
BROTLI_LGWIN = 24
#: Stdlib parts the page never imports (no processes, sockets or tty in a browser tab, no
#: REPL, tests, docs or profilers in a terminal client); dropping them saves ~0.45 MB on
#: the wire.  Nothing Pyodide's boot or
#: the project's browser modules import is among them (tests/server/test_static_cache.py).
PAGE_STDLIB_DROP_DIRS = (
    "unittest/", "_pyrepl/", "xmlrpc/", "pydoc_data/", "idlelib/", "tkinter/", "turtledemo/",
    "ensurepip/", "venv/", "lib2to3/", "wsgiref/", "dbm/", "curses/", "sqlite3/", "test/",
    "xml/", "html/",  # no parser of either in a terminal client
    "multiprocessing/", "ctypes/", "zoneinfo/", "tomllib/",  # no processes, no C, no tz data here
)
PAGE_STDLIB_DROP_FILES = (
    "pydoc.py", "doctest.py", "pdb.py", "mailbox.py", "turtle.py", "argparse.py", "optparse.py",
    "pickletools.py", "difflib.py",
    "_pyio.py", "_pydatetime.py",  # pure-Python fallbacks of the built-in _io and _datetime
    # network clients/servers and terminals: a browser tab has no sockets, processes or tty
    "ftplib.py", "smtplib.py", "imaplib.py", "poplib.py", "socketserver.py", "http/server.py",
    "webbrowser.py", "getpass.py", "pty.py", "tty.py", "asyncio/__main__.py", "concurrent/futures/process.py",
    # profilers and developer tools
    "cProfile.py", "profile.py", "pstats.py", "timeit.py", "trace.py", "tabnanny.py", "pyclbr.py",
    "compileall.py", "zipapp.py", "shelve.py", "csv.py",
)
#: Hex digits of a hashed folder name (the server's IMMUTABLE_DIR accepts 16-64).
HASH_DIGITS = 16
#: Days an unused entry stays in the twin cache (``build/.site-twins/``).
TWIN_CACHE_DAYS = 7


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
    vendor = {
        "vendor/xterm/xterm.js": xterm / "lib" / "xterm.js",
        "vendor/xterm/xterm.css": xterm / "css" / "xterm.css",
    }
    # xterm.js's own addons (UMD bundles, pinned in package-lock.json): window.<Name>Addon.
    for addon in XTERM_ADDONS:
        vendor[f"vendor/xterm/{addon}.js"] = root / "node_modules" / "@xterm" / addon / "lib" / f"{addon}.js"
    player = root / "node_modules" / "asciinema-player"
    for rel, parts in PLAYER_FILES.items():
        vendor[rel] = player.joinpath(*parts)
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
        "asciinemaPlayer": _npm_version(player),
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
    """The dist's ``pyodide-lock.json`` with no package: the page installs the project wheel by
    URL (``site.json`` ``wheel``), so the runtime folder's hash does not change with the wheel."""
    lock = json.loads((pyodide_dist / "pyodide-lock.json").read_text(encoding="utf-8"))
    lock["packages"] = {}
    return json.dumps(lock, indent=1) + "\n"


def _page_stdlib_keeps(name: str) -> bool:
    base = name[:-1] if name.endswith(".pyc") else name
    return not (name.startswith(PAGE_STDLIB_DROP_DIRS) or base in PAGE_STDLIB_DROP_FILES)


def page_stdlib(src: Path) -> bytes:
    """The dist's ``python_stdlib.zip`` (with its bytecode) for the page: every entry stored,
    not deflated, so that the HTTP compression (brotli over the whole archive) sees across
    files; without :data:`PAGE_STDLIB_DROP_DIRS` / :data:`PAGE_STDLIB_DROP_FILES`; and
    without the ``X.py`` of each module the boot loads from its ``X.pyc`` (the page's
    tracebacks show no source line for those stdlib frames).  1.9 MB on the wire instead
    of 3.9.  Same input, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(buf, "w") as zout:
        names = set(zin.namelist())
        for info in zin.infolist():
            if not _page_stdlib_keeps(info.filename):
                continue
            if info.filename.endswith(".py") and info.filename + "c" in names:
                continue  # its unchecked-hash .pyc is what zipimport loads (tracebacks lose the line)
            entry = zipfile.ZipInfo(info.filename, info.date_time)
            entry.external_attr = info.external_attr
            entry.compress_type = zipfile.ZIP_STORED
            zout.writestr(entry, zin.read(info))
    return buf.getvalue()


def _legacy_pyc(name: str) -> str:
    """``pkg/__pycache__/mod.cpython-314.pyc`` -> ``pkg/mod.pyc``; other names unchanged."""
    folder, sep, leaf = name.rpartition("/__pycache__/")
    if not sep or not leaf.endswith(".pyc"):
        return name
    return f"{folder}/{leaf.split('.', 1)[0]}.pyc"


def page_wheel(src: Path) -> bytes:
    """The project wheel as the page imports it: straight from the archive (zipimport; the
    facade puts the fetched bytes on ``sys.path`` instead of unpacking them, web_runtime/js/
    nimbus.mjs ``installNimbus``).  Each ``pkg/__pycache__/mod.cpython-314.pyc`` moves to
    ``pkg/mod.pyc``, where zipimport looks for bytecode before ``mod.py`` (it ignores
    ``__pycache__``); the sources stay (zipimport serves them to tracebacks) and ``RECORD``
    names the moved files.  Every entry stored, not deflated: brotli over the whole archive
    sends 210 KB instead of the deflated wheel's 344 KB.  Still a valid wheel (an unpacked
    copy compiles the sources it imports).  Same input, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(buf, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
                out = io.StringIO()
                csv.writer(out, lineterminator="\n").writerows([[_legacy_pyc(r[0]), *r[1:]] for r in rows if r])
                data = out.getvalue().encode("utf-8")
            entry = zipfile.ZipInfo(_legacy_pyc(info.filename), info.date_time)
            entry.external_attr = info.external_attr
            entry.compress_type = zipfile.ZIP_STORED
            zout.writestr(entry, data)
    return buf.getvalue()


def _write_bytes_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _twin(path: Path, suffix: str, cache: Path | None = None, used: set[str] | None = None) -> Path | None:
    """Write ``path`` + ``suffix`` (``.gz``: gzip -9, no name or time in the header; ``.br``:
    brotli) with the source's mtime, unless it is already there or would not save
    :data:`GZIP_MIN_SAVING`; the twin kept, or ``None``.  Without the ``brotli`` module
    (a build dependency, requirements-dev.txt) no ``.br`` is written."""
    twin = path.with_name(path.name + suffix)
    st = path.stat()
    if path.suffix not in GZIP_SUFFIXES or st.st_size < GZIP_MIN_BYTES:
        twin.unlink(missing_ok=True)
        return None
    raw: bytes | None = None
    cached: Path | None = None
    try:
        if twin.stat().st_mtime_ns == st.st_mtime_ns:
            if cache is not None:  # keep the cache filled for a later folder that has this content
                raw = path.read_bytes()
                cached = cache / (hashlib.sha256(raw).hexdigest() + suffix)
                if used is not None:
                    used.add(cached.name)
                if not cached.is_file():
                    cache.mkdir(parents=True, exist_ok=True)
                    _place(twin, cached, link=False)
            return twin
    except FileNotFoundError:
        pass
    raw = path.read_bytes() if raw is None else raw
    cached = cache / (hashlib.sha256(raw).hexdigest() + suffix) if cache is not None else None
    if cached is not None and used is not None:
        used.add(cached.name)
    if cached is not None and cached.is_file():  # the same content compressed by an earlier build
        if cached.stat().st_size == 0:
            twin.unlink(missing_ok=True)
            return None
        _place(cached, twin, link=False)
        os.utime(twin, ns=(st.st_atime_ns, st.st_mtime_ns))
        return twin
    if suffix == ".gz":
        data = gzip.compress(raw, compresslevel=9, mtime=0)
    else:
        try:
            import brotli  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            return None
        data = brotli.compress(raw, quality=BROTLI_QUALITY, lgwin=BROTLI_LGWIN)
    if len(data) > st.st_size * (1 - GZIP_MIN_SAVING):
        data = b""  # not worth a twin (remembered as an empty cache entry)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        ctmp = cached.with_name(f".{cached.name}.tmp{os.getpid()}")
        ctmp.write_bytes(data)
        os.replace(ctmp, cached)
    if not data:
        twin.unlink(missing_ok=True)
        return None
    tmp = twin.with_name(f".{twin.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, twin)
    return twin


def _gzip_twin(path: Path) -> Path | None:
    """The ``.gz`` twin of ``path`` (see :func:`_twin`)."""
    return _twin(path, ".gz")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_hash(entries: dict[str, Path]) -> str:
    """:data:`HASH_DIGITS` hex digits of a SHA-256 over ``{name inside the folder: file}``."""
    h = hashlib.sha256()
    for rel in sorted(entries):
        h.update(f"{rel}\0{_digest(entries[rel])}\n".encode())
    return h.hexdigest()[:HASH_DIGITS]


_REF = re.compile(r'(\b(?:src|href)=")([^"#?:]+)(")')


def preload_tags(app_files: set[str], app_dir: str, meta: dict[str, object]) -> list[str]:
    """``<link rel=modulepreload>`` for every module of the page and the runtime, and
    ``<link rel=preload as=fetch crossorigin>`` for what the boot fetches (wasm, stdlib, lock,
    wheel): the browser starts them while parsing ``index.html`` instead of after the chain
    index -> app.mjs -> its imports -> the facade -> pyodide.mjs (five round trips; ~0.7 s of a
    first load on loopback).  ``crossorigin`` (anonymous, same-origin credentials) matches the
    plain ``fetch(url)`` of Pyodide and the facade, so the preloaded responses are used."""
    runtime, wheel = str(meta["runtime"]), str(meta["wheel"])
    modules = [f"{app_dir}{m}" for m in sorted(app_files) if m.endswith(".mjs") and m not in ENTRY_MODULES]
    modules += [f"{runtime}pyodide.mjs", f"{runtime}pyodide.asm.mjs"]
    fetches = [f"{runtime}pyodide.asm.wasm", f"{runtime}python_stdlib.zip", f"{runtime}pyodide-lock.json", wheel]
    return [f'<link rel="modulepreload" href="{html.escape(m)}">' for m in modules] + [
        f'<link rel="preload" as="fetch" crossorigin href="{html.escape(f)}">' for f in fetches
    ]


def rewrite_refs(text: str, app_files: set[str], prefix: str) -> str:
    """``text`` (a page's HTML) with each relative ``src``/``href`` naming a page file moved under ``prefix``."""
    def move(m: re.Match[str]) -> str:
        ref = m.group(2)
        return f"{m.group(1)}{prefix}{ref}{m.group(3)}" if ref in app_files else m.group(0)

    return _REF.sub(move, text)


def rewrite_index(text: str, app_files: set[str], app_dir: str, meta: dict[str, object]) -> str:
    """``index.html`` with each relative ``src``/``href`` naming a page file moved under
    ``app_dir``, ``<meta name="nimbus-site" content="<site.json>">`` after
    ``<meta name="referrer">`` (the page reads it instead of fetching site.json: one round
    trip less) and the :func:`preload_tags` after it. The preloads come after the referrer
    policy so that no request of the page, the preloads included, carries a ``?token=``
    from the address in a Referer."""
    out = rewrite_refs(text, app_files, app_dir)
    tag = f'<meta name="nimbus-site" content="{html.escape(json.dumps(meta, sort_keys=True), quote=True)}">'
    policy = re.search(r'<meta name="referrer" content="no-referrer">', out, re.I)
    if policy is None:
        raise BuildError('demo_site/index.html has no <meta name="referrer" content="no-referrer">')
    head = "\n  ".join([tag, *preload_tags(app_files, app_dir, meta)])
    return out[: policy.end()] + "\n  " + head + out[policy.end():]


def build(
    out: Path,
    root: Path = REPO_ROOT,
    pyodide_dist: Path | None = None,
    facade: Path | None = None,
) -> tuple[int, int, int, list[str]]:
    """Bring ``out`` up to date; returns (files, changed, removed, warnings)."""
    dist = pyodide_dist or root / "build" / "pyodide-dist"
    files, meta, warnings = plan(root, dist, facade)
    out.mkdir(parents=True, exist_ok=True)
    # Derived inputs (the page's lock and stdlib) are written next to out, once per content.
    derived = out.with_name(f".{out.name}-derived")
    derived.mkdir(exist_ok=True)
    changed = int(_write_if_changed(derived / "pyodide-lock.json", page_lock(dist)))
    stdlib_path = derived / "python_stdlib.zip"
    changed += _write_bytes_if_changed(stdlib_path, page_stdlib(dist / "python_stdlib.zip"))
    wheel_rel = str(meta["wheel"])
    wheel_name = wheel_rel.removeprefix("pyodide/")
    wheel_bytes = page_wheel(files[wheel_rel])
    changed += _write_bytes_if_changed(derived / wheel_name, wheel_bytes)
    for old in derived.glob("*.whl"):  # an earlier version's wheel
        if old.name != wheel_name:
            old.unlink()

    runtime = {rel.removeprefix("pyodide/"): src for rel, src in files.items() if rel.startswith("pyodide/") and rel != wheel_rel}
    runtime["python_stdlib.zip"] = stdlib_path
    runtime["pyodide-lock.json"] = derived / "pyodide-lock.json"
    wheel = {wheel_name: derived / wheel_name}
    pages = {"index.html", *EXTRA_PAGES}
    app = {rel: src for rel, src in files.items() if not rel.startswith("pyodide/") and rel not in pages}
    runtime_dir = f"assets/{folder_hash(runtime)}/"
    wheel_dir = f"assets/{folder_hash(wheel)}/"
    app_dir = f"assets/{folder_hash(app)}/"
    placed: dict[str, tuple[Path, bool]] = {}  # output path -> (source, hard-link)
    placed.update({runtime_dir + rel: (src, True) for rel, src in runtime.items()})
    placed.update({wheel_dir + rel: (src, True) for rel, src in wheel.items()})
    # Sources are copied, so that an edit under build/site can never change the source tree.
    placed.update({app_dir + rel: (src, False) for rel, src in app.items()})
    meta.update(
        {
            "runtime": runtime_dir,
            "wheel": wheel_dir + next(iter(wheel)),
            "app": app_dir,
            "facade": f"{app_dir}nimbus/nimbus.mjs" if "nimbus/nimbus.mjs" in app else None,
            "wheelSha256": hashlib.sha256(wheel_bytes).hexdigest(),
            "bootBytes": sum(runtime[n].stat().st_size for n in ("pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"))
            + len(wheel_bytes),
        }
    )
    changed += sum(_place(src, out / rel, link) for rel, (src, link) in placed.items())
    index = rewrite_index(files["index.html"].read_text(encoding="utf-8"), set(app), app_dir, meta)
    changed += _write_if_changed(out / "index.html", index)
    extra = [name for name in EXTRA_PAGES if name in files]
    for name in extra:
        page = rewrite_refs(files[name].read_text(encoding="utf-8"), set(app), EXTRA_PAGES[name] + app_dir)
        changed += _write_if_changed(out / name, page)
    changed += _write_if_changed(out / "site.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    keep = set(placed) | {"site.json", "index.html", *extra}
    # Twins by content, shared by every build of this checkout (tests build their own sites):
    # a folder whose hash changed reuses the wasm's brotli instead of spending 45 s on it again.
    cache = root / "build" / ".site-twins"
    jobs = [(out / rel, suffix) for rel in sorted(keep) for suffix in (".br", ".gz")]
    with concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        # the largest first: the wasm's brotli twin alone takes most of a fresh build
        jobs.sort(key=lambda j: -j[0].stat().st_size)
        used: set[str] = set()
        for twin in pool.map(lambda j: _twin(j[0], j[1], cache=cache, used=used), jobs):
            if twin is not None:
                keep.add(twin.relative_to(out).as_posix())
    now = time.time()
    for entry in cache.glob("*"):  # used entries are fresh; others go after TWIN_CACHE_DAYS
        if entry.name in used:
            os.utime(entry)
        elif entry.stat().st_mtime < now - TWIN_CACHE_DAYS * 86400:
            entry.unlink()
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
