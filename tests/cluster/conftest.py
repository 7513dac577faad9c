"""Fixtures of the cluster tests: a real redis-server, three instances, nginx round robin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cluster_util import Cluster, Instance, RedisProc, balancer, have_nginx, have_redis, write_files


@pytest.fixture
def redis_proc() -> Iterator[RedisProc]:
    if not have_redis():
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    r = RedisProc().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
async def cluster(redis_proc: RedisProc, tmp_path: Path) -> AsyncIterator[Cluster]:
    if not have_nginx():
        pytest.skip("nginx is not installed")
    secret, tokens = write_files(tmp_path / "cfg")
    instances = [Instance(f"i{n}", redis_proc, secret, tokens, "--drain-timeout", "20") for n in range(3)]
    try:
        await asyncio.gather(*(i.started() for i in instances))
        nginx = await asyncio.to_thread(balancer, tmp_path / "nginx", [i.port for i in instances])
        try:
            yield Cluster(redis_proc, instances, nginx, tmp_path)
        finally:
            await asyncio.to_thread(nginx.stop)
    finally:
        t0 = asyncio.get_running_loop().time()
        codes = await asyncio.gather(*(i.stop() for i in instances), return_exceptions=True)
        import os
        if os.environ.get("CLUSTER_DEBUG"):
            print("STOP", codes, asyncio.get_running_loop().time() - t0)
            for i in instances:
                print("=====", i.name, i.pid)
                print("\n".join(i.serve.lines[-40:]))
