"""Helpers shared by the client tests."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

TARGET = {"host": "127.0.0.1", "port": 22}


async def wait_for(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (bounded) until ``pred()`` is true, checking every few milliseconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``)."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
