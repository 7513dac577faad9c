"""Liveness checks of a client connection the page cannot trust (sans-I/O).

A page that was hidden may have had its timers throttled, so heartbeats may
not have run; a network change (``online``) may have left a dead socket
open.  Such a connection is *suspect*: :meth:`~.client.ClientSession.verify`
pings at once and waits ``verify_timeout`` seconds for any frame.  This
module holds the two rules; the session holds the state.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Verification", "is_suspect_after_hidden"]


def is_suspect_after_hidden(hidden_for: float, suspect_after: float) -> bool:
    """Whether a page hidden for ``hidden_for`` seconds makes its connection suspect.

    ``suspect_after`` is the heartbeat interval by default: hidden longer
    than one interval, at least one heartbeat may have been skipped.
    """
    return hidden_for > suspect_after


@dataclass(frozen=True, slots=True)
class Verification:
    """A liveness check in progress: why, when it started, when it fails."""

    why: str
    started: float
    deadline: float
