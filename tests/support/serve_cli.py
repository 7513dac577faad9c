"""``nimbus-ws serve`` in a subprocess, read until its start line (bounded waits only)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading


class ServeProcess:
    """``python -m nimbus_websocket serve --port 0 ARGS``; ``url`` from ``nimbus-ws serving URL``."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nimbus_websocket", "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []  #: every stderr line
        self.url = ""
        self._started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # bounded by the process's life
            self.lines.append(line.rstrip("\n"))
            if "nimbus-ws serving " in line and not self.url:
                self.url = line.split("serving ", 1)[1].split()[0]
                self._started.set()
        self._started.set()

    async def started(self, timeout: float = 20) -> str:
        """The served WebSocket URL, once the start line is out."""
        ok = await asyncio.to_thread(self._started.wait, timeout)
        assert ok and self.url, f"server did not start: {self.lines[-20:]}"
        return self.url

    async def stop(self) -> int:
        """SIGTERM, wait (bounded; SIGKILL past it); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait, 15)
