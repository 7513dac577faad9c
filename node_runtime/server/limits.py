"""Admission limits of the reference server: connections and static bytes in flight.

Neither is a protocol rule (both act before or beside the WebSocket); both
are counted per *peer key* -- the client address reduced to the prefix one
party controls (``peer_prefix`` in the core: IPv4 /32, all of 127/8 as one,
IPv6 /64) -- so rotating source addresses inside one prefix buys nothing.

* :class:`Counter` -- at most ``total`` units overall and ``per_key`` per key.
  Used for TCP connections (``ServerOptions.max_connections`` /
  ``max_connections_per_ip``: a connection over either is aborted at accept,
  before any byte is read) and for static-file bytes being sent
  (``static_bytes_in_flight`` / ``static_bytes_per_ip``: over either, 503).

Memory: a :class:`Counter` holds one ``int`` per key that currently holds
units, so at most ``total`` entries.
"""

from __future__ import annotations

__all__ = ["Counter"]


class Counter:
    """Units held overall and per key, each bounded (``0`` = that bound is off)."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self._held = 0
        self._by_key: dict[str, int] = {}

    @property
    def held(self) -> int:
        """Units held now, over all keys."""
        return self._held

    def held_by(self, key: str) -> int:
        """Units ``key`` holds now."""
        return self._by_key.get(key, 0)

    def acquire(self, key: str, n: int = 1) -> bool:
        """Take ``n`` units for ``key`` if both bounds allow; ``False`` (nothing taken) otherwise."""
        mine = self._by_key.get(key, 0)
        if self.total and self._held + n > self.total:
            return False
        if self.per_key and mine + n > self.per_key:
            return False
        self._held += n
        self._by_key[key] = mine + n
        return True

    def release(self, key: str, n: int = 1) -> None:
        """Give back ``n`` units ``key`` took."""
        mine = self._by_key.get(key, 0) - n
        self._held -= n
        if mine > 0:
            self._by_key[key] = mine
        else:
            self._by_key.pop(key, None)
