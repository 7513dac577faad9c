"""Issue 14, item 4: validators, caching and precompressed twins of the static files.

Against the real server (``make_server``, 127.0.0.1, a free port) with
hand-written requests, so that every header the server sends is seen as sent:

* every ``200`` carries a strong ``ETag`` and ``Last-Modified`` (the file's
  mtime), ``Cache-Control: no-cache`` (file names are not content-hashed, so
  nothing is ``immutable``) and ``Vary: Accept-Encoding``;
* ``If-None-Match`` with the current tag (also in a list, weak, or ``*``) and,
  without ``If-None-Match``, ``If-Modified-Since`` at or after the mtime are a
  ``304`` with no body; a changed file answers ``200`` with a new tag;
* ``Accept-Encoding: gzip`` selects ``X.gz`` next to ``X`` (``Content-Encoding:
  gzip``, its own tag) unless ``q=0``, the twin is older than ``X``, or it
  points outside the root / at a dotfile;
* ``scripts/build_site.py`` writes the twins the server sends, and ships only
  what the page loads (no test-only wheels in ``pyodide/``).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import os
import sys
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
        assert one(h, "cache-control") == "no-cache"  # HTML revalidated; nothing is content-hashed
        assert "immutable" not in one(h, "cache-control")
        assert one(h, "vary") == "Accept-Encoding"
        assert "content-encoding" not in h  # the request accepted no encoding
    # Two GETs of an unchanged file: the same tag.
    _, h1, _, _ = await get(srv.port, "/app.mjs")
    _, h2, _, _ = await get(srv.port, "/app.mjs")
    assert one(h1, "etag") == one(h2, "etag")


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
    status, h, body, _ = await get(srv.port, "/app.mjs", {"Accept-Encoding": "br, gzip, deflate"})
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
    for refusal in ("gzip;q=0", "identity", "deflate, br", ""):
        status, h, body, _ = await get(srv.port, "/app.mjs", {"Accept-Encoding": refusal} if refusal else {})
        assert status == 200 and body == APP and "content-encoding" not in h, refusal
    # "*" allows gzip; a file without a twin is sent as it is.
    assert one((await get(srv.port, "/app.mjs", {"Accept-Encoding": "*"}))[1], "content-encoding") == "gzip"
    status, h, body, _ = await get(srv.port, "/plain.css", {"Accept-Encoding": "gzip"})
    assert status == 200 and "content-encoding" not in h and body == (site / "plain.css").read_bytes()


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


def test_build_site_ships_what_the_page_loads_with_gzip_twins(tmp_path: Path) -> None:
    """build_site.py: only the page's Pyodide files (no test-only wheels), a lock listing only
    the project wheel, and ``.gz`` twins that decompress to their source."""
    dist = REPO_ROOT / "build" / "pyodide-dist"
    if not (dist / "pyodide-lock.json").is_file() or not (REPO_ROOT / "node_modules" / "@xterm").is_dir():
        pytest.skip("build/pyodide-dist or node_modules missing: make setup")
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import build_site
    finally:
        sys.path.pop(0)
    out = tmp_path / "site"
    build_site.build(out, REPO_ROOT, dist)
    shipped = sorted(p.name for p in (out / "pyodide").iterdir())
    lock = json.loads((out / "pyodide" / "pyodide-lock.json").read_text())
    assert list(lock["packages"]) == ["nimbus-websocket"]
    wheel = lock["packages"]["nimbus-websocket"]["file_name"]
    assert {p for p in shipped if not p.endswith(".gz")} == {*build_site.PAGE_PYODIDE_FILES, "pyodide-lock.json", wheel}
    assert not [p for p in shipped if p.split("-")[0] in ("pytest", "pluggy", "pygments", "setuptools", "micropip")]
    for twin in out.rglob("*.gz"):
        src = twin.with_name(twin.name[: -len(".gz")])
        assert gzip.decompress(twin.read_bytes()) == src.read_bytes(), twin
        assert twin.stat().st_mtime_ns == src.stat().st_mtime_ns
    assert (out / "pyodide" / "pyodide.asm.wasm.gz").is_file()
    assert not (out / "pyodide" / "python_stdlib.zip.gz").exists()  # deflated already: no gain
    # Idempotent: a second run changes nothing.
    assert build_site.build(out, REPO_ROOT, dist)[1:3] == (0, 0)
