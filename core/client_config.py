"""What the application hands the client machine, made ready for the wire.

* :class:`ClientOptions` -- the tunables of a :class:`~.client.ClientSession`
  (defaults are the contract's; ``core/aio/options.py:ConnectOptions`` reads
  its defaults from here);
* :func:`auth_from_value` -- ``hello.auth`` from what an ``auth`` provider
  returned, validated by the rules a server applies to a received ``hello``;
* :func:`normalize_signal` -- the wire name of a signal.

Pure values and functions: no state of a session lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .flow import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, DEFAULT_MAX_WINDOW, DEFAULT_WINDOW
from .messages import Auth, Hello, ctl_from_dict
from .profiles import WireProfile
from .retry import RetryPolicy

__all__ = ["ClientOptions", "auth_from_value", "normalize_signal"]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Tunables of a client session; defaults are the contract's."""

    profile: str | WireProfile = "nimbus.v1"
    ack: bool = True
    client_info: Mapping[str, str] | None = None
    heartbeat_interval: float = 20.0
    heartbeat_misses: int = 3
    handshake_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    window: int = DEFAULT_WINDOW
    max_window: int = DEFAULT_MAX_WINDOW
    high_water_mark: int = DEFAULT_HIGH_WATER
    low_water_mark: int = DEFAULT_LOW_WATER
    #: Input bytes kept per channel until the server acknowledges them.
    input_buffer_limit: int = 1 << 20
    #: Minimum seconds between two ``resize`` messages of one channel (20/s: well
    #: inside the server's 50 control messages/s, which resizes count against).
    resize_interval: float = 0.05
    #: Seconds a persisted resume state stays usable.
    resume_ttl: float = 60.0
    #: Ping right after ``hello_ok``: RTT is known at once (status bars, the
    #: adaptive window) instead of after the first heartbeat.  The runtimes
    #: turn it on; off by default so the bare machine sends only what it must.
    ping_on_ready: bool = False
    #: Seconds :meth:`ClientSession.verify` waits for any frame before the
    #: transport is dropped as lost (reconnect and resume).
    verify_timeout: float = 5.0
    #: Seconds hidden after which a page's connection is suspect on return
    #: (``None``: :attr:`heartbeat_interval`; see :mod:`.liveness`).
    suspect_after: float | None = None

    def __post_init__(self) -> None:
        # Rule: the credit window never shrinks below its start (max_window >= window).
        if self.max_window < self.window:
            object.__setattr__(self, "max_window", self.window)

    @property
    def suspect_after_s(self) -> float:
        """:attr:`suspect_after`, or the heartbeat interval when unset."""
        return self.heartbeat_interval if self.suspect_after is None else self.suspect_after


def auth_from_value(value: Any) -> Auth | None:
    """``hello.auth`` from what an application's ``auth`` provider returned.

    ``None`` (no auth) and :class:`~.messages.Auth` pass through; a mapping
    ``{"scheme": "bearer", "token": ...}`` or ``{"scheme": "none"}`` (the
    scheme defaults to ``"none"``) is validated by the same rules as a
    received ``hello`` (:func:`~.messages.ctl_from_dict`), so client and
    server agree on what is valid.  Raises ``TypeError`` for anything else and
    :class:`~.errors.ProtocolError` for an invalid mapping.
    """
    if value is None or isinstance(value, Auth):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"auth provider returned {type(value).__name__}, expected a dict or None")
    auth = {"scheme": "none", **value}
    hello = ctl_from_dict({"t": "hello", "proto": 1, "auth": auth})
    assert isinstance(hello, Hello)
    return hello.auth


def normalize_signal(sig: str) -> str:
    """The wire name of a signal: upper case, without a ``SIG`` prefix (``"sigint"`` -> ``"INT"``)."""
    return sig.strip().upper().removeprefix("SIG")
