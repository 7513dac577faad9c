"""Driving the demo page: load, wait for the shell, type, read the xterm buffer.

Every wait is a Playwright wait with a timeout (``wait_for_function``), never
a sleep.  The page exposes its state on ``window.nimbusDemo`` (see
``demo_site/app.mjs``): ``phase``, ``state``, ``rx``, ``written``, ``exit``,
``pauseReasons``, ``events``, ``screenText()``, ``cursorLine()``, ``term``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

BOOT_TIMEOUT_MS = 60_000
CMD_TIMEOUT_MS = 15_000

#: A prompt that never appears in commands' own output.
PROMPT = "e2e$ "


class Demo:
    """One tab of the demo page."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    # -------------------------------------------------------------- state
    def js(self, expr: str, arg: Any = None) -> Any:
        return self.page.evaluate(expr, arg)

    def demo(self, key: str) -> Any:
        return self.js(f"() => window.nimbusDemo.{key}")

    def screen(self) -> str:
        return str(self.js("() => window.nimbusDemo.screenText()"))

    def status(self) -> str:
        return str(self.page.inner_text("#statusbar"))

    def wait(self, expr: str, arg: Any = None, timeout: float = CMD_TIMEOUT_MS, what: str = "") -> Any:
        """``wait_for_function(expr)``; on timeout fail with the screen and the page's log."""
        try:
            return self.page.wait_for_function(expr, arg=arg, timeout=timeout, polling=50).json_value()
        except Exception as e:
            raise AssertionError(
                f"timed out waiting for {what or expr}: {e}\n--- status: {self.safe(self.status)}"
                f"\n--- screen:\n{self.safe(self.screen)}\n--- console:\n"
                + "\n".join(self.console[-30:])
                + f"\n--- events: {self.safe(lambda: json.dumps(self.demo('events')[-15:]))}"
            ) from None

    @staticmethod
    def safe(fn: Any) -> str:
        try:
            return str(fn())
        except Exception as e:  # the page may be gone
            return f"<{e}>"

    # ------------------------------------------------------------ actions
    def open(self, url: str) -> Demo:
        self.page.goto(url)
        return self

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_MS) -> None:
        """Until the terminal is attached and the connection ready."""
        phase = self.wait(
            """() => { const d = window.nimbusDemo;
                if (!d) return false;
                if (d.phase === 'ready' && d.state === 'ready') return 'ready';
                return ['error', 'form'].includes(d.phase) ? d.phase : false; }""",
            timeout=timeout,
            what="the page to be ready",
        )
        if phase != "ready":
            raise AssertionError(
                f"the page shows {phase!r} instead of a terminal: {self.status()}\n"
                + "\n".join(self.console[-10:])
            )

    def wait_screen(self, pattern: str, timeout: float = CMD_TIMEOUT_MS) -> str:
        """Until the xterm buffer matches the regex ``pattern``; returns the screen."""
        self.wait(
            "(p) => new RegExp(p, 'm').test(window.nimbusDemo.screenText())",
            pattern,
            timeout=timeout,
            what=f"/{pattern}/ on screen",
        )
        return self.screen()

    def type(self, text: str) -> None:
        """Type into xterm like a user (key events through xterm's textarea)."""
        self.page.keyboard.type(text)

    def run(self, command: str, expect: str, timeout: float = CMD_TIMEOUT_MS) -> str:
        """Type ``command`` + Enter and wait until the regex ``expect`` shows."""
        self.type(command)
        self.page.keyboard.press("Enter")
        return self.wait_screen(expect, timeout)

    def set_prompt(self) -> None:
        """A fixed prompt (``e2e$ ``), so tests can tell when the shell is idle."""
        self.run("PS1='e2e''$ '; echo prompt-$((40+2))", r"^prompt-42$")
        self.wait_prompt()

    def wait_prompt(self, timeout: float = CMD_TIMEOUT_MS) -> None:
        self.wait(
            "(p) => window.nimbusDemo.cursorLine() === p",
            PROMPT.rstrip(),  # cursorLine() drops trailing blanks
            timeout=timeout,
            what="the prompt",
        )

    def shell_pid(self) -> int:
        marker = f"pid{int(time.time() * 1000) % 100000}"
        screen = self.run(f"echo {marker}=$$", rf"^{marker}=\d+$")
        return int(re.findall(rf"^{marker}=(\d+)$", screen, re.M)[-1])

    def set_hidden(self, hidden: bool) -> None:
        """Headless Chromium never hides a page by itself: fake it (as the runtime sees it)."""
        self.js(
            """(hidden) => {
                Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => hidden ? 'hidden' : 'visible'});
                Object.defineProperty(document, 'hidden', {configurable: true, get: () => hidden});
                document.dispatchEvent(new Event('visibilitychange'));
            }""",
            hidden,
        )

    def wait_rx_stable(self, quiet_ms: int = 500, timeout: float = CMD_TIMEOUT_MS) -> int:
        """Until ``rx`` did not change for ``quiet_ms``; returns it."""
        return int(
            self.wait(
                """(quiet) => {
                    const d = window.nimbusDemo, now = performance.now();
                    if (d.__rxSeen !== d.rx) { d.__rxSeen = d.rx; d.__rxAt = now; return false; }
                    return now - d.__rxAt >= quiet ? {rx: d.rx} : false;
                }""",
                quiet_ms,
                timeout=timeout,
                what=f"rx quiet for {quiet_ms} ms",
            )["rx"]
        )
