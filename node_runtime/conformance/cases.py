"""The conformance cases: one coroutine per case, each against the wire only.

Every case opens its own connection(s), so cases are independent and one
failure does not cascade.  A case returns a short detail (PASS), raises
:class:`~.wire.Skip` (SKIP) or a :class:`~.wire.KitFailure` (FAIL).  Groups:

``handshake``  subprotocol, ``hello``/``hello_ok``, profile negotiation, 4001,
               4002, 4003, Origin.
``open``       ``open_ok``, ``open_err`` for a refused target.
``data``       output and input payloads arrive intact both ways.
``credit``     no data without credit, never beyond it, replenishment.
``term``       resize, signal, exit status.
``close``      channel close handshake, ids reused and ignored, ping/pong.
``error``      each close code the server must send for bad input.
``resume``     resume within the retention window, 4011, single-use tokens.
``ack``        exactly-once resume (``caps.ack``).
"""

from __future__ import annotations

import re
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ...core.errors import CloseCode
from ...core.messages import (
    Auth,
    Close,
    DataFrame,
    Eof,
    Exit,
    FileSpec,
    Flow,
    HelloOk,
    Open,
    OpenErr,
    OpenOk,
    Pong,
    Resize,
    ResumeChannel,
    ResumeRequest,
    Share,
    ShareErr,
    ShareOk,
    Signal,
    Unshare,
    Viewers,
)
from ...core.profiles import Frame
from .context import Ctx
from .wire import (
    OVERSIZE_CODES,
    RATE_CODES,
    ConnectRefused,
    KitFailure,
    ServerClosed,
    Skip,
    WaitTimeout,
    Wire,
    code_label,
    raw_json_frame,
)

__all__ = ["CASES", "Case"]

CaseFn = Callable[[Ctx], Awaitable[str]]


@dataclass(frozen=True)
class Case:
    """One conformance case."""

    name: str
    fn: CaseFn
    doc: str
    slow: bool = False
    #: Only for these profiles (``None``: every profile).
    profiles: tuple[str, ...] | None = None


CASES: list[Case] = []

_MiB = 1024 * 1024
_MAX_CREDIT = 16 * _MiB
_LHDR = struct.Struct(">IBI")


def case(name: str, *, slow: bool = False, profiles: tuple[str, ...] | None = None) -> Callable[[CaseFn], CaseFn]:
    """Register a case; its docstring's first line is its description."""

    def deco(fn: CaseFn) -> CaseFn:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        CASES.append(Case(name, fn, doc, slow, profiles))
        return fn

    return deco


def _check(cond: bool, reason: str) -> None:
    if not cond:
        raise KitFailure(reason)


async def _expect_code(ctx: Ctx, frame: Frame | None, codes: set[int], what: str, *, channel: bool = True) -> str:
    """Handshake, optionally open channel 1, send ``frame``, expect a close with one of ``codes``."""
    w, _ = await ctx.ready()
    if channel:
        await ctx.open_shell(w, 1, window=0)
    if frame is not None:
        try:
            await w.send_frame(frame)
        except ServerClosed as exc:  # closed while we were still writing: judge the code
            _check(exc.code in codes, f"closed with {code_label(exc.code)} after {what}, expected {_codes(codes)}")
            return f"closed {code_label(exc.code)}"
    code = await w.expect_close(codes, what)
    return f"closed {code_label(code)}"


def _codes(codes: set[int]) -> str:
    return " or ".join(code_label(c) for c in sorted(codes))


def _need_profile_json(ctx: Ctx) -> None:
    """Cases that frame raw JSON need one of the kit's three profiles."""
    if ctx.profile.id not in ("nimbus.v1", "json-base64.v1", "lenpfx.v1"):
        raise Skip(f"the kit cannot frame raw JSON for profile {ctx.profile.id}")


# =============================================================== handshake


@case("handshake.subprotocol")
async def handshake_subprotocol(ctx: Ctx) -> str:
    """The upgrade selects the profile's WebSocket subprotocol."""
    w = await ctx.connect()
    want = ctx.profile.subprotocols
    if not want:
        raise Skip(f"profile {ctx.profile.id} has no subprotocol")
    _check(w.subprotocol in want, f"server selected subprotocol {w.subprotocol!r}, expected one of {list(want)}")
    return f"selected {w.subprotocol}"


@case("handshake.hello_ok")
async def handshake_hello_ok(ctx: Ctx) -> str:
    """hello_ok comes first, with server, caps.flow=credit, profileAccepted and a sane maxFrame."""
    w, ok = await ctx.ready()
    _check(bool(ok.server), "hello_ok.server is empty")
    _check(ok.caps.profile_accepted == ctx.profile.id, f"profileAccepted {ok.caps.profile_accepted!r}, expected {ctx.profile.id!r}")
    mf = ok.caps.max_frame
    _check(mf is None or mf >= 4096, f"maxFrame {mf} is too small to be useful")
    if ok.resume is not None:
        _check(len(ok.resume.token) >= 22, "resume token shorter than 128 bits of base64")
        _check(ok.resume.ttl_ms > 0, "resume ttlMs is 0")
    # The connection must stay usable after hello_ok.
    await w.roundtrip()
    return f"server {ok.server!r}, maxFrame {mf or 'default'}, resume {'yes' if ok.resume else 'no'}"


@case("handshake.default_profile", profiles=("nimbus.v1",))
async def handshake_default_profile(ctx: Ctx) -> str:
    """A hello without caps.profile means nimbus.v1 (12.9)."""
    w = await ctx.connect()
    ok = await w.hello(ctx.hello_msg(profile=None))
    _check(ok.caps.profile_accepted == "nimbus.v1", f"profileAccepted {ok.caps.profile_accepted!r} for a hello without caps.profile")
    return "hello without caps.profile accepted as nimbus.v1"


@case("handshake.unsupported_profile")
async def handshake_unsupported_profile(ctx: Ctx) -> str:
    """caps.profile naming an unknown profile closes 4001."""
    w = await ctx.connect()
    await w.send(ctx.hello_msg(profile="conformance-bogus.v9"))
    code = await w.expect_close({CloseCode.UNSUPPORTED_PROFILE}, "hello with caps.profile 'conformance-bogus.v9'")
    return f"closed {code_label(code)}"


@case("handshake.non_hello_first")
async def handshake_non_hello_first(ctx: Ctx) -> str:
    """A control message before hello closes 4002."""
    _need_profile_json(ctx)
    w = await ctx.connect()
    await w.send_json({"t": "ping", "ts": 1})
    code = await w.expect_close({CloseCode.BAD_HELLO}, "ping as the first message")
    return f"closed {code_label(code)}"


@case("handshake.data_first")
async def handshake_data_first(ctx: Ctx) -> str:
    """A data frame before hello closes 4002 (12.3)."""
    w = await ctx.connect()
    for frame in ctx.profile.encode_data(DataFrame("stdout", 1, b"ls\n")):
        await w.send_frame(frame)
    code = await w.expect_close({CloseCode.BAD_HELLO}, "a data frame as the first message")
    return f"closed {code_label(code)}"


@case("handshake.second_hello")
async def handshake_second_hello(ctx: Ctx) -> str:
    """A second hello after hello_ok closes 4002."""
    w, _ = await ctx.ready()
    await w.send(ctx.hello_msg())
    code = await w.expect_close({CloseCode.BAD_HELLO}, "a second hello")
    return f"closed {code_label(code)}"


@case("handshake.bad_token")
async def handshake_bad_token(ctx: Ctx) -> str:
    """A wrong bearer token closes 4003 (SKIP when the server accepts anyone)."""
    w = await ctx.connect()
    await w.send(ctx.hello_msg(auth=Auth("bearer", "nimbus-conformance-wrong-token")))
    try:
        m = await w.next(context="waiting for the answer to a wrong token")
    except ServerClosed as exc:
        _check(exc.code == CloseCode.AUTH_FAILED, f"wrong token closed with {code_label(exc.code)}, expected 4003 AUTH_FAILED")
        return "closed 4003 AUTH_FAILED"
    if ctx.opts.token:
        raise KitFailure(f"server accepted a wrong bearer token although --token was given ({m!r})")
    raise Skip("server accepts any token (anonymous access); pass --token to test a server that requires one")


@case("handshake.no_token")
async def handshake_no_token(ctx: Ctx) -> str:
    """Without a token (auth scheme none) a server that requires one closes 4003."""
    if not ctx.opts.token:
        raise Skip("no --token given: the server is assumed to accept anonymous connections")
    w = await ctx.connect()
    await w.send(ctx.hello_msg(auth=Auth("none")))
    code = await w.expect_close({CloseCode.AUTH_FAILED}, "hello with auth.scheme none")
    return f"closed {code_label(code)}"


@case("handshake.foreign_origin")
async def handshake_foreign_origin(ctx: Ctx) -> str:
    """An upgrade from a foreign Origin is refused (section 9: Origin allow-list)."""
    origin = "https://conformance.invalid"
    try:
        w = await ctx.connect(origin=origin)
    except ConnectRefused as exc:
        _check(exc.status is not None and 400 <= exc.status < 500, f"upgrade from a foreign Origin failed oddly: {exc}")
        return f"refused with HTTP {exc.status}"
    try:
        await w.hello(ctx.hello_msg())
    except ServerClosed as exc:
        return f"upgrade accepted but closed {code_label(exc.code)} at hello"
    raise KitFailure(f"server accepted a connection from Origin {origin} (section 9 requires an Origin allow-list)")


# ==================================================================== open


@case("open.ok")
async def open_ok(ctx: Ctx) -> str:
    """open answers open_ok with the same id; the channel is a working terminal."""
    w, _ = await ctx.ready()
    ok = await ctx.open_shell(w, 7)
    await ctx.sync(w, 7)
    return f"open_ok for id 7, resumeKey {'present' if ok.resume_key else 'absent'}"


@case("open.denied_target")
async def open_denied_target(ctx: Ctx) -> str:
    """open to a target the server's policy refuses answers open_err; the connection stays up."""
    if ctx.opts.denied_target is None:
        raise Skip("no --denied-target given")
    w, _ = await ctx.ready()
    await w.send(ctx.open_msg(3, target=ctx.opts.denied_target))
    m = await w.expect(lambda m: isinstance(m, (OpenOk, OpenErr)) and m.id == 3, "open_err for channel 3")
    _check(isinstance(m, OpenErr), f"open to the refused target {ctx.opts.denied_target} succeeded")
    assert isinstance(m, OpenErr)
    await w.roundtrip("after open_err")
    return f"open_err {m.code} {m.msg[:60]!r}"


# ==================================================================== data


@case("data.echo")
async def data_echo(ctx: Ctx) -> str:
    """Input reaches the shell and its output comes back."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1)
    command, mark = ctx.marker("echo")
    await ctx.line(w, 1, command)
    await w.until_output(1, mark, f"marker {mark.decode()!r}")
    return f"round trip of {len(command) + 1} input bytes"


@case("data.binary_output")
async def data_binary_output(ctx: Ctx) -> str:
    """Output octets (00 01 7f 80 fe ff) arrive unaltered."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1)
    c1, m1 = ctx.marker("bin")
    c2, m2 = ctx.marker("bin")
    await ctx.line(w, 1, f"{c1}; {ctx.cmd('bytes')}; {c2}")
    got = await ctx.between(w, 1, m1, m2, "binary output")
    want = b"\x00\x01\x7f\x80\xfe\xff"
    _check(got == want, f"binary output {got!r}, expected {want!r}")
    return "6 octets intact"


@case("data.binary_input")
async def data_binary_input(ctx: Ctx) -> str:
    """Input octets split across many small frames arrive unaltered (read back with od)."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1)
    await ctx.sync(w, 1)
    payload = b"\x80\xff\xfe\xc3\xa9A"
    command, mark = ctx.marker("od")
    await ctx.line(w, 1, f"{command}; {ctx.cmd('hexdump', n=len(payload))}", chunk=3)
    await w.until_output(1, re.compile(re.escape(mark) + rb"\r?\n"), "od start marker")
    await w.send_input(1, payload + b"\n", chunk=1)
    hexes = " ".join(f"{b:02x}" for b in payload).encode()
    await w.until_output(1, re.compile(rb"\s" + re.escape(hexes) + rb"\s"), f"od output {hexes.decode()!r}")
    return f"{len(payload)} octets in 1-byte frames, read back intact"


@case("data.unknown_ids_ignored")
async def data_unknown_ids_ignored(ctx: Ctx) -> str:
    """Data and control for a channel id never opened are ignored (12.5)."""
    w, _ = await ctx.ready()
    await w.send_input(77, b"echo hello\n")
    await w.send(Flow(77, 1024))
    await w.send(Resize(77, 100, 30))
    await w.send(Signal(77, "INT"))
    await w.roundtrip("after frames for channel 77")
    return "data, flow, resize, signal for id 77 ignored"


# ================================================================== credit


@case("credit.none_without_grant", slow=True)
async def credit_none_without_grant(ctx: Ctx) -> str:
    """With no credit granted nothing arrives; the held output arrives once credit is given (12.1)."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1, window=0)
    command, mark = ctx.marker("held")
    await ctx.line(w, 1, command)
    got = await w.quiet(ctx.opts.quiet_window)  # Wire raises on the first byte beyond credit (0)
    _check(not got, f"{len(got)} data frames arrived with no credit")
    w.auto_credit(1, ctx.opts.window)
    await w.top_up(1)
    await w.until_output(1, mark, "held output after the first grant")
    return f"nothing in {ctx.opts.quiet_window:g} s without credit; output arrived after the grant"


@case("credit.never_beyond", slow=True)
async def credit_never_beyond(ctx: Ctx) -> str:
    """A grant of N bytes releases at most N bytes, and then nothing more."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1, window=0)
    await ctx.line(w, 1, ctx.cmd("bulk", n=20000))
    n = 100
    await w.grant(1, n)
    ch = w.chan(1)
    try:
        await w.until_state(lambda: ch.received >= n, f"{n} bytes for a grant of {n}")
    except WaitTimeout:
        raise KitFailure(f"stalled: granted {n}, received only {ch.received} although 20000 bytes are pending") from None
    got = await w.quiet(ctx.opts.quiet_window)
    _check(not got and ch.received == n, f"received {ch.received} bytes for a grant of {n}")
    return f"granted {n}, received exactly {n} in {ch.frames} frames, then nothing for {ctx.opts.quiet_window:g} s"


@case("credit.replenish")
async def credit_replenish(ctx: Ctx) -> str:
    """Grants of 1 KiB, each after the last is spent, carry a 20000-byte stream through intact."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1, window=0)
    c1, m1 = ctx.marker("bulk")
    c2, m2 = ctx.marker("bulk")
    total = 20000
    await ctx.line(w, 1, f"{c1}; {ctx.cmd('bulk', n=total)}; {c2}")
    ch = w.chan(1)
    rounds = 0
    while m2 not in ch.data(0) and rounds < 200:
        rounds += 1
        await w.grant(1, 1024)
        try:
            await w.until_state(lambda: ch.outstanding == 0 or m2 in ch.data(0), f"round {rounds} of 1024 bytes")
        except WaitTimeout:
            if m2 not in ch.data(0):
                raise KitFailure(
                    f"stream stalled in round {rounds}: {ch.outstanding} credit unspent with output pending"
                ) from None
    _check(m2 in ch.data(0), f"stream incomplete after {rounds} grants")
    data = ch.data(0)
    start = data.find(m1)
    body = data[start + len(m1) : data.find(m2)].lstrip(b"\r\n")
    _check(body == b"x" * total, f"stream body has {len(body)} bytes ({body.count(b'x')} x), expected {total} x")
    return f"{total} bytes intact over {rounds} grants of 1 KiB"


# ==================================================================== term


@case("term.resize")
async def term_resize(ctx: Ctx) -> str:
    """open.term sets the size and resize changes it (stty size)."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1, term=(80, 24))
    size_rx = re.compile(rb"(?:^|\n)(\d+) (\d+)\r?\n")

    async def size() -> tuple[int, int]:
        command, mark = ctx.marker("size")
        await ctx.line(w, 1, f"{command}; {ctx.cmd('size')}")
        await w.until_output(1, mark, "size marker")
        mt = await w.until_output(1, size_rx, "stty size output")
        return int(mt.group(1)), int(mt.group(2))

    first = await size()
    _check(first == (24, 80), f"initial size {first[0]} rows x {first[1]} cols, open.term asked 24 x 80")
    await w.send(Resize(1, 132, 43))
    second = await size()
    _check(second == (43, 132), f"size after resize {second[0]} rows x {second[1]} cols, expected 43 x 132")
    return "24x80 at open, 43x132 after resize"


@case("term.signal")
async def term_signal(ctx: Ctx) -> str:
    """signal INT interrupts a running sleep (status 130)."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1)
    await ctx.sync(w, 1)
    command, mark = ctx.marker("sleep", "sleep")
    await ctx.line(w, 1, command)
    await w.until_output(1, mark, "the sleep's start marker")
    await w.send(Signal(1, "INT"))
    await ctx.line(w, 1, ctx.cmd("status", head="NIMBUS_RC_"))
    mt = await w.until_output(1, re.compile(rb"NIMBUS_RC_(\d+)"), "the status after the signal (sleep 30 not interrupted?)")
    rc = int(mt.group(1))
    _check(rc == 130, f"sleep ended with status {rc}, expected 130 (killed by SIGINT)")
    return "sleep 30 interrupted, status 130"


@case("term.exit_code")
async def term_exit_code(ctx: Ctx) -> str:
    """exit 7 is reported as exit{code: 7} after the output; close then completes."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1)
    await ctx.sync(w, 1)
    await ctx.line(w, 1, ctx.cmd("exit", code=7))
    m = await w.expect_ctl(Exit, 1)
    assert isinstance(m, Exit)
    _check(m.code == 7 and m.sig is None, f"exit reported code {m.code} sig {m.sig}, expected code 7")
    if not w.chan(1).closed:
        await w.send(Close(1))
        await w.expect_ctl(Close, 1)
    return "exit code 7, then close"


@case("term.exit_signal")
async def term_exit_signal(ctx: Ctx) -> str:
    """A shell killed by SIGKILL is reported as exit{sig: KILL} (or code 137)."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1)
    await ctx.sync(w, 1)
    await ctx.line(w, 1, ctx.cmd("kill"))
    m = await w.expect_ctl(Exit, 1)
    assert isinstance(m, Exit)
    ok = (m.sig or "").upper().removeprefix("SIG") == "KILL" or m.code == 137
    _check(ok, f"exit reported code {m.code} sig {m.sig}, expected sig KILL")
    return f"exit sig {m.sig}" if m.sig else f"exit code {m.code} (signal folded into the status)"


# =================================================================== files (caps.files [ext], PROTOCOL.md 6.1)


def _file_open(ctx: Ctx, cid: int, spec: FileSpec) -> Open:
    base = ctx.open_msg(cid)
    return Open(cid, base.target, base.user, file=spec)


async def _file_answer(w: Wire, cid: int) -> OpenOk | OpenErr:
    m = await w.expect(lambda m: isinstance(m, (OpenOk, OpenErr)) and m.id == cid, f"open_ok for file channel {cid}")
    assert isinstance(m, (OpenOk, OpenErr))
    return m


async def _files_ready(ctx: Ctx) -> tuple[Wire, str]:
    """A connection to a server announcing caps.files, a shell on channel 1, and a fresh file name in its cwd."""
    w, ok = await ctx.ready()
    if not ok.caps.files:
        raise Skip("the server does not announce caps.files")
    await ctx.open_shell(w, 1)
    await ctx.sync(w, 1)
    return w, f".nimbus-kit-{secrets.token_hex(6)}"


async def _remove(ctx: Ctx, w: Wire, name: str) -> None:
    """Remove the case's file through the shell (the protocol has no delete)."""
    await ctx.line(w, 1, f"rm -f {name}")
    await ctx.sync(w, 1, "rm")


@case("files.put_then_get")
async def files_put_then_get(ctx: Ctx) -> str:
    """A put of binary bytes then a get of the same path returns them exactly (open_ok.size, exit 0)."""
    w, name = await _files_ready(ctx)
    payload = bytes(range(256)) * 256 + secrets.token_bytes(1000)  # 66,536 bytes, every octet
    try:
        await w.send(_file_open(ctx, 2, FileSpec("put", name, len(payload), 0o600, ref=1)))
        m = await _file_answer(w, 2)
        _check(isinstance(m, OpenOk), f"put refused: {getattr(m, 'code', '')} {getattr(m, 'msg', '')!r}")
        w.auto_credit(2, 64 * 1024)
        await w.top_up(2)
        await w.send_input(2, payload, chunk=16 * 1024)
        await w.send(Eof(2))
        done = await w.expect_ctl(Exit, 2)
        assert isinstance(done, Exit)
        _check(done.code == 0, f"put ended with exit {done.code} {w.chan(2).data()!r}")
        await w.send(_file_open(ctx, 3, FileSpec("get", name, ref=1)))
        got = await _file_answer(w, 3)
        _check(isinstance(got, OpenOk) and got.size == len(payload), f"get answered {got!r}, expected size {len(payload)}")
        w.auto_credit(3, 64 * 1024)
        await w.top_up(3)
        end = await w.expect_ctl(Exit, 3)
        assert isinstance(end, Exit)
        data = w.chan(3).data()
        _check(end.code == 0 and data == payload, f"get returned {len(data)} bytes (exit {end.code}), expected the {len(payload)} put")
    finally:
        await _remove(ctx, w, name)
    return f"{len(payload)} bytes up and back, byte-exact"


@case("files.cancel_leaves_nothing")
async def files_cancel_leaves_nothing(ctx: Ctx) -> str:
    """A put closed before its last byte leaves no file at the path."""
    w, name = await _files_ready(ctx)
    await w.send(_file_open(ctx, 2, FileSpec("put", name, 1 << 20, ref=1)))
    m = await _file_answer(w, 2)
    _check(isinstance(m, OpenOk), f"put refused: {m!r}")
    await w.send_input(2, b"x" * 65536)
    await w.send(Close(2))
    await w.expect_ctl(Close, 2)
    await w.send(_file_open(ctx, 3, FileSpec("get", name, ref=1)))
    got = await _file_answer(w, 3)
    if isinstance(got, OpenOk):
        await _remove(ctx, w, name)
    _check(isinstance(got, OpenErr), "the cancelled upload left a file behind")
    return f"get after cancel: open_err {getattr(got, 'code', '')}"


@case("files.short_put_fails")
async def files_short_put_fails(ctx: Ctx) -> str:
    """A put whose eof comes before size bytes ends with a non-zero exit and a reason on stderr."""
    w, name = await _files_ready(ctx)
    await w.send(_file_open(ctx, 2, FileSpec("put", name, 10, ref=1)))
    m = await _file_answer(w, 2)
    _check(isinstance(m, OpenOk), f"put refused: {m!r}")
    w.auto_credit(2, 64 * 1024)
    await w.top_up(2)
    await w.send_input(2, b"abc")
    await w.send(Eof(2))
    done = await w.expect_ctl(Exit, 2)
    assert isinstance(done, Exit)
    await _remove(ctx, w, name)
    _check(done.code not in (0, None), f"a short put ended with exit {done.code}")
    return f"exit {done.code}"


# =================================================================== share (caps.share [ext], PROTOCOL.md 6.2)


async def _share_ready(ctx: Ctx, mode: str) -> tuple[Wire, ShareOk, bytes]:
    """An owner with a shell on channel 1 that printed a marker, and a share link to it."""
    w, ok = await ctx.ready()
    if not ok.caps.share:
        raise Skip("the server does not announce caps.share")
    await ctx.open_shell(w, 1)
    command, mark = ctx.marker("shared")
    await ctx.line(w, 1, command)
    await w.until_output(1, mark, "the owner's marker")
    await w.send(Share(1, "read" if mode == "read" else "write", 42, 600))
    m = await w.expect(lambda m: isinstance(m, (ShareOk, ShareErr)) and m.id == 1, "share_ok")
    _check(isinstance(m, ShareOk), f"share refused: {m!r}")
    assert isinstance(m, ShareOk)
    _check(m.ref == 42 and m.mode == mode, f"share_ok {m!r} does not answer ref 42 / mode {mode}")
    return w, m, mark


async def _viewer(ctx: Ctx, token: str) -> tuple[Wire, HelloOk]:
    v = await ctx.connect()
    ok = await v.hello(ctx.hello_msg(auth=Auth("bearer", token)))
    return v, ok


@case("share.view_read_only")
async def share_view_read_only(ctx: Ctx) -> str:
    """A read-only link: the viewer gets caps.view, the screen with the owner's marker, live output; its input is refused without a disconnect."""
    w, link, mark = await _share_ready(ctx, "read")
    v, ok = await _viewer(ctx, link.token)
    _check(ok.caps.view == "read" and not ok.caps.share and not ok.caps.files, f"viewer caps {ok.caps!r}")
    await ctx.open_shell(v, 1)
    await v.until_output(1, mark, "the owner's screen on the viewer")
    typed, typed_mark = ctx.marker("viewer")
    await ctx.line(v, 1, typed)
    live, live_mark = ctx.marker("live")
    await ctx.line(w, 1, live)
    await v.until_output(1, live_mark, "the owner's live output on the viewer")
    await w.until_output(1, live_mark, "the owner's own output")
    _check(typed_mark not in w.chan(1).data(), "a read-only viewer's input reached the owner's shell")
    await v.roundtrip("the viewer after refused input")
    views = [m for m in w.ctl_seen if isinstance(m, Viewers) and m.id == 1]
    _check(bool(views) and any(len(m.viewers) == 1 for m in views), "the owner was not told of its viewer")
    return "screen, live output, refused input, viewers list"


@case("share.revoke")
async def share_revoke(ctx: Ctx) -> str:
    """unshare closes the viewer with 4016 and the link stops working (4003 at hello)."""
    w, link, _ = await _share_ready(ctx, "read")
    v, _ = await _viewer(ctx, link.token)
    await ctx.open_shell(v, 1)
    await w.send(Unshare(1, link.grant))
    code = await v.expect_close({CloseCode.SHARE_REVOKED}, "the viewer's close after unshare")
    again = await ctx.connect()
    try:
        await again.hello(ctx.hello_msg(auth=Auth("bearer", link.token)))
    except ServerClosed as exc:
        _check(exc.code == CloseCode.AUTH_FAILED, f"a revoked link closed {code_label(exc.code)}, expected 4003")
    else:
        raise KitFailure("a revoked link was accepted")
    await w.roundtrip("the owner after the revoke")
    return f"viewer closed {code_label(code)}, link refused 4003"


# =================================================================== close


@case("close.handshake")
async def close_handshake(ctx: Ctx) -> str:
    """close is answered by close; later frames for the id are ignored; the id can be reused (12.5, 12.6)."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1)
    await ctx.sync(w, 1)
    await w.send(Close(1))
    await w.expect_ctl(Close, 1)
    await w.send_input(1, b"echo late\n")
    await w.send(Resize(1, 90, 30))
    await w.roundtrip("after frames for the closed channel")
    await ctx.open_shell(w, 1)
    await ctx.sync(w, 1, "reused")
    return "close answered, late frames ignored, id 1 reopened"


@case("close.ping_pong")
async def close_ping_pong(ctx: Ctx) -> str:
    """ping is answered at once by pong with the same ts."""
    w, _ = await ctx.ready()
    t0 = time.monotonic()
    await w.ping(1234.5)
    m = await w.expect(lambda m: isinstance(m, Pong), "pong")
    assert isinstance(m, Pong)
    _check(m.ts == 1234.5, f"pong ts {m.ts}, expected 1234.5")
    return f"pong in {1000 * (time.monotonic() - t0):.1f} ms"


# =================================================================== error


def _malformed(profile_id: str) -> dict[str, tuple[str, Frame]]:
    """Per profile: case suffix -> (description, raw frame) that must close 4014."""
    one = (1).to_bytes(4, "big")
    if profile_id == "nimbus.v1":
        return {
            "truncated_frame": ("a 3-byte binary frame (the header is 5)", b"\x01\x00\x00"),
            "reserved_stream": ("stream byte 0x07", b"\x07" + one + b"x"),
            "stderr_from_client": ("stream byte 0x02 (stderr) from the client", b"\x02" + one + b"x"),
            "bad_json": ("a text frame with broken JSON", '{"t":"ping","ts":'),
        }
    if profile_id == "json-base64.v1":
        return {
            "truncated_frame": ("a data frame without its data field", '{"t":"data","id":1,"stream":"stdout"}'),
            "reserved_stream": ('stream "stdin"', '{"t":"data","id":1,"stream":"stdin","data":"eA=="}'),
            "stderr_from_client": ('stream "stderr" from the client', '{"t":"data","id":1,"stream":"stderr","data":"eA=="}'),
            "bad_json": ("a text frame with broken JSON", '{"t":"ping","ts":'),
            "frame_type": ("a binary frame", b"\x01" + one + b"x"),
            "bad_base64": ("data that is not base64", '{"t":"data","id":1,"stream":"stdout","data":"!!!"}'),
        }
    if profile_id == "lenpfx.v1":
        body = b'{"t":"ping","ts":'
        return {
            "truncated_frame": ("a 6-byte envelope (the header is 9)", b"\x00\x00\x00\x02\x01\x00"),
            "reserved_stream": ("kind byte 0x07", _LHDR.pack(6, 0x07, 1) + b"x"),
            "stderr_from_client": ("kind byte 0x02 (stderr) from the client", _LHDR.pack(6, 0x02, 1) + b"x"),
            "bad_json": ("a control envelope with broken JSON", _LHDR.pack(5 + len(body), 0x10, 0) + body),
            "frame_type": ("a text frame", '{"t":"ping","ts":1}'),
            "length_mismatch": ("length field 100 on a 10-byte envelope", _LHDR.pack(100, 0x01, 1) + b"x"),
        }
    return {}


_MALFORMED_DOCS = {
    "truncated_frame": "A frame shorter than its header (or missing a field of the data envelope) closes 4014.",
    "reserved_stream": "A data frame with a reserved stream byte/kind closes 4014.",
    "stderr_from_client": "Client data on stream stderr (0x02) closes 4014 (12.5).",
    "bad_json": "A control frame with broken JSON closes 4014.",
    "frame_type": "A frame of the wrong WebSocket type for the profile (text/binary) closes 4014.",
    "bad_base64": "A json-base64 data payload that is not base64 closes 4014.",
    "length_mismatch": "A lenpfx envelope whose length field disagrees with its size closes 4014.",
}


def _register_malformed() -> None:
    names: dict[str, list[str]] = {}
    for pid in ("nimbus.v1", "json-base64.v1", "lenpfx.v1"):
        for suffix in _malformed(pid):
            names.setdefault(suffix, []).append(pid)
    for suffix, pids in names.items():

        async def fn(ctx: Ctx, suffix: str = suffix) -> str:
            desc, frame = _malformed(ctx.profile.id)[suffix]
            return await _expect_code(ctx, frame, {CloseCode.MALFORMED_FRAME}, desc)

        fn.__doc__ = _MALFORMED_DOCS[suffix]
        case(f"error.{suffix}", profiles=None if len(pids) == 3 else tuple(pids))(fn)


_register_malformed()


@case("error.missing_field")
async def error_missing_field(ctx: Ctx) -> str:
    """A known message without a required field closes 4014 (12.3)."""
    _need_profile_json(ctx)
    return await _expect_code(ctx, raw_json_frame(ctx.profile.id, {"t": "resize", "id": 1, "cols": 80}), {CloseCode.MALFORMED_FRAME}, "resize without rows")


@case("error.wrong_type")
async def error_wrong_type(ctx: Ctx) -> str:
    """A field of the wrong type closes 4014 (12.3)."""
    _need_profile_json(ctx)
    frame = raw_json_frame(ctx.profile.id, {"t": "signal", "id": "1", "sig": "INT"})
    return await _expect_code(ctx, frame, {CloseCode.MALFORMED_FRAME}, "signal with a string id")


@case("error.out_of_range")
async def error_out_of_range(ctx: Ctx) -> str:
    """An out-of-range value (negative credit) closes 4014 (12.3)."""
    _need_profile_json(ctx)
    frame = raw_json_frame(ctx.profile.id, {"t": "flow", "id": 1, "credit": -5})
    return await _expect_code(ctx, frame, {CloseCode.MALFORMED_FRAME}, "flow with credit -5")


@case("error.unknown_type")
async def error_unknown_type(ctx: Ctx) -> str:
    """An unknown message type closes 4009."""
    _need_profile_json(ctx)
    frame = raw_json_frame(ctx.profile.id, {"t": "conformance_bogus", "id": 1})
    return await _expect_code(ctx, frame, {CloseCode.UNSUPPORTED_MESSAGE}, "t 'conformance_bogus'", channel=False)


def _sized_data_frame(profile_id: str, cid: int, size: int) -> Frame:
    """A valid data frame of exactly ``size`` bytes on the wire."""
    if profile_id == "nimbus.v1":
        return b"\x01" + cid.to_bytes(4, "big") + b"x" * (size - 5)
    if profile_id == "lenpfx.v1":
        return _LHDR.pack(size - 4, 0x01, cid) + b"x" * (size - 9)
    prefix = f'{{"t":"data","id":{cid},"stream":"stdout","data":"'
    avail = size - len(prefix) - 2
    b64 = "eHh4" * (avail // 4)
    return prefix + b64 + '"' + " " * (avail - len(b64)) + "}"


@case("error.max_frame_accepted", slow=True)
async def error_max_frame_accepted(ctx: Ctx) -> str:
    """A frame of exactly maxFrame bytes (envelope included, 12.2) is accepted."""
    _need_profile_json(ctx)
    w, ok = await ctx.ready()
    mf = ok.caps.max_frame or 1 << 20
    if mf > _MAX_CREDIT:
        raise Skip(f"maxFrame {mf} too large to test")
    await w.send_frame(_sized_data_frame(ctx.profile.id, 999, mf), note=f"data stdout#999 frame of exactly {mf} bytes")
    await w.roundtrip("after a maxFrame-sized frame")
    return f"{mf}-byte frame for an unopened id accepted"


@case("error.oversize_frame", slow=True)
async def error_oversize_frame(ctx: Ctx) -> str:
    """A frame one byte over maxFrame closes 1009 or 4008."""
    _need_profile_json(ctx)
    w, ok = await ctx.ready()
    mf = ok.caps.max_frame or 1 << 20
    if mf > _MAX_CREDIT:
        raise Skip(f"maxFrame {mf} too large to test")
    try:
        await w.send_frame(_sized_data_frame(ctx.profile.id, 999, mf + 1), note=f"data frame of {mf + 1} bytes (maxFrame + 1)")
    except ServerClosed as exc:
        _check(exc.code in OVERSIZE_CODES, f"closed with {code_label(exc.code)}, expected {_codes(OVERSIZE_CODES)}")
        return f"closed {code_label(exc.code)}"
    code = await w.expect_close(OVERSIZE_CODES, f"a {mf + 1}-byte frame")
    return f"closed {code_label(code)}"


@case("error.duplicate_id")
async def error_duplicate_id(ctx: Ctx) -> str:
    """Opening an id already open closes 4013."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1, window=0)
    await w.send(ctx.open_msg(1))
    code = await w.expect_close({CloseCode.DUPLICATE_CHANNEL_ID}, "a second open for id 1")
    return f"closed {code_label(code)}"


@case("error.channel_limit")
async def error_channel_limit(ctx: Ctx) -> str:
    """Four channels open; the fifth open closes 4006 (12.4)."""
    w, _ = await ctx.ready()
    for cid in range(1, 5):
        await ctx.open_shell(w, cid, window=0)
    await w.send(ctx.open_msg(5))
    code = await w.expect_close({CloseCode.CHANNEL_LIMIT}, "a fifth open")
    return f"4 channels opened, fifth closed {code_label(code)}"


@case("error.control_burst_ok")
async def error_control_burst_ok(ctx: Ctx) -> str:
    """40 pings at once (under 50/s) are all answered; the connection stays open."""
    w, _ = await ctx.ready()
    n = 40
    for i in range(n):
        await w.ping(i + 0.25)
    await w.until_state(lambda: len(w.pongs) >= n, f"{n} pongs")
    _check(w.pongs == [i + 0.25 for i in range(n)], "pongs out of order or with wrong ts")
    return f"{n} pongs in order"


@case("error.control_flood")
async def error_control_flood(ctx: Ctx) -> str:
    """300 pings as fast as possible (far over 50/s) close 4004 or 1008 (section 9, 12.10)."""
    w, _ = await ctx.ready()
    t0 = time.monotonic()
    sent = 0
    try:
        for i in range(300):
            await w.ping(i + 0.5)
            sent += 1
    except ServerClosed as exc:
        _check(exc.code in RATE_CODES, f"closed with {code_label(exc.code)} during the flood, expected {_codes(RATE_CODES)}")
        return f"closed {code_label(exc.code)} after {sent} pings"
    dt = time.monotonic() - t0
    try:
        code = await w.expect_close(RATE_CODES, f"{sent} pings in {dt:.2f} s")
    except WaitTimeout:
        raise KitFailure(f"{sent} pings in {dt:.2f} s ({sent / max(dt, 1e-3):.0f}/s), {len(w.pongs)} answered, no close") from None
    return f"closed {code_label(code)} after {len(w.pongs)} pongs"


@case("error.credit_overflow")
async def error_credit_overflow(ctx: Ctx) -> str:
    """16 MiB outstanding credit is allowed; more closes 4007 (12.10)."""
    w, _ = await ctx.ready()
    await ctx.open_shell(w, 1, window=0)
    await w.grant(1, _MAX_CREDIT)
    await w.roundtrip("after a 16 MiB grant (the limit itself is allowed)")
    await w.grant(1, _MiB)
    code = await w.expect_close({CloseCode.FLOW_VIOLATION}, "credit of 17 MiB outstanding")
    return f"16 MiB accepted, 17 MiB closed {code_label(code)}"


# ================================================================== resume


def _need_resume(ctx: Ctx) -> None:
    if ctx.info is None or not ctx.info.resume:
        raise Skip("server issues no resume token (hello_ok.resume absent)")


def _resume_req(token: str, chans: list[tuple[int, str | None, int]]) -> ResumeRequest:
    keyed = tuple(ResumeChannel(cid, key, rx) for cid, key, rx in chans if key)
    return ResumeRequest(token, keyed or None)


async def _pid(ctx: Ctx, w: Wire, cid: int) -> int:
    await ctx.line(w, cid, ctx.cmd("pid", head="NIMBUS_PID_"))
    mt = await w.until_output(cid, re.compile(rb"NIMBUS_PID_(\d+)"), "the shell's pid")
    return int(mt.group(1))


@case("resume.same_shell")
async def resume_same_shell(ctx: Ctx) -> str:
    """After a network drop, a resume with the token rebinds the same shell ($$ unchanged)."""
    _need_resume(ctx)
    w1, ok1 = await ctx.ready()
    assert ok1.resume is not None
    o = await ctx.open_shell(w1, 1)
    pid1 = await _pid(ctx, w1, 1)
    w1.abort()
    w2, ok2 = await ctx.ready(resume=_resume_req(ok1.resume.token, [(1, o.resume_key, w1.chan(1).received)]))
    _check(ok2.resume is not None and ok2.resume.token != ok1.resume.token, "the resume did not issue a fresh token")
    if ok2.caps.resumed is not None:
        _check(1 in [c.id for c in ok2.caps.resumed], f"hello_ok.caps.resumed {ok2.caps.resumed} lacks channel 1")
    w2.auto_credit(1, ctx.opts.window)
    await w2.top_up(1)
    pid2 = await _pid(ctx, w2, 1)
    _check(pid1 == pid2, f"shell pid {pid1} before the drop, {pid2} after the resume")
    return f"same shell (pid {pid1}) after drop and resume"


@case("resume.garbage_token")
async def resume_garbage_token(ctx: Ctx) -> str:
    """A resume with a garbage token closes 4011."""
    _need_resume(ctx)
    w = await ctx.connect()
    await w.send(ctx.hello_msg(resume=ResumeRequest("conformance-garbage.AAAAAAAAAAAAAAAAAAAAAA")))
    code = await w.expect_close({CloseCode.RESUME_FAILED}, "hello with a garbage resume token")
    return f"closed {code_label(code)}"


@case("resume.token_single_use")
async def resume_token_single_use(ctx: Ctx) -> str:
    """A used token is refused (4011) once the client confirmed its replacement,
    and the refusal does not disturb the resumed connection.

    Until the resumed connection carries a first message, a server may still
    accept the token it was resumed with (a ``hello_ok`` lost in a drop must
    not cost the session), so the case confirms with a ping first.
    """
    _need_resume(ctx)
    w1, ok1 = await ctx.ready()
    assert ok1.resume is not None
    token = ok1.resume.token
    w1.abort()
    w2, ok2 = await ctx.ready(resume=ResumeRequest(token))
    await w2.roundtrip("the resumed connection confirms its new token")
    w3 = await ctx.connect()
    await w3.send(ctx.hello_msg(resume=ResumeRequest(token)))
    code = await w3.expect_close({CloseCode.RESUME_FAILED}, "a second resume with the same token")
    await w2.roundtrip("the resumed connection after the refused reuse")
    _check(w2.close_code is None, "the resumed connection was closed by the refused reuse")
    return f"reuse closed {code_label(code)}; resumed connection unaffected"


@case("resume.after_normal_close")
async def resume_after_normal_close(ctx: Ctx) -> str:
    """Closing the WebSocket with 1000 ends the session: its token then closes 4011 (12.7)."""
    _need_resume(ctx)
    w1, ok1 = await ctx.ready()
    assert ok1.resume is not None
    await w1.close(CloseCode.NORMAL)
    w2 = await ctx.connect()
    await w2.send(ctx.hello_msg(resume=ResumeRequest(ok1.resume.token)))
    code = await w2.expect_close({CloseCode.RESUME_FAILED}, "resume of a session closed with 1000")
    return f"closed {code_label(code)}"


@case("resume.supersede")
async def resume_supersede(ctx: Ctx) -> str:
    """A resume while the old connection is still open closes the old one with 4000 (12.9)."""
    _need_resume(ctx)
    w1, ok1 = await ctx.ready()
    assert ok1.resume is not None
    await ctx.open_shell(w1, 1, window=0)
    w2, _ = await ctx.ready(resume=ResumeRequest(ok1.resume.token))
    code = await w1.expect_close({CloseCode.CANCELLED}, "a resume on another connection")
    await w2.roundtrip("the new connection")
    return f"old connection closed {code_label(code)}"


@case("resume.finished_channel")
async def resume_finished_channel(ctx: Ctx) -> str:
    """Held output and the exit of a channel that ended survive a drop and arrive after the resume (12.8)."""
    _need_resume(ctx)
    w1, ok1 = await ctx.ready()
    assert ok1.resume is not None
    o = await ctx.open_shell(w1, 1, window=0)
    command, mark = ctx.marker("away")
    await ctx.line(w1, 1, f"{command}; {ctx.cmd('exit', code=5)}")
    w1.abort()
    w2, _ = await ctx.ready(resume=_resume_req(ok1.resume.token, [(1, o.resume_key, 0)]))
    w2.auto_credit(1, ctx.opts.window)
    await w2.top_up(1)
    await w2.until_output(1, mark, "output held across the drop")
    ex = await w2.expect_ctl(Exit, 1)
    assert isinstance(ex, Exit)
    _check(ex.code == 5, f"exit code {ex.code} (sig {ex.sig}), expected 5")
    if not w2.chan(1).closed:
        await w2.send(Close(1))
        await w2.expect_ctl(Close, 1)
    return "output and exit 5 delivered after the resume"


# ===================================================================== ack


async def _ack_ready(ctx: Ctx) -> tuple[Wire, HelloOk]:
    _need_resume(ctx)
    w, ok = await ctx.ready(ack=True)
    if not ok.caps.ack:
        raise Skip("server does not offer caps.ack (exactly-once resume)")
    return w, ok


@case("ack.input_ack")
async def ack_input_ack(ctx: Ctx) -> str:
    """Under caps.ack the server acknowledges input with flow{credit 0, ack n} (12.12)."""
    w, _ = await _ack_ready(ctx)
    await ctx.open_shell(w, 1)
    await ctx.sync(w, 1)
    ch = w.chan(1)
    await w.until_state(lambda: bool(ch.acks) and ch.acks[-1] == ch.sent, f"an input ack of {ch.sent} bytes")
    return f"input acknowledged up to {ch.sent} bytes"


@case("ack.exactly_once", slow=True)
async def ack_exactly_once(ctx: Ctx) -> str:
    """Drop mid-stream, resume with rx: the stream continues exactly (no gap, no duplicate)."""
    w1, ok1 = await _ack_ready(ctx)
    assert ok1.resume is not None
    token = ok1.resume.token
    o = await ctx.open_shell(w1, 1, window=4096)
    await ctx.sync(w1, 1)
    n = 3000
    c1, m1 = ctx.marker("begin")
    c2, m2 = ctx.marker("end")
    await ctx.line(w1, 1, f"{c1}; {ctx.cmd('seq', n=n)}; {c2}")
    ch1 = w1.chan(1)
    await w1.until_output(1, m1, "the stream's start marker")
    w1.auto_credit(1, 0)
    # Spend the credit still outstanding, then grant 2 KiB more and treat what
    # arrives for it as lost in flight: the drop must not lose it.
    await w1.until_state(lambda: ch1.outstanding == 0 or m2 in ch1.data(0), "the stream to use up its credit")
    _check(m2 not in ch1.data(0), "the whole stream arrived before the drop (raise n)")
    rx, sent = ch1.received, ch1.sent
    await w1.grant(1, 2048)
    await w1.until_state(lambda: ch1.received > rx, "data for the last grant")
    in_flight = ch1.received - rx
    w1.abort()
    w2, ok2 = await ctx.ready(ack=True, resume=ResumeRequest(token, (ResumeChannel(1, o.resume_key or "", rx),)))
    _check(ok2.caps.ack, "resumed hello_ok lacks caps.ack")
    resumed = {c.id: c.rx for c in (ok2.caps.resumed or ())}
    _check(1 in resumed, f"hello_ok.caps.resumed {ok2.caps.resumed} lacks channel 1")
    _check(resumed[1] <= sent, f"server claims {resumed[1]} input bytes, only {sent} were sent")
    ch2 = w2.chan(1)
    if resumed[1] < sent:  # retransmit what the server did not get
        inp = f"{c1}; {ctx.cmd('seq', n=n)}; {c2}\n".encode()
        await w2.send_input(1, inp[len(inp) - (sent - resumed[1]) :])
    ch2.sent = sent
    early = await w2.quiet(min(ctx.opts.quiet_window, 0.3))
    _check(not early, "data arrived after the resume before any credit (12.1: credit restarts at 0)")
    w2.auto_credit(1, ctx.opts.window)
    await w2.top_up(1)
    await w2.until_output(1, m2, "the stream's end marker after the resume")
    data = ch1.data(0)[:rx] + ch2.data(0)
    start = data.find(m1)
    body = data[start + len(m1) : data.find(m2, start)].replace(b"\r\n", b"\n").lstrip(b"\n")
    want = "".join(f"{i}\n" for i in range(1, n + 1)).encode()
    if body != want:
        k = next((i for i in range(min(len(body), len(want))) if body[i] != want[i]), min(len(body), len(want)))
        raise KitFailure(
            f"stream differs at byte {k}: got {len(body)} bytes, expected {len(want)} "
            f"({'duplicate' if len(body) > len(want) else 'gap'}?); around it {body[max(0, k - 12) : k + 12]!r}"
        )
    return f"{len(want)} bytes exact across a drop with {in_flight} bytes in flight, resumed at rx {rx}"

