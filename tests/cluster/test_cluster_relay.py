"""A session resumes on whichever instance the client lands on (relay to the owner).

Real parts: redis-server, three ``nimbus-ws serve --redis`` processes, nginx
round robin in front, a cutting TCP proxy in front of nginx.
"""

from __future__ import annotations

import asyncio

import pytest
from cluster_util import TARGET, TOKEN, WHO_AND_CAT, Cluster, echo, owner_pid, wait_for
from nimbus_websocket.node_runtime import RetryOptions, WebsocketsImpl, connect
from support.proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)

AUTH = {"scheme": "bearer", "token": TOKEN}


async def test_seq_exactly_once_across_twenty_cuts_landing_on_other_instances(
    cluster: Cluster,
) -> None:
    count = 1_000_000
    expected = b"".join(b"%d\n" % i for i in range(1, count + 1))
    total = len(expected)
    cut_points = [total * (k + 1) // 25 for k in range(20)]
    proxy = await TcpProxy(cluster.nginx.port).start()
    states: list[str] = []
    conn = await connect(
        f"ws://127.0.0.1:{proxy.port}/ws/ssh",
        websocket_impl=WebsocketsImpl,
        auth=lambda: AUTH,
        retry=RetryOptions(base_ms=20, max_delay_ms=200),
        on={"statechange": lambda e: states.append(e.new)},
    )
    try:
        ch = await conn.open_session(
            target=TARGET, user={"username": "me"}, command=f"seq 1 {count}"
        )
        got = bytearray()
        cuts = 0
        async with asyncio.timeout(60):
            async for chunk in ch:
                got += chunk
                if cuts < len(cut_points) and len(got) >= cut_points[cuts]:
                    # Reconnected (the queued output may be read while reconnecting): cut again.
                    await wait_for(
                        lambda: conn.state == "ready" and proxy.connections == 1, 10, "the resume"
                    )
                    assert proxy.cut() == 1
                    cuts += 1
                    await wait_for(lambda n=cuts: states.count("reconnecting") == n, 10, "the drop")
                if len(got) >= total:
                    break
        assert cuts == 20
        assert bytes(got) == expected  # complete, in order, no duplicate
        assert states.count("reconnecting") == 20 and states[-1] == "ready"
        relayed = cluster.relayed()
        assert relayed >= 5, f"only {relayed} of 20 resumes were relayed"
        total_bytes = sum(
            i.metric("nimbus_cluster_relay_bytes_total", 'direction="to_client"')
            for i in cluster.instances
        )
        assert total_bytes > 0
        owned = [i.metric("nimbus_cluster_sessions_owned") for i in cluster.instances]
        assert sorted(owned) == [0, 0, 1], owned
    finally:
        await conn.close()
        await proxy.stop()


async def test_a_session_resumes_on_each_instance_directly(cluster: Cluster) -> None:
    """Resume straight at every instance in turn (no balancer): two relay, one is the owner."""
    a = cluster.instances[0]
    proxy = await TcpProxy(a.port).start()
    conn = await connect(
        f"ws://127.0.0.1:{proxy.port}/ws/ssh",
        websocket_impl=WebsocketsImpl,
        auth=lambda: AUTH,
        retry=RetryOptions(base_ms=20, max_delay_ms=200),
    )
    try:
        ch = await conn.open_session(target=TARGET, user={"username": "me"}, command=WHO_AND_CAT)
        assert await owner_pid(ch) == a.pid
        for target in (cluster.instances[1], cluster.instances[2], a, cluster.instances[1]):
            proxy.upstream = ("127.0.0.1", target.port)
            proxy.cut()
            await echo(ch, f"via {target.name}\n".encode())
        assert (
            cluster.instances[1].metric(
                "nimbus_cluster_relayed_connections_total", 'direction="out"'
            )
            == 2
        )
        assert (
            cluster.instances[2].metric(
                "nimbus_cluster_relayed_connections_total", 'direction="out"'
            )
            == 1
        )
        assert a.metric("nimbus_cluster_relayed_connections_total", 'direction="in"') == 3
    finally:
        await conn.close()
        await proxy.stop()


async def test_a_share_link_works_on_any_instance(cluster: Cluster) -> None:
    """A viewer landing on another instance is relayed to the terminal's owner, like a resume."""
    a, b = cluster.instances[0], cluster.instances[1]
    owner = await connect(
        f"ws://127.0.0.1:{a.port}/ws/ssh", websocket_impl=WebsocketsImpl, auth=lambda: AUTH
    )
    try:
        ch = await owner.open_session(target=TARGET, user={"username": "me"}, command=WHO_AND_CAT)
        assert await owner_pid(ch) == a.pid
        link = await ch.share("read")
        viewer = await connect(
            f"ws://127.0.0.1:{b.port}/ws/ssh",
            websocket_impl=WebsocketsImpl,
            auth=lambda: {"scheme": "bearer", "token": link.token},
        )
        try:
            got = bytearray()
            await viewer.open_session(
                target=TARGET, user={"username": "v"}, on={"data": got.extend}
            )
            await ch.send(b"seen-through-the-relay\n")
            await wait_for(lambda: b"seen-through-the-relay" in got, 10)
            await wait_for(lambda: len(ch.viewers) == 1, 10)
            assert b.metric("nimbus_cluster_relayed_connections_total", 'direction="out"') >= 1
        finally:
            await viewer.close()
        # A forged link naming the owner's session is relayed and refused there (4003), not trusted here.
        forged = link.token[: link.token.rindex(".") + 1] + "x" * 43
        with pytest.raises(Exception) as ei:
            await connect(
                f"ws://127.0.0.1:{b.port}/ws/ssh",
                websocket_impl=WebsocketsImpl,
                auth=lambda: {"scheme": "bearer", "token": forged},
            )
        assert getattr(ei.value, "ws_code", None) == 4003
    finally:
        await owner.close()
