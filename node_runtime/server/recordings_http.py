"""Recordings over HTTP (``nimbus-ws serve --record DIR``): the player page, the list, the casts.

Routes under the base path, only when ``ServerOptions.record`` is set (the
server answers 404 for all of them otherwise):

* ``GET /recordings`` -- a redirect to ``/recordings/``;
* ``GET /recordings/`` -- the player page: ``recordings.html`` of the static
  site (``demo_site/recordings.html`` + ``recordings.mjs``, with
  asciinema-player served from the site like xterm.js; no CDN).  It is as
  public as the terminal page: it holds nothing, and asks for the token;
* ``GET /recordings/index.json`` -- ``{"recordings": [{name, size, mtime}]}``,
  newest first: the regular ``*.cast`` files directly in the record directory
  whose names are the recorder's (:data:`NAME`; no symlink, no dotfile, no
  subdirectory), at most :data:`MAX_LISTED`; ``mtime`` in seconds since the epoch;
* ``GET /recordings/files/NAME`` -- that file, streamed from disk with
  :func:`~.static.send_file` (bounded memory: never read whole), opened with
  ``O_NOFOLLOW``.  A name that is not :data:`NAME` -- ``..``, a slash, a
  percent-escape -- is a 404 before the file system is asked.

The list and the files are the sessions' output (and, with
``--record-input``, what was typed): they need the operator's credentials,
exactly as ``/metrics`` does (``check``: the server's Origin/Host rule, then
a bearer token, the auth hook, or the anonymous rule for the server's own
user).  Answers are ``Cache-Control: no-store``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path

from websockets.http11 import Request, Response

from .static import FileBody, StaticFiles, plain_response, response

__all__ = ["MAX_LISTED", "NAME", "PAGE", "PREFIX", "handles", "list_recordings", "respond"]

#: The path (under the base path) everything of this module lives at.
PREFIX = "/recordings"
#: The player page in the static site (``scripts/build_site.py`` writes it at the top).
PAGE = "/recordings.html"
#: A recording's file name as the recorder writes them (``recording.recording_name``):
#: letters, digits, ``.``, ``_``, ``-``, not starting with a dot, ending in ``.cast``.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,250}\.cast")
#: Entries ``index.json`` lists at most (the newest).
MAX_LISTED = 10_000
#: ``Content-Type`` of a cast (asciinema's).
CAST_TYPE = "application/x-asciicast"
NO_STORE = "no-store"

Check = Callable[[], Awaitable[Response | None]]


def handles(path: str) -> bool:
    """Whether ``path`` (relative to the base path) is one of this module's."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def list_recordings(
    directory: str | os.PathLike[str], limit: int = MAX_LISTED
) -> list[dict[str, object]]:
    """``[{name, size, mtime}]`` of the recordings directly in ``directory``, newest first.

    Only regular files (not followed through a symlink) whose name is :data:`NAME`;
    a missing or unreadable directory lists nothing.
    """
    found: list[tuple[float, str, int]] = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if not NAME.fullmatch(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.append((st.st_mtime, entry.name, st.st_size))
    except OSError:
        return []
    found.sort(key=lambda r: (-r[0], r[1]))
    return [
        {"name": name, "size": size, "mtime": round(mtime, 3)}
        for mtime, name, size in found[:limit]
    ]


def _open_cast(directory: str, name: str) -> FileBody | None:
    """The cast ``name`` in ``directory`` opened for sending, or ``None`` (missing, not a regular file, a symlink)."""
    try:
        fd = os.open(
            os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        )
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        file = os.fdopen(fd, "rb")
    except OSError:
        os.close(fd)
        return None
    head = response(
        200,
        b"",
        CAST_TYPE,
        (("Content-Disposition", f'inline; filename="{name}"'),),
        cache=NO_STORE,
        length=st.st_size,
    )
    return FileBody(head, file, st.st_size)


async def respond(
    path: str,
    request: Request,
    *,
    directory: str,
    base_path: str,
    static: StaticFiles | None,
    check: Check,
) -> Response | FileBody:
    """Answer ``GET path`` (:func:`handles` is true for it): a :class:`Response`, or a
    :class:`~.static.FileBody` for the caller to stream (:func:`~.static.send_file`).

    ``directory``: the record directory; ``base_path``: the server's URL prefix (for the
    redirect); ``static``: the site (the player page), if one is served; ``check()``: the
    operator-credentials check, ``None`` when it passes, else the refusal to send.
    """
    if request.headers.get("Upgrade") is not None:
        return plain_response(HTTPStatus.NOT_FOUND, "Not found\n")
    if path == PREFIX:
        location = base_path.rstrip("/") + PREFIX + "/"
        return response(
            HTTPStatus.MOVED_PERMANENTLY,
            b"Moved\n",
            "text/plain; charset=utf-8",
            (("Location", location),),
        )
    rest = path[len(PREFIX) + 1 :]
    if rest == "":
        if static is None:
            return plain_response(HTTPStatus.NOT_FOUND, "Not found (no static site is served)\n")
        page = await static.respond(PAGE, request_headers=request.headers)
        return page
    if rest == "index.json":
        refused = await check()
        if refused is not None:
            return refused
        found = await asyncio.to_thread(list_recordings, directory)
        body = json.dumps({"recordings": found}, separators=(",", ":")).encode()
        return response(200, body, "application/json", cache=NO_STORE)
    if rest.startswith("files/"):
        name = rest[len("files/") :]
        if not NAME.fullmatch(name):
            return plain_response(HTTPStatus.NOT_FOUND, "Not found\n")
        refused = await check()
        if refused is not None:
            return refused
        body_or_none = await asyncio.to_thread(_open_cast, str(Path(directory)), name)
        if body_or_none is None:
            return plain_response(HTTPStatus.NOT_FOUND, "Not found\n")
        return body_or_none
    return plain_response(HTTPStatus.NOT_FOUND, "Not found\n")
