"""Bounded waiting on a condition: the one way tests synchronise (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (bounded) until ``pred()`` is true, polling every few milliseconds.

    Raises :class:`AssertionError` naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
