"""Issue 18 in Chromium: a recorded session plays back on the recordings page.

The server records (``record=RecordPolicy(tmp)``, a bearer token); a user
runs vim in the terminal page, resizes the window while vim is on screen,
quits, prints a line and exits the shell.  Then ``/recordings/?token=…``
(the token leaves the address bar at once) lists that one recording, and
asciinema-player -- served by the server itself, no CDN -- plays it at 20×
to the end: the player's screen shows the shell's last lines, at the size
the terminal had at the end.  Without the token the list and the file are
401, and a path out of the record directory is a 404.
"""

from __future__ import annotations

import http.client
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import PTY_COMMAND, ServerThread

pytestmark = pytest.mark.timeout(120)

TOKEN = "rec-" + secrets.token_hex(12)
VIM = "vim -N -u NONE -i NONE --noplugin -n"


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.fixture
def record_server(site_dir: Path, tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    from nimbus_websocket.node_runtime.server.recording import RecordPolicy

    rec = tmp_path / "rec"
    st = ServerThread(
        static_dir=str(site_dir),
        pty_command=PTY_COMMAND,
        tokens=(TOKEN,),
        record=RecordPolicy(str(rec)),
    ).start()
    try:
        yield st, rec
    finally:
        st.stop()


def test_a_recorded_vim_session_plays_back_to_its_last_screen(
    record_server: tuple[ServerThread, Path], context: Any, shots: Any
) -> None:
    srv, rec = record_server
    port = srv.server.port
    term = Demo(context.new_page()).open(f"{srv.http_url}?token={TOKEN}")
    term.wait_ready()
    term.set_prompt()
    term.run(VIM, r"^~")
    term.wait_rx_stable(300)
    term.type("irecorded in vim")
    term.page.keyboard.press("Escape")
    term.wait_screen(r"^recorded in vim$")
    cols = term.js("() => window.nimbusDemo.term.cols")
    term.page.set_viewport_size({"width": 760, "height": 500})  # a resize while vim is on screen
    term.wait("(c) => window.nimbusDemo.term.cols !== c", cols, what="the terminal refitted")
    term.wait_rx_stable(300)
    final = term.js("() => [window.nimbusDemo.term.cols, window.nimbusDemo.term.rows]")
    term.type(":q!")
    term.page.keyboard.press("Enter")
    term.wait_prompt()
    term.run("echo after-vim-$((6*7))", r"^after-vim-42$")
    term.run("exit", r"exited with code 0|process exited")
    # The recorder writes the exit marker once the channel ended.
    deadline = time.monotonic() + 10
    while True:
        casts = sorted(rec.glob("*.cast"))
        if (
            casts
            and b"after-vim-42" in casts[0].read_bytes()
            and b'"exit 0"' in casts[0].read_bytes()
        ):
            break
        assert time.monotonic() < deadline, f"no finished recording in {rec}: {casts}"
        time.sleep(0.1)
    assert len(casts) == 1
    name = casts[0].name

    # Without the token: 401; out of the directory: 404.
    assert get(port, "/recordings/index.json")[0] == 401
    assert get(port, f"/recordings/files/{name}")[0] == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for bad in (
        "/recordings/files/../../etc/passwd",
        "/recordings/files/..%2f..%2fetc%2fpasswd",
        "/recordings/files/%2e%2e",
    ):
        assert get(port, bad, auth)[0] == 404, bad
    status, body = get(port, "/recordings/index.json", auth)
    assert status == 200 and [r["name"] for r in json.loads(body)["recordings"]] == [name]

    # The recordings page: the token leaves the address bar, the list shows the cast, the player plays it.
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.goto(f"{srv.http_url}recordings/?token={TOKEN}")
    page.wait_for_function("() => window.nimbusRecordings?.phase === 'list'", timeout=15_000)
    assert "token" not in page.url
    assert page.evaluate("() => window.nimbusRecordings.list.map((r) => r.name)") == [name]
    page.select_option("#speed", "20")
    page.click(f"#list tr[data-name='{name}'] button.play")
    try:
        page.wait_for_function("() => window.nimbusRecordings.ended", timeout=30_000)
        page.wait_for_function(
            "() => /^after-vim-42$/m.test(window.nimbusRecordings.screenText())", timeout=5_000
        )
    except Exception as e:
        raise AssertionError(
            f"{e}\n--- player screen:\n{page.evaluate('() => window.nimbusRecordings.screenText()')}\n--- console:\n"
            + "\n".join(console[-20:])
        ) from None
    screen = page.evaluate("() => window.nimbusRecordings.screenText()")
    assert "recorded in vim" not in screen  # vim's screen was left (the alternate buffer)
    assert "e2e$ exit" in screen
    rows = page.evaluate("() => document.querySelectorAll('#player .ap-line').length")
    widths = page.evaluate(
        "() => [...document.querySelectorAll('#player .ap-line')].map((l) => l.textContent.length)"
    )
    assert rows == final[1] and max(widths) == final[0], (rows, widths[:3], final)
    assert not [c for c in console if c.startswith(("error", "pageerror"))], console
    shots(page, "played")
