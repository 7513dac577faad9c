"""Page lifecycle -> connection policy: visibility, online/offline, pagehide.

:class:`PageLifecycle` listens to the page and tells the connection:

* ``visibilitychange``: while ``document.visibilityState`` is ``"hidden"``
  the connection withholds credit (pause reason ``visibility``: a hidden
  terminal does not need output, and the server stops reading the
  terminal within one window); hiding also persists the resume state (a
  mobile browser may discard a hidden tab without ``pagehide``).  On return,
  if the page was hidden for longer than ``suspect_after`` (the heartbeat
  interval: background tabs have their timers throttled, so heartbeats may
  not have run), the connection is *suspect* and verified with a ping
  (:meth:`~.connection.WebConnection.verify`);
* ``offline`` / ``online`` (``navigator.onLine``): pause reason ``offline``
  while offline; back online, the connection is verified the same way (the
  network may have changed under an open socket);
* ``pagehide``: the resume state is persisted now
  (:meth:`~nimbus_websocket.core.aio.Connection.persist`), with
  the exact count of bytes received, so a reload resumes from that byte.

Each pause and resume is a ``policy`` event (``flow_pause``/``flow_resume``
with the reason) emitted by the core.  Outside a browser (Node) the missing
objects are skipped.  Listener proxies are destroyed by :meth:`detach`
(called when the connection closes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from . import _ffi

__all__ = ["LifecycleTarget", "PageLifecycle"]

log = logging.getLogger("nimbus_websocket.web")


class LifecycleTarget(Protocol):
    """What :class:`PageLifecycle` drives (a :class:`~.connection.WebConnection`)."""

    def set_pause(self, reason: str, paused: bool) -> None:
        """Withhold credit for ``reason`` or stop doing so."""
        ...

    def persist(self) -> None:
        """Write the resume state now."""
        ...

    def verify(self, why: str, **extras: Any) -> None:
        """Check with a ping that the connection is alive; drop it if not."""
        ...


class PageLifecycle:
    """Page events -> pause reasons, verification and persistence (see the module doc).

    ``document``/``window``/``navigator`` default to the JavaScript globals
    (``None`` where they do not exist, e.g. Node).  ``suspect_after`` is in
    seconds of the injected ``clock``.
    """

    def __init__(
        self,
        target: LifecycleTarget,
        *,
        clock: Callable[[], float],
        suspect_after: float,
        document: Any = None,
        window: Any = None,
        navigator: Any = None,
    ) -> None:
        self._target = target
        self._clock = clock
        self.suspect_after = suspect_after
        self._document = document if document is not None else _ffi.global_get("document")
        self._window = window if window is not None else _ffi.global_get("window")
        self._navigator = navigator if navigator is not None else _ffi.global_get("navigator")
        self._listeners: list[tuple[Any, str, Any]] = []
        #: Clock time the page became hidden (``None`` while visible).
        self.hidden_since: float | None = None
        self.attached = False

    # ---------------------------------------------------------------- public

    def attach(self) -> None:
        """Start listening; apply the current visibility and online state at once."""
        if self.attached:
            return
        self.attached = True
        doc, win = self._document, self._window
        if _has(doc, "addEventListener"):
            self._listen(doc, "visibilitychange", self._on_visibility)
        if _has(win, "addEventListener"):
            self._listen(win, "offline", self._on_offline)
            self._listen(win, "online", self._on_online)
            self._listen(win, "pagehide", self._on_pagehide)
        if self.hidden:
            self.hidden_since = self._clock()
            self._target.set_pause("visibility", True)
        if self.offline:
            self._target.set_pause("offline", True)

    def detach(self) -> None:
        """Stop listening and destroy the listener proxies."""
        listeners, self._listeners = self._listeners, []
        for obj, name, proxy in listeners:
            try:
                obj.removeEventListener(name, proxy)
            except Exception:
                log.debug("removeEventListener(%r) failed", name, exc_info=True)
            try:
                proxy.destroy()
            except Exception:
                log.debug("destroying a proxy failed", exc_info=True)
        self.attached = False

    @property
    def hidden(self) -> bool:
        """``document.visibilityState == "hidden"`` (``False`` without a document)."""
        doc = self._document
        if doc is None:
            return False
        try:
            return str(doc.visibilityState) == "hidden"
        except Exception:
            return False

    @property
    def offline(self) -> bool:
        """``navigator.onLine`` is false (``False`` when unknown)."""
        nav = self._navigator
        if nav is None:
            return False
        try:
            return nav.onLine is False
        except Exception:
            return False

    @property
    def listener_count(self) -> int:
        """JavaScript listeners currently installed."""
        return len(self._listeners)

    # -------------------------------------------------------------- handlers

    def _on_visibility(self, _ev: Any = None) -> None:
        if self.hidden:
            if self.hidden_since is None:
                self.hidden_since = self._clock()
            self._target.set_pause("visibility", True)
            self._target.persist()
            return
        since, self.hidden_since = self.hidden_since, None
        self._target.set_pause("visibility", False)
        if since is not None:
            hidden_for = self._clock() - since
            if hidden_for > self.suspect_after:
                self._target.verify("visibility", hiddenMs=round(hidden_for * 1000))

    def _on_offline(self, _ev: Any = None) -> None:
        self._target.set_pause("offline", True)

    def _on_online(self, _ev: Any = None) -> None:
        self._target.set_pause("offline", False)
        self._target.verify("online")

    def _on_pagehide(self, _ev: Any = None) -> None:
        self._target.persist()

    # --------------------------------------------------------------- helpers

    def _listen(self, obj: Any, name: str, handler: Callable[[Any], None]) -> None:
        def guarded(ev: Any = None) -> None:
            try:
                handler(ev)
            except Exception:
                log.exception("%s listener failed", name)

        proxy = _ffi.create_proxy(guarded)
        obj.addEventListener(name, proxy)
        self._listeners.append((obj, name, proxy))


def _has(obj: Any, attr: str) -> bool:
    if obj is None:
        return False
    try:
        return getattr(obj, attr, None) is not None
    except Exception:
        return False
