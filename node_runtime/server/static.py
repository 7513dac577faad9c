"""Static files of the reference server (the terminal page and its runtime).

:class:`StaticFiles` maps a request path to a file under one root directory
and answers it as a ``websockets`` :class:`~websockets.http11.Response`.

Path rules (docs/security.md, item 9): percent-escapes are decoded first; no
segment may start with ``.`` (dotfiles, ``.git``, ``..``), before or after
symlinks are resolved; a directory means its ``index.html`` and the path is
resolved *after* that is appended, so a symlinked ``index.html`` cannot
point outside; a NUL byte or non-UTF-8 path is a 400.

Memory (docs/security.md, item 8; issue 14, item 4): a file is never read
whole.  :meth:`StaticFiles.respond` opens the file and returns a
:class:`FileBody` (the head plus the open file); :func:`send_file` writes the
head and then the body straight from the file: ``loop.sendfile`` (the
kernel's ``sendfile(2)``, no user-space copy) on plain TCP, and over TLS
``CHUNK`` (64 KiB) reads, each written only once the transport's buffer has
drained below its low-water mark.  Per connection that is at most
``CHUNK`` + the transport's high-water mark (64 KiB) of user space; per
process ``max_connections`` (512) times that, 64 MiB, whatever the files'
sizes.  A client that stops reading is cut after ``stall`` seconds (30 s) for
one ``SENDFILE_CHUNK`` (1 MiB): about 35 KB/s is the slowest link served.
:func:`send_file` runs inside ``process_request``; the connection is closed
when the body is out, so ``websockets`` (which does not answer on a closed
connection) sends nothing after it.

Validators and caching (issue 14, item 4; docs/deploy.md).  Every ``200``
carries a strong ``ETag`` (the file's size and mtime; a precompressed twin
has its own) and ``Last-Modified``; ``If-None-Match`` (or, without it,
``If-Modified-Since``) that still matches is a ``304`` with no body.
``scripts/build_site.py`` puts everything but ``index.html`` (and
``site.json``) under ``assets/<content hash>/``: a path whose first segment
is ``assets`` and second a hexadecimal hash of at least 16 digits
(:data:`IMMUTABLE_DIR`) is served ``Cache-Control: public, max-age=31536000,
immutable`` (a new build gives new names), everything else ``no-cache`` (the
browser keeps its copy and revalidates it: ``304``).  When the client
accepts ``br`` or ``gzip`` and ``X.br`` / ``X.gz`` sits next to ``X`` (not
older than ``X``), the twin is sent with ``Content-Encoding`` (``br``
preferred at equal ``q``); every file answer says ``Vary: Accept-Encoding``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import importlib.resources
import logging
import mimetypes
import os
import re
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = [
    "FileBody",
    "StaticFiles",
    "Variant",
    "default_static_dir",
    "installed_site_dir",
    "plain_response",
    "response",
    "send_file",
]

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

#: ``Cache-Control`` of a file under a content-hashed folder, and of everything else.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
#: ``assets/<hash>/...``: the folders ``scripts/build_site.py`` names by their content.
IMMUTABLE_DIR = re.compile(r"^assets/[0-9a-f]{16,64}/")
#: Precompressed twins, in order of preference at equal ``q``: (suffix, Content-Encoding).
ENCODINGS = ((".br", "br"), (".gz", "gzip"))
#: TLS: bytes read from the file per write (user-space memory per connection, with the
#: transport's 64 KiB high-water mark).
CHUNK = 64 * 1024
#: Plain TCP: bytes per ``loop.sendfile`` call, each of which must finish within ``stall``.
SENDFILE_CHUNK = 1024 * 1024
#: Seconds a client may take to read one :data:`SENDFILE_CHUNK` before it is cut.
STALL_TIMEOUT = 30.0


def response(
    status: int,
    body: bytes,
    ctype: str,
    extra: tuple[tuple[str, str], ...] = (),
    *,
    cache: str = REVALIDATE,
    length: int | None = None,
) -> Response:
    """A complete HTTP response (``Connection: close``; the security headers are added later).

    ``length``: the ``Content-Length`` of a body sent separately (:class:`FileBody`)."""
    headers = Headers(
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body) if length is None else length)),
            ("Cache-Control", cache),
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
    #: ``"br"`` / ``"gzip"`` for a precompressed twin, ``None`` for the file itself.
    encoding: str | None

    @property
    def etag(self) -> str:
        """Strong entity tag: size and mtime (and the encoding for a twin)."""
        tag = f"{self.size:x}-{self.mtime_ns:x}"
        return f'"{tag}-{self.encoding}"' if self.encoding else f'"{tag}"'

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


@dataclass(frozen=True, slots=True)
class FileBody:
    """A ``200`` to be sent by :func:`send_file`: the head (``Content-Length`` set, no body) and the
    open file it describes (``size`` bytes, as ``fstat`` saw them when it was opened)."""

    head: Response
    file: BinaryIO
    size: int


def _stat_variant(path: Path, encoding: str | None) -> Variant:
    st = path.stat()
    return Variant(path, st.st_size, st.st_mtime_ns, encoding)


def accepted_codings(accept_encoding: str | None) -> dict[str, float]:
    """``{coding: q}`` of an ``Accept-Encoding`` value (lower-case names; ``*`` kept as is)."""
    out: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        name, _, params = item.strip().partition(";")
        if not name.strip():
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        out[name.strip().lower()] = q
    return out


def coding_q(codings: dict[str, float], coding: str) -> float:
    """The ``q`` a client gives ``coding`` (``x-gzip`` counts for ``gzip``, then ``*``)."""
    if coding in codings:
        return codings[coding]
    if coding == "gzip" and "x-gzip" in codings:
        return codings["x-gzip"]
    return codings.get("*", 0.0)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value allows ``gzip`` (``q=0`` refuses; ``*`` counts)."""
    return coding_q(accepted_codings(accept_encoding), "gzip") > 0


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


def not_modified(variant: Variant, cache: str = REVALIDATE) -> Response:
    """``304``: the validators and caching headers, no body and no ``Content-Length``."""
    headers = Headers(
        [
            ("Cache-Control", cache),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
            *variant.validators(),
        ]
    )
    return Response(304, HTTPStatus(304).phrase, headers, b"")


def cache_control(rel: str) -> str:
    """:data:`IMMUTABLE` under a content-hashed folder, :data:`REVALIDATE` elsewhere."""
    return IMMUTABLE if IMMUTABLE_DIR.match(rel) else REVALIDATE


class StaticFiles:
    """Files under ``root``: resolved by the path rules above, answered by :meth:`respond`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

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
        """The file to send for ``target``: the precompressed twin (``X.br``, ``X.gz``) the client
        accepts with the highest ``q`` (``br`` first at equal ``q``) that is a regular file under
        the root not older than ``target``; else ``target`` itself."""
        plain = _stat_variant(target, None)
        if target.suffix in (".gz", ".br"):
            return plain
        codings = accepted_codings(accept_encoding)
        best: tuple[float, int, Variant] | None = None
        for rank, (suffix, coding) in enumerate(ENCODINGS):
            q = coding_q(codings, coding)
            if q <= 0:
                continue
            with contextlib.suppress(OSError, ValueError):
                twin = target.with_name(target.name + suffix).resolve(strict=True)
                inside = twin.relative_to(self.root)  # the path rules of resolve()
                if twin.is_file() and not any(p.startswith(".") for p in inside.parts):
                    v = _stat_variant(twin, coding)
                    if v.mtime_ns >= plain.mtime_ns and (best is None or (q, -rank) > (best[0], best[1])):
                        best = (q, -rank, v)
        return best[2] if best is not None else plain

    async def respond(self, path: str, *, request_headers: Headers | None = None) -> Response | FileBody:
        """Answer ``GET path``: an error or ``304`` as a :class:`Response`, a file as a
        :class:`FileBody` (open; :func:`send_file` sends and closes it).

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
        rel = target.relative_to(self.root).as_posix()
        cache = cache_control(rel)
        try:
            variant = self.variant(target, _joined(hdrs, "Accept-Encoding"))
            file = await asyncio.to_thread(open, variant.path, "rb")
        except OSError:
            return plain_response(404, "Not found\n")
        try:
            st = os.fstat(file.fileno())  # what is sent is what was opened, even if replaced since
            variant = Variant(variant.path, st.st_size, st.st_mtime_ns, variant.encoding)
        except OSError:
            file.close()
            return plain_response(404, "Not found\n")
        inm = _joined(hdrs, "If-None-Match")
        ims = _joined(hdrs, "If-Modified-Since")
        if (inm is not None and _etag_matches(inm, variant.etag)) or (
            inm is None and ims is not None and _not_modified_since(ims, variant)
        ):
            file.close()
            return not_modified(variant, cache)
        name = target.name
        ctype = _MIME.get(os.path.splitext(name)[1]) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        head = response(200, b"", ctype, variant.validators(), cache=cache, length=variant.size)
        return FileBody(head, file, variant.size)


class _Conn(Protocol):
    """What :func:`send_file` needs of a ``websockets`` server connection."""

    @property
    def transport(self) -> asyncio.Transport: ...

    @property
    def connection_lost_waiter(self) -> asyncio.Future[None]: ...

    async def drain(self) -> None: ...


async def send_file(conn: _Conn, body: FileBody, *, stall: float = STALL_TIMEOUT) -> int:
    """Write ``body`` (head, then the file) to ``conn``'s transport and close the connection.

    Returns the body bytes sent.  A client that takes longer than ``stall``
    seconds for one chunk, a reset, or a file that shrank is cut (abort); the
    file is always closed.  Bounded memory: see the module docstring.
    """
    transport = conn.transport
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        transport.write(body.head.serialize())
        native = transport.get_extra_info("sslcontext") is None
        while sent < body.size:
            n = min(SENDFILE_CHUNK if native else CHUNK, body.size - sent)
            async with asyncio.timeout(stall):
                if native:
                    got = await loop.sendfile(transport, body.file, sent, n, fallback=True)
                else:
                    data = await asyncio.to_thread(os.pread, body.file.fileno(), n, sent)
                    got = len(data)
                    if got:
                        transport.write(data)
                        await conn.drain()
            if got <= 0:
                raise EOFError("file shrank while being sent")
            sent += got
        async with asyncio.timeout(stall):
            if not transport.is_closing():
                transport.close()  # flushes what is buffered, then closes
            await asyncio.shield(conn.connection_lost_waiter)
    except (OSError, EOFError, RuntimeError, TimeoutError) as exc:
        log.debug("static file cut", extra={"event": "static_cut", "sent": sent, "reason": type(exc).__name__})
        transport.abort()
    finally:
        await asyncio.to_thread(body.file.close)
    return sent


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
