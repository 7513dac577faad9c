"""Resume state in the browser's ``sessionStorage`` (per tab, survives a page reload).

:class:`SessionStorageStore` is a :class:`~nimbus_websocket.core.ResumeStore`:
the core writes its JSON-shaped resume state (token, expiry, channels with
their ``resumeKey`` and bytes received, see :mod:`nimbus_websocket.core.resume`)
through it, and reads it back when a connection starts.  The core honours
the TTL (an expired state is cleared on load) and clears the state itself on
an explicit close (1000) and on 4011 RESUME_FAILED.

``sessionStorage`` is per tab and per origin, and survives a reload of the
page: a page reloaded within the TTL finds the state and resumes the same
channels.  The key is per server URL, so two connections to different
servers in one tab keep separate states.

Failures of the storage itself (quota, disabled storage, a damaged value)
are logged and treated as "nothing stored": resume is an optimisation, the
connection works without it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from . import _ffi

__all__ = ["KEY_PREFIX", "SessionStorageStore", "session_storage_available"]

log = logging.getLogger("nimbus_websocket.web")

#: Storage keys are ``KEY_PREFIX + url``.
KEY_PREFIX = "nimbus-websocket:resume:"


def session_storage_available() -> bool:
    """Whether a usable ``sessionStorage`` exists (browsers: yes; Node: no)."""
    storage = _ffi.global_get("sessionStorage")
    if storage is None:
        return False
    try:
        storage.getItem(KEY_PREFIX + "probe")
    except Exception:  # SecurityError: storage disabled for this document
        return False
    return True


class SessionStorageStore:
    """A :class:`~nimbus_websocket.core.ResumeStore` over ``sessionStorage`` (one key per URL).

    ``storage`` defaults to the global ``sessionStorage``; any object with
    ``getItem``/``setItem``/``removeItem`` works (``localStorage`` too, but it
    is shared between tabs, and two tabs must not resume the same session).
    """

    def __init__(self, url: str, *, key: str | None = None, storage: Any = None) -> None:
        self.key = key if key is not None else KEY_PREFIX + url
        self._storage = storage if storage is not None else _ffi.global_get("sessionStorage")
        if self._storage is None:
            raise RuntimeError("sessionStorage is not available here (use resume storage 'memory')")

    def load(self) -> dict[str, Any] | None:
        """The stored state, or ``None`` (nothing stored, unreadable or damaged)."""
        try:
            raw = self._storage.getItem(self.key)
        except Exception:
            log.warning("sessionStorage.getItem failed", exc_info=True)
            return None
        if not isinstance(raw, str):  # null (a ``jsnull`` in Pyodide >= 0.27, not None)
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("damaged resume state under %r, ignored", self.key)
            return None
        return value if isinstance(value, dict) else None

    def save(self, state: dict[str, Any]) -> None:
        """Replace the stored state."""
        try:
            self._storage.setItem(self.key, json.dumps(state, separators=(",", ":")))
        except Exception:  # QuotaExceededError, SecurityError
            log.warning(
                "sessionStorage.setItem failed; resume after a reload unavailable", exc_info=True
            )

    def clear(self) -> None:
        """Forget the stored state."""
        try:
            self._storage.removeItem(self.key)
        except Exception:
            log.warning("sessionStorage.removeItem failed", exc_info=True)
