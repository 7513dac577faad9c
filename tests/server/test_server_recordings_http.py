"""Recordings over HTTP (issue 18; node_runtime/server/recordings_http.py), against the real server.

Plain HTTP (``http.client``), no browser:

* ``GET /recordings/index.json`` lists only the recorder's regular ``*.cast``
  files directly in the record directory (no dotfile, symlink, folder or other
  name), newest first, with size and mtime; ``/recordings/files/NAME`` streams
  one byte for byte (a few MiB, ``no-store``);
* both need the operator's credentials exactly like ``/metrics``: 401 without
  or with a wrong token, 403 for a foreign Origin, 421 for a foreign Host; a
  server without tokens lets its own user in (the anonymous rule);
* a traversal, an escaped name, a symlink or a folder is a 404;
* ``/recordings`` redirects to ``/recordings/``, which is the site's player
  page; under ``--base-path`` everything moves with it;
* without ``--record`` every one of these paths is a 404.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.recording import RecordPolicy
from nimbus_websocket.node_runtime.server.recordings_http import NAME, list_recordings

pytestmark = pytest.mark.timeout(60)

TOKEN = "rec-" + secrets.token_hex(12)
OLD = "20261204T101010Z_3f2a9c0d_1_alice.cast"
NEW = "20261204T111111Z_77aa00bb_2_bob.2.cast"
PAGE = b"<!doctype html><title>recordings player</title>"


def _get_sync(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


async def get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """``GET path`` with ``headers`` (``_`` in a name becomes ``-``): ``(status, headers, body)``."""
    return await asyncio.to_thread(
        _get_sync, port, path, {k.replace("_", "-"): v for k, v in headers.items()}
    )


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    """A record directory with two casts and everything the list must leave out."""
    rec = tmp_path / "rec"
    rec.mkdir(mode=0o700)
    (rec / OLD).write_text('{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "old"]\n')
    big = bytearray(b'{"version": 2, "width": 80, "height": 24}\n')
    line = b'[0.5, "o", "' + b"x" * 2000 + b'"]\n'
    while len(big) < 3 * 1024 * 1024:
        big += line
    (rec / NEW).write_bytes(bytes(big))
    os.utime(rec / OLD, (1_700_000_000, 1_700_000_000))
    os.utime(rec / NEW, (1_800_000_000, 1_800_000_000))
    (rec / ".hidden.cast").write_text("dot\n")
    (rec / "notes.txt").write_text("not a cast\n")
    (rec / "folder.cast").mkdir()
    (rec / "folder.cast" / OLD).write_text("nested\n")
    secret = tmp_path / "secret.cast"
    secret.write_text("SECRET outside the record directory\n")
    (rec / "link.cast").symlink_to(secret)
    return rec


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>terminal</title>")
    (site / "recordings.html").write_bytes(PAGE)
    return site


def test_the_list_holds_only_the_recorders_regular_casts(record_dir: Path) -> None:
    got = list_recordings(record_dir)
    assert [r["name"] for r in got] == [NEW, OLD]  # newest first
    assert got[1] == {
        "name": OLD,
        "size": (record_dir / OLD).stat().st_size,
        "mtime": 1_700_000_000,
    }
    assert list_recordings(record_dir, limit=1) == got[:1]
    assert list_recordings(record_dir / "missing") == []
    for bad in (
        "../x.cast",
        ".hidden.cast",
        "a/b.cast",
        "x.cast.txt",
        "%2e%2e.cast",
        "a b.cast",
        ".cast",
        "x\x00.cast",
    ):
        assert not NAME.fullmatch(bad), bad


async def test_list_and_files_need_the_operators_token(
    make_server: Any, record_dir: Path, site: Path
) -> None:
    srv: Server = await make_server(
        tokens=(TOKEN,), record=RecordPolicy(str(record_dir)), static_dir=str(site)
    )
    for path in ("/recordings/index.json", f"/recordings/files/{OLD}"):
        for what, headers in {
            "none": {},
            "wrong": bearer(TOKEN[:-1] + "x"),
            "basic": {"Authorization": f"Basic {TOKEN}"},
        }.items():
            status, h, body = await get(srv.port, path, **headers)
            assert status == 401 and h["www-authenticate"].startswith("Bearer"), (path, what)
            assert b"old" not in body and OLD.encode() not in body, (path, what)
        status, _, _ = await get(srv.port, f"{path}?token={TOKEN}")
        assert status == 401, path  # never from the URL
        # The /metrics rule: a foreign Origin (even with the token) and a DNS-rebinding Host.
        status, _, _ = await get(srv.port, path, Origin="http://evil.example", **bearer())
        assert status == 403, path
        status, _, _ = await get(srv.port, path, Host=f"evil.example:{srv.port}", **bearer())
        assert status == 421, path
    status, h, body = await get(srv.port, "/recordings/index.json", **bearer())
    assert (
        status == 200
        and h["content-type"] == "application/json"
        and h["cache-control"] == "no-store"
    )
    listed = json.loads(body)["recordings"]
    assert [r["name"] for r in listed] == [NEW, OLD]
    assert (
        listed[0]["size"] == (record_dir / NEW).stat().st_size
        and listed[0]["mtime"] == 1_800_000_000
    )
    # A file streams byte for byte (3 MiB: several sendfile chunks).
    status, h, body = await get(srv.port, f"/recordings/files/{NEW}", **bearer())
    assert status == 200 and body == (record_dir / NEW).read_bytes()
    assert h["content-type"] == "application/x-asciicast" and h["cache-control"] == "no-store"
    assert h["content-length"] == str(len(body)) and "content-security-policy" in h


async def test_traversal_symlinks_folders_and_odd_names_are_not_found(
    make_server: Any, record_dir: Path, site: Path
) -> None:
    srv: Server = await make_server(
        tokens=(TOKEN,), record=RecordPolicy(str(record_dir)), static_dir=str(site)
    )
    for path in (
        "/recordings/files/../secret.cast",
        "/recordings/files/..%2fsecret.cast",
        "/recordings/files/%2e%2e/secret.cast",
        "/recordings/files/link.cast",  # a symlink out of the directory
        "/recordings/files/folder.cast",
        f"/recordings/files/folder.cast/{OLD}",
        "/recordings/files/.hidden.cast",
        "/recordings/files/notes.txt",
        "/recordings/files/missing.cast",
        "/recordings/files/",
        "/recordings/../metrics",
        "/recordings/other",
    ):
        status, _, body = await get(srv.port, path, **bearer())
        assert status == 404, path
        assert b"SECRET" not in body and b"nested" not in body, path


async def test_the_player_page_redirect_and_base_path(
    make_server: Any, record_dir: Path, site: Path
) -> None:
    srv: Server = await make_server(
        tokens=(TOKEN,), record=RecordPolicy(str(record_dir)), static_dir=str(site)
    )
    status, h, _ = await get(srv.port, "/recordings")
    assert status == 301 and h["location"] == "/recordings/"
    status, h, body = await get(srv.port, "/recordings/")  # the page holds nothing: no token needed
    assert status == 200 and body == PAGE and h["content-type"].startswith("text/html")
    under: Server = await make_server(
        tokens=(TOKEN,),
        record=RecordPolicy(str(record_dir)),
        static_dir=str(site),
        base_path="/term/",
    )
    status, h, _ = await get(under.port, "/term/recordings")
    assert status == 301 and h["location"] == "/term/recordings/"
    status, _, body = await get(under.port, "/term/recordings/")
    assert status == 200 and body == PAGE
    status, _, body = await get(under.port, "/term/recordings/index.json", **bearer())
    assert status == 200 and len(json.loads(body)["recordings"]) == 2
    status, _, _ = await get(under.port, "/recordings/index.json", **bearer())
    assert status == 404
    bare: Server = await make_server(
        tokens=(TOKEN,), record=RecordPolicy(str(record_dir))
    )  # no site
    status, _, _ = await get(bare.port, "/recordings/")
    assert status == 404
    status, _, _ = await get(bare.port, "/recordings/index.json", **bearer())
    assert status == 200


async def test_without_record_every_path_is_not_found(make_server: Any, site: Path) -> None:
    srv: Server = await make_server(tokens=(TOKEN,), static_dir=str(site))
    for path in (
        "/recordings",
        "/recordings/",
        "/recordings/index.json",
        f"/recordings/files/{OLD}",
    ):
        status, _, body = await get(srv.port, path, **bearer())
        assert status == 404 and body != PAGE, path


async def test_without_tokens_the_servers_own_user_gets_the_list(
    make_server: Any, record_dir: Path
) -> None:
    srv: Server = await make_server(record=RecordPolicy(str(record_dir)))
    status, _, body = await get(
        srv.port, "/recordings/index.json"
    )  # this test runs as the server's user
    assert status == 200 and [r["name"] for r in json.loads(body)["recordings"]] == [NEW, OLD]
    status, _, _ = await get(srv.port, "/recordings/index.json", X_Forwarded_For="203.0.113.9")
    assert status == 401  # through a proxy: never anonymous
