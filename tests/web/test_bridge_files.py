"""The bridge's file transfers (``bridge.TransferHandle``) on the host, against the real server.

What the facade's ``conn.upload`` / ``conn.download`` rely on, without a
browser: the JSON envelopes (values, ``FileTransferError`` with the server's
reason, ``AbortError``), ``ref`` reaching the server (a relative path lands in
that shell's working directory), progress as four numbers, ``caps.files`` in
the connection's info, and a cancel -- mid-way or while the channel is still
opening -- leaving nothing on the server.  The JavaScript values are fakes
(``to_bytes()``, thenables); the connection is the CPython client's, which is
the same ``core.aio`` connection the browser runs.  The page itself is
tests/e2e/test_page_files.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.node_runtime import WebsocketsImpl, connect
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.files import FilePolicy
from nimbus_websocket.web_runtime import _ffi, bridge

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20
LOCAL = {"host": "localhost", "port": 0}
NOBODY = {"username": "", "auth": {}}


class FakeU8(bytes):
    """A ``Uint8Array`` as Python sees it."""

    def to_bytes(self) -> bytes:
        return bytes(self)


class FakePromise:
    """A JavaScript promise as Python sees it: a thenable that can be awaited."""

    def __init__(self, value: Any, delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay

    def then(self, *_: Any) -> None:  # pragma: no cover - only its presence matters
        raise AssertionError("awaited, not then()-ed")

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        await asyncio.sleep(self.delay)
        return self.value


def reader(data: bytes, chunk: int = 256 * 1024, delay: float = 0.0) -> Callable[[], Any]:
    """``read()`` of the facade: a promise of the next slice, ``None`` (undefined) at the end."""
    pos = 0

    def read() -> Any:
        nonlocal pos
        if pos >= len(data):
            return None
        block = FakeU8(data[pos : pos + chunk])
        pos += len(block)
        return FakePromise(block, delay)

    return read


def envelope(text: str) -> dict[str, Any]:
    return dict(json.loads(text))


def leftovers(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith(".nimbus-part"))


@pytest.fixture(autouse=True)
def js_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ffi, "to_js", lambda data: data)


@pytest.fixture
async def served(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path
) -> AsyncIterator[tuple[Server, bridge.ConnectionHandle, Path]]:
    root = tmp_path / "root"
    root.mkdir()
    srv = await make_server(files=FilePolicy(root=str(root)))
    conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
    # What a WebConnection has on top of the shared connection.
    conn.payload_location = lambda _data: None  # type: ignore[attr-defined]
    conn.transport = "websocket"  # type: ignore[attr-defined]
    handle = bridge.ConnectionHandle(lambda *_: None)
    handle.conn = conn  # type: ignore[assignment]
    try:
        yield srv, handle, root
    finally:
        await conn.close()


async def shell_in(handle: bridge.ConnectionHandle, cwd: Path) -> int:
    """A channel whose process works in ``cwd``; returns its id."""
    assert handle.conn is not None
    ready = asyncio.get_running_loop().create_future()
    ch = await handle.conn.open_session(
        LOCAL,
        NOBODY,
        None,
        command=f"cd '{cwd}' && echo ready && exec sleep 30",
        on={"data": lambda b: ready.done() or ready.set_result(b)},
    )
    await asyncio.wait_for(ready, 10)
    return ch.id


async def test_upload_and_download_with_ref_progress_and_caps(served: Any) -> None:
    _srv, handle, root = served
    assert json.loads(handle.info)["files"] is True
    work = root / "work"
    work.mkdir()
    ref = await shell_in(handle, work)
    data = os.urandom(3 * MiB + 123)
    calls: list[tuple[Any, ...]] = []

    up = bridge.TransferHandle(handle)
    res = envelope(
        await up.upload(
            reader(data),
            len(data),
            json.dumps({"path": "up.bin", "ref": ref}),
            lambda *a: calls.append(a),
        )
    )
    assert res == {"ok": True, "value": len(data)}
    assert (
        work / "up.bin"
    ).read_bytes() == data  # the shell's working directory: ref reached the server
    assert calls[-1][0] == len(data) and calls[-1][1] == len(data) and calls[-1][2] > 0
    assert all(len(c) == 4 for c in calls)

    got: list[bytes] = []
    sizes: list[int] = []
    down = bridge.TransferHandle(handle)
    res = envelope(
        await down.download(
            json.dumps({"path": "up.bin", "ref": ref}), got.append, None, sizes.append
        )
    )
    assert res == {"ok": True, "value": len(data)}
    assert sizes == [len(data)]
    assert hashlib.sha256(b"".join(got)).digest() == hashlib.sha256(data).digest()


async def test_refusals_are_file_transfer_errors_with_the_servers_reason(served: Any) -> None:
    _srv, handle, root = served
    res = envelope(
        await bridge.TransferHandle(handle).download(
            json.dumps({"path": "/etc/hostname", "target": LOCAL, "user": NOBODY}), lambda _b: None
        )
    )
    assert res["ok"] is False
    assert res["error"]["name"] == "FileTransferError" and res["error"]["code"] == "POLICY_DENIED"
    assert res["error"]["message"] == "/etc/hostname: outside the server's file root"
    # Neither target/user nor a ref that names a channel: the facade's mistake, said so.
    res = envelope(
        await bridge.TransferHandle(handle).download(json.dumps({"path": "x"}), lambda _b: None)
    )
    assert res["error"]["code"] == "BAD_ARGUMENT" and "'ref'" in res["error"]["message"]
    res = envelope(
        await bridge.TransferHandle(handle).upload(
            reader(b""), 0, json.dumps({"path": "x", "sizee": 1})
        )
    )
    assert res["error"]["code"] == "BAD_ARGUMENT" and "sizee" in res["error"]["message"]


async def test_cancel_mid_way_and_while_opening_leave_nothing(served: Any) -> None:
    srv, handle, root = served
    data = os.urandom(8 * MiB)
    spec = json.dumps({"path": f"{root}/big.bin", "target": LOCAL, "user": NOBODY})

    # Mid-way: a slow source, cancelled once a part file exists.
    t = bridge.TransferHandle(handle)
    run = asyncio.ensure_future(t.upload(reader(data, delay=0.01), len(data), spec))
    for _ in range(500):
        if leftovers(root):
            break
        await asyncio.sleep(0.01)
    assert leftovers(root), "the upload never started"
    t.cancel()
    res = envelope(await asyncio.wait_for(run, 10))
    assert res["error"] == {
        "name": "AbortError",
        "code": "ABORTED",
        "message": "the transfer was cancelled",
    }

    # While the channel opens: it is closed once open, and nothing is left either.
    t = bridge.TransferHandle(handle)
    run = asyncio.ensure_future(t.upload(reader(data), len(data), spec))
    assert handle.conn is not None
    for _ in range(100):  # until the open is on its way (open_ok is not here yet)
        if handle.conn.channels:
            break
        await asyncio.sleep(0)
    assert [ch.state for ch in handle.conn.channels] == ["opening"]
    t.cancel()
    res = envelope(await asyncio.wait_for(run, 10))
    assert res["error"]["code"] == "ABORTED"  # the channel still opening is closed (core.aio open_session)

    # Before it started: it never starts.
    t = bridge.TransferHandle(handle)
    t.cancel()
    res = envelope(await t.upload(reader(data), len(data), spec))
    assert res["error"]["code"] == "ABORTED"

    assert handle.conn is not None
    for _ in range(500):  # the server's opens and reaps (a backend that was still starting) end too
        if not handle.conn.channels and not srv._tasks and not leftovers(root):
            break
        await asyncio.sleep(0.01)
    assert handle.conn.channels == [] and leftovers(root) == [] and not (root / "big.bin").exists()
    assert sum(len(s.channels) for s in srv.registry.sessions()) == 0  # none left on the server


async def test_files_is_false_when_the_server_does_not_transfer_files(
    make_server: Callable[..., Awaitable[Server]],
) -> None:
    srv = await make_server(files=FilePolicy(enabled=False))
    conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
    try:
        handle = bridge.ConnectionHandle(lambda *_: None)
        assert handle.files is False  # not connected yet
        handle.conn = conn  # type: ignore[assignment]
        assert handle.files is False
        res = envelope(
            await bridge.TransferHandle(handle).download(
                json.dumps({"path": "x", "target": LOCAL, "user": NOBODY}), lambda _b: None
            )
        )
        assert res["error"]["name"] == "FileTransferError" and res["error"]["code"] == "UNSUPPORTED"
    finally:
        await conn.close()
