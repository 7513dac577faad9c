"""Helpers for code that runs *inside* Pyodide (``@run_in_pyodide`` tests).

``run_in_pyodide`` ships only the test function itself, so this module
travels as source text (fixture ``web_helpers_src``) and is executed into a
fresh module inside the runtime::

    h = types.ModuleType("h"); exec(helpers_src, h.__dict__)
    await h.wait_for(lambda: conn.state == "ready", 10, "ready")

Nothing here sleeps as synchronisation: :func:`wait_for` polls a condition
with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

TARGET = {"host": "127.0.0.1", "port": 22}
USER = {"username": "tester"}


async def wait_for(
    pred: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``pred()`` is true (checked every 5 ms), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


class Recorder:
    """Collects a connection's events as plain values, in order."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self.diags: list[dict[str, Any]] = []
        self.policies: list[dict[str, Any]] = []
        self.log: list[tuple[str, Any]] = []

    def listeners(self) -> dict[str, Callable[[Any], None]]:
        """``on=`` mapping for ``connect``."""
        return {
            "statechange": self._state,
            "diagnostic": self._diag,
            "policy": self._policy,
        }

    def codes(self) -> list[str]:
        """Diagnostic codes so far."""
        return [d["code"] for d in self.diags]

    def kinds(self) -> list[tuple[str, str | None]]:
        """``(kind, reason)`` of the policy events so far."""
        return [(p["kind"], p["reason"]) for p in self.policies]

    def _state(self, ev: Any) -> None:
        self.states.append(ev.new)
        self.log.append(("state", ev.new))

    def _diag(self, ev: Any) -> None:
        d = ev.to_dict()
        self.diags.append(d)
        self.log.append(("diag", d["code"]))

    def _policy(self, ev: Any) -> None:
        d = ev.to_dict()
        self.policies.append(d)
        self.log.append(("policy", (d["kind"], d["reason"])))


def run_js(code: str) -> Any:
    """Evaluate JavaScript in the page / Node context."""
    from pyodide.code import run_js as _run_js

    return _run_js(code)


def set_visibility(state: str) -> None:
    """Force ``document.visibilityState`` (headless Chromium never hides by itself) and dispatch the event."""
    run_js(
        f"""
        Object.defineProperty(document, "visibilityState", {{configurable: true, get: () => "{state}"}});
        Object.defineProperty(document, "hidden", {{configurable: true, get: () => "{state}" === "hidden"}});
        document.dispatchEvent(new Event("visibilitychange"));
        """
    )


def set_online(online: bool) -> None:
    """Force ``navigator.onLine`` and dispatch ``online``/``offline`` on the window."""
    flag = "true" if online else "false"
    name = "online" if online else "offline"
    run_js(
        f"""
        Object.defineProperty(navigator, "onLine", {{configurable: true, get: () => {flag}}});
        window.dispatchEvent(new Event("{name}"));
        """
    )


def restore_page() -> None:
    """Undo :func:`set_visibility` / :func:`set_online` (back to the prototypes' getters)."""
    run_js(
        """
        delete document.visibilityState; delete document.hidden; delete navigator.onLine;
        """
    )


async def ctl(url: str, command: str, timeout: float = 10.0) -> str:
    """Send one command to a test server's control WebSocket; return its answer."""
    import js
    from pyodide.ffi import create_proxy

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    ws = js.WebSocket.new(url)

    def on_open(_e: Any) -> None:
        ws.send(command)

    def on_message(e: Any) -> None:
        if not fut.done():
            fut.set_result(str(e.data))
        ws.close()

    def on_close(_e: Any) -> None:
        if not fut.done():
            fut.set_exception(RuntimeError(f"control socket closed before answering {command!r}"))

    proxies = [create_proxy(f) for f in (on_open, on_message, on_close)]
    ws.onopen, ws.onmessage, ws.onclose = proxies
    try:
        return await asyncio.wait_for(fut, timeout)
    finally:
        ws.onopen = ws.onmessage = ws.onclose = None
        for p in proxies:
            p.destroy()
