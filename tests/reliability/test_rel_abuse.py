"""A catalogue of abusive inputs against the real server, over the wire, each next to a healthy neighbour.

Every row names an abuse, what it sends, and the one outcome the contract
allows: a close code (PROTOCOL.md 10; the ``websockets`` library closes
1002/1007/1009 itself for RFC 6455 violations, which the contract accepts),
an ``open_err`` code, or ``alive`` (ignored; the connection still answers a
ping).  Before each abuse a *neighbour* connection opens a ``cat`` channel;
after it, the neighbour must still echo, answer a ping and hold its session
-- and nothing was logged at ERROR (no handler crashed).

Wire access reuses the conformance kit's raw client
(:class:`~nimbus_websocket.node_runtime.conformance.wire.Wire`) and, for
what no WebSocket library sends (bad opcodes, unmasked frames, oversized
control frames), :class:`rel_util.RawWs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from nimbus_websocket.core import (
    Auth,
    Close,
    Exit,
    Flow,
    Hello,
    HelloCaps,
    HelloOk,
    Open,
    OpenErr,
    OpenOk,
    Ping,
    Pong,
    Resize,
    ResumeChannel,
    ResumeRequest,
    ServerCaps,
    ServerConfig,
    Target,
    Term,
    User,
    get_profile,
)
from nimbus_websocket.node_runtime.conformance.wire import ServerClosed, WaitTimeout, Wire
from nimbus_websocket.node_runtime.server import Server
from rel_util import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWs, ws_frame

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
TARGET = Target("127.0.0.1", 22)
USER = User("abuser")
ANY_CODE = set(range(1000, 5000))
TOKENS = {"alice-token": "alice", "bob-token": "bob", "slow-token": "slow"}


async def _auth_hook(scheme: str, token: str | None) -> str | None:
    if scheme == "none":
        return "anon"
    if token == "slow-token":
        await asyncio.sleep(0.5)  # a slow identity provider (the server side of the scenario)
    return TOKENS.get(token or "")


class Ctx:
    """What an abuse gets: the server, and ways to connect."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.url = srv.url
        self.port = srv.port
        self.wires: list[Wire] = []
        self.raws: list[RawWs] = []

    async def wire(self, profile: str = "nimbus.v1") -> Wire:
        w = await Wire.open(self.url, get_profile(profile), timeout=10)
        self.wires.append(w)
        return w

    async def ready(self, profile: str = "nimbus.v1", token: str | None = None, resume: ResumeRequest | None = None) -> tuple[Wire, HelloOk]:
        w = await self.wire(profile)
        auth = Auth("bearer", token) if token else Auth("none")
        ok = await w.hello(Hello(auth=auth, caps=HelloCaps(profile, True), resume=resume))
        return w, ok

    async def opened(self, cid: int = 1, command: str = "exec cat", token: str | None = None) -> tuple[Wire, HelloOk, OpenOk]:
        w, ok = await self.ready(token=token)
        await w.send(Open(cid, TARGET, USER, None, command))
        m = await w.expect_ctl(OpenOk, cid)
        assert isinstance(m, OpenOk)
        return w, ok, m

    async def raw_ready(self) -> RawWs:
        """A hand-framed connection past hello_ok."""
        r = await RawWs.connect(self.port)
        self.raws.append(r)
        assert await r.handshake(RawWs.upgrade_request(self.port)) == 101
        await r.send(ws_frame(OP_TEXT, b'{"t":"hello","proto":1,"auth":{"scheme":"none"}}'))
        op, payload = await r.read_frame()
        assert op == OP_TEXT and json.loads(payload)["t"] == "hello_ok"
        return r

    async def cleanup(self) -> None:
        for w in self.wires:
            await w.close()
        for r in self.raws:
            r.abort()


# An outcome: ("close", {codes}) | ("open_err", "CODE") | ("alive", None) | ("open_ok", None)
Outcome = tuple[str, Any]
Abuse = Callable[[Ctx], Awaitable[Outcome]]


async def closed(w: Wire, what: str, timeout: float = 10) -> Outcome:
    return ("close", await w.expect_close(ANY_CODE, what, timeout))


async def alive(w: Wire) -> Outcome:
    await w.roundtrip("after the abuse")
    return ("alive", None)


async def flood(w: Wire, msgs: list[Any]) -> None:
    """Send ``msgs`` as fast as possible; the server may close in the middle (then stop)."""
    with contextlib.suppress(ServerClosed):
        for m in msgs:
            await w.send(m)


async def raw_closed(r: RawWs) -> Outcome:
    return ("close", await r.close_code())


def lenpfx_ctl(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return (len(body) + 5).to_bytes(4, "big") + b"\x10\0\0\0\0" + body


# ------------------------------------------------------------------ abuses

async def oversize_text_frame(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_frame('{"t":"ping","ts":1,"x":"' + "x" * MIB + '"}', note="1 MiB+ text")
    return await closed(w, "a text frame over maxFrame")


async def oversize_binary_frame(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_frame(b"\x01\0\0\0\x01" + bytes(MIB), note="1 MiB+ binary")
    return await closed(w, "a binary frame over maxFrame")


async def oversize_frame_before_hello(c: Ctx) -> Outcome:
    w = await c.wire()
    await w.send_frame("x" * (MIB + 1), note="1 MiB+ before hello")
    return await closed(w, "an oversized first frame")


async def declared_length_2_pow_63(c: Ctx) -> Outcome:
    r = await c.raw_ready()
    await r.send(ws_frame(OP_BINARY, b"", length=(1 << 63) - 1)[:14])  # header only: a 2^63-byte frame announced
    return await raw_closed(r)


async def non_utf8_text_frame(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.ws.send(b'{"t":"ping","ts":1}\xff\xfe', text=True)
    return await closed(w, "invalid UTF-8 in a text frame")


async def ws_ping_125_bytes(c: Ctx) -> Outcome:
    r = await c.raw_ready()
    await r.send(ws_frame(OP_PING, b"p" * 125))
    op, payload = await r.read_frame()
    assert (op, payload) == (OP_PONG, b"p" * 125)
    await r.send(ws_frame(OP_TEXT, b'{"t":"ping","ts":7}'))
    op, payload = await r.read_frame()
    assert op == OP_TEXT and json.loads(payload) == {"t": "pong", "ts": 7}
    return ("alive", None)


async def ws_ping_126_bytes(c: Ctx) -> Outcome:
    r = await c.raw_ready()
    await r.send(ws_frame(OP_PING, b"p" * 126))  # control frames carry at most 125
    return await raw_closed(r)


async def ws_ping_fragmented(c: Ctx) -> Outcome:
    r = await c.raw_ready()
    await r.send(ws_frame(OP_PING, b"abc", fin=False))
    return await raw_closed(r)


async def ws_reserved_opcode(c: Ctx) -> Outcome:
    r = await c.raw_ready()
    await r.send(ws_frame(0x3, b"?"))
    return await raw_closed(r)


async def ws_rsv1_without_deflate(c: Ctx) -> Outcome:
    r = await c.raw_ready()
    await r.send(ws_frame(OP_TEXT, b'{"t":"ping","ts":1}', rsv=0b100))
    return await raw_closed(r)


async def ws_unmasked_client_frame(c: Ctx) -> Outcome:
    r = await c.raw_ready()
    await r.send(ws_frame(OP_TEXT, b'{"t":"ping","ts":1}', mask=False))
    return await raw_closed(r)


async def ws_continuation_without_start(c: Ctx) -> Outcome:
    r = await c.raw_ready()
    await r.send(ws_frame(OP_CONT, b"orphan"))
    return await raw_closed(r)


async def json_ping_with_900k_junk_field(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_frame('{"t":"ping","ts":5,"junk":"' + "j" * 900_000 + '"}', note="900 KB ping")
    m = await w.expect(lambda m: isinstance(m, Pong), "pong")
    assert isinstance(m, Pong) and m.ts == 5  # unknown fields are ignored; the pong is small
    return await alive(w)


async def json_ping_ts_is_a_huge_string(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_frame('{"t":"ping","ts":"' + "9" * 500_000 + '"}', note="ts as 500 KB string")
    return await closed(w, "ping with a string ts")


async def truncated_data_header(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_frame(b"\x01\0\0")
    return await closed(w, "a 3-byte data frame")


async def empty_binary_frame(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_frame(b"")
    return await closed(w, "an empty binary frame")


async def reserved_stream_byte_0x03(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_frame(b"\x03\0\0\0\x01data")
    return await closed(w, "stream byte 0x03")


async def stream_byte_0x00(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_frame(b"\x00\0\0\0\x01data")
    return await closed(w, "stream byte 0x00")


async def client_stderr_stream(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_frame(b"\x02\0\0\0\x01data")
    return await closed(w, "client data on stderr")


async def data_channel_id_0(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_frame(b"\x01\0\0\0\0data")
    return await closed(w, "data for channel 0")


async def data_for_unknown_channel(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_frame(b"\x01\0\0\0\x09data for nobody")
    await w.send_frame(b"\x01\xff\xff\xff\xffdata for 2^32-1")
    return await alive(w)


async def data_for_closed_channel(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send(Close(1))
    await w.expect_ctl(Close, 1)
    await w.send_input(1, b"late input")
    await w.send(Flow(1, 1000))
    await w.send(Resize(1, 80, 24))
    return await alive(w)


async def invalid_json(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_frame('{"t":"ping","ts":1')
    return await closed(w, "truncated JSON")


async def json_nesting_bomb(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_frame('{"t":"ping","ts":1,"x":' + "[" * 100_000 + "]" * 100_000 + "}", note="depth 100000")
    return await closed(w, "JSON nested 100000 deep")


async def json_top_level_array(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_frame('[{"t":"ping","ts":1}]')
    return await closed(w, "a JSON array")


async def unknown_message_type(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_json({"t": "sudo", "id": 1})
    return await closed(w, "unknown t")


async def huge_integer_id(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_frame('{"t":"resize","id":' + "9" * 5000 + ',"cols":80,"rows":24}', note="5000-digit id")
    return await closed(w, "a 5000-digit integer")


async def float_overflow_ts(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_frame('{"t":"ping","ts":1e400}')
    return await closed(w, "ts 1e400")


async def nan_ts(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_frame('{"t":"ping","ts":NaN}')
    return await closed(w, "ts NaN")


async def negative_credit(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_json({"t": "flow", "id": 1, "credit": -1})
    return await closed(w, "credit -1")


async def credit_past_2_pow_31(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_json({"t": "flow", "id": 1, "credit": 2**31 + 1})
    return await closed(w, "credit 2^31+1")


async def credit_accumulated_past_16_mib(c: Ctx) -> Outcome:
    w, _, _ = await c.opened(command="exec sleep 30")  # no output: nothing spends the credit
    await w.send(Flow(1, 16 * MIB))
    await w.roundtrip("16 MiB outstanding is allowed")
    await w.send(Flow(1, 1))
    return await closed(w, "credit 16 MiB + 1 outstanding")


async def open_id_0(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_json({"t": "open", "id": 0, "target": {"host": "127.0.0.1", "port": 22}, "user": {"username": "u"}})
    return await closed(w, "open id 0")


async def open_id_2_pow_32(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_json({"t": "open", "id": 2**32, "target": {"host": "127.0.0.1", "port": 22}, "user": {"username": "u"}})
    return await closed(w, "open id 2^32")


async def open_id_2_pow_32_minus_1_is_fine(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send(Open(2**32 - 1, TARGET, USER, None, "exec cat"))
    await w.expect_ctl(OpenOk, 2**32 - 1)
    return ("open_ok", None)


async def open_flood_fifth_channel(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await flood(w, [Open(cid, TARGET, USER, None, "exec sleep 30") for cid in range(1, 6)])
    return await closed(w, "five opens")


async def open_close_flood_rate_limit(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    # 80 control messages in a burst: the bucket holds 50
    await flood(w, [m for _ in range(40) for m in (Open(1, TARGET, USER, None, "exec true"), Close(1))])
    return await closed(w, "80 opens/closes at once")


async def duplicate_channel_id(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send(Open(1, TARGET, USER, None, "exec cat"))
    return await closed(w, "a second open of id 1")


async def resize_flood(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send(Open(1, TARGET, USER, Term(80, 24), None))
    await w.expect_ctl(OpenOk, 1)
    await flood(w, [Resize(1, 80 + i % 50, 24) for i in range(200)])
    return await closed(w, "200 resizes at once")


async def signal_with_shell_metacharacters(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send_json({"t": "signal", "id": 1, "sig": "KILL; rm -rf /"})
    return await closed(w, "a signal name with metacharacters")


async def env_bomb(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    env = {f"V{i}": "x" for i in range(65)}
    await w.send_json({"t": "open", "id": 1, "target": {"host": "127.0.0.1", "port": 22}, "user": {"username": "u"},
                       "term": {"cols": 80, "rows": 24, "env": env}})
    return await closed(w, "65 env entries")


async def username_too_long(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send_json({"t": "open", "id": 1, "target": {"host": "127.0.0.1", "port": 22}, "user": {"username": "u" * 257}})
    return await closed(w, "a 257-character username")


async def resume_with_65_channels(c: Ctx) -> Outcome:
    w = await c.wire()
    chans = [{"id": i, "resumeKey": "k", "rx": 0} for i in range(1, 66)]
    await w.send_json({"t": "hello", "proto": 1, "resume": {"token": "a.b", "channels": chans}})
    return await closed(w, "65 resume channels")


async def hello_twice(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send(Hello(auth=Auth("none")))
    return await closed(w, "a second hello")


async def open_before_hello(c: Ctx) -> Outcome:
    w = await c.wire()
    await w.send(Open(1, TARGET, USER, None, "exec cat"))
    return await closed(w, "open before hello")


async def data_before_hello(c: Ctx) -> Outcome:
    w = await c.wire()
    await w.send_frame(b"\x01\0\0\0\x01early")
    return await closed(w, "data before hello")


async def message_while_auth_pending(c: Ctx) -> Outcome:
    w = await c.wire()
    await w.send(Hello(auth=Auth("bearer", "slow-token"), caps=HelloCaps("nimbus.v1")))
    await w.send(Ping(1))  # the server is still authenticating (0.5 s)
    return await closed(w, "a ping before hello_ok")


async def hello_proto_2(c: Ctx) -> Outcome:
    w = await c.wire()
    await w.send_json({"t": "hello", "proto": 2})
    return await closed(w, "proto 2")


async def unsupported_profile(c: Ctx) -> Outcome:
    w = await c.wire()
    await w.send(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v9")))
    return await closed(w, "profile nimbus.v9")


async def wrong_bearer_token(c: Ctx) -> Outcome:
    w = await c.wire()
    await w.send(Hello(auth=Auth("bearer", "alice-token "), caps=HelloCaps("nimbus.v1")))
    return await closed(w, "a wrong bearer token")


async def hello_ok_from_client(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send(HelloOk("me", ServerCaps("nimbus.v1")))
    return await closed(w, "hello_ok from a client")


async def exit_from_client(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send(Exit(1, 0))
    return await closed(w, "exit from a client")


async def open_err_from_client(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send(OpenErr(1, "X", "y"))
    return await closed(w, "open_err from a client")


async def _dropped_session(c: Ctx, token: str = "alice-token") -> tuple[str, str]:
    """A session with one channel whose connection dropped: (resume token, resumeKey)."""
    w, ok, opened = await c.opened(token=token)
    assert ok.resume is not None and opened.resume_key
    w.abort()
    await asyncio.sleep(0)
    return ok.resume.token, opened.resume_key


async def _resume(c: Ctx, token: str, key: str, *, rx: int = 0, as_token: str = "alice-token") -> Wire:
    w = await c.wire()
    await w.send(Hello(auth=Auth("bearer", as_token), caps=HelloCaps("nimbus.v1", True),
                       resume=ResumeRequest(token, (ResumeChannel(1, key, rx),))))
    return w


async def resume_token_of_another_principal(c: Ctx) -> Outcome:
    token, key = await _dropped_session(c)
    w = await _resume(c, token, key, as_token="bob-token")
    return await closed(w, "bob resuming alice's session")


async def reused_resume_token(c: Ctx) -> Outcome:
    token, key = await _dropped_session(c)
    w = await _resume(c, token, key)
    ok = await w.expect_hello_ok()
    assert ok.caps.resumed is not None
    await w.roundtrip("the client has its new token")  # from now on the old token is spent
    w2 = await _resume(c, token, key)
    return await closed(w2, "the same token a second time")


async def guessed_resume_token(c: Ctx) -> Outcome:
    token, key = await _dropped_session(c)
    sid = token.split(".")[0]
    guess = sid + "." + secrets.token_urlsafe(32)  # right session, random secret
    w = await _resume(c, guess, key)
    return await closed(w, "a guessed secret")


async def garbage_resume_token(c: Ctx) -> Outcome:
    w = await c.wire()
    await w.send(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1", True), resume=ResumeRequest("../../etc/passwd", ())))
    return await closed(w, "a garbage token")


async def wrong_resume_key(c: Ctx) -> Outcome:
    token, key = await _dropped_session(c)
    w = await _resume(c, token, "A" * len(key))
    return await closed(w, "a wrong resumeKey")


async def rx_beyond_bytes_sent(c: Ctx) -> Outcome:
    token, key = await _dropped_session(c)
    w = await _resume(c, token, key, rx=10**9)
    return await closed(w, "rx beyond what the server sent")


async def ack_beyond_bytes_sent(c: Ctx) -> Outcome:
    w, _, _ = await c.opened()
    await w.send(Flow(1, 100, ack=10**6))
    return await closed(w, "ack beyond bytes sent")


async def input_flood_past_4_mib_unread(c: Ctx) -> Outcome:
    w, _, _ = await c.opened(command="exec sleep 30")  # never reads its stdin
    chunk = bytes(256 * 1024)
    try:
        for _ in range(24):  # 6 MiB
            await w.send_input(1, chunk)
    except ServerClosed:
        pass
    return await closed(w, "6 MiB of input nobody reads")


async def target_not_allowed(c: Ctx) -> Outcome:
    w, _ = await c.ready()
    await w.send(Open(1, Target("10.0.0.1", 22), USER, None, "exec cat"))
    m = await w.expect(lambda m: isinstance(m, (OpenOk, OpenErr)), "open reply")
    assert isinstance(m, OpenErr)
    await w.roundtrip("after open_err")
    return ("open_err", m.code)


async def silence_after_upgrade(c: Ctx) -> Outcome:
    w = await c.wire()  # never says hello: hello_timeout (1 s here)
    return await closed(w, "no hello", timeout=10)


async def lenpfx_length_mismatch(c: Ctx) -> Outcome:
    w, _ = await c.ready("lenpfx.v1")
    frame = bytearray(lenpfx_ctl({"t": "ping", "ts": 1}))
    frame[3] += 1
    await w.send_frame(bytes(frame))
    return await closed(w, "a lenpfx length one too big")


async def lenpfx_text_frame(c: Ctx) -> Outcome:
    w, _ = await c.ready("lenpfx.v1")
    await w.send_frame('{"t":"ping","ts":1}')
    return await closed(w, "a text frame in lenpfx.v1")


async def json_base64_binary_frame(c: Ctx) -> Outcome:
    w, _ = await c.ready("json-base64.v1")
    await w.send_frame(b"\x01\0\0\0\x01data")
    return await closed(w, "a binary frame in json-base64.v1")


async def json_base64_bad_base64(c: Ctx) -> Outcome:
    w, _ = await c.ready("json-base64.v1")
    await w.send(Open(1, TARGET, USER, None, "exec cat"))
    await w.expect_ctl(OpenOk, 1)
    await w.send_json({"t": "data", "id": 1, "stream": "stdout", "data": "not base64!"})
    return await closed(w, "bad base64")


@dataclass(frozen=True)
class Row:
    abuse: Abuse
    expect: Outcome


WS_PROTOCOL = {1002}
TOO_BIG = {1009, 4008}
CATALOGUE: dict[str, Row] = {
    f.__name__: Row(f, e)
    for f, e in [
        (oversize_text_frame, ("close", TOO_BIG)),
        (oversize_binary_frame, ("close", TOO_BIG)),
        (oversize_frame_before_hello, ("close", TOO_BIG)),
        (declared_length_2_pow_63, ("close", TOO_BIG)),
        (non_utf8_text_frame, ("close", {1007})),
        (ws_ping_125_bytes, ("alive", None)),
        (ws_ping_126_bytes, ("close", WS_PROTOCOL)),
        (ws_ping_fragmented, ("close", WS_PROTOCOL)),
        (ws_reserved_opcode, ("close", WS_PROTOCOL)),
        (ws_rsv1_without_deflate, ("close", WS_PROTOCOL)),
        (ws_unmasked_client_frame, ("close", WS_PROTOCOL)),
        (ws_continuation_without_start, ("close", WS_PROTOCOL)),
        (json_ping_with_900k_junk_field, ("alive", None)),
        (json_ping_ts_is_a_huge_string, ("close", {4014})),
        (truncated_data_header, ("close", {4014})),
        (empty_binary_frame, ("close", {4014})),
        (reserved_stream_byte_0x03, ("close", {4014})),
        (stream_byte_0x00, ("close", {4014})),
        (client_stderr_stream, ("close", {4014})),
        (data_channel_id_0, ("close", {4014})),
        (data_for_unknown_channel, ("alive", None)),
        (data_for_closed_channel, ("alive", None)),
        (invalid_json, ("close", {4014})),
        (json_nesting_bomb, ("close", {4014})),
        (json_top_level_array, ("close", {4014})),
        (unknown_message_type, ("close", {4009})),
        (huge_integer_id, ("close", {4014})),
        (float_overflow_ts, ("close", {4014})),
        (nan_ts, ("close", {4014})),
        (negative_credit, ("close", {4014})),
        (credit_past_2_pow_31, ("close", {4014})),
        (credit_accumulated_past_16_mib, ("close", {4007})),
        (open_id_0, ("close", {4014})),
        (open_id_2_pow_32, ("close", {4014})),
        (open_id_2_pow_32_minus_1_is_fine, ("open_ok", None)),
        (open_flood_fifth_channel, ("close", {4006})),
        (open_close_flood_rate_limit, ("close", {4004})),
        (duplicate_channel_id, ("close", {4013})),
        (resize_flood, ("close", {4004})),
        (signal_with_shell_metacharacters, ("close", {4014})),
        (env_bomb, ("close", {4014})),
        (username_too_long, ("close", {4014})),
        (resume_with_65_channels, ("close", {4014})),
        (hello_twice, ("close", {4002})),
        (open_before_hello, ("close", {4002})),
        (data_before_hello, ("close", {4002})),
        (message_while_auth_pending, ("close", {4002})),
        (hello_proto_2, ("close", {4002})),
        (unsupported_profile, ("close", {4001})),
        (wrong_bearer_token, ("close", {4003})),
        (hello_ok_from_client, ("close", {4009})),
        (exit_from_client, ("close", {4009})),
        (open_err_from_client, ("close", {4009})),
        (resume_token_of_another_principal, ("close", {4011})),
        (reused_resume_token, ("close", {4011})),
        (guessed_resume_token, ("close", {4011})),
        (garbage_resume_token, ("close", {4011})),
        (wrong_resume_key, ("close", {4011})),
        (rx_beyond_bytes_sent, ("close", {4011})),
        (ack_beyond_bytes_sent, ("close", {4007})),
        (input_flood_past_4_mib_unread, ("close", {4007})),
        (target_not_allowed, ("open_err", "POLICY_DENIED")),
        (silence_after_upgrade, ("close", {4012})),
        (lenpfx_length_mismatch, ("close", {4014})),
        (lenpfx_text_frame, ("close", {4014})),
        (json_base64_binary_frame, ("close", {4014})),
        (json_base64_bad_base64, ("close", {4014})),
    ]
}


async def _neighbour(srv: Server) -> Wire:
    w = await Wire.open(srv.url, get_profile("nimbus.v1"), timeout=10, label="neighbour")
    await w.hello(Hello(auth=Auth("bearer", "alice-token"), caps=HelloCaps("nimbus.v1", True)))
    await w.send(Open(1, TARGET, User("neighbour"), None, "exec cat"))
    await w.expect_ctl(OpenOk, 1)
    w.auto_credit(1, 256 * 1024)
    await w.top_up(1)
    await _echo(w, b"before")
    return w


async def _echo(w: Wire, tag: bytes) -> None:
    payload = tag + b"-" + secrets.token_hex(8).encode() + b"\n"
    await w.send_input(1, payload)
    await w.until_output(1, payload, "the neighbour's echo", timeout=10)


def test_catalogue_is_big_enough() -> None:
    assert len(CATALOGUE) >= 30


@pytest.mark.parametrize("name", list(CATALOGUE))
async def test_abuse(name: str, make_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    srv: Server = await make_server(
        auth_hook=_auth_hook,
        allow_targets=("127.0.0.1:22",),
        config=ServerConfig(hello_timeout=1.0),
    )
    neighbour = await _neighbour(srv)
    (session,) = srv.registry.sessions()  # the neighbour's
    ctx = Ctx(srv)
    row = CATALOGUE[name]
    t0 = time.monotonic()
    try:
        kind, value = await asyncio.wait_for(row.abuse(ctx), 30)
        want_kind, want = row.expect
        assert kind == want_kind, (kind, value, row.expect)
        if kind == "close":
            assert value in want, f"closed with {value}, expected one of {sorted(want)}"
        elif kind == "open_err":
            assert value == want
        assert time.monotonic() - t0 < 20  # prompt (the slowest abuse waits for hello_timeout)
        # the neighbour is unaffected: its channel echoes, it answers pings, its session is intact
        await _echo(neighbour, name.encode())
        await neighbour.roundtrip("neighbour after the abuse")
        assert session in srv.registry.sessions() and session.conn is not None and 1 in session.channels
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
    except WaitTimeout as exc:
        raise AssertionError(f"{name}: {exc}") from None
    finally:
        await ctx.cleanup()
        await neighbour.close()
