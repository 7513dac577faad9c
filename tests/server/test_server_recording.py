"""Session recording (issue 18): `serve --record DIR` writes asciicast v2 per channel; `nimbus-ws record` replays it.

A real shell runs vim on a PTY through the reference server; the test
resizes it, then validates the file against the format (our checker and
pyte, a terminal emulator, replaying it to the same final screen the
client saw).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pyte
import pytest
from nimbus_websocket.core import Open, OpenErr, Resize, Target, Term, User
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.record_cli import read_cast
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.recording import RecordPolicy
from nimbus_websocket.node_runtime.server.share_hub import _Screen

pytestmark = pytest.mark.timeout(60)

VIM = "exec vim -N -u NONE -i NONE --noplugin -n"


def _screen(events: list[tuple[float, str, str]], width: int, height: int) -> list[str]:
    screen = _Screen(width, height)
    stream = pyte.Stream(screen)
    for _, code, data in events:
        if code == "o":
            stream.feed(data)
        elif code == "r":
            cols, rows = (int(x) for x in data.split("x"))
            screen.resize(rows, cols)
    return [line.rstrip() for line in screen.display]


async def test_a_vim_session_with_a_resize_is_recorded_and_replays_to_its_final_screen(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path
) -> None:
    rec = tmp_path / "rec"
    srv = await make_server(pty_command=VIM, record=RecordPolicy(str(rec)))
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.open(1, term=Term(80, 24, {"TERM": "xterm-256color"}))
    await c.until_output(1, b"~")
    await c.type(1, "ihello from the recorder\x1b")
    await c.until_output(1, b"hello from the recorder")
    await c.send(Resize(1, 100, 30))
    await c.type(1, ":set ruler\r")
    await c.type(1, "osecond line after resize\x1b")
    await c.until_output(1, b"second line after resize")
    await c.type(1, ":q!\r")
    assert (await c.until_exit(1)).code == 0
    await c.close()
    await srv.stop()

    (cast,) = sorted(rec.iterdir())
    assert stat.S_IMODE(cast.stat().st_mode) == 0o600 and stat.S_IMODE(rec.stat().st_mode) == 0o700
    assert cast.name.endswith("_1_anonymous.cast") and cast.name[:8].isdigit()
    header, events_it = read_cast(iter(cast.read_text(encoding="utf-8").splitlines()))
    events = list(events_it)
    assert header["version"] == 2 and (header["width"], header["height"]) == (80, 24)
    assert header["env"]["TERM"] == "xterm-256color"
    assert ("r", "100x30") in [(code, data) for _, code, data in events]
    assert all(code in ("o", "r", "m") for _, code, _ in events)  # no "i": input is off by default
    assert events[-1][1] == "m" and events[-1][2] == "exit 0"
    lines = _screen(events[:-1], 80, 24)
    # vim's screen just before :q! -- both lines, after the resize (100 columns, 30 rows).
    assert len(lines) == 30 and any("hello from the recorder" in ln for ln in lines)
    assert any("second line after resize" in ln for ln in lines)

    # The CLI checks and replays it.
    check = await _cli("record", "check", str(cast))
    assert check.returncode == 0 and "asciicast v2, 80x24" in check.stdout, check.stderr
    played = await _cli("record", "play", "--speed", "0", str(cast))
    assert played.returncode == 0 and "hello from the recorder" in played.stdout
    assert "resized to 100x30" in played.stderr


async def test_input_is_recorded_only_when_asked_and_big_recordings_rotate(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path
) -> None:
    rec = tmp_path / "rec"
    srv = await make_server(
        pty_command="exec cat", record=RecordPolicy(str(rec), record_input=True, max_file=8192)
    )
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.open(1, term=Term(80, 24, {"TERM": "xterm-256color"}))
    for i in range(40):
        await c.type(1, f"typed line {i:03d} " + "x" * 300 + "\r")
    await c.until_output(1, b"typed line 039")
    await c.close()
    await srv.stop()
    parts = sorted(rec.iterdir(), key=lambda p: (len(p.name), p.name))
    assert len(parts) >= 3, [p.name for p in parts]
    assert parts[1].name.endswith("_anonymous.2.cast")
    typed = ""
    for p in parts:
        assert p.stat().st_size <= 8192
        header, events = read_cast(iter(p.read_text(encoding="utf-8").splitlines()))
        assert header["version"] == 2
        typed += "".join(data for _, code, data in events if code == "i")
    assert "typed line 000" in typed and "typed line 039" in typed


async def test_a_recording_directory_that_cannot_be_written_refuses_the_channel(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    srv = await make_server(pty_command="exec cat", record=RecordPolicy(str(blocker / "rec")))
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.send(Open(1, Target("localhost", 22), User("x"), Term(80, 24, {})))
    m = await c.until(lambda m: isinstance(m, OpenErr) or getattr(m, "t", "") == "open_ok")
    assert isinstance(m, OpenErr) and m.code == "BACKEND_FAILED" and "record" in m.msg
    await c.close()


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nimbus_websocket", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )


def test_the_checker_names_the_broken_line(tmp_path: Path) -> None:
    good = json.dumps({"version": 2, "width": 80, "height": 24})
    cases = {
        "line 1: header must be an object with version 2": [
            json.dumps({"version": 1, "width": 80, "height": 24})
        ],
        "line 3: time goes backwards": [good, '[1.0, "o", "a"]', '[0.5, "o", "b"]'],
        "line 2: unknown event code": [good, '[1.0, "x", "a"]'],
        "line 2: a resize is COLSxROWS": [good, '[1.0, "r", "wide"]'],
    }
    for want, lines in cases.items():
        with pytest.raises(ValueError, match=want):
            _, ev = read_cast(iter(lines))
            list(ev)
