"""Coverage-guided fuzzing (atheris / libFuzzer) of the profile decoders and the server machine.

    python tests/reliability/fuzz_server.py -runs=200000 -max_len=4096 -seed=1

Two targets share one input: the first byte picks

* the decoders -- the rest is one frame (text if it is UTF-8 and the next
  bit says so), decoded by every profile at several ``maxFrame``;
* the server machine -- the rest is a script of operations on one
  :class:`SessionRegistry` and up to three connections: raw frames, a
  well-formed hello (optionally resuming with an issued token), auth
  results, clock ticks, drops.

A crash is any exception but :class:`ProtocolError` (with a contract code)
from a decoder, any exception at all from the machine, a close code outside
the contract, a frame over ``maxFrame``, or a bound broken (channels,
credit, retained output, unwritten input).  Run by the stress suite
(``test_rel_fuzz.py``) when atheris is installed.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from nimbus_websocket.core import (
        Auth,
        CloseTransport,
        Flow,
        Hello,
        HelloCaps,
        HelloOk,
        Open,
        ProtocolError,
        ResumeRequest,
        ServerConfig,
        ServerConnection,
        SessionRegistry,
        Target,
        User,
        get_profile,
    )

PROFILE_IDS = ("nimbus.v1", "json-base64.v1", "lenpfx.v1")
PROFILES = [get_profile(p) for p in PROFILE_IDS]
SUBPROTOCOLS = [None, *(p.subprotocols[0] for p in PROFILES)]
DECODE_CODES = {4002, 4008, 4009, 4014}
SERVER_CODES = {4000, 4001, 4002, 4003, 4004, 4006, 4007, 4008, 4009, 4010, 4011, 4012, 4013, 4014}
CONFIG = ServerConfig(max_frame=2048, retention=30.0)


def _frame(fdp: atheris.FuzzedDataProvider, n: int) -> str | bytes:
    raw = fdp.ConsumeBytes(n)
    if fdp.ConsumeBool():
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw


def fuzz_decoders(fdp: atheris.FuzzedDataProvider) -> None:
    max_frame = [64, 1024, 1 << 20][fdp.ConsumeIntInRange(0, 2)]
    frame = _frame(fdp, fdp.remaining_bytes())
    for p in PROFILES:
        try:
            p.decode(frame, max_frame)
        except ProtocolError as exc:
            if int(exc.code) not in DECODE_CODES:
                raise AssertionError(f"{p.id}: close code {int(exc.code)} outside the contract") from None


def _drain(conns: list[ServerConnection], tokens: list[str]) -> None:
    for c in conns:
        for f in c.frames_to_send():
            size = len(f.encode()) if isinstance(f, str) else len(f)
            assert size <= CONFIG.max_frame, size
            m = c.profile.decode(f, 1 << 30)
            if isinstance(m, HelloOk) and m.resume is not None:
                tokens.append(m.resume.token)
        for ev in c.events():
            if isinstance(ev, CloseTransport):
                assert ev.code in SERVER_CODES, ev
        assert not c.frames_to_send() and not c.events()


def _bounds(reg: SessionRegistry, conns: list[ServerConnection]) -> None:
    for s in reg.sessions():
        assert len(s.channels) <= CONFIG.max_channels
        for ch in s.channels.values():
            assert ch.credit <= CONFIG.max_outstanding_credit
            assert ch.log.end - ch.log.start <= CONFIG.max_outstanding_credit + CONFIG.max_read
            assert ch.rx - ch.written <= CONFIG.max_input_buffer


def fuzz_machine(fdp: atheris.FuzzedDataProvider) -> None:
    now = 1_000_000.0
    reg = SessionRegistry(CONFIG)
    sp = SUBPROTOCOLS[fdp.ConsumeIntInRange(0, len(SUBPROTOCOLS) - 1)]
    conns = [ServerConnection(reg, now=now, subprotocol=sp) for _ in range(3)]
    tokens: list[str] = []
    for _ in range(64):
        if fdp.remaining_bytes() == 0:
            break
        op = fdp.ConsumeIntInRange(0, 7)
        i = fdp.ConsumeIntInRange(0, 2)
        c = conns[i]
        if op <= 2:
            c.receive_frame(_frame(fdp, fdp.ConsumeIntInRange(0, 600)), now)
        elif op == 3:
            p = PROFILES[fdp.ConsumeIntInRange(0, 2)]
            resume = None
            if tokens and fdp.ConsumeBool():
                tok = tokens[fdp.ConsumeIntInRange(0, len(tokens) - 1)]
                resume = ResumeRequest(tok, () if fdp.ConsumeBool() else None)
            c.receive_frame(p.encode_ctl(Hello(auth=Auth("none"), caps=HelloCaps(p.id, fdp.ConsumeBool()), resume=resume)), now)
        elif op == 4:
            c.auth_result(["alice", "bob", None][fdp.ConsumeIntInRange(0, 2)], now)
        elif op == 5:
            p = c.profile
            cid = fdp.ConsumeIntInRange(1, 6)
            c.receive_frame(p.encode_ctl(Open(cid, Target("127.0.0.1", 22), User("u"))), now)
            if c.session is not None:
                c.session.channel_opened(cid)
                c.receive_frame(p.encode_ctl(Flow(cid, fdp.ConsumeIntInRange(0, 1 << 20))), now)
                c.session.backend_output(cid, "stdout", bytes(fdp.ConsumeIntInRange(0, 4096)))
        elif op == 6:
            now += [0.01, 1.0, 25.0, 61.0][fdp.ConsumeIntInRange(0, 3)]
            c.tick(now)
            reg.expire(now)
        else:
            c.transport_closed([1000, 1001, 1006][fdp.ConsumeIntInRange(0, 2)], now)
            _drain([c], tokens)
            conns[i] = ServerConnection(reg, now=now, subprotocol=sp)
        _drain(conns, tokens)
        _bounds(reg, conns)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        fuzz_decoders(fdp)
    else:
        fuzz_machine(fdp)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
