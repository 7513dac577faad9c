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

Validators and caching (issue 14, item 4; docs/deploy.md).  Every ``200``
carries a strong ``ETag`` (the file's size and mtime; a ``.gz`` twin has its
own) and ``Last-Modified``; ``If-None-Match`` (or, without it,
``If-Modified-Since``) that still matches is a ``304`` with no body, which
reads no file and charges no budget.  File names are not content-hashed, so
every answer is ``Cache-Control: no-cache``: the browser keeps its copy and
revalidates it, and a reload costs one ``304`` per file.  When the client
accepts ``gzip`` and ``X.gz`` sits next to ``X`` (``scripts/build_site.py``
writes them; not older than ``X``), ``X.gz`` is sent with
``Content-Encoding: gzip``; every file answer says ``Vary: Accept-Encoding``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import importlib.resources
import logging
import mimetypes
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.http11 import Response

from .limits import Counter

__all__ = ["StaticFiles", "Variant", "default_static_dir", "installed_site_dir", "plain_response", "response"]

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


#: The companion distribution ``nimbus-websocket-site`` (the ``server`` extra
#: installs it): the built page under ``<package>/site/``.
SITE_PACKAGE = "nimbus_websocket_site"


@dataclass(frozen=True, slots=True)
class Variant:
    """The file a request is answered from and its validators."""

    path: Path
    size: int
    mtime_ns: int
    #: ``"gzip"`` for a precompressed twin, ``None`` for the file itself.
    encoding: str | None

    @property
    def etag(self) -> str:
        """Strong entity tag: size and mtime (the encoding for a twin)."""
        tag = f"{self.size:x}-{self.mtime_ns:x}"
        return f'"{tag}-gz"' if self.encoding == "gzip" else f'"{tag}"'

    @property
    def last_modified(self) -> str:
        """The mtime as an HTTP date."""
        return email.utils.formatdate(self.mtime_ns / 1e9, usegmt=True)

    def validators(self) -> tuple[tuple[str, str], ...]:
        """``ETag``, ``Last-Modified``, ``Vary`` (and ``Content-Encoding`` for a twin)."""
        out = [("ETag", self.etag), ("Last-Modified", self.last_modified), ("Vary", "Accept-Encoding")]
        if self.encoding:
            out.append(("Content-Encoding", self.encoding))
        return tuple(out)


def _stat_variant(path: Path, encoding: str | None) -> Variant:
    st = path.stat()
    return Variant(path, st.st_size, st.st_mtime_ns, encoding)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value allows ``gzip`` (``q=0`` refuses; ``*`` counts)."""
    if not accept_encoding:
        return False
    allowed: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        allowed[name.strip().lower()] = q > 0
    if "gzip" in allowed:
        return allowed["gzip"]
    return allowed.get("x-gzip", allowed.get("*", False))


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """``If-None-Match`` against ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == ours for t in if_none_match.split(","))


def _not_modified_since(if_modified_since: str, variant: Variant) -> bool:
    try:
        when = email.utils.parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False
    if when.tzinfo is None:
        return False
    return int(variant.mtime_ns // 1_000_000_000) <= int(when.timestamp())


def not_modified(variant: Variant) -> Response:
    """``304``: the validators and caching headers, no body and no ``Content-Length``."""
    headers = Headers(
        [
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
            *variant.validators(),
        ]
    )
    return Response(304, HTTPStatus(304).phrase, headers, b"")


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

    def variant(self, target: Path, accept_encoding: str | None) -> Variant:
        """The file to send for ``target``: its ``.gz`` twin when the client accepts gzip and the
        twin is a regular file under the root not older than ``target``; else ``target``."""
        plain = _stat_variant(target, None)
        if accepts_gzip(accept_encoding) and target.suffix != ".gz":
            with contextlib.suppress(OSError, ValueError):
                twin = target.with_name(target.name + ".gz").resolve(strict=True)
                inside = twin.relative_to(self.root)  # the path rules of resolve()
                if twin.is_file() and not any(p.startswith(".") for p in inside.parts):
                    gz = _stat_variant(twin, "gzip")
                    if gz.mtime_ns >= plain.mtime_ns:
                        return gz
        return plain

    async def respond(
        self,
        path: str,
        key: str,
        on_sent: Callable[[Callable[[], None]], None],
        *,
        request_headers: Headers | None = None,
    ) -> Response:
        """Answer ``GET path`` for peer ``key``.

        ``on_sent(release)`` is called once the response holds budget; the
        caller runs ``release()`` when the connection carrying it has closed.
        ``request_headers`` (``If-None-Match``, ``If-Modified-Since``,
        ``Accept-Encoding``) make the answer conditional and choose the encoding.
        """
        try:
            target = self.resolve(path)
        except ValueError as exc:
            log.warning("bad request", extra={"event": "bad_request", "reason": str(exc)})
            return plain_response(400, "Bad request\n")
        if target is None:
            return plain_response(404, "Not found\n")
        hdrs = request_headers if request_headers is not None else Headers()
        try:
            variant = self.variant(target, _joined(hdrs, "Accept-Encoding"))
        except OSError:
            return plain_response(404, "Not found\n")
        inm = _joined(hdrs, "If-None-Match")
        ims = _joined(hdrs, "If-Modified-Since")
        if (inm is not None and _etag_matches(inm, variant.etag)) or (
            inm is None and ims is not None and _not_modified_since(ims, variant)
        ):
            return not_modified(variant)
        target, size = variant.path, variant.size
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
        name = target.name.removesuffix(".gz") if variant.encoding else target.name
        suffix = os.path.splitext(name)[1]
        ctype = _MIME.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return response(200, body, ctype, variant.validators())

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


def _joined(headers: Headers, name: str) -> str | None:
    """Every value of a list-valued header, comma-joined (``None`` when absent)."""
    values = headers.get_all(name)
    return ", ".join(values) if values else None


def installed_site_dir() -> str | None:
    """The page installed by the ``nimbus-websocket-site`` wheel (``pip install
    'nimbus-websocket[server]'``), when that distribution is installed."""
    try:
        site = importlib.resources.files(SITE_PACKAGE) / "site"
    except ModuleNotFoundError:
        return None
    if isinstance(site, Path) and (site / "index.html").is_file():
        return str(site)
    return None


def default_static_dir() -> str | None:
    """The installed page (:func:`installed_site_dir`), else ``build/site`` next to the
    source tree (a repository checkout after ``make demo``), else ``None``."""
    installed = installed_site_dir()
    if installed is not None:
        return installed
    here = Path(__file__).resolve().parents[2] / "build" / "site"
    return str(here) if here.is_dir() else None


with contextlib.suppress(Exception):
    mimetypes.add_type("text/javascript", ".mjs")
    mimetypes.add_type("application/wasm", ".wasm")
