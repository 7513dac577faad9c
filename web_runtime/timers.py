"""Timers on JavaScript ``setTimeout``/``clearTimeout`` whose ``cancel()`` really cancels.

Pyodide's ``WebLoop.call_later`` schedules a JavaScript ``setTimeout`` and
``cancel()`` only marks the handle: the JavaScript timer stays armed (and
keeps a callable proxy alive) until it fires.  In a page that costs little;
under Node it keeps the process alive -- a closed connection's next
heartbeat (20 s) or handshake deadline (10 s) delays the exit of a script
by that long.  :class:`JsTimerLoop` wraps the running loop and replaces only
``call_later`` with :class:`JsTimer`; everything else is the loop's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from . import _ffi

__all__ = ["JsTimer", "JsTimerLoop", "wait_future"]

log = logging.getLogger("nimbus_websocket.web")


class JsTimer:
    """``callback(*args)`` after ``delay`` seconds; :meth:`cancel` clears the JavaScript timer."""

    __slots__ = ("_args", "_callback", "_cancelled", "_id", "_proxy")

    def __init__(
        self, delay: float, callback: Callable[..., object], args: tuple[Any, ...] = ()
    ) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._proxy: Any = _ffi.create_proxy(self._fire)
        self._id = _ffi.js.setTimeout(self._proxy, max(0.0, delay * 1000))

    def cancel(self) -> None:
        """Cancel it (clears the JavaScript timer and destroys its proxy)."""
        if self._proxy is None:
            return
        self._cancelled = True
        try:
            _ffi.js.clearTimeout(self._id)
        finally:
            self._release()

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called before it fired."""
        return self._cancelled

    def _fire(self, *_: Any) -> None:
        self._release()
        if self._cancelled:
            return
        try:
            self._callback(*self._args)
        except Exception:
            log.exception("timer callback %r failed", self._callback)

    def _release(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            proxy.destroy()


class JsTimerLoop:
    """The running asyncio loop, with ``call_later`` on :class:`JsTimer` (see the module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wrapped = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> JsTimer:
        """Like ``loop.call_later``; the handle's ``cancel()`` clears the JavaScript timer."""
        return JsTimer(delay, callback, args)


async def wait_future(fut: asyncio.Future[Any], timeout: float) -> bool:
    """Wait for ``fut`` at most ``timeout`` seconds (a :class:`JsTimer`); ``True`` if it completed."""
    if fut.done():
        return True
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_f: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = JsTimer(timeout, wake)
    fut.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        fut.remove_done_callback(wake)
    return fut.done()
