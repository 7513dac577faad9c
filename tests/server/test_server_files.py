"""File channels (issue 19) against the real server: `nimbus-ws cp` on both backends, cuts, cancel, policy, full disk.

The SSH rows run SFTP on the private OpenSSH sshd (tests/support/sshd.py);
the PTY rows the server user's filesystem.  Every transfer is checked
byte-exact by SHA-256, and every failure for what it leaves behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import logging
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.core.aio import FileTransferError, download, upload
from nimbus_websocket.node_runtime import RetryOptions, WebsocketsImpl, connect
from nimbus_websocket.node_runtime.server import Server, SshOptions
from nimbus_websocket.node_runtime.server.files import FilePolicy

try:  # tests/ as a rootless directory (default) or as a package
    from support.proxy import TcpProxy, wait_until
    from support.sshd import TestSshd
except ImportError:  # pragma: no cover
    from tests.support.proxy import TcpProxy, wait_until
    from tests.support.sshd import TestSshd

pytestmark = pytest.mark.timeout(120)

LOCAL = {"host": "localhost", "port": 22}
ANY_USER = {"username": "files"}
MiB = 1 << 20


def _random_file(path: Path, size: int, seed: int) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; return their SHA-256."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(left, 4 * MiB))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


async def _cp(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``nimbus-ws cp ARGS``; return (status, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nimbus_websocket",
        "cp",
        "-q",
        *args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, err.decode()


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".nimbus-part"))


# ------------------------------------------------------------------ both backends through the CLI


async def test_cli_100mb_up_and_down_on_the_pty_backend(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path
) -> None:
    srv = await make_server()
    src = tmp_path / "src.bin"
    digest = _random_file(src, 100 * MiB, 1)
    os.chmod(src, 0o640)
    remote = tmp_path / "remote"
    remote.mkdir()
    rc, err = await _cp(str(src), f"{srv.url}:{remote}/")
    assert rc == 0, err
    assert _sha(remote / "src.bin") == digest
    assert (remote / "src.bin").stat().st_mode & 0o777 == 0o640  # the local file's mode, as scp
    back = tmp_path / "back.bin"
    rc, err = await _cp(f"{srv.url}:{remote}/src.bin", str(back))
    assert rc == 0, err
    assert _sha(back) == digest
    assert _leftovers(remote) == [] and _leftovers(tmp_path) == []


@pytest.mark.sshd
async def test_cli_100mb_up_and_down_over_sftp(
    make_server: Callable[..., Awaitable[Server]], sshd: TestSshd, tmp_path: Path
) -> None:
    srv = await make_server(
        backend="ssh",
        ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)),
        allow_targets=(f"{sshd.host}:{sshd.port}",),
    )
    key = tmp_path / "id"
    key.write_text(sshd.client_key_text)
    key.chmod(0o600)
    who = ["--target", f"{sshd.host}:{sshd.port}", "--user", sshd.username, "--identity", str(key)]
    src = tmp_path / "src.bin"
    digest = _random_file(src, 100 * MiB, 2)
    remote = tmp_path / "sftp"
    remote.mkdir()
    os.chmod(tmp_path, 0o755)
    shutil_chown(remote, sshd.username)
    rc, err = await _cp(str(src), f"{srv.url}:{remote}/up.bin", "--mode", "600", *who)
    assert rc == 0, err
    assert _sha(remote / "up.bin") == digest
    assert (remote / "up.bin").stat().st_mode & 0o777 == 0o600
    back = tmp_path / "back.bin"
    rc, err = await _cp(f"{srv.url}:{remote}/up.bin", str(back), *who)
    assert rc == 0, err
    assert _sha(back) == digest
    # A refusal over SFTP is told in plain words, with nothing left behind.
    rc, err = await _cp(f"{srv.url}:{remote}/missing.bin", str(tmp_path / "m.bin"), *who)
    assert rc == 1 and "missing.bin" in err and "FILE_FAILED" in err, err
    assert (
        not (tmp_path / "m.bin").exists()
        and _leftovers(tmp_path) == []
        and _leftovers(remote) == []
    )


def shutil_chown(path: Path, user: str) -> None:
    """Let the sshd's test user write into ``path`` (it may be another user than the test's)."""
    import pwd

    with contextlib.suppress(KeyError, PermissionError):
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


# ------------------------------------------------------------------ network drops, cancel


@pytest.mark.parametrize(
    "size",
    [
        48 * MiB,
        pytest.param(1 << 30, marks=[pytest.mark.stress, pytest.mark.timeout(600)], id="1GiB"),
    ],
    ids=lambda n: f"{n // MiB}MiB",
)
async def test_transfers_survive_five_cuts_each_way_byte_exact(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path, size: int
) -> None:
    srv = await make_server()
    proxy = await TcpProxy(srv.port).start()
    timeout = max(60.0, size / (4 * MiB))  # at worst 4 MiB/s per direction
    src = tmp_path / "src.bin"
    digest = _random_file(src, size, 3)
    states: list[str] = []
    conn = await connect(
        f"ws://127.0.0.1:{proxy.port}/ws/ssh",
        websocket_impl=WebsocketsImpl,
        retry=RetryOptions(base_ms=20, max_delay_ms=200),
        on={"statechange": lambda e: states.append(e.new)},
    )
    try:
        for direction in ("up", "down"):
            cuts = [size * (i + 1) // 7 for i in range(5)]

            def progress(p: Any, cuts: list[int] = cuts) -> None:
                if cuts and p.done >= cuts[0] and conn.state == "ready" and proxy.connections:
                    proxy.cut()
                    cuts.pop(0)

            if direction == "up":
                with open(src, "rb") as f:
                    await asyncio.wait_for(
                        upload(
                            conn,
                            LOCAL,
                            ANY_USER,
                            f,
                            size,
                            str(tmp_path / "up.bin"),
                            progress=progress,
                        ),
                        timeout,
                    )
                assert _sha(tmp_path / "up.bin") == digest
            else:
                h = hashlib.sha256()
                got = await asyncio.wait_for(
                    download(conn, LOCAL, ANY_USER, str(src), h.update, progress=progress), timeout
                )
                assert got == size and h.hexdigest() == digest
            assert cuts == [], f"{direction}: cuts left {cuts}"
        assert states.count("reconnecting") == 10 and states[-1] == "ready"
        assert _leftovers(tmp_path) == []
    finally:
        await conn.close()
        await proxy.stop()


async def test_a_cancelled_upload_leaves_nothing_and_the_session_goes_on(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path
) -> None:
    srv = await make_server()
    conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
    try:
        sent = 0

        async def slow() -> AsyncIterator[bytes]:
            nonlocal sent
            for _ in range(1000):  # never finishes on its own within the test
                sent += 64 * 1024
                yield b"x" * (64 * 1024)
                await asyncio.sleep(0)

        task = asyncio.create_task(
            upload(conn, LOCAL, ANY_USER, slow(), 1 << 30, str(tmp_path / "big.bin"))
        )
        assert await wait_until(lambda: sent > 4 * MiB and _leftovers(tmp_path), 20), (
            "the upload never started"
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_until(lambda: not _leftovers(tmp_path), 10), _leftovers(tmp_path)
        assert not (tmp_path / "big.bin").exists()
        # The connection is fine: the next transfer works.
        await upload(conn, LOCAL, ANY_USER, [b"after"], 5, str(tmp_path / "after.txt"))
        assert (tmp_path / "after.txt").read_bytes() == b"after"
    finally:
        await conn.close()


async def test_a_short_source_is_refused_and_every_transfer_is_logged_and_counted(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await make_server(metrics=True)
    conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
    caplog.set_level(logging.INFO, "nimbus_websocket.server.files")
    try:
        with pytest.raises(ValueError, match="ended after 3 of the announced 10"):
            await upload(conn, LOCAL, ANY_USER, [b"abc"], 10, str(tmp_path / "short.txt"))
        assert await wait_until(lambda: not _leftovers(tmp_path), 10)
        assert not (tmp_path / "short.txt").exists()
        await upload(conn, LOCAL, ANY_USER, [b"secret-content"], 14, str(tmp_path / "ok.txt"))
        got = bytearray()
        await download(conn, LOCAL, ANY_USER, str(tmp_path / "ok.txt"), got.extend)
        assert bytes(got) == b"secret-content"
    finally:
        await conn.close()
    events = [(r.event, r.op, r.path) for r in caplog.records if hasattr(r, "op")]  # type: ignore[attr-defined]
    put, get = str(tmp_path / "ok.txt"), str(tmp_path / "ok.txt")
    assert ("file_done", "put", put) in events and ("file_done", "get", get) in events, events
    assert any(e[0] in ("file_cancelled", "file_failed") and e[1] == "put" for e in events), events
    assert not any(
        "secret-content" in r.getMessage() or "secret-content" in str(r.__dict__)
        for r in caplog.records
    )
    body = await asyncio.to_thread(_metrics, srv.port)
    assert 'nimbus_file_transfers_total{op="put",result="done"} 1.0' in body, body
    assert 'nimbus_file_transfers_total{op="get",result="done"} 1.0' in body
    assert 'nimbus_file_bytes_total{op="get"} 14.0' in body


def _metrics(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


# ------------------------------------------------------------------ policy and limits


async def test_paths_outside_the_root_are_refused(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("not yours")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "ok.txt").write_text("yours")
    srv = await make_server(files=FilePolicy(root=str(root), max_size=1000))
    conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
    try:
        got = bytearray()
        assert (
            await download(conn, LOCAL, ANY_USER, "ok.txt", got.extend) == 5
        )  # relative: from the root
        assert bytes(got) == b"yours"
        for path in (str(tmp_path / "secret.txt"), "../secret.txt", "escape", "/etc/passwd"):
            with pytest.raises(FileTransferError) as ei:
                await download(conn, LOCAL, ANY_USER, path, got.extend)
            assert ei.value.code == "POLICY_DENIED" and "outside" in ei.value.message, path
        with pytest.raises(FileTransferError) as ei:
            await upload(conn, LOCAL, ANY_USER, [b"x"], 1, "../planted.txt")
        assert ei.value.code == "POLICY_DENIED"
        assert not (tmp_path / "planted.txt").exists()
        with pytest.raises(FileTransferError) as ei:
            await upload(conn, LOCAL, ANY_USER, [b"x" * 1001], 1001, "big.txt")
        assert ei.value.code == "FILE_FAILED" and "limit" in ei.value.message
        assert bytes(got) == b"yours"
    finally:
        await conn.close()


async def test_files_are_off_where_the_operator_fixed_the_command(
    make_server: Callable[..., Awaitable[Server]], tmp_path: Path
) -> None:
    for kw in ({"pty_command": "exec cat"}, {"files": FilePolicy(enabled=False)}):
        srv = await make_server(**kw)
        conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
        try:
            with pytest.raises(FileTransferError) as ei:
                await upload(conn, LOCAL, ANY_USER, [b"x"], 1, str(tmp_path / "no.txt"))
            assert ei.value.code == "UNSUPPORTED", kw
            assert not (tmp_path / "no.txt").exists()
        finally:
            await conn.close()


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return r.returncode == 0


@pytest.fixture
async def small_disk(tmp_path: Path) -> AsyncIterator[Path]:
    """A 1 MiB tmpfs (needs root: skipped otherwise), unmounted after the test."""
    disk = tmp_path / "small"
    disk.mkdir()
    if not await asyncio.to_thread(_mount_tmpfs, disk, "1m"):
        pytest.skip("mounting a 1 MiB tmpfs needs root")
    try:
        yield disk
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(disk)], capture_output=True)


async def test_a_full_disk_is_told_clearly_and_nothing_is_left(
    make_server: Callable[..., Awaitable[Server]], small_disk: Path
) -> None:
    disk = small_disk
    srv = await make_server(files=FilePolicy(root=str(disk)))
    conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
    try:
        with pytest.raises(FileTransferError) as ei:
            await upload(conn, LOCAL, ANY_USER, [os.urandom(4 * MiB)], 4 * MiB, "big.bin")
        assert "no space left" in ei.value.message, ei.value.message
        assert os.listdir(disk) == []
        # What fits still works.
        await upload(conn, LOCAL, ANY_USER, [b"small"], 5, "small.txt")
        assert (disk / "small.txt").read_bytes() == b"small"
    finally:
        await conn.close()


async def test_a_disk_that_fills_during_an_upload_fails_that_upload_only(
    make_server: Callable[..., Awaitable[Server]], small_disk: Path
) -> None:
    """Both uploads fit the free space when they open; together they do not.

    The first sends 256 KiB, waits until the second has opened (and so passed the
    free-space check), then sends 512 KiB more: one of them meets ENOSPC from a
    write, is told so, and leaves nothing; the other arrives whole.
    """
    disk = small_disk
    srv = await make_server(files=FilePolicy(root=str(disk)))
    conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
    b_open = asyncio.Event()
    a_data, b_data = os.urandom(768 * 1024), os.urandom(600 * 1024)

    async def source_a() -> AsyncIterator[bytes]:
        yield a_data[: 256 * 1024]
        await asyncio.wait_for(b_open.wait(), 30)
        yield a_data[256 * 1024 :]

    async def source_b() -> AsyncIterator[bytes]:
        b_open.set()  # iterated only after open_ok: its space check passed
        yield b_data

    try:
        first = asyncio.create_task(upload(conn, LOCAL, ANY_USER, source_a(), len(a_data), "a.bin"))
        assert await wait_until(lambda: any(n.endswith(".nimbus-part") for n in os.listdir(disk)), 10)
        second = asyncio.create_task(upload(conn, LOCAL, ANY_USER, source_b(), len(b_data), "b.bin"))
        results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 60)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1, results
        assert isinstance(failed[0], FileTransferError) and "no space left" in failed[0].message
        survivor, data = ("b.bin", b_data) if results[0] is failed[0] else ("a.bin", a_data)
        assert os.listdir(disk) == [survivor]
        assert (disk / survivor).read_bytes() == data
    finally:
        await conn.close()
