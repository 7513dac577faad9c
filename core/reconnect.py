"""Reconnect with retry: attempt counting and backoff scheduling (sans-I/O).

:class:`Reconnect` is the client session's memory of how often it tried:

* a try that fails before reaching ``ready`` counts as one attempt
  (:meth:`Reconnect.lost`); a loss of a ready connection starts counting
  again from zero (the first reconnect waits ``RetryPolicy.delay(0)``);
* after ``RetryPolicy.max_retries`` failed attempts it gives up
  (:meth:`Reconnect.lost` returns ``None``: ``RETRIES_EXHAUSTED``);
* the delay before the next try is :meth:`RetryPolicy.delay` with the
  injected random source; :attr:`Reconnect.at` is the deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .retry import RetryPolicy

__all__ = ["Reconnect"]


@dataclass(slots=True)
class Reconnect:
    """Attempts and the next try's deadline (see the module doc)."""

    policy: RetryPolicy
    #: Failed attempts since the connection was last ready.
    attempt: int = 0
    #: When the next try is due (``None``: none scheduled).
    at: float | None = None
    #: The current try reached ``ready`` (its loss is not a failed attempt).
    _connected: bool = False

    def succeeded(self) -> None:
        """The try reached ``ready``: attempts start again from zero."""
        self.attempt = 0
        self._connected = True

    def lost(self, now: float, rand: Callable[[], float]) -> float | None:
        """The transport was lost or a try failed: schedule the next try.

        Returns the delay in seconds, or ``None`` when the retry policy is
        exhausted (give up).  ``rand`` is the injected random source of the jitter.
        """
        if not self._connected:
            self.attempt += 1
        self._connected = False
        if self.attempt >= self.policy.max_retries:
            self.at = None
            return None
        delay = self.policy.delay(self.attempt, rand)
        self.at = now + delay
        return delay

    def due(self, now: float) -> bool:
        """Whether the scheduled try is due now (it is then no longer scheduled)."""
        if self.at is None or now < self.at:
            return False
        self.at = None
        return True

    def cancel(self) -> None:
        """No more tries (the connection ended)."""
        self.at = None
