"""Session recording: one asciicast v2 file per terminal channel (``--record DIR``).

The format is asciinema's `asciicast v2
<https://docs.asciinema.org/manual/asciicast/v2/>`_: a JSON header line
(``version``, ``width``, ``height``, ``timestamp``, ``env``, ``title``),
then one JSON array per event, ``[seconds, code, data]``: ``"o"`` output,
``"r"`` resize (``"COLSxROWS"``), ``"i"`` input (only with
``--record-input``: it captures passwords typed at prompts, so it is off by
default), ``"m"`` markers (a gap the recorder had to leave, the exit).

Files are named ``YYYYmmddTHHMMSSZ_SESSION_CHANNEL_USER.cast`` (mode 0600 in
a 0700 directory) and logged (``recording_started`` with the path).

Bounds.  A file rotates to ``…_CHANNEL_USER.2.cast`` (a new header; event
times continue from the channel's start) before an event would take it past
``max_file`` bytes (events hold at most :data:`EVENT_CHARS` characters, so
only a bound smaller than one event is ever passed); after ``max_parts`` parts the channel's recording stops with a
``recording_truncated`` warning.  So one channel writes at most
``max_file * max_parts`` (64 MiB x 16 = 1 GiB by default).  Events are
encoded on the event loop into a buffer of at most ``max_buffer`` bytes
(4 MiB) and written by one shared writer thread; while the disk cannot keep
up, further output is counted, not buffered, and a ``"m"`` marker records
the gap: the recorder never slows the channel and never grows without bound.
Per process: ``max_buffer`` per recorded channel (4 MiB x 4 channels x
``max_sessions``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["ChannelRecorder", "RecordPolicy", "recording_name"]

log = logging.getLogger("nimbus_websocket.server.recording")

#: Seconds a buffered event may wait before it is written.
FLUSH_INTERVAL = 0.5
#: Buffered bytes that trigger a write at once.
FLUSH_BYTES = 64 * 1024
#: Characters per event at most (a longer output is several events at the same time).
EVENT_CHARS = 2048

_writer: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _writer
    if _writer is None:
        _writer = ThreadPoolExecutor(1, thread_name_prefix="nimbus-record")
    return _writer


@dataclass(frozen=True, slots=True)
class RecordPolicy:
    """Where and how much to record (``--record DIR``, ``--record-input``, ``--record-max-size``)."""

    directory: str
    record_input: bool = False
    max_file: int = 64 << 20
    max_parts: int = 16
    max_buffer: int = 4 << 20


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def recording_name(started: float, sid: str, cid: int, user: str, part: int = 1) -> str:
    """``20261204T174412Z_3f2a9c0d_1_alice.cast`` (``.2.cast`` for a second part)."""
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%SZ")
    safe_user = _UNSAFE.sub("_", user)[:64] or "user"
    safe_sid = _UNSAFE.sub("_", sid)[:16] or "session"
    suffix = "" if part == 1 else f".{part}"
    return f"{stamp}_{safe_sid}_{cid}_{safe_user}{suffix}.cast"


class ChannelRecorder:
    """Records one channel; every method is called on the event loop and never blocks."""

    def __init__(
        self,
        policy: RecordPolicy,
        sid: str,
        cid: int,
        user: str,
        size: tuple[int, int],
        env: dict[str, str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.sid, self.cid, self.user = sid, cid, user
        self.size = size
        self.env = {k: v for k, v in env.items() if k in ("TERM", "SHELL")}
        self._clock = clock
        self.started = clock()
        self.part = 0
        self.path = ""
        self._fd: int | None = None
        self._written = 0  # bytes in the current part (written or queued)
        self._buf: list[bytes] = []
        self._buffered = 0
        self._dropped = 0
        self._stopped = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._pending: asyncio.Future[None] | None = None
        self._decoders = {k: codecs.getincrementaldecoder("utf-8")("replace") for k in ("o", "i")}
        os.makedirs(policy.directory, mode=0o700, exist_ok=True)
        self._rotate()
        log.info(
            "recording started",
            extra={"event": "recording_started", "path": self.path, "channel": cid, "user": user},
        )

    # ------------------------------------------------------------------ events
    def output(self, data: bytes) -> None:
        """Bytes the channel's program wrote (stdout and stderr alike, as a terminal shows them)."""
        self._text("o", data)

    def input(self, data: bytes) -> None:
        """Bytes the client typed (kept only with ``record_input``)."""
        if self.policy.record_input:
            self._text("i", data)

    def resize(self, cols: int, rows: int) -> None:
        """The terminal's new size."""
        self.size = (cols, rows)
        self._event("r", f"{cols}x{rows}")

    def marker(self, label: str) -> None:
        """A named point in the recording (asciicast ``"m"``)."""
        self._event("m", label)

    def close(self) -> None:
        """Write what is buffered and close the file (in the writer thread)."""
        if self._stopped:
            return
        for code, dec in self._decoders.items():
            rest = dec.decode(b"", final=True)
            if rest:
                self._event(code, rest)
        self._stopped = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._submit(close=True)

    async def wait_closed(self) -> None:
        """Wait until everything was written (tests, shutdown)."""
        while self._pending is not None and not self._pending.done():
            await asyncio.shield(self._pending)

    # ------------------------------------------------------------------ internals
    def _text(self, code: str, data: bytes) -> None:
        text = self._decoders[code].decode(data)
        for i in range(0, len(text), EVENT_CHARS):  # small events: a part ends close to its bound
            self._event(code, text[i : i + EVENT_CHARS])

    def _event(self, code: str, data: str) -> None:
        if self._stopped:
            return
        line = (
            json.dumps(
                [round(self._clock() - self.started, 6), code, data], ensure_ascii=False
            ).encode()
            + b"\n"
        )
        if self._buffered + len(line) > self.policy.max_buffer:
            self._dropped += len(line)  # the disk is behind: count, never block or grow
            return
        if self._dropped:
            gap = json.dumps(
                [
                    round(self._clock() - self.started, 6),
                    "m",
                    f"recording gap: {self._dropped} bytes of events dropped",
                ]
            )
            self._queue(gap.encode() + b"\n")
            log.warning(
                "recording gap",
                extra={"event": "recording_gap", "path": self.path, "bytes": self._dropped},
            )
            self._dropped = 0
        self._queue(line)

    def _queue(self, line: bytes) -> None:
        if self._written + len(line) > self.policy.max_file and self._written > 0:
            self._submit()
            if self.part >= self.policy.max_parts:
                log.warning(
                    "recording truncated",
                    extra={"event": "recording_truncated", "path": self.path, "parts": self.part},
                )
                self._stopped = True
                self._submit(close=True)
                return
            self._rotate()
        self._buf.append(line)
        self._buffered += len(line)
        self._written += len(line)
        if self._buffered >= FLUSH_BYTES:
            self._submit()
        elif self._flush_handle is None:
            with contextlib.suppress(RuntimeError):  # no loop (unit use): written on close
                self._flush_handle = asyncio.get_running_loop().call_later(
                    FLUSH_INTERVAL, self._submit
                )

    def _rotate(self) -> None:
        """Start the next part: a new file with its own header (queued behind what is pending)."""
        if self._fd is not None:
            self._submit(close=True)
        self.part += 1
        name = recording_name(self.started, self.sid, self.cid, self.user, self.part)
        self.path = os.path.join(self.policy.directory, name)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        cols, rows = self.size
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(self.started),
            "env": self.env,
            "title": f"{self.user} session {self.sid[:16]} channel {self.cid}"
            + (f" part {self.part}" if self.part > 1 else ""),
        }
        if self.part > 1:
            header["time_offset"] = round(self._clock() - self.started, 6)
        line = json.dumps(header, ensure_ascii=False).encode() + b"\n"
        self._buf.append(line)
        self._buffered += len(line)
        self._written = len(line)

    def _submit(self, close: bool = False) -> None:
        """Hand the buffer to the writer thread (ordered: one thread)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        chunk, self._buf = b"".join(self._buf), []
        fd = self._fd
        if close:
            self._fd = None
        if fd is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _write(fd, chunk, close)
            self._buffered = 0
            return
        fut = loop.run_in_executor(_pool(), _write, fd, chunk, close)
        self._pending = asyncio.ensure_future(fut)
        size = len(chunk)

        def done(f: asyncio.Future[None]) -> None:
            self._buffered -= size
            if not f.cancelled() and f.exception() is not None:
                log.warning(
                    "recording write failed",
                    extra={
                        "event": "recording_failed",
                        "path": self.path,
                        "reason": str(f.exception())[:200],
                    },
                )

        self._pending.add_done_callback(done)


def _write(fd: int, data: bytes, close: bool) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        if close:
            os.close(fd)
