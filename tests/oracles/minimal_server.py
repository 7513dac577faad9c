#!/usr/bin/env python3
"""A minimal nimbus.ssh.v1 server for the ``json-base64.v1`` and ``lenpfx.v1`` wire profiles.

A reference for implementers in other languages: one file, ``websockets``
and the standard library only, every rule spelled out by hand (it does not
import ``nimbus_websocket``).  Each channel is a local command on a PTY.
One process speaks one profile, chosen with ``--profile`` (default
``json-base64.v1``).

Run it and test it with the conformance kit::

    python minimal_server.py --port 8766 --command "bash --norc -i"
    nimbus-ws conformance ws://127.0.0.1:8766/ --profile json-base64.v1 --denied-target 192.0.2.1:22

    python minimal_server.py --profile lenpfx.v1 --port 8767 --command "bash --norc -i"
    nimbus-ws conformance ws://127.0.0.1:8767/ --profile lenpfx.v1 --denied-target 192.0.2.1:22

It prints ``listening ws://HOST:PORT/`` on stdout once bound (``--port 0``
picks a free port).

Wire profiles (section 5 of the contract) differ only in how a message
becomes a WebSocket frame; that is the "Framing" section below, one class
per profile.  Everything else -- the control messages of section 2 and the
rules around them -- is the same for both:

* ``json-base64.v1`` (subprotocol ``nimbus.ssh.json-base64.v1``): every
  WebSocket message is a JSON text frame.  Control messages are the JSON
  objects of section 2; data is
  ``{"t": "data", "id": N, "stream": "stdout"|"stderr", "data": "<base64>"}``.
* ``lenpfx.v1`` (subprotocol ``nimbus.ssh.lenpfx.v1``): every WebSocket
  message is one binary envelope ``[length u32 BE][kind u8][id u32 BE][payload]``.
  The length field counts the bytes after itself (kind + id + payload), so it
  is always the message length minus 4.  Kind ``0x10`` carries a control
  message as UTF-8 JSON (id field 0), ``0x01`` stdout (client input travels
  as ``0x01`` too), ``0x02`` stderr; every other kind is reserved (4014).

Implemented: ``hello``/``hello_ok`` with bearer tokens (``--token``; none
configured: anyone may connect, so bind to loopback only); Origin allow-list
(loopback origins and ``--allow-origin``); loopback-only targets (others get
``open_err POLICY_DENIED``); credit flow control with initial credit 0 -- the
PTY is only read while the channel has credit, so memory stays bounded;
``resize``, ``signal`` (to the PTY's foreground process group), ``exit``
after all output, ``close``; ``ping``/``pong``; the limits of section 9
(1 MiB frames, 4 channels, 50 control messages/s, 16 MiB outstanding credit)
and every close code of section 8 that applies.

Left out (the kit reports these cases as SKIP): resume tokens and
exactly-once resume (``caps.ack``) -- ``hello_ok`` carries no ``resume``,
and a ``hello`` asking to resume is refused with 4011.  Also left out: the
SSH backend, permessage-deflate, server-initiated pings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import fcntl
import hmac
import json
import math
import os
import shlex
import signal
import struct
import termios
import time
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

SERVER_NAME = "minimal-server/1"

MAX_FRAME = 1 << 20  # bytes per WebSocket message, envelope included
MAX_CHANNELS = 4
MAX_CREDIT = 16 << 20  # outstanding credit per channel
MAX_INPUT = 4 << 20  # input waiting for the PTY per channel
READ_CHUNK = 64 << 10  # one PTY read; its data frame stays far below MAX_FRAME
RATE, BURST = 50.0, 50.0  # control messages per second (all but flow and pong)
HELLO_TIMEOUT, IDLE_TIMEOUT = 10.0, 60.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SIGNALS = {"INT", "TERM", "HUP", "QUIT", "KILL", "TSTP", "CONT", "STOP", "USR1", "USR2", "WINCH"}

# Close codes (section 8).
BAD_HELLO, UNSUPPORTED_PROFILE, AUTH_FAILED, POLICY_DENIED = 4002, 4001, 4003, 4004
CHANNEL_LIMIT, FLOW_VIOLATION, UNSUPPORTED_MESSAGE = 4006, 4007, 4009
RESUME_FAILED, TIMEOUT, DUPLICATE_CHANNEL_ID, MALFORMED_FRAME = 4011, 4012, 4013, 4014


class Fail(Exception):
    """A protocol violation: the connection closes with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_json(text: str) -> dict[str, Any]:
    """Parse one JSON object (no NaN/Infinity, bounded nesting); 4014 if it is not one."""
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Fail(MALFORMED_FRAME, "invalid JSON") from None
    if not isinstance(obj, dict):
        raise Fail(MALFORMED_FRAME, "a message must be a JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def to_json(msg: dict[str, Any]) -> str:
    """A control message as compact JSON."""
    return json.dumps(msg, separators=(",", ":"))


# ==========================================================================
# Framing: the only part that differs between wire profiles.
#
# A profile has a name (what ``hello.caps.profile`` asks for), a WebSocket
# subprotocol, and three functions:
#
#   decode(frame)             -> ("ctl", dict) or ("data", (stream, id, payload));
#                                raises Fail(4014) for a malformed frame
#   encode_ctl(msg)           -> the frame carrying control message ``msg``
#   encode_data(id, payload)  -> the frame carrying stdout bytes of channel ``id``
#
# The control dict is only checked for being a JSON object here; its fields
# are validated once, for every profile, in the next section.


class JsonBase64:
    """``json-base64.v1``: JSON text frames; data is base64 in a ``t: data`` object."""

    name = "json-base64.v1"
    subprotocol = "nimbus.ssh.json-base64.v1"

    @staticmethod
    def decode(frame: str | bytes) -> tuple[str, Any]:
        if not isinstance(frame, str):
            raise Fail(MALFORMED_FRAME, "json-base64.v1 uses text frames only")
        obj = parse_json(frame)
        if obj.get("t") != "data":
            return "ctl", obj
        cid, stream, data = obj.get("id"), obj.get("stream"), obj.get("data")
        if not is_int(cid, 1, 2**32 - 1):
            raise Fail(MALFORMED_FRAME, "data.id must be an integer in 1..2^32-1")
        if stream not in ("stdout", "stderr"):
            raise Fail(MALFORMED_FRAME, "data.stream must be stdout or stderr")
        if not isinstance(data, str):
            raise Fail(MALFORMED_FRAME, "data.data must be a base64 string")
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise Fail(MALFORMED_FRAME, "data.data is not valid base64") from None
        return "data", (stream, cid, payload)

    @staticmethod
    def encode_ctl(msg: dict[str, Any]) -> str:
        return to_json(msg)

    @staticmethod
    def encode_data(cid: int, payload: bytes) -> str:
        return to_json({"t": "data", "id": cid, "stream": "stdout", "data": base64.b64encode(payload).decode()})


class Lenpfx:
    """``lenpfx.v1``: binary envelopes ``[length u32 BE][kind u8][id u32 BE][payload]``."""

    name = "lenpfx.v1"
    subprotocol = "nimbus.ssh.lenpfx.v1"

    HEADER = struct.Struct(">IBI")  # length, kind, channel id
    KIND_CTL, KIND_STDOUT, KIND_STDERR = 0x10, 0x01, 0x02

    @staticmethod
    def decode(frame: str | bytes) -> tuple[str, Any]:
        if not isinstance(frame, bytes):
            raise Fail(MALFORMED_FRAME, "lenpfx.v1 uses binary frames only")
        if len(frame) < Lenpfx.HEADER.size:
            raise Fail(MALFORMED_FRAME, "envelope shorter than its 9-byte header")
        length, kind, cid = Lenpfx.HEADER.unpack_from(frame)
        if length != len(frame) - 4:
            raise Fail(MALFORMED_FRAME, f"length field {length} but {len(frame) - 4} bytes follow it")
        body = frame[Lenpfx.HEADER.size :]
        if kind == Lenpfx.KIND_CTL:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise Fail(MALFORMED_FRAME, "control envelope is not UTF-8") from None
            return "ctl", parse_json(text)
        if kind not in (Lenpfx.KIND_STDOUT, Lenpfx.KIND_STDERR):
            raise Fail(MALFORMED_FRAME, f"reserved kind 0x{kind:02x}")
        if not 1 <= cid <= 2**32 - 1:
            raise Fail(MALFORMED_FRAME, "channel id 0")
        return "data", ("stdout" if kind == Lenpfx.KIND_STDOUT else "stderr", cid, body)

    @staticmethod
    def encode_ctl(msg: dict[str, Any]) -> bytes:
        body = to_json(msg).encode()
        return Lenpfx.HEADER.pack(5 + len(body), Lenpfx.KIND_CTL, 0) + body

    @staticmethod
    def encode_data(cid: int, payload: bytes) -> bytes:
        return Lenpfx.HEADER.pack(5 + len(payload), Lenpfx.KIND_STDOUT, cid) + payload


Framing = type[JsonBase64] | type[Lenpfx]
PROFILES: dict[str, Framing] = {JsonBase64.name: JsonBase64, Lenpfx.name: Lenpfx}
DEFAULT_PROFILE = JsonBase64.name

# End of framing: everything below is the same for every profile.
# ==========================================================================


# --------------------------------------------------------------------------
# Validation of control messages (section 2; 12.3: 4014 for a bad field,
# 4009 for an unknown type).


def is_int(v: Any, lo: int, hi: int) -> bool:
    """True for an integer (not a bool) in ``lo..hi``."""
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def is_num(v: Any) -> bool:
    """True for a finite JSON number."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def need(msg: dict[str, Any], key: str, ok: bool, what: str) -> None:
    """Raise 4014 unless ``ok``."""
    if not ok:
        raise Fail(MALFORMED_FRAME, f"{msg['t']}.{key} must be {what}")


def check_id(m: dict[str, Any]) -> None:
    need(m, "id", is_int(m.get("id"), 1, 2**32 - 1), "an integer in 1..2^32-1")


def check_size(m: dict[str, Any]) -> None:
    need(m, "cols", is_int(m.get("cols"), 1, 10000), "an integer in 1..10000")
    need(m, "rows", is_int(m.get("rows"), 1, 10000), "an integer in 1..10000")


def check_hello(m: dict[str, Any]) -> None:
    need(m, "proto", is_int(m.get("proto"), 0, 2**31), "an integer")
    if m["proto"] != 1:
        raise Fail(BAD_HELLO, "unsupported proto")
    auth, caps = m.get("auth"), m.get("caps")
    need(m, "auth", auth is None or isinstance(auth, dict), "an object")
    need(m, "caps", caps is None or isinstance(caps, dict), "an object")
    if auth is not None:
        need(m, "auth.scheme", auth.get("scheme") in ("bearer", "none"), '"bearer" or "none"')
        need(m, "auth.token", auth["scheme"] == "none" or isinstance(auth.get("token"), str), "a string")
    if caps is not None:
        need(m, "caps.profile", caps.get("profile") is None or isinstance(caps["profile"], str), "a string")


def check_open(m: dict[str, Any]) -> None:
    check_id(m)
    target, user, term = m.get("target"), m.get("user"), m.get("term")
    need(m, "target", isinstance(target, dict), "an object")
    need(m, "user", isinstance(user, dict), "an object")
    assert isinstance(target, dict) and isinstance(user, dict)
    need(m, "target.host", isinstance(target.get("host"), str), "a string")
    need(m, "target.port", is_int(target.get("port"), 0, 65535), "an integer in 0..65535")
    need(m, "user.username", isinstance(user.get("username"), str), "a string")
    if term is not None:
        need(m, "term", isinstance(term, dict), "an object")
        check_size({**term, "t": "open.term"})


def check_signal(m: dict[str, Any]) -> None:
    check_id(m)
    sig = m.get("sig")
    need(m, "sig", isinstance(sig, str) and sig.isascii() and sig.isalnum() and len(sig) <= 32, "a signal name")


def check_flow(m: dict[str, Any]) -> None:
    check_id(m)
    need(m, "credit", is_int(m.get("credit"), 0, 2**31), "an integer in 0..2^31")


def check_resize(m: dict[str, Any]) -> None:
    check_id(m)
    check_size(m)


def check_ts(m: dict[str, Any]) -> None:
    need(m, "ts", is_num(m.get("ts")), "a number")


CLIENT_MESSAGES = {
    "hello": check_hello,
    "open": check_open,
    "resize": check_resize,
    "signal": check_signal,
    "close": check_id,
    "flow": check_flow,
    "ping": check_ts,
    "pong": check_ts,
}


def validate(msg: dict[str, Any]) -> str:
    """Check a client control message; return its type."""
    t = msg.get("t")
    if not isinstance(t, str):
        raise Fail(MALFORMED_FRAME, "missing string field t")
    check = CLIENT_MESSAGES.get(t)
    if check is None:  # unknown, or a server-only message such as exit
        raise Fail(UNSUPPORTED_MESSAGE, f"unsupported message type {t[:32]!r}")
    check(msg)
    return t


# --------------------------------------------------------------------------
# Channels: a command on a PTY, read only while credit allows.


class Channel:
    """One channel: a process on a PTY, its credit and its exit."""

    def __init__(self, conn: Connection, cid: int) -> None:
        self.conn = conn
        self.id = cid
        self.loop = asyncio.get_running_loop()
        self.credit = 0  # initial credit is 0 (12.1)
        self.master: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.reading = False
        self.writing = False
        self.eof = False
        self.status: int | None = None
        self.exit_sent = False
        self.closed = False
        self.input = bytearray()

    async def start(self, argv: list[str], cols: int, rows: int, term: str) -> None:
        """Spawn ``argv`` on a new PTY of ``cols`` x ``rows``."""
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {
            "TERM": term,
            "HOME": os.environ.get("HOME", "/"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                start_new_session=True,  # own session, the PTY becomes its controlling terminal
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            )
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self.loop.create_task(self._wait())

    # ------------------------------------------------------------- output

    def grant(self, n: int) -> None:
        """A ``flow``: more credit, so read again."""
        self.credit += n
        if self.credit > MAX_CREDIT:
            raise Fail(FLOW_VIOLATION, f"channel {self.id}: more than 16 MiB credit outstanding")
        self.update()

    def update(self) -> None:
        """Read from the PTY exactly while the channel has credit; send exit when done."""
        want = self.credit > 0 and not self.eof and not self.closed and self.master is not None
        if want != self.reading and self.master is not None:
            self.reading = want
            if want:
                self.loop.add_reader(self.master, self._readable)
            else:
                self.loop.remove_reader(self.master)
        self._maybe_exit()

    def _readable(self) -> None:
        assert self.master is not None
        try:
            data = os.read(self.master, min(self.credit, READ_CHUNK))
        except BlockingIOError:
            return
        except OSError:  # EIO: every process holding the PTY is gone
            data = b""
        if data:
            self.credit -= len(data)  # never beyond credit
            self.conn.send_frame(self.conn.framing.encode_data(self.id, data))
        else:
            self.eof = True
        self.update()

    async def _wait(self) -> None:
        assert self.proc is not None
        self.status = await self.proc.wait()
        self._maybe_exit()

    def _maybe_exit(self) -> None:
        """``exit`` follows the last output byte: only once the PTY holds nothing more."""
        if self.status is None or self.exit_sent or self.closed or self.master is None:
            return
        if not self.eof and _pending(self.master) > 0:
            return  # output still waiting for credit
        self.exit_sent = True
        msg: dict[str, Any] = {"t": "exit", "id": self.id}
        if self.status >= 0:
            msg["code"] = self.status
        else:
            msg["sig"] = signal.Signals(-self.status).name.removeprefix("SIG")
        self.conn.send(msg)
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.master)

    # -------------------------------------------------------------- input

    def write(self, data: bytes) -> None:
        """Input for the process (bounded)."""
        if self.closed or self.master is None:
            return
        self.input += data
        if len(self.input) > MAX_INPUT:
            raise Fail(FLOW_VIOLATION, f"channel {self.id}: input floods the terminal")
        self._flush()

    def _flush(self) -> None:
        if self.master is None:
            return
        while self.input:
            try:
                n = os.write(self.master, self.input)
            except BlockingIOError:
                break
            except OSError:
                self.input.clear()
                break
            del self.input[:n]
        want = bool(self.input)
        if want != self.writing:
            self.writing = want
            if want:
                self.loop.add_writer(self.master, self._flush)
            else:
                self.loop.remove_writer(self.master)

    # ------------------------------------------------------------ control

    def resize(self, cols: int, rows: int) -> None:
        """TIOCSWINSZ; the kernel sends SIGWINCH to the foreground group."""
        if self.master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def signal(self, name: str) -> None:
        """Deliver ``SIG<name>`` to the PTY's foreground process group (what Ctrl-C reaches)."""
        name = name.upper().removeprefix("SIG")
        if name not in SIGNALS or self.master is None or self.proc is None:
            return
        with contextlib.suppress(OSError):
            os.killpg(os.tcgetpgrp(self.master), getattr(signal, "SIG" + name))

    def close(self) -> None:
        """Hang up: SIGHUP to the process group, release the PTY; SIGKILL after 2 s."""
        if self.closed:
            return
        self.closed = True
        if self.master is not None:
            if self.reading:
                self.loop.remove_reader(self.master)
            if self.writing:
                self.loop.remove_writer(self.master)
            os.close(self.master)
            self.master = None
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGHUP)
            self.loop.call_later(2.0, _kill, proc)


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def _pending(fd: int) -> int:
    """Bytes readable on ``fd`` right now."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0


# --------------------------------------------------------------------------
# Connections.


class Connection:
    """One WebSocket: handshake, dispatch, limits, and the ordered outgoing queue."""

    channel_class = Channel

    def __init__(self, ws: ServerConnection, framing: Framing, argv: list[str], tokens: tuple[str, ...]) -> None:
        self.ws = ws
        self.framing = framing
        self.argv = argv
        self.tokens = tokens
        self.ready = False
        self.closing = False
        self.channels: dict[int, Channel] = {}
        self.out: asyncio.Queue[str | bytes | tuple[int, str]] = asyncio.Queue()
        self.rate_tokens = BURST
        self.rate_at = time.monotonic()

    # ---------------------------------------------------------- plumbing

    def send(self, msg: dict[str, Any]) -> None:
        """Queue a control message."""
        self.send_frame(self.framing.encode_ctl(msg))

    def send_frame(self, frame: str | bytes) -> None:
        """Queue a frame; one writer task keeps them in order."""
        if not self.closing:
            self.out.put_nowait(frame)

    def fail(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` (after what is already queued)."""
        if self.closing:
            return
        self.closing = True
        self.end_channels()
        self.out.put_nowait((code, reason[:120]))

    def end_channels(self) -> None:
        """Hang up every channel (no resume in this server)."""
        for ch in self.channels.values():
            ch.close()
        self.channels.clear()

    async def run(self) -> None:
        """Read until the socket closes; a writer task sends."""
        writer = asyncio.create_task(self._write_loop())
        try:
            while True:
                timeout = IDLE_TIMEOUT if self.ready else HELLO_TIMEOUT
                try:
                    frame = await asyncio.wait_for(self.ws.recv(), timeout)
                except TimeoutError:
                    self.fail(TIMEOUT, "idle timeout" if self.ready else "no hello")
                    continue
                if self.closing:
                    continue  # keep reading (and discarding) until the close completes
                try:
                    await self.handle(frame)
                except Fail as exc:
                    self.fail(exc.code, exc.reason)
        except ConnectionClosed:
            pass
        finally:
            self.closing = True
            self.end_channels()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                item = await self.out.get()
                if isinstance(item, tuple):
                    await self.ws.close(*item)
                    return
                await self.ws.send(item)

    def rate_limit(self) -> None:
        """Token bucket: 50 control messages per second, burst 50 (then 4004)."""
        now = time.monotonic()
        self.rate_tokens = min(BURST, self.rate_tokens + (now - self.rate_at) * RATE)
        self.rate_at = now
        if self.rate_tokens < 1:
            raise Fail(POLICY_DENIED, "control message rate limit exceeded")
        self.rate_tokens -= 1

    # ---------------------------------------------------------- dispatch

    async def handle(self, frame: str | bytes) -> None:
        """One message from the client."""
        kind, body = self.framing.decode(frame)
        if not self.ready:
            if kind != "ctl" or body.get("t") != "hello":
                raise Fail(BAD_HELLO, "the first message must be hello")
            validate(body)
            self.on_hello(body)
            return
        if kind == "data":
            stream, cid, payload = body
            if stream != "stdout":
                raise Fail(MALFORMED_FRAME, "clients send input as stream stdout only")
            ch = self.channels.get(cid)
            if ch is not None:  # unknown or closed ids are ignored (12.5)
                ch.write(payload)
            return
        t = validate(body)
        if t == "hello":
            raise Fail(BAD_HELLO, "second hello")
        if t not in ("flow", "pong"):
            self.rate_limit()
        if t == "open":
            await self.on_open(body)
            return
        ch = self.channels.get(body.get("id", 0))
        if t == "ping":
            self.send({"t": "pong", "ts": body["ts"]})
        elif t == "flow" and ch is not None:
            ch.grant(body["credit"])
        elif t == "resize" and ch is not None:
            ch.resize(body["cols"], body["rows"])
        elif t == "signal" and ch is not None:
            ch.signal(body["sig"])
        elif t == "close" and ch is not None:
            del self.channels[ch.id]
            ch.close()
            self.send({"t": "close", "id": ch.id})

    def on_hello(self, m: dict[str, Any]) -> None:
        """Profile negotiation, authentication, ``hello_ok``."""
        profile = (m.get("caps") or {}).get("profile") or "nimbus.v1"
        if profile != self.framing.name:
            raise Fail(UNSUPPORTED_PROFILE, f"profile {profile[:64]!r} not supported")
        if self.tokens:
            auth = m.get("auth") or {}
            given = str(auth.get("token") or "").encode()
            ok = False
            for t in self.tokens:  # no early exit: constant time over the list
                ok |= hmac.compare_digest(given, t.encode())
            if auth.get("scheme") != "bearer" or not ok:
                raise Fail(AUTH_FAILED, "authentication failed")
        if m.get("resume") is not None:
            raise Fail(RESUME_FAILED, "this server does not resume sessions")
        self.ready = True
        self.send({
            "t": "hello_ok",
            "server": SERVER_NAME,
            "caps": {"flow": "credit", "maxFrame": MAX_FRAME, "profileAccepted": self.framing.name},
        })

    async def on_open(self, m: dict[str, Any]) -> None:
        """Limits, target policy, then a process on a PTY."""
        cid = m["id"]
        if cid in self.channels:
            raise Fail(DUPLICATE_CHANNEL_ID, f"channel id {cid} in use")
        if len(self.channels) >= MAX_CHANNELS:
            raise Fail(CHANNEL_LIMIT, f"more than {MAX_CHANNELS} channels")
        host = m["target"]["host"].strip("[]").lower()
        if host not in LOOPBACK:
            self.send({"t": "open_err", "id": cid, "code": "POLICY_DENIED", "msg": f"target {host} not allowed"})
            return
        term = m.get("term") or {}
        ch = self.channel_class(self, cid)
        self.channels[cid] = ch  # counts toward the limit while it starts
        env_term = str((term.get("env") or {}).get("TERM", "xterm-256color"))
        try:
            await ch.start(self.argv, term.get("cols", 80), term.get("rows", 24), env_term)
        except OSError as exc:
            self.channels.pop(cid, None)
            self.send({"t": "open_err", "id": cid, "code": "BACKEND_FAILED", "msg": str(exc)[:200]})
            return
        if self.closing or self.channels.get(cid) is not ch:
            ch.close()
            return
        self.send({"t": "open_ok", "id": cid})


# --------------------------------------------------------------------------
# Server.


def origin_allowed(origin: str | None, extra: tuple[str, ...]) -> bool:
    """No Origin (not a browser), a loopback page, or one of ``extra``."""
    if origin is None:
        return True
    return (urlsplit(origin).hostname or "") in LOOPBACK or origin.rstrip("/") in extra


async def start_server(
    host: str,
    port: int,
    *,
    command: str,
    tokens: tuple[str, ...] = (),
    allow_origins: tuple[str, ...] = (),
    profile: str = DEFAULT_PROFILE,
    connection_class: type[Connection] = Connection,
) -> Any:
    """Listen on ``host:port`` (0: any free port) for ``profile``; returns the ``websockets`` server."""
    framing = PROFILES[profile]
    argv = shlex.split(command)

    async def handler(ws: ServerConnection) -> None:
        await connection_class(ws, framing, argv, tokens).run()

    def check_origin(conn: ServerConnection, request: Any) -> Any:
        if origin_allowed(request.headers.get("Origin"), allow_origins):
            return None
        return conn.respond(403, "Origin not allowed\n")

    return await serve(
        handler,
        host,
        port,
        subprotocols=[framing.subprotocol],  # type: ignore[list-item]
        process_request=check_origin,
        max_size=MAX_FRAME,  # larger messages close with 1009
        compression=None,
        ping_interval=None,
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: serve until SIGINT/SIGTERM."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE, help="wire profile")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--command", default=os.environ.get("SHELL", "/bin/sh") + " -i", help="run on each channel's PTY")
    p.add_argument("--token", action="append", default=[], help="accepted bearer token (repeatable)")
    p.add_argument("--allow-origin", action="append", default=[], help="allowed browser Origin (repeatable)")
    args = p.parse_args(argv)

    async def run() -> None:
        server = await start_server(
            args.host,
            args.port,
            command=args.command,
            tokens=tuple(args.token),
            allow_origins=tuple(args.allow_origin),
            profile=args.profile,
        )
        port = server.sockets[0].getsockname()[1]
        print(f"listening ws://{args.host}:{port}/", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()
        await server.wait_closed()

    asyncio.run(run())


if __name__ == "__main__":
    main()
