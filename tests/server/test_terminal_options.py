"""Issue 15, item 4: ``nimbus-ws serve --terminal-option KEY=VALUE`` and ``page-config.json``.

* good values are checked and typed (``fontSize=18`` -> 18, ``theme=light``,
  ``theme={JSON}`` -> colours, booleans in the usual spellings), later ones win;
* a bad key or value is one line on stderr and exit status 2 (the operator
  style of tests/server/test_cli_operator.py), before anything starts;
* the server answers ``GET <base-path>page-config.json`` with them (JSON, not
  cached, with the security headers), under a base path too; an embedder's
  invalid value is logged and left out;
* the page's checks (demo_site/prefs.mjs, run in Node) accept, type and refuse
  the same values as the server's (node_runtime/server/page_config.py).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.page_config import (
    COLOR_NAMES,
    TERMINAL_OPTIONS,
    normalize_option,
    parse_terminal_options,
)

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]

GOOD = [
    ("fontSize=18", {"fontSize": 18}),
    ("fontSize= 9 ", {"fontSize": 9}),
    ("fontFamily=Fira Code, monospace", {"fontFamily": "Fira Code, monospace"}),
    ("""fontFamily="JetBrains Mono", 'Noto Sans Mono CJK JP', monospace""",
     {"fontFamily": """"JetBrains Mono", 'Noto Sans Mono CJK JP', monospace"""}),
    ("lineHeight=1.25", {"lineHeight": 1.25}),
    ("lineHeight=2", {"lineHeight": 2}),
    ("letterSpacing=-1", {"letterSpacing": -1}),
    ("cursorStyle=bar", {"cursorStyle": "bar"}),
    ("cursorBlink=false", {"cursorBlink": False}),
    ("cursorBlink=on", {"cursorBlink": True}),
    ("scrollback=0", {"scrollback": 0}),
    ("scrollback=50000", {"scrollback": 50000}),
    ("theme=light", {"theme": "light"}),
    ('theme={"red": "#FF5555", "background": "#fff"}', {"colors": {"red": "#ff5555", "background": "#fff"}}),
    ("drawBoldTextInBrightColors=no", {"drawBoldTextInBrightColors": False}),
    ("minimumContrastRatio=4.5", {"minimumContrastRatio": 4.5}),
    ("macOptionIsMeta=yes", {"macOptionIsMeta": True}),
    ("rightClickSelectsWord=1", {"rightClickSelectsWord": True}),
]

BAD = [
    ("bogus=1", "unknown option 'bogus' (one of: "),
    ("fontSize", "'fontSize': expected KEY=VALUE, e.g. fontSize=18"),
    ("=18", "'=18': expected KEY=VALUE, e.g. fontSize=18"),
    ("fontSize=100", "fontSize: expected a whole number 6..72"),
    ("fontSize=1.5", "fontSize: expected a whole number 6..72"),
    ("fontSize=big", "fontSize: expected a whole number 6..72"),
    ("scrollback=999999", "scrollback: expected a whole number 0..50000"),
    ("lineHeight=nan", "lineHeight: expected a number 1..3"),
    ("cursorStyle=beam", "cursorStyle: expected one of block, underline, bar"),
    ("cursorBlink=maybe", "cursorBlink: expected true or false"),
    ("fontFamily=" + "x" * 201, "fontFamily: expected text of 1..200 characters"),
    ("fontFamily=a\x1bb", "fontFamily: only letters, digits, spaces and"),
    ("fontFamily=x;}body{display:none", "fontFamily: only letters, digits, spaces and"),
    ("fontFamily=url(//x)", "fontFamily: only letters, digits, spaces and"),
    ("theme=solarized", "theme: expected dark, light or a JSON object of colours"),
    ('theme={"red": "blue"}', "theme: colour red must be #rgb or #rrggbb"),
    ('theme={"pink": "#fff"}', "theme: unknown colour 'pink'"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_good_values_are_typed(text: str, expected: dict[str, Any]) -> None:
    assert parse_terminal_options([text]) == expected


def test_later_options_win_and_colours_merge() -> None:
    got = parse_terminal_options(
        ["fontSize=12", "fontSize=20", 'theme={"red": "#111111"}', "theme=light", 'theme={"blue": "#222222"}']
    )
    assert got == {"fontSize": 20, "theme": "light", "colors": {"red": "#111111", "blue": "#222222"}}


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_values_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_terminal_options([text])
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_option_is_one_line_and_status_2() -> None:
    for text, message in [("bogus=1", "unknown option 'bogus'"), ("fontSize=100", "fontSize: expected a whole number 6..72")]:
        r = subprocess.run(
            [sys.executable, "-m", "nimbus_websocket", "serve", "--port", "0", "--terminal-option", text],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert "Traceback" not in r.stderr + r.stdout, r.stderr
        assert r.returncode == 2, (r.returncode, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"nimbus-ws serve: --terminal-option {message}"), r.stderr


async def test_cli_options_reach_page_config(serve_cli: Callable[..., Any]) -> None:
    proc = serve_cli("--terminal-option", "fontSize=18", "--terminal-option", "theme=light", "--base-path", "/term/")
    url = await proc.started()
    port = int(url.split(":")[2].split("/")[0])
    status, headers, body = await get(port, "/term/page-config.json")
    assert status == 200, body
    assert json.loads(body) == {"terminal": {"fontSize": 18, "theme": "light"}}
    status, _, _ = await get(port, "/page-config.json")  # outside the base path
    assert status == 404


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET: ``(status, headers (lower-case names), body)``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


async def test_page_config_json(make_server: Callable[..., Awaitable[Server]], caplog: pytest.LogCaptureFixture) -> None:
    srv = await make_server(
        terminal_options={"fontSize": 17, "colors": {"red": "#EE1111"}, "cursorStyle": "wavy"},
    )
    status, headers, body = await get(srv.port, "/page-config.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    # The embedder's invalid cursorStyle is left out, and logged.
    assert json.loads(body) == {"terminal": {"fontSize": 17, "colors": {"red": "#ee1111"}}}
    assert any("cursorStyle: expected one of" in r.getMessage() for r in caplog.records)
    # Without options: an empty object (the page keeps its defaults).
    plain = await make_server()
    status, _, body = await get(plain.port, "/page-config.json")
    assert (status, json.loads(body)) == (200, {"terminal": {}})


# ----------------------------------------------------- one table, two checkers

NODE_CHECK = """
const prefs = await import(process.argv[1]);
const out = [];
for (const [key, value] of JSON.parse(process.argv[2])) {
  try { out.push({ok: prefs.normalize(key, value)}); } catch (e) { out.push({error: e.message}); }
}
console.log(JSON.stringify({out, keys: Object.keys(prefs.SPEC), colors: prefs.COLOR_NAMES}));
"""


def test_page_checks_the_same_keys_and_values_as_the_server() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    cases = [text.partition("=")[::2] for text, _ in GOOD + BAD if "=" in text and not text.startswith("=")]
    r = subprocess.run(
        [node, "--input-type=module", "-e", NODE_CHECK, str(REPO / "demo_site" / "prefs.mjs"), json.dumps(cases)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    page_only = {"copyOnSelect", "osc52", "keybar"}
    assert set(page["keys"]) - page_only == set(TERMINAL_OPTIONS), page["keys"]
    assert tuple(page["colors"]) == COLOR_NAMES
    for (key, value), got in zip(cases, page["out"], strict=True):
        try:
            server: Any = {"ok": list(normalize_option(key, value))}
        except ValueError as exc:
            server = {"error": str(exc)}
        if key not in TERMINAL_OPTIONS and "error" in server:  # unknown key: worded per side
            assert "error" in got, (key, value, got)
            continue
        assert ("ok" in got) == ("ok" in server), (key, value, got, server)
        if "ok" in got:
            assert got["ok"] == server["ok"], (key, value, got, server)
