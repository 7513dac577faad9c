"""``nimbus-ws serve --workers 2``: two processes accept on one port, a session resumes across them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cluster_util import TARGET, TOKEN, WHO_AND_CAT, echo, have_redis, owner_pid, write_files
from nimbus_websocket.node_runtime import RetryOptions, WebsocketsImpl, connect
from support.proxy import TcpProxy
from support.serve_cli import ServeProcess

pytestmark = pytest.mark.timeout(90)

AUTH = {"scheme": "bearer", "token": TOKEN}
FAST = RetryOptions(base_ms=20, max_delay_ms=200)


async def test_two_workers_share_a_port_and_resume_across_each_other(tmp_path: Path) -> None:
    if not have_redis():
        pytest.skip("redis-server is not installed")
    _, tokens = write_files(tmp_path)
    # No --redis: the command starts a private redis-server for its workers.
    serve = ServeProcess("--workers", "2", "--token-file", str(tokens), "--drain-timeout", "10")
    conns: list = []
    try:
        url = await serve.started(40)
        assert "workers: 2" in serve.lines[-1] or any("workers: 2" in line for line in serve.lines)
        port = int(url.split(":")[2].split("/")[0])
        proxy = await TcpProxy(port).start()
        pids: set[int] = set()
        ch = None
        for _ in range(30):  # the kernel spreads connections over both: bounded tries
            conn = await connect(f"ws://127.0.0.1:{proxy.port}/ws/ssh", websocket_impl=WebsocketsImpl, auth=lambda: AUTH, retry=FAST)
            conns.append(conn)
            ch = await conn.open_session(target=TARGET, user={"username": "me"}, command=WHO_AND_CAT)
            pids.add(await owner_pid(ch))
            if len(pids) == 2:
                break
        assert len(pids) == 2, "both workers accept"
        assert ch is not None
        last = conns[-1]
        for c in conns[:-1]:
            await c.close()
        relayed = False
        for n in range(20):  # each reconnect lands on either worker: one relays (bounded)
            proxy.cut()
            await echo(ch, b"line %d\n" % n)
            if any("event=relay " in line for line in serve.lines):
                relayed = True
                break
        assert relayed, "no resume landed on the other worker"
        assert last.state == "ready"
        await last.close()
        await proxy.stop()
        rc = await asyncio.wait_for(serve.stop(), 30)
        assert rc == 0, serve.lines[-20:]
    finally:
        for c in conns:
            await c.close()
        if serve.proc.poll() is None:
            serve.proc.kill()
