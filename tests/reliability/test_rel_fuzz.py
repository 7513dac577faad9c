"""Fuzzing: every profile's decoder, and the server's frame handler fed anything in any order.

The contract (PROTOCOL.md 3, 4, 10): whatever a peer sends, the only
outcomes are a decoded message, or a :class:`ProtocolError` carrying one of
the contract's close codes -- and, for the server machine, a clean close with
such a code.  Never another exception, never a hang (each call is timed),
never unbounded memory (every buffer the machines hold is checked against
its bound after every step).

Cases: ``FAST_EXAMPLES`` per property in the default suite; the stress run
(``-m stress``) runs ``STRESS_EXAMPLES`` per property, over 100 000 in all.
The atheris harness (``fuzz_server.py``) runs in the stress suite when
atheris is installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from nimbus_websocket.core import (
    Auth,
    AuthRequested,
    Close,
    CloseTransport,
    Ctl,
    DataFrame,
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
    ProtocolError,
    Resize,
    ResumeChannel,
    ResumeRequest,
    ServerCaps,
    ServerConfig,
    ServerConnection,
    SessionRegistry,
    Signal,
    Target,
    Term,
    User,
    get_profile,
)
from nimbus_websocket.core.messages import Eof
from nimbus_websocket.core.state import ChanEvent
from rel_util import figure

PROFILE_IDS = ("nimbus.v1", "json-base64.v1", "lenpfx.v1")
PROFILES = [get_profile(p) for p in PROFILE_IDS]
SUBPROTOCOLS = [None, "bogus", *(p.subprotocols[0] for p in PROFILES)]

#: Close codes a decoder or the server machine may produce (contract section 8 / PROTOCOL.md 10).
DECODE_CODES = {4002, 4008, 4009, 4014}
SERVER_CODES = {4000, 4001, 4002, 4003, 4004, 4006, 4007, 4008, 4009, 4010, 4011, 4012, 4013, 4014}

FAST_EXAMPLES = int(os.environ.get("NIMBUS_FUZZ_FAST", "150"))
STRESS_EXAMPLES = int(os.environ.get("NIMBUS_FUZZ_STRESS", "34000"))

#: Close codes the machine fuzz saw (reported by the stress run).
CLOSE_CODES: Counter[int] = Counter()

#: Small maxFrame for the machine fuzz, so oversized frames are cheap to build.
MAX_FRAME = 4096
#: A call into a machine that takes longer than this counts as a hang.
CALL_LIMIT = 2.0


def fuzz_settings(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ------------------------------------------------------------------ strategies

ids = st.one_of(st.integers(1, 6), st.sampled_from([0, 2**32 - 1, 2**32, -1]))
text_s = st.text(max_size=24)
numbers = st.one_of(
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2**31, 2**31 + 1, 2**53, 2**53 + 1, -(2**31) - 1]),
)
json_leaf = st.one_of(st.none(), st.booleans(), numbers, text_s)
json_junk = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text_s, inner, max_size=3), max_leaves=8)
FIELDS = [
    "id", "proto", "auth", "scheme", "token", "caps", "profile", "ack", "resume", "channels", "resumeKey",
    "rx", "client", "target", "host", "port", "user", "username", "term", "cols", "rows", "env", "code",
    "msg", "sig", "reason", "credit", "ts", "stream", "data", "command",
]
T_NAMES = ["hello", "hello_ok", "open", "open_ok", "open_err", "resize", "signal", "close", "exit", "flow",
           "ping", "pong", "eof", "data", "HELLO", ""]
json_msgs = st.builds(
    lambda t, body: {"t": t, **body},
    st.sampled_from(T_NAMES) | text_s,
    st.dictionaries(st.sampled_from(FIELDS), json_junk, max_size=6),
)

valid_target = st.builds(Target, st.sampled_from(["127.0.0.1", "localhost", "x" * 255]), st.integers(0, 65535))
valid_ctls: st.SearchStrategy[Ctl] = st.one_of(
    st.builds(
        Open,
        st.integers(1, 6),
        valid_target,
        st.builds(User, st.sampled_from(["u", "root"])),
        st.none() | st.builds(Term, st.integers(1, 500), st.integers(1, 200)),
        st.none() | st.sampled_from(["cat", "true"]),
    ),
    st.builds(Flow, st.integers(1, 6), st.integers(0, 2**31), st.none() | st.integers(0, 2**20)),
    st.builds(Resize, st.integers(1, 6), st.integers(1, 10_000), st.integers(1, 10_000)),
    st.builds(Signal, st.integers(1, 6), st.sampled_from(["INT", "TERM", "HUP", "KILL"])),
    st.builds(Close, st.integers(1, 6), st.none() | text_s),
    st.builds(Eof, st.integers(1, 6)),
    st.builds(Ping, st.floats(-1e15, 1e15)),
    st.builds(Pong, st.floats(-1e15, 1e15)),
    # server-only messages from a client: 4009
    st.builds(OpenOk, st.integers(1, 6), st.none() | text_s),
    st.builds(OpenErr, st.integers(1, 6), text_s, text_s),
    st.builds(Exit, st.integers(1, 6), st.none() | st.integers(-5, 5)),
    st.builds(HelloOk, text_s, st.builds(ServerCaps, st.sampled_from(PROFILE_IDS))),
)


def _mutate(frame: str | bytes, ops: list[tuple[int, int, int]]) -> str | bytes:
    """Flip, drop or insert bytes of an encoded frame (text stays text when still UTF-8)."""
    raw = bytearray(frame.encode() if isinstance(frame, str) else frame)
    for kind, pos, val in ops:
        if not raw:
            raw.append(val)
            continue
        i = pos % len(raw)
        if kind == 0:
            raw[i] ^= 1 << (val % 8)
        elif kind == 1:
            del raw[i:]
        elif kind == 2:
            raw.insert(i, val)
        else:
            raw[i] = val
    if isinstance(frame, str):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return bytes(raw)  # became binary: still a frame a peer can send
    return bytes(raw)


mutations = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=4)


#: Placeholder tokens in drawn hellos, replaced at send time by a token the
#: server really issued (``@tok:<i>``) or one altered in its last character
#: (``@bad:<i>``), so resumes with valid, reused and near-miss tokens happen.
token_specs = st.one_of(
    st.just("0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    text_s,
    st.integers(0, 7).map(lambda i: f"@tok:{i}"),
    st.integers(0, 7).map(lambda i: f"@tok:{i}"),
    st.integers(0, 7).map(lambda i: f"@bad:{i}"),
)
HELLOS = st.builds(
    Hello,
    proto=st.sampled_from([1, 1, 1, 2]),
    auth=st.none() | st.builds(Auth, st.sampled_from(["bearer", "none"]), st.none() | text_s),
    caps=st.none() | st.builds(HelloCaps, st.none() | st.sampled_from([*PROFILE_IDS, "nope"]), st.booleans()),
    resume=st.none()
    | st.builds(
        ResumeRequest,
        token_specs,
        st.none() | st.lists(st.builds(ResumeChannel, st.integers(1, 6), text_s, st.integers(0, 4096)), max_size=3).map(tuple),
    ),
)
ANY_CTL = valid_ctls | HELLOS


def _real_token(m: Ctl, tokens: list[str] | None) -> Ctl:
    if not isinstance(m, Hello) or m.resume is None or not m.resume.token.startswith("@"):
        return m
    kind, _, i = m.resume.token[1:].partition(":")
    if not tokens:
        tok = "ffffffffffffffff.nothing-issued-yet"
    else:
        tok = tokens[int(i) % len(tokens)]
        if kind == "bad":
            tok = tok[:-1] + ("A" if tok[-1] != "A" else "B")
    return dataclasses.replace(m, resume=dataclasses.replace(m.resume, token=tok))


@st.composite
def frames(draw: st.DrawFn, tokens: list[str] | None = None) -> str | bytes:
    """One WebSocket message a client could send: valid, mutated, JSON junk or raw garbage."""
    p = draw(st.sampled_from(PROFILES))
    kind = draw(st.integers(0, 9))
    if kind <= 2:
        return p.encode_ctl(_real_token(draw(ANY_CTL), tokens))
    if kind == 3:
        df = DataFrame(draw(st.sampled_from(["stdout", "stdout", "stderr"])), draw(st.integers(1, 6)), draw(st.binary(max_size=64)))
        return p.encode_data(df, 1 << 20)[0]
    if kind == 4:
        base = p.encode_ctl(_real_token(draw(ANY_CTL), tokens)) if draw(st.booleans()) else p.encode_data(
            DataFrame("stdout", draw(st.integers(1, 6)), draw(st.binary(max_size=16))), 1 << 20
        )[0]
        return _mutate(base, draw(mutations))
    if kind == 5:
        text = json.dumps(draw(json_msgs), allow_nan=True)
        if p.id == "lenpfx.v1":
            body = text.encode()
            return (len(body) + 5).to_bytes(4, "big") + b"\x10\0\0\0\0" + body
        return text
    if kind == 6:
        return draw(st.binary(max_size=48))
    if kind == 7:
        return draw(st.text(max_size=48))
    if kind == 8:  # oversize: one byte past maxFrame, or far past
        n = draw(st.sampled_from([MAX_FRAME + 1, 3 * MAX_FRAME]))
        return ("x" * n) if draw(st.booleans()) else bytes([1, 0, 0, 0, 1]) + bytes(n)
    depth = draw(st.integers(8, 40))  # nesting around the limit
    return '{"t":"ping","ts":1,"x":' + "[" * depth + "]" * depth + "}"


FRAMES = frames()


# ------------------------------------------------------------------ decoders


def _decode(p: Any, frame: str | bytes, max_frame: int) -> Ctl | DataFrame | None:
    t0 = time.monotonic()
    try:
        m = p.decode(frame, max_frame)
    except ProtocolError as exc:
        assert int(exc.code) in DECODE_CODES, (p.id, exc.code, exc.message)
        event(f"{p.id}: {int(exc.code)}")
        return None
    finally:
        assert time.monotonic() - t0 < CALL_LIMIT, "decoder hang"
    assert isinstance(m, (DataFrame, *_CTL_CLASSES)), type(m)
    event(f"{p.id}: decoded {type(m).__name__}")
    return m


_CTL_CLASSES = (Hello, HelloOk, Open, OpenOk, OpenErr, Resize, Signal, Close, Exit, Flow, Ping, Pong, Eof)


def _check_decoders(frame: str | bytes, max_frame: int) -> None:
    for p in PROFILES:
        _decode(p, frame, max_frame)


# ------------------------------------------------------------ server machine


class World:
    """One registry and up to three connections of the server machine, driven by a script."""

    def __init__(self, config: ServerConfig) -> None:
        self.now = 1_000_000.0
        self.config = config
        self.registry = SessionRegistry(config)
        self.conns: list[ServerConnection] = []
        self.tokens: list[str] = []
        self.closes: list[int] = []
        self.frames_out = 0
        #: Connections whose AuthRequested is not answered yet: a runtime answers
        #: each once (answering without one is local misuse, which raises).
        self.auth_due: set[ServerConnection] = set()

    def conn(self, i: int, subprotocol: str | None) -> ServerConnection:
        while len(self.conns) <= i % 3:
            self.conns.append(ServerConnection(self.registry, now=self.now, subprotocol=subprotocol))
        return self.conns[i % 3]

    def call(self, fn: Any, *args: Any) -> None:
        t0 = time.monotonic()
        fn(*args)  # any exception escapes and fails the property
        assert time.monotonic() - t0 < CALL_LIMIT, f"{fn.__name__} hang"

    def drain(self) -> None:
        for c in self.conns:
            for _ in range(4):  # queues drain in one call; a second round must be empty
                frames = c.frames_to_send()
                evs = c.events()
                if not frames and not evs:
                    break
                for f in frames:
                    size = len(f.encode()) if isinstance(f, str) else len(f)
                    assert size <= self.config.max_frame, f"server frame of {size} over maxFrame"
                    self.frames_out += 1
                    m = c.profile.decode(f, 1 << 30)  # the server only sends what it can decode
                    if isinstance(m, HelloOk) and m.resume is not None:
                        self.tokens.append(m.resume.token)
                for ev in evs:
                    if isinstance(ev, AuthRequested):
                        self.auth_due.add(c)
                    if isinstance(ev, CloseTransport):
                        assert ev.code in SERVER_CODES, (ev.code, ev.reason)
                        self.closes.append(ev.code)
                        CLOSE_CODES[ev.code] += 1
                        event(f"close {ev.code}")
            else:
                raise AssertionError("a connection kept producing output without input")

    def check_bounds(self) -> None:
        cfg = self.config
        assert len(self.registry) <= len(self.conns)  # one session per successful hello at most
        for s in self.registry.sessions():
            assert len(s.channels) <= cfg.max_channels
            for ch in s.channels.values():
                assert ch.credit <= cfg.max_outstanding_credit
                assert ch.log.end - ch.log.start <= cfg.max_outstanding_credit + cfg.max_read
                assert ch.rx - ch.written <= cfg.max_input_buffer
        for c in self.conns:
            assert not c._frames  # drained: nothing accumulates between calls


actions = st.one_of(
    st.tuples(st.just("frame"), st.integers(0, 2), st.data()),
    st.tuples(st.just("frame"), st.integers(0, 2), st.data()),
    st.tuples(st.just("frame"), st.integers(0, 2), st.data()),
    st.tuples(st.just("auth"), st.integers(0, 2), st.sampled_from(["alice", "alice", "bob", None])),
    st.tuples(st.just("tick"), st.integers(0, 2), st.sampled_from([0.01, 1.0, 11.0, 25.0, 61.0])),
    st.tuples(st.just("drop"), st.integers(0, 2), st.sampled_from([1000, 1001, 1006, 4012])),
    st.tuples(st.just("backend"), st.integers(0, 2), st.tuples(st.integers(1, 6), st.integers(0, 5000))),
)


def _frames_for(w: World) -> st.SearchStrategy[str | bytes]:
    _TOKENS[:] = w.tokens
    return FRAMES_WITH_TOKENS


_TOKENS: list[str] = []
FRAMES_WITH_TOKENS = frames(_TOKENS)


def _prelude(w: World, c: ServerConnection, profile: str, channels: int) -> None:
    """A well-behaved start (hello, auth, channels with credit), so the fuzz also starts from deep states."""
    p = get_profile(profile)
    w.call(c.receive_frame, p.encode_ctl(Hello(auth=Auth("none"), caps=HelloCaps(profile, True))), w.now)
    w.call(c.auth_result, "alice", w.now)
    for cid in range(1, channels + 1):
        w.call(c.receive_frame, p.encode_ctl(Open(cid, Target("127.0.0.1", 22), User("u"), None, "cat")), w.now)
        if c.session is not None:
            w.call(c.session.channel_opened, cid)
        w.call(c.receive_frame, p.encode_ctl(Flow(cid, 65536)), w.now)
    w.drain()
    w.auth_due.discard(c)  # answered above


def _run_machine(script: list[Any], subprotocol: str | None, preludes: list[int] = ()) -> World:  # type: ignore[assignment]
    w = World(ServerConfig(max_frame=MAX_FRAME, retention=30.0))
    for i, channels in enumerate(preludes):
        if channels >= 0:
            sp = subprotocol if subprotocol in [q.subprotocols[0] for q in PROFILES] else PROFILES[0].subprotocols[0]
            _prelude(w, w.conn(i, sp), next(q.id for q in PROFILES if q.subprotocols[0] == sp), channels)
    for kind, idx, arg in script:
        c = w.conn(idx, subprotocol)
        if kind == "frame":
            frame = arg.draw(_frames_for(w))
            w.call(c.receive_frame, frame, w.now)
        elif kind == "auth":
            if c in w.auth_due:
                w.auth_due.discard(c)
                w.call(c.auth_result, arg, w.now)
        elif kind == "tick":
            w.now += arg
            w.call(c.tick, w.now)
            w.call(w.registry.expire, w.now)
        elif kind == "drop":
            w.call(c.transport_closed, arg, w.now)
            w.conns[idx % 3] = ServerConnection(w.registry, now=w.now, subprotocol=subprotocol)
        else:
            s = c.session
            if s is not None:
                cid, n = arg
                ch = s.channels.get(cid)
                if ch is not None and ch.allows(ChanEvent.OPEN_OK):  # each open is answered once
                    w.call(s.channel_opened, cid)
                w.call(s.backend_output, cid, "stdout", bytes(n))
                w.call(s.input_written, cid, n, w.now)
        w.drain()
        w.check_bounds()
    return w


# ------------------------------------------------------------------ properties


def prop_decoders_anything(frame: str | bytes, max_frame: int) -> None:
    _check_decoders(frame, max_frame)


def prop_decoders_mutated(frame: str | bytes) -> None:
    _check_decoders(frame, 1 << 20)
    _check_decoders(frame, MAX_FRAME)


def prop_server_machine(script: list[Any], subprotocol: str | None, preludes: list[int]) -> None:
    w = _run_machine(script, subprotocol, preludes)
    event(f"sessions {len(w.registry)}")


#: name -> (property, its strategies)
PROPS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "decoders_anything": (
        prop_decoders_anything,
        (st.binary(max_size=2048) | st.text(max_size=1024), st.sampled_from([64, 1024, MAX_FRAME, 1 << 20])),
    ),
    "decoders_mutated": (prop_decoders_mutated, (FRAMES,)),
    "server_machine": (
        prop_server_machine,
        (
            st.lists(actions, min_size=1, max_size=40),
            st.sampled_from(SUBPROTOCOLS),
            st.lists(st.integers(-1, 4), max_size=3),  # per connection: no prelude (-1) or n channels
        ),
    ),
}


def hypothesis_test(name: str, n: int, counter: dict[str, int] | None = None) -> Any:
    """Property ``name`` as a hypothesis test of ``n`` examples (counting them in ``counter``)."""
    fn, strategies = PROPS[name]

    def run(args: tuple[Any, ...]) -> None:
        if counter is not None:
            counter[name] = counter.get(name, 0) + 1
        fn(*args)

    return fuzz_settings(n)(given(st.tuples(*strategies))(run))


test_decoders_take_anything = hypothesis_test("decoders_anything", FAST_EXAMPLES)
test_decoders_take_mutated_and_junk_frames = hypothesis_test("decoders_mutated", FAST_EXAMPLES)
test_server_machine_takes_any_frames_in_any_order = hypothesis_test("server_machine", FAST_EXAMPLES)


# ------------------------------------------------------------------ stress


@pytest.mark.stress
@pytest.mark.timeout(3600)
def test_stress_fuzz_100k_cases() -> None:
    """The three properties at STRESS_EXAMPLES examples each: >= 100 000 cases in all."""
    t0 = time.monotonic()
    counts: dict[str, int] = {}
    for name in PROPS:
        hypothesis_test(name, STRESS_EXAMPLES, counts)()
    total = sum(counts.values())
    figure(
        "fuzz_hypothesis", cases=total, per_property=counts, seconds=round(time.monotonic() - t0, 1),
        server_close_codes=dict(sorted(CLOSE_CODES.items())),
    )
    assert total >= 100_000, counts


HARNESS = Path(__file__).with_name("fuzz_server.py")


def _atheris_available() -> bool:
    r = subprocess.run([sys.executable, "-c", "import atheris"], capture_output=True, timeout=60)
    return r.returncode == 0


@pytest.mark.stress
@pytest.mark.timeout(3600)
def test_stress_atheris_coverage_guided() -> None:
    """libFuzzer (atheris) over the same targets; skipped when atheris is not installed."""
    if not _atheris_available():
        pytest.skip("atheris not installed (pip install atheris; scripts/stress.sh does)")
    runs = int(os.environ.get("NIMBUS_ATHERIS_RUNS", "500000"))
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, str(HARNESS), f"-runs={runs}", "-max_len=4096", "-seed=1", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=3000,
    )
    tail = "\n".join(r.stderr.splitlines()[-25:])
    assert r.returncode == 0, tail
    execs = next((int(line.rsplit(":", 1)[1]) for line in r.stderr.splitlines() if "stat::number_of_executed_units" in line), runs)
    figure("fuzz_atheris", cases=execs, seconds=round(time.monotonic() - t0, 1))
    assert execs >= runs


def test_atheris_harness_smoke() -> None:
    """A short atheris run (when installed), so the harness itself stays importable and correct."""
    if not _atheris_available():
        pytest.skip("atheris not installed")
    r = subprocess.run(
        [sys.executable, str(HARNESS), "-runs=3000", "-max_len=2048", "-seed=7"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, "\n".join(r.stderr.splitlines()[-25:])
