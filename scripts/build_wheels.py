#!/usr/bin/env python3
"""Build what ``pip install 'nimbus-websocket[server]'`` installs, offline, under ``build/``.

* ``build/wheel/nimbus_websocket-<v>-py3-none-any.whl`` -- the project wheel
  (``scripts/build_pyodide_dist.py:build_project_wheel``; rebuilt when the
  sources changed);
* ``build/site/`` -- the page (``scripts/build_site.py``), then
  ``build/site-wheel/nimbus_websocket_site-<v>-py3-none-any.whl``: the
  companion, data-only distribution ``nimbus-websocket-site`` that the
  ``server`` extra pins (``==<v>``).  It holds one package,
  ``nimbus_websocket_site``, whose ``site/`` folder is the built page
  (``default_static_dir()`` finds it with ``importlib.resources``).  The zip is
  reproducible: sorted entries, a fixed timestamp (``SOURCE_DATE_EPOCH`` or
  1980-01-01), files already compressed are stored;
* ``build/wheelhouse/`` -- the third-party wheels of the ``server`` extra
  (websockets, asyncssh, bcrypt, prometheus-client and their dependencies) at
  the versions of ``requirements-dev.txt``, fetched once with ``pip download``
  (re-fetched only when those pins change), so that
  ``pip install --no-index --find-links build/wheel --find-links build/site-wheel
  --find-links build/wheelhouse 'nimbus-websocket[server]'`` needs no network.

Why a companion wheel (docs/deploy.md, "Installing with pip"): the page (about
19 MB with its ``.gz`` twins) is never downloaded by a client-only install
(``pip install nimbus-websocket`` / ``[client]``), and the project wheel -- which
is also the browser's wheel -- stays small.

Idempotent; prints one summary line (``--quiet``: only when something changed).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_pyodide_dist  # noqa: E402
import build_site  # noqa: E402

SITE_DIST = "nimbus-websocket-site"
SITE_PACKAGE = "nimbus_websocket_site"
#: Third-party distributions of the ``server`` extra pinned in requirements-dev.txt.
SERVER_DEPS = ("websockets", "asyncssh", "bcrypt", "prometheus-client", "pyte")
#: Suffixes stored in the zip as they are (compressing them again gains nothing).
STORED_SUFFIXES = (".gz", ".whl", ".zip", ".png", ".br")
STAMP = ".build.json"

SITE_INIT = '''"""The built terminal page of nimbus-websocket (data only).

Installed by ``pip install 'nimbus-websocket[server]'``; ``nimbus-ws serve``
serves :data:`SITE` (``nimbus_websocket.node_runtime.server.static.default_static_dir``).
"""

from pathlib import Path

__version__ = "{version}"
#: The page, xterm.js, the JavaScript facade, the Pyodide files and the browser's wheel.
SITE = Path(__file__).resolve().parent / "site"
'''


class BuildError(RuntimeError):
    """A step failed; the message says which."""


def project_version(root: Path = REPO_ROOT) -> str:
    """``[project] version`` of pyproject.toml."""
    return str(tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _zip_time() -> tuple[int, int, int, int, int, int]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        t = time.gmtime(max(int(epoch), 315532800))
        return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
    return (1980, 1, 1, 0, 0, 0)


def site_wheel_entries(site: Path, version: str) -> list[tuple[str, Path | bytes]]:
    """``(name in the wheel, source file or bytes)`` of the package files, sorted."""
    if not (site / "index.html").is_file():
        raise BuildError(f"{site}/index.html missing; build the site first (scripts/build_site.py)")
    entries: list[tuple[str, Path | bytes]] = [
        (f"{SITE_PACKAGE}/__init__.py", SITE_INIT.format(version=version).encode()),
    ]
    for path in sorted(site.rglob("*")):
        rel = path.relative_to(site).as_posix()
        if path.is_file() and not any(p.startswith(".") for p in rel.split("/")):
            entries.append((f"{SITE_PACKAGE}/site/{rel}", path))
    return entries


def write_site_wheel(site: Path, out_dir: Path, version: str) -> Path:
    """Write ``nimbus_websocket_site-<version>-py3-none-any.whl`` from ``site`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{SITE_PACKAGE}-{version}-py3-none-any.whl"
    dist_info = f"{SITE_PACKAGE}-{version}.dist-info"
    metadata = (
        "Metadata-Version: 2.4\n"
        f"Name: {SITE_DIST}\n"
        f"Version: {version}\n"
        "Summary: The built terminal page of nimbus-websocket (data only; installed by the server extra)\n"
        "License-Expression: MIT\n"
        "Requires-Python: >=3.11\n"
    ).encode()
    wheel_meta = (
        b"Wheel-Version: 1.0\nGenerator: nimbus-websocket scripts/build_wheels.py\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entries = site_wheel_entries(site, version)
    entries += [
        (f"{dist_info}/METADATA", metadata),
        (f"{dist_info}/WHEEL", wheel_meta),
        (f"{dist_info}/top_level.txt", f"{SITE_PACKAGE}\n".encode()),
    ]
    stamp = _zip_time()
    tmp = out_dir / f".{name}.tmp{os.getpid()}"
    record: list[str] = []
    with zipfile.ZipFile(tmp, "w") as zf:
        for arcname, src in entries:
            data = src.read_bytes() if isinstance(src, Path) else src
            info = zipfile.ZipInfo(arcname, date_time=stamp)
            info.external_attr = 0o644 << 16
            stored = arcname.endswith(STORED_SUFFIXES)
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=None if stored else 6)
            record.append(f"{arcname},{_record_hash(data)},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        info = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=stamp)
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, "\n".join(record) + "\n")
    for old in out_dir.glob(f"{SITE_PACKAGE}-*.whl"):
        old.unlink()
    target = out_dir / name
    os.replace(tmp, target)
    return target


def _site_fingerprint(site: Path, version: str) -> str:
    h = hashlib.sha256(version.encode())
    for path in sorted(site.rglob("*")):
        if path.is_file():
            st = path.stat()
            h.update(f"{path.relative_to(site).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(SITE_INIT.encode())
    return h.hexdigest()


def server_pins(root: Path = REPO_ROOT) -> list[str]:
    """``name==version`` of :data:`SERVER_DEPS` from requirements-dev.txt (the tested versions)."""
    pins: dict[str, str] = {}
    for line in (root / "requirements-dev.txt").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if m:
            pins[build_pyodide_dist.canonical(m.group(1))] = m.group(2)
    missing = [d for d in SERVER_DEPS if d not in pins]
    if missing:
        raise BuildError(f"requirements-dev.txt pins none of {missing}")
    return [f"{d}=={pins[d]}" for d in SERVER_DEPS]


def fill_wheelhouse(house: Path, pins: list[str], *, force: bool = False) -> bool:
    """``pip download`` the pins and their dependencies (wheels only, this interpreter's
    platform) into ``house`` unless the stamp says they are there; True if it ran."""
    house.mkdir(parents=True, exist_ok=True)
    stamp = house / STAMP
    key = json.dumps({"pins": pins, "python": sys.version_info[:2], "platform": sys.platform})
    if not force and stamp.is_file() and stamp.read_text(encoding="utf-8") == key and any(house.glob("*.whl")):
        return False
    cmd = [
        sys.executable, "-m", "pip", "--disable-pip-version-check", "-q",
        "download", "--only-binary=:all:", "--dest", str(house), *pins,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"pip download failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    stamp.write_text(key, encoding="utf-8")
    return True


def build(
    root: Path = REPO_ROOT,
    *,
    build_dir: Path | None = None,
    wheelhouse: bool = True,
    verbose: bool = False,
) -> dict[str, object]:
    """Bring the project wheel, the site, the site wheel and the wheelhouse up to date."""
    out = build_dir or root / "build"
    version = project_version(root)
    try:
        project = build_pyodide_dist.build_project_wheel(root, out / "wheel", force=False, verbose=verbose)
    except build_pyodide_dist.BuildError as exc:
        raise BuildError(str(exc)) from None
    try:
        site_files, site_changed, site_removed, warnings = build_site.build(
            out / "site", root, out / "pyodide-dist"
        )
    except build_site.BuildError as exc:
        raise BuildError(str(exc)) from None
    wheel_dir = out / "site-wheel"
    fingerprint = _site_fingerprint(out / "site", version)
    stamp = wheel_dir / STAMP
    existing = sorted(wheel_dir.glob(f"{SITE_PACKAGE}-{version}-*.whl"))
    rebuilt = not (len(existing) == 1 and stamp.is_file() and stamp.read_text(encoding="utf-8") == fingerprint)
    if rebuilt:
        site_wheel = write_site_wheel(out / "site", wheel_dir, version)
        stamp.write_text(fingerprint, encoding="utf-8")
    else:
        site_wheel = existing[0]
    fetched = fill_wheelhouse(out / "wheelhouse", server_pins(root)) if wheelhouse else False
    return {
        "project_wheel": str(project),
        "site_wheel": str(site_wheel),
        "site_wheel_bytes": site_wheel.stat().st_size,
        "site_files": site_files,
        "changed": bool(site_changed or site_removed or rebuilt or fetched),
        "wheelhouse": str(out / "wheelhouse") if wheelhouse else None,
        "warnings": warnings,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-wheelhouse", action="store_true", help="skip the third-party wheels (pip download)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print nothing unless something changed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        summary = build(REPO_ROOT, wheelhouse=not args.no_wheelhouse)
    except BuildError as exc:
        print(f"[wheels] ERROR: {exc}", file=sys.stderr)
        return 1
    for w in summary["warnings"]:  # type: ignore[attr-defined]
        print(f"[wheels] WARNING: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif summary["changed"] or not args.quiet:
        print(
            f"[wheels] {Path(str(summary['project_wheel'])).name}, {Path(str(summary['site_wheel'])).name} "
            f"({int(summary['site_wheel_bytes']) / 1e6:.1f} MB, {summary['site_files']} site files)"  # type: ignore[call-overload]
            f"{', wheelhouse build/wheelhouse/' if summary['wheelhouse'] else ''} "
            f"in {time.monotonic() - t0:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
