"""Failures of a cluster: an instance killed (-9), Redis restarted, an instance drained (SIGTERM)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from cluster_util import TARGET, TOKEN, WHO_AND_CAT, Cluster, echo, owner_pid, wait_for
from nimbus_websocket.core import CloseError
from nimbus_websocket.node_runtime import RetryOptions, WebsocketsImpl, connect
from support.proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)

AUTH = {"scheme": "bearer", "token": TOKEN}
FAST = RetryOptions(base_ms=20, max_delay_ms=200)


async def _open(url: str) -> tuple[object, object, int]:
    conn = await connect(url, websocket_impl=WebsocketsImpl, auth=lambda: AUTH, retry=FAST)
    ch = await conn.open_session(target=TARGET, user={"username": "me"}, command=WHO_AND_CAT)
    return conn, ch, await owner_pid(ch)


async def test_kill_9_owner_answers_4011_promptly_and_spares_other_sessions(cluster: Cluster) -> None:
    c1, ch1, pid1 = await _open(cluster.url)
    c2, ch2, pid2 = await _open(cluster.url)
    conns: list = [c1, c2]
    try:
        assert pid1 != pid2  # round robin: two owners
        victim = cluster.by_pid(pid1)
        t0 = time.monotonic()
        await asyncio.to_thread(victim.kill)
        # c1's socket drops with its owner; its resume lands on a live instance, which
        # cannot reach the owner: 4011 (terminal), within a few seconds, no hang.
        await wait_for(lambda: c1.state == "closed", 8, "the dead owner's session to be refused")
        elapsed = time.monotonic() - t0
        assert isinstance(c1.error, CloseError) and c1.error.ws_code == 4011, c1.error
        assert elapsed < 5, elapsed
        await echo(ch2, b"still here\n")  # the other owner's session is untouched
        assert c2.state == "ready"
    finally:
        for c in conns:
            await c.close()


async def test_redis_restart_loses_no_live_session(cluster: Cluster) -> None:
    proxy = await TcpProxy(cluster.nginx.port).start()
    conn, ch, pid = await _open(f"ws://127.0.0.1:{proxy.port}/ws/ssh")
    try:
        await wait_for(lambda: cluster.redis.session_keys() == 1, 5, "the session in the directory")
        await asyncio.to_thread(cluster.redis.stop)
        await asyncio.to_thread(cluster.redis.start)  # empty: nothing was saved
        assert cluster.redis.session_keys() == 0
        # The owner writes what it owns again at its next heartbeat.
        await wait_for(lambda: cluster.redis.session_keys() == 1, 5, "the owner to re-register")
        before = cluster.relayed()
        for n in range(3):  # round robin over three: at least two land elsewhere
            proxy.cut()
            await echo(ch, b"after restart %d\n" % n)
        assert cluster.relayed() >= before + 2
        assert conn.state == "ready"
    finally:
        await conn.close()
        await proxy.stop()


async def test_sigterm_drains_then_exits(cluster: Cluster) -> None:
    a = cluster.instances[0]
    proxy = await TcpProxy(a.port).start()
    conn, ch, pid = await _open(f"ws://127.0.0.1:{proxy.port}/ws/ssh")
    assert pid == a.pid
    a.serve.proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: any("draining" in line for line in a.serve.lines), 10, "the drain to start")
    with pytest.raises(CloseError) as refused:  # no new sessions here
        await connect(a.url, websocket_impl=WebsocketsImpl, auth=lambda: AUTH, retry=FAST)
    assert refused.value.ws_code == 4010
    await echo(ch, b"draining but working\n")  # the existing session keeps working...
    proxy.cut()  # ... and still resumes
    await echo(ch, b"resumed while draining\n")
    assert a.serve.proc.poll() is None
    await conn.close()  # the last session ends: the instance exits
    await wait_for(lambda: a.serve.proc.poll() is not None, 10, "the drained instance to exit")
    assert a.serve.proc.returncode == 0
    assert any("why=empty" in line for line in a.serve.lines)
    await proxy.stop()
