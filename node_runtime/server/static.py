"""Static files of the reference server (the terminal page and its runtime).

:class:`StaticFiles` maps a request path to a file under one root directory
and answers it as a ``websockets`` :class:`~websockets.http11.Response`.

Path rules (docs/security.md, item 9): percent-escapes are decoded first; no
segment may start with ``.`` (dotfiles, ``.git``, ``..``), before or after
symlinks are resolved; a directory means its ``index.html`` and the path is
resolved *after* that is appended, so a symlinked ``index.html`` cannot
point outside; a NUL byte or non-UTF-8 path is a 400.

Memory (docs/security.md, item 8).  ``websockets``' ``Response`` carries a
``bytes`` body and writes it in one piece -- there is no streaming body -- so
what a response costs is bounded instead of streamed:

* file contents are cached, keyed by path, size and mtime, up to
  ``cache_bytes`` (files larger than half of it are read per request), so
  concurrent page loads share one copy of ``pyodide.asm.wasm``;
* the bytes of responses still being sent (each connection's socket buffer
  holds its copy until the client has read it) are a :class:`~.limits.Counter`
  budget, overall and per peer key.  A request over the budget waits (up to
  ``wait`` seconds) for earlier responses to finish, then gets 503.  A
  response larger than a budget is charged as the whole budget, so it is
  served alone rather than never.  ``websockets`` sends a non-101 response
  inside its ``open_timeout`` (10 s), so a client that never reads releases
  its share within that time.

Per process: ``cache_bytes`` + ``budget.total`` (+ one uncached file being
read per waiting request, which the budget admits one by one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.http11 import Response

from .limits import Counter

__all__ = ["StaticFiles", "plain_response", "response"]

log = logging.getLogger("nimbus_websocket.server")

_MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


def response(status: int, body: bytes, ctype: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    """A complete HTTP response (``Connection: close``; the security headers are added later)."""
    headers = Headers(
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
            *extra,
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


def plain_response(status: int, text: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    """A short ``text/plain`` answer."""
    return response(status, text.encode(), "text/plain; charset=utf-8", extra)


class StaticFiles:
    """Files under ``root``, cached up to ``cache_bytes``, sent within ``budget``."""

    def __init__(
        self,
        root: str | Path,
        budget: Counter,
        *,
        cache_bytes: int = 32 * 1024 * 1024,
        wait: float = 5.0,
        on_busy: Callable[[str], None] | None = None,
    ) -> None:
        self.on_busy = on_busy
        self.root = Path(root).resolve()
        self.budget = budget
        self.cache_bytes = cache_bytes
        self.wait = wait
        self._cache: OrderedDict[tuple[Path, int, int], bytes] = OrderedDict()
        self._cached = 0
        self._freed = asyncio.Condition()
        self._notifying: set[asyncio.Future[None]] = set()

    def resolve(self, path: str) -> Path | None:
        """The regular file ``path`` names under the root; ``None`` if none may be served.

        Raises :class:`ValueError` for a malformed path (NUL byte, not UTF-8).
        """
        try:
            rel = unquote(path, errors="strict").lstrip("/")
        except UnicodeDecodeError:
            raise ValueError("path is not UTF-8") from None
        if "\0" in rel:
            raise ValueError("NUL byte in path")
        parts = [p for p in rel.split("/") if p]
        if any(p.startswith(".") or "\\" in p for p in parts):
            return None
        candidate = self.root.joinpath(*parts)
        try:
            if candidate.is_dir():
                candidate = candidate / "index.html"
            target = candidate.resolve(strict=True)
            inside = target.relative_to(self.root)
        except (OSError, ValueError):  # missing, a loop, or outside the directory
            return None
        if any(p.startswith(".") for p in inside.parts) or not target.is_file():
            return None
        return target

    async def respond(self, path: str, key: str, on_sent: Callable[[Callable[[], None]], None]) -> Response:
        """Answer ``GET path`` for peer ``key``.

        ``on_sent(release)`` is called once the response holds budget; the
        caller runs ``release()`` when the connection carrying it has closed.
        """
        try:
            target = self.resolve(path)
        except ValueError as exc:
            log.warning("bad request", extra={"event": "bad_request", "reason": str(exc)})
            return plain_response(400, "Bad request\n")
        if target is None:
            return plain_response(404, "Not found\n")
        try:
            size = _cache_key(target)[1]
        except OSError:
            return plain_response(404, "Not found\n")
        charge = self._charge(size)
        if not await self._acquire(key, charge):
            log.info("static budget exhausted", extra={"event": "static_busy", "peer": key, "bytes": size})
            if self.on_busy is not None:
                self.on_busy(key)
            return plain_response(503, "Busy, try again\n", (("Retry-After", "1"),))
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.budget.release(key, charge)
                task = asyncio.ensure_future(self._notify())
                self._notifying.add(task)
                task.add_done_callback(self._notifying.discard)

        try:
            body = await self._read(target)
        except OSError:
            release()
            return plain_response(404, "Not found\n")
        on_sent(release)
        ctype = _MIME.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return response(200, body, ctype)

    def _charge(self, size: int) -> int:
        caps = [c for c in (self.budget.total, self.budget.per_key) if c]
        return min([max(size, 1), *caps])

    async def _acquire(self, key: str, n: int) -> bool:
        if self.budget.acquire(key, n):
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.wait), self._freed:
                await self._freed.wait_for(lambda: self.budget.acquire(key, n))
                return True
        return False

    async def _notify(self) -> None:
        async with self._freed:
            self._freed.notify_all()

    async def _read(self, target: Path) -> bytes:
        ck = _cache_key(target)
        body = self._cache.get(ck)
        if body is not None:
            self._cache.move_to_end(ck)
            return body
        body = await asyncio.to_thread(target.read_bytes)
        if len(body) <= self.cache_bytes // 2:
            self._cache[ck] = body
            self._cached += len(body)
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)
        return body


def _cache_key(target: Path) -> tuple[Path, int, int]:
    st = target.stat()
    return (target, st.st_size, st.st_mtime_ns)


def default_static_dir() -> str | None:
    """``build/site`` next to the source tree, when it exists."""
    here = Path(__file__).resolve().parents[2] / "build" / "site"
    return str(here) if here.is_dir() else None


with contextlib.suppress(Exception):
    mimetypes.add_type("text/javascript", ".mjs")
    mimetypes.add_type("application/wasm", ".wasm")
