"""Issue 14, item 4: validators, caching and precompressed twins of the static files.

Against the real server (``make_server``, 127.0.0.1, a free port) with
hand-written requests, so that every header the server sends is seen as sent:

* every ``200`` carries a strong ``ETag`` and ``Last-Modified`` (the file's
  mtime) and ``Vary: Accept-Encoding``; ``Cache-Control`` is ``public,
  max-age=31536000, immutable`` under ``assets/<hash>/`` and ``no-cache``
  everywhere else;
* ``If-None-Match`` with the current tag (also in a list, weak, or ``*``) and,
  without ``If-None-Match``, ``If-Modified-Since`` at or after the mtime are a
  ``304`` with no body; a changed file answers ``200`` with a new tag;
* ``Accept-Encoding`` selects ``X.br`` or ``X.gz`` next to ``X`` (highest
  ``q``, ``br`` first at equal ``q``; ``Content-Encoding``, its own tag)
  unless ``q=0``, the twin is older than ``X``, or it points outside the
  root / at a dotfile;
* ``scripts/build_site.py`` lays the page out in content-hashed folders,
  writes the twins the server sends, and ships only what the page loads (no
  test-only wheels, a trimmed stored stdlib that still boots: the e2e tests).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = b"export const answer = 42;\n" * 200  # 5 KB, compresses well


async def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], bytes, bytes]:
    """``(status, headers (lower-case names), body, raw head)``; reads to EOF (``Connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    out: dict[str, list[str]] = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        out.setdefault(k.strip().lower(), []).append(v.strip())
    return int(status_line.split()[1]), out, body, head


def one(headers: dict[str, list[str]], name: str) -> str:
    values = headers.get(name, [])
    assert len(values) == 1, (name, headers)
    return values[0]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><h1>page</h1>" + " " * 2000)
    (root / "app.mjs").write_bytes(APP)
    twin = root / "app.mjs.gz"
    twin.write_bytes(gzip.compress(APP, mtime=0))
    st = (root / "app.mjs").stat()
    os.utime(twin, ns=(st.st_atime_ns, st.st_mtime_ns))
    (root / "plain.css").write_text("body{}\n" * 300)  # no twin
    hashed = root / "assets" / "0123456789abcdef"
    hashed.mkdir(parents=True)
    (hashed / "lib.js").write_text("export {};\n")
    return root


async def test_200_carries_strong_etag_last_modified_and_no_cache(make_server: Any, site: Path) -> None:
    srv = await make_server(static_dir=str(site))
    for path, file in (("/", "index.html"), ("/app.mjs", "app.mjs"), ("/plain.css", "plain.css")):
        status, h, body, _ = await get(srv.port, path)
        assert status == 200 and body == (site / file).read_bytes()
        etag = one(h, "etag")
        assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/"), etag
        mtime = (site / file).stat().st_mtime
        assert email.utils.parsedate_to_datetime(one(h, "last-modified")).timestamp() == int(mtime)
        assert one(h, "cache-control") == "no-cache"  # not under assets/<hash>/: revalidated
        assert one(h, "vary") == "Accept-Encoding"
        assert "content-encoding" not in h  # the request accepted no encoding
    # Two GETs of an unchanged file: the same tag.
    _, h1, _, _ = await get(srv.port, "/app.mjs")
    _, h2, _, _ = await get(srv.port, "/app.mjs")
    assert one(h1, "etag") == one(h2, "etag")


async def test_hashed_folders_are_immutable_and_nothing_else(make_server: Any, site: Path) -> None:
    srv = await make_server(static_dir=str(site))
    status, h, body, _ = await get(srv.port, "/assets/0123456789abcdef/lib.js")
    assert status == 200 and body == b"export {};\n"
    assert one(h, "cache-control") == "public, max-age=31536000, immutable"
    _, h304, _, _ = await get(srv.port, "/assets/0123456789abcdef/lib.js", {"If-None-Match": one(h, "etag")})
    assert one(h304, "cache-control") == "public, max-age=31536000, immutable"
    # Not a hash (too short, not hex) or not under assets/: revalidated.
    for name in ("0123abc", "0123456789abcdeg"):
        (site / "assets" / name).mkdir()
        (site / "assets" / name / "x.js").write_text("1")
        assert one((await get(srv.port, f"/assets/{name}/x.js"))[1], "cache-control") == "no-cache", name
    (site / "0123456789abcdef").mkdir()
    (site / "0123456789abcdef" / "x.js").write_text("1")
    assert one((await get(srv.port, "/0123456789abcdef/x.js"))[1], "cache-control") == "no-cache"


@pytest.mark.parametrize("form", ["exact", "list", "weak", "star"])
async def test_if_none_match_is_304_without_a_body(make_server: Any, site: Path, form: str) -> None:
    srv = await make_server(static_dir=str(site))
    _, h, _, _ = await get(srv.port, "/index.html")
    etag = one(h, "etag")
    inm = {"exact": etag, "list": f'"nope", {etag}', "weak": f"W/{etag}", "star": "*"}[form]
    status, h304, body, head = await get(srv.port, "/index.html", {"If-None-Match": inm})
    assert status == 304, head
    assert body == b"" and "content-length" not in h304, head
    assert one(h304, "etag") == etag
    assert one(h304, "cache-control") == "no-cache"
    assert "last-modified" in h304
    assert one(h304, "content-security-policy")  # the security headers on a 304 too


async def test_stale_tag_or_changed_file_is_a_full_200(make_server: Any, site: Path) -> None:
    srv = await make_server(static_dir=str(site))
    _, h, _, _ = await get(srv.port, "/plain.css")
    old = one(h, "etag")
    status, _, body, _ = await get(srv.port, "/plain.css", {"If-None-Match": '"0-0"'})
    assert status == 200 and body == (site / "plain.css").read_bytes()
    (site / "plain.css").write_text("p{}\n" * 10)
    st = (site / "plain.css").stat()
    os.utime(site / "plain.css", ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    status, h2, body, _ = await get(srv.port, "/plain.css", {"If-None-Match": old})
    assert status == 200 and body == b"p{}\n" * 10
    assert one(h2, "etag") != old


async def test_if_modified_since(make_server: Any, site: Path) -> None:
    srv = await make_server(static_dir=str(site))
    mtime = (site / "plain.css").stat().st_mtime
    at = email.utils.formatdate(mtime, usegmt=True)
    before = email.utils.formatdate(mtime - 3600, usegmt=True)
    assert (await get(srv.port, "/plain.css", {"If-Modified-Since": at}))[0] == 304
    assert (await get(srv.port, "/plain.css", {"If-Modified-Since": before}))[0] == 200
    assert (await get(srv.port, "/plain.css", {"If-Modified-Since": "yesterday"}))[0] == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.1.3).
    status, _, _, _ = await get(srv.port, "/plain.css", {"If-None-Match": '"other"', "If-Modified-Since": at})
    assert status == 200


async def test_gzip_twin_by_accept_encoding(make_server: Any, site: Path) -> None:
    srv = await make_server(static_dir=str(site))
    _, identity, _, _ = await get(srv.port, "/app.mjs")
    status, h, body, _ = await get(srv.port, "/app.mjs", {"Accept-Encoding": "br, gzip, deflate"})  # no .br here
    assert status == 200
    assert one(h, "content-encoding") == "gzip"
    assert one(h, "vary") == "Accept-Encoding"
    assert one(h, "content-type").startswith("text/javascript")  # the type of app.mjs, not of .gz
    assert int(one(h, "content-length")) == len(body) < len(APP) // 10
    assert gzip.decompress(body) == APP
    assert one(h, "etag") != one(identity, "etag")  # each representation its own tag
    # The gzip tag revalidates the gzip answer.
    status, h304, _, _ = await get(srv.port, "/app.mjs", {"Accept-Encoding": "gzip", "If-None-Match": one(h, "etag")})
    assert status == 304 and one(h304, "content-encoding") == "gzip"
    for refusal in ("gzip;q=0", "identity", "deflate, br", "*;q=0", ""):
        status, h, body, _ = await get(srv.port, "/app.mjs", {"Accept-Encoding": refusal} if refusal else {})
        assert status == 200 and body == APP and "content-encoding" not in h, refusal
    # "*" allows gzip; a file without a twin is sent as it is.
    assert one((await get(srv.port, "/app.mjs", {"Accept-Encoding": "*"}))[1], "content-encoding") == "gzip"
    status, h, body, _ = await get(srv.port, "/plain.css", {"Accept-Encoding": "gzip"})
    assert status == 200 and "content-encoding" not in h and body == (site / "plain.css").read_bytes()


async def test_brotli_twin_preferred_by_q_then_br_first(make_server: Any, site: Path) -> None:
    brotli = pytest.importorskip("brotli")
    br = site / "app.mjs.br"
    br.write_bytes(brotli.compress(APP))
    st = (site / "app.mjs").stat()
    os.utime(br, ns=(st.st_atime_ns, st.st_mtime_ns))
    srv = await make_server(static_dir=str(site))
    cases = {
        "gzip, deflate, br, zstd": "br",  # what Chromium sends: equal q, br first
        "gzip, br;q=0.5": "gzip",
        "br;q=0, gzip": "gzip",
        "br": "br",
        "*": "br",
        "gzip": "gzip",
    }
    tags = set()
    for accept, coding in cases.items():
        status, h, body, _ = await get(srv.port, "/app.mjs", {"Accept-Encoding": accept})
        assert status == 200 and one(h, "content-encoding") == coding, accept
        decoded = brotli.decompress(body) if coding == "br" else gzip.decompress(body)
        assert decoded == APP and int(one(h, "content-length")) == len(body), accept
        tags.add(one(h, "etag"))
    assert len(tags) == 2  # one tag per representation
    # The br tag revalidates the br answer.
    _, h, _, _ = await get(srv.port, "/app.mjs", {"Accept-Encoding": "br"})
    status, h304, _, _ = await get(srv.port, "/app.mjs", {"Accept-Encoding": "br", "If-None-Match": one(h, "etag")})
    assert status == 304 and one(h304, "content-encoding") == "br"


async def test_stale_or_escaping_twins_are_not_sent(make_server: Any, site: Path, tmp_path: Path) -> None:
    srv = await make_server(static_dir=str(site))
    # Older than its source (the source was edited after the build): the source.
    st = (site / "app.mjs").stat()
    os.utime(site / "app.mjs.gz", ns=(st.st_atime_ns, st.st_mtime_ns - 5_000_000_000))
    status, h, body, _ = await get(srv.port, "/app.mjs", {"Accept-Encoding": "gzip"})
    assert status == 200 and body == APP and "content-encoding" not in h
    # A twin that is a symlink out of the root, or onto a dotfile, is never followed.
    outside = tmp_path / "secret.gz"
    outside.write_bytes(gzip.compress(b"OUTSIDE-SECRET"))
    (site / "plain.css.gz").symlink_to(outside)
    (site / ".hidden.gz").write_bytes(gzip.compress(b"DOT-SECRET"))
    (site / "index.html.gz").symlink_to(site / ".hidden.gz")
    for path in ("/plain.css", "/index.html"):
        status, h, body, _ = await get(srv.port, path, {"Accept-Encoding": "gzip"})
        assert status == 200 and "content-encoding" not in h and b"SECRET" not in body, path


def test_build_site_hashed_layout_twins_and_only_what_the_page_loads(tmp_path: Path) -> None:
    """build_site.py: index.html, recordings.html and site.json at the top, everything else in ``assets/<hash>/``
    folders named by their content; only the page's Pyodide files (no test-only wheels), a
    lock listing no package, a stored stdlib without the dropped parts; ``.gz``/``.br`` twins
    that decompress to their source; a rebuild is a no-op, and a changed page file renames
    the page's folder only."""
    dist = REPO_ROOT / "build" / "pyodide-dist"
    if not (dist / "pyodide-lock.json").is_file() or not (REPO_ROOT / "node_modules" / "@xterm").is_dir():
        pytest.skip("build/pyodide-dist or node_modules missing: make setup")
    brotli = pytest.importorskip("brotli")
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import build_site
    finally:
        sys.path.pop(0)
    out = tmp_path / "site"
    build_site.build(out, REPO_ROOT, dist)
    top = {p.name for p in out.iterdir()}
    assert {n for n in top if not n.endswith((".gz", ".br"))} == {"index.html", "recordings.html", "site.json", "assets"}, top
    # The recordings page (served at <base>/recordings/) names the page folder one level up.
    player = (out / "recordings.html").read_text()
    prefs = re.findall(r'(?:src|href)="([^"#:]+)"', player)
    assert prefs and all(r.startswith("../assets/") and (out / r[3:]).is_file() for r in prefs), prefs
    meta = json.loads((out / "site.json").read_text())
    runtime, app = out / meta["runtime"], out / meta["app"]
    for folder in (meta["runtime"], meta["app"], str(Path(meta["wheel"]).parent) + "/"):
        assert re.fullmatch(r"assets/[0-9a-f]{16}/", folder), folder
    shipped = sorted(p.name for p in runtime.iterdir())
    assert {p for p in shipped if not p.endswith((".gz", ".br"))} == {*build_site.PAGE_PYODIDE_FILES, "pyodide-lock.json"}
    assert json.loads((runtime / "pyodide-lock.json").read_text())["packages"] == {}
    assert not [p for p in out.rglob("*.whl") if not p.name.startswith("nimbus_websocket-")]
    with zipfile.ZipFile(runtime / "python_stdlib.zip") as z:
        infos = z.infolist()
        names = {i.filename for i in infos}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    assert not [n for n in names if n.startswith(build_site.PAGE_STDLIB_DROP_DIRS)]
    assert "asyncio/__init__.pyc" in names and "asyncio/__init__.py" not in names  # bytecode only
    # Nothing a boot loads is dropped: the dist's bytecode (written for exactly the modules a
    # Pyodide boot + the project's browser import load) is all kept.
    with zipfile.ZipFile(dist / "python_stdlib.zip") as z:
        booted = [n for n in z.namelist() if n.endswith(".pyc")]
    assert booted and set(booted) <= names
    dropped_modules = {d.rstrip("/") for d in build_site.PAGE_STDLIB_DROP_DIRS} | {
        f.removesuffix(".py") for f in build_site.PAGE_STDLIB_DROP_FILES
    }
    for src in [*(REPO_ROOT / "core").rglob("*.py"), *(REPO_ROOT / "web_runtime").rglob("*.py")]:
        imported = set(re.findall(r"^\s*(?:from|import)\s+(\w+)", src.read_text(), re.M))
        assert not imported & dropped_modules, (src, imported & dropped_modules)
    # The page's wheel: the dist wheel's entries, stored, each bytecode file moved from
    # pkg/__pycache__/mod.cpython-314.pyc to pkg/mod.pyc (where zipimport finds it), RECORD to match.
    wheel = out / meta["wheel"]
    with zipfile.ZipFile(wheel) as zw, zipfile.ZipFile(dist / wheel.name) as zd:
        assert {i.compress_type for i in zw.infolist()} == {zipfile.ZIP_STORED}
        moved = {n: re.sub(r"/__pycache__/([^/.]+)\.cpython-\d+\.pyc$", r"/\1.pyc", n) for n in zd.namelist()}
        assert [n for n in moved if n != moved[n]], "the dist wheel has no bytecode to move"
        assert zw.namelist() == [moved[n] for n in zd.namelist()]
        assert not [n for n in zw.namelist() if "__pycache__" in n]
        record = next(n for n in zd.namelist() if n.endswith(".dist-info/RECORD"))
        assert all(zw.read(moved[n]) == zd.read(n) for n in zd.namelist() if n != record)
        rows = {r.split(",")[0] for r in zw.read(record).decode().splitlines()}
        assert rows == set(zw.namelist()) | {record} or rows == set(zw.namelist()), rows ^ set(zw.namelist())
    assert (runtime / "pyodide.asm.wasm.br").is_file() and (runtime / "python_stdlib.zip.br").is_file()
    assert (wheel.parent / (wheel.name + ".br")).is_file()
    for twin in [*out.rglob("*.gz"), *out.rglob("*.br")]:
        src = twin.with_name(twin.name[:-3])
        decode = gzip.decompress if twin.suffix == ".gz" else brotli.decompress
        assert decode(twin.read_bytes()) == src.read_bytes(), twin
        assert twin.stat().st_mtime_ns == src.stat().st_mtime_ns
    # index.html names the hashed files and carries site.json; nothing refers to an old path.
    index = (out / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"#:]+)"', index)
    assert refs and all(r.startswith("assets/") and (out / r).is_file() for r in refs), refs
    assert f'<link rel="preload" as="fetch" crossorigin href="{meta["runtime"]}pyodide.asm.wasm">' in index
    assert f'<link rel="modulepreload" href="{meta["app"]}nimbus/nimbus.mjs">' in index
    assert 'name="nimbus-site"' in index
    assert (app / "app.mjs").is_file() and (out / meta["facade"]).is_file()
    # Idempotent: a second run changes nothing.
    assert build_site.build(out, REPO_ROOT, dist)[1:3] == (0, 0)
    # A changed page file: a new page folder; the runtime and wheel folders stay.
    demo = tmp_path / "root"
    for name in ("demo_site", "web_runtime", "node_modules", "build"):
        (demo / name).parent.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.copytree(REPO_ROOT / "demo_site", demo / "demo_site")
    (demo / "demo_site" / "style.css").write_text((demo / "demo_site" / "style.css").read_text() + "\n/* changed */\n")
    (demo / "node_modules").symlink_to(REPO_ROOT / "node_modules")
    (demo / "web_runtime").symlink_to(REPO_ROOT / "web_runtime")
    (demo / "build").mkdir()
    (demo / "build" / ".site-twins").symlink_to(REPO_ROOT / "build" / ".site-twins", target_is_directory=True)
    build_site.build(out, demo, dist)
    meta2 = json.loads((out / "site.json").read_text())
    assert meta2["app"] != meta["app"] and meta2["runtime"] == meta["runtime"] and meta2["wheel"] == meta["wheel"]
    assert not (out / meta["app"]).exists()  # the old page folder is gone
