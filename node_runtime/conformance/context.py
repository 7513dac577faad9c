"""Options of a kit run and the per-case context (connections, shell helpers).

A case gets a :class:`Ctx`: the options, the wire profile under test, what
the probe learnt about the server (:class:`ServerInfo`), and helpers that
open connections, say ``hello``, open a shell channel and drive it with
shell commands.  Every connection a case opens is closed (WebSocket code
1000, which ends its session) when the case ends.

Shell commands are templates (``KitOptions.commands``), so a server whose
channels run something other than a POSIX shell on a PTY can adapt them.
Markers are printed split (``printf '%s%s\\n' HEAD TAIL``) so the terminal's
echo of the command line never matches the marker itself.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import CloseCode
from ...core.messages import (
    Auth,
    Hello,
    HelloCaps,
    HelloOk,
    Open,
    OpenErr,
    OpenOk,
    ResumeRequest,
    Target,
    Term,
    User,
)
from ...core.profiles import DEFAULT_MAX_FRAME, WireProfile
from .wire import KitFailure, Wire

__all__ = ["DEFAULT_COMMANDS", "PROFILES", "Ctx", "KitOptions", "ServerInfo"]

#: The profiles the kit knows how to test (it frames malformed input by hand).
PROFILES = ("nimbus.v1", "json-base64.v1", "lenpfx.v1")

#: Shell command templates.  ``{head}``/``{tail}``: the two halves of a marker
#: the command must print joined, followed by a newline; ``{n}``, ``{code}``:
#: numbers.  ``bytes`` must print exactly the octets ``00 01 7f 80 fe ff``.
DEFAULT_COMMANDS: dict[str, str] = {
    "mark": "printf '%s%s\\n' {head} {tail}",
    "pid": "printf '%s%s\\n' {head} $$",
    "status": "printf '%s%s\\n' {head} $?",
    "size": "stty size",
    "sleep": "sh -c 'printf \"%s%s\\n\" {head} {tail}; exec sleep 30'",
    "bulk": "head -c {n} /dev/zero | tr '\\0' x",
    "bytes": "printf '\\000\\001\\177\\200\\376\\377'",
    "hexdump": "head -c {n} | od -An -tx1",
    "seq": "seq 1 {n}",
    "exit": "exit {code}",
    "kill": "kill -9 $$",
}


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "nimbus"


@dataclass
class KitOptions:
    """Everything ``nimbus-ws conformance`` can set."""

    url: str
    profiles: tuple[str, ...] = ("nimbus.v1",)
    #: Bearer token the server requires (``None``: say ``auth.scheme: none``).
    token: str | None = None
    #: ``Origin`` header sent on every upgrade (``None``: no header).
    origin: str | None = None
    target: tuple[str, int] = ("127.0.0.1", 22)
    user: str = field(default_factory=_default_user)
    #: ``open.user.auth`` (opaque to the protocol; e.g. ``{"password": ...}`` for SSH).
    user_auth: Mapping[str, Any] = field(default_factory=dict)
    #: A target the server's policy refuses (``open_err`` case; ``None``: skipped).
    denied_target: tuple[str, int] | None = None
    term: tuple[int, int] = (80, 24)
    #: Seconds any single wait may take.
    timeout: float = 5.0
    #: Seconds of observation for "nothing arrives" checks (no credit, credit spent).
    quiet_window: float = 0.5
    #: Credit window the kit keeps outstanding on channels it reads normally.
    window: int = 64 * 1024
    skip_slow: bool = False
    #: ``fnmatch`` patterns on case names (``credit.*``); empty: every case.
    only: tuple[str, ...] = ()
    commands: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COMMANDS))

    @property
    def case_timeout(self) -> float:
        """Upper bound on one case's duration (a hung case fails, it never hangs the run)."""
        return max(10.0, 6 * self.timeout + 4 * self.quiet_window)


@dataclass
class ServerInfo:
    """What the probe learnt: the server's ``hello_ok`` for this profile."""

    hello_ok: HelloOk
    subprotocol: str | None

    @property
    def max_frame(self) -> int:
        """``hello_ok.caps.maxFrame`` or the 1 MiB default."""
        return self.hello_ok.caps.max_frame or DEFAULT_MAX_FRAME

    @property
    def resume(self) -> bool:
        """The server issues resume tokens."""
        return self.hello_ok.resume is not None


class Ctx:
    """Per-case context: options, profile, server info, and the case's connections."""

    def __init__(self, opts: KitOptions, profile: WireProfile, info: ServerInfo | None, log: deque[str]) -> None:
        self.opts = opts
        self.profile = profile
        self.info = info
        self.log = log
        self.wires: list[Wire] = []
        self._labels = 0
        self.t0 = time.monotonic()  # frame log times are relative to the case's start

    # ---------------------------------------------------------- connections

    @property
    def timeout(self) -> float:
        """The per-wait timeout."""
        return self.opts.timeout

    async def connect(
        self,
        *,
        subprotocols: list[str] | None = None,
        origin: str | None | bool = True,
    ) -> Wire:
        """A new WebSocket (``origin=True``: the configured Origin)."""
        self._labels += 1
        org = self.opts.origin if origin is True else (origin or None)
        w = await Wire.open(
            self.opts.url,
            self.profile,
            timeout=self.opts.timeout,
            subprotocols=subprotocols,
            origin=org,
            label=f"c{self._labels}",
            log=self.log,
            t0=self.t0,
        )
        self.wires.append(w)
        return w

    def hello_msg(
        self,
        *,
        ack: bool = False,
        resume: ResumeRequest | None = None,
        profile: str | None | bool = True,
        auth: Auth | None | bool = True,
    ) -> Hello:
        """The ``hello`` the kit sends (``True`` arguments mean "the configured value")."""
        if auth is True:
            auth = Auth("bearer", self.opts.token) if self.opts.token else Auth("none")
        prof = self.profile.id if profile is True else (profile or None)
        caps = HelloCaps(profile=prof, ack=ack) if (prof or ack) else None
        return Hello(1, auth or None, caps, resume, {"name": "nimbus-ws-conformance"})

    async def ready(self, *, ack: bool = False, resume: ResumeRequest | None = None) -> tuple[Wire, HelloOk]:
        """Connect and complete the handshake."""
        w = await self.connect()
        ok = await w.hello(self.hello_msg(ack=ack, resume=resume))
        return w, ok

    async def cleanup(self) -> None:
        """Close every connection of the case (1000 ends its session on the server)."""
        wires, self.wires = self.wires, []
        await asyncio.gather(*(w.close(CloseCode.NORMAL) for w in wires), return_exceptions=True)

    # -------------------------------------------------------------- channels

    def open_msg(self, cid: int, *, target: tuple[str, int] | None = None, term: tuple[int, int] | None = None) -> Open:
        """An ``open`` for the configured target, user and terminal."""
        host, port = target or self.opts.target
        cols, rows = term or self.opts.term
        return Open(
            cid,
            Target(host, port),
            User(self.opts.user, dict(self.opts.user_auth)),
            Term(cols, rows, {"TERM": "xterm-256color"}),
        )

    async def open_shell(
        self,
        w: Wire,
        cid: int = 1,
        *,
        window: int | None = None,
        term: tuple[int, int] | None = None,
    ) -> OpenOk:
        """Open channel ``cid`` and wait for ``open_ok``; keep ``window`` credit out (0: none)."""
        w.channels.pop(cid, None)
        await w.send(self.open_msg(cid, term=term))

        def done(m: object) -> bool:
            return isinstance(m, (OpenOk, OpenErr)) and m.id == cid

        m = await w.expect(done, f"open_ok for channel {cid}", self.opts.timeout * 2)
        if isinstance(m, OpenErr):
            raise KitFailure(f"open of channel {cid} refused: {m.code} {m.msg!r} (check --target/--user)")
        assert isinstance(m, OpenOk)
        win = self.opts.window if window is None else window
        if win:
            w.auto_credit(cid, win)
            await w.top_up(cid)
        return m

    # ---------------------------------------------------------------- shell

    def cmd(self, name: str, **kw: Any) -> str:
        """The shell command ``name`` with its placeholders filled."""
        return self.opts.commands[name].format(**kw)

    def marker(self, tag: str, name: str = "mark") -> tuple[str, bytes]:
        """A command printing a fresh marker, and the marker's bytes."""
        head = f"NIMBUS_{tag.upper()}_"
        tail = secrets.token_hex(4)
        return self.cmd(name, head=head, tail=tail), (head + tail).encode()

    async def line(self, w: Wire, cid: int, command: str, *, chunk: int | None = None) -> None:
        """Type ``command`` and Enter on channel ``cid``."""
        await w.send_input(cid, command.encode() + b"\n", chunk=chunk)

    async def sync(self, w: Wire, cid: int = 1, tag: str = "sync") -> None:
        """Run a marker command and wait for its output: the shell is up and caught up."""
        command, mark = self.marker(tag)
        await self.line(w, cid, command)
        await w.until_output(cid, mark, f"marker {mark.decode()!r} (is the channel a shell on a PTY?)", self.opts.timeout * 2)

    async def between(self, w: Wire, cid: int, start: bytes, end: bytes, what: str) -> bytes:
        """Output strictly between the next ``start``-line and ``end`` markers."""
        await w.until_output(cid, re.compile(re.escape(start) + rb"\r?\n"), f"{what} start marker")
        ch = w.chan(cid)
        begin = ch.cursor
        mt = await w.until_output(cid, end, f"{what} end marker")
        return ch.data(begin)[: ch.dropped + mt.start() - begin]
