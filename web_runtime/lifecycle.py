"""Page lifecycle -> the core: visibility, online/offline, pagehide.

:class:`PageLifecycle` listens to the page and *reports* what happened; every
decision is the core's (:class:`~nimbus_websocket.core.ClientSession`):

* ``visibilitychange`` -> :meth:`~.connection.WebConnection.page_visibility`:
  while hidden the core withholds credit (pause reason ``visibility``) and
  persists the resume state; on return it decides whether the connection is
  suspect (hidden longer than ``suspect_after``, by default the heartbeat
  interval: :func:`nimbus_websocket.core.liveness.is_suspect_after_hidden`)
  and verifies it with a ping;
* ``offline`` / ``online`` (``navigator.onLine``) ->
  :meth:`~.connection.WebConnection.page_online`: pause reason ``offline``,
  verification when back online;
* ``pagehide``: the resume state is persisted now
  (:meth:`~nimbus_websocket.core.aio.Connection.persist`), with the exact
  count of bytes received, so a reload resumes from that byte.

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
    """What :class:`PageLifecycle` reports to (a :class:`~.connection.WebConnection`)."""

    def page_visibility(self, hidden: bool) -> None:
        """The page became hidden (``True``) or visible (``False``)."""
        ...

    def page_online(self, online: bool) -> None:
        """The network went offline (``False``) or came back (``True``)."""
        ...

    def persist(self) -> None:
        """Write the resume state now."""
        ...


class PageLifecycle:
    """Page events, reported to the connection's core (see the module doc).

    ``document``/``window``/``navigator`` default to the JavaScript globals
    (``None`` where they do not exist, e.g. Node).
    """

    def __init__(
        self,
        target: LifecycleTarget,
        *,
        document: Any = None,
        window: Any = None,
        navigator: Any = None,
    ) -> None:
        self._target = target
        self._document = document if document is not None else _ffi.global_get("document")
        self._window = window if window is not None else _ffi.global_get("window")
        self._navigator = navigator if navigator is not None else _ffi.global_get("navigator")
        self._listeners: list[tuple[Any, str, Any]] = []
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
            self._target.page_visibility(True)
        if self.offline:
            self._target.page_online(False)

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
        self._target.page_visibility(self.hidden)

    def _on_offline(self, _ev: Any = None) -> None:
        self._target.page_online(False)

    def _on_online(self, _ev: Any = None) -> None:
        self._target.page_online(True)

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
