"""Reconnect backoff: exponential, jittered, bounded.

``delay(attempt) = min(max_delay, base * factor ** attempt)``, and with
jitter on, a uniform draw in ``[delay / 2, delay]`` ("equal jitter": never
zero, never above the cap).  Attempts are numbered from 0; after
``max_retries`` failed attempts the client gives up with
``RETRIES_EXHAUSTED``.  Randomness is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff parameters (defaults from the contract: base 300 ms, jitter, 10 tries)."""

    base: float = 0.3
    factor: float = 2.0
    max_delay: float = 10.0
    jitter: bool = True
    max_retries: int = 10

    def delay(self, attempt: int, rand: Callable[[], float]) -> float:
        """Seconds to wait before attempt number ``attempt`` (0-based)."""
        d = min(self.max_delay, self.base * self.factor**attempt)
        if self.jitter:
            d = d / 2 + rand() * d / 2
        return d
