"""Property tests of the codec: round trips, splitting, and decoding garbage.

* every control message (valid ranges) survives encode -> decode bit-exactly
  in every profile, and re-encodes to the very same frame;
* any payload up to 1 MiB survives ``encode_data`` (at any ``max_frame``)
  -> ``decode``, in frames that each fit ``max_frame``;
* decoding arbitrary bytes, text, or JSON-shaped junk never raises anything
  but ``ProtocolError``; whatever decodes re-encodes to something that decodes
  to the same message.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from nimbus_websocket.core import (
    Auth,
    Close,
    DataFrame,
    Exit,
    FileSpec,
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
    ResumedChannel,
    ResumeGrant,
    ResumeRequest,
    ServerCaps,
    Signal,
    Target,
    Term,
    User,
    ctl_from_dict,
    ctl_to_dict,
    get_profile,
)
from nimbus_websocket.core.messages import CTL_TYPES, FILE_MODE_MAX, FILE_SIZE_MAX

PROFILES = [get_profile(p) for p in ("nimbus.v1", "json-base64.v1", "lenpfx.v1")]
MIB = 1 << 20

# ------------------------------------------------------------------ strategies

ids = st.integers(1, 2**32 - 1)
counters = st.integers(0, 2**53 - 1)
sizes = st.integers(1, 10_000)


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Any Unicode text (no lone surrogates: they cannot travel in UTF-8)."""
    return st.text(min_size=min_size, max_size=max_size)


sig_names = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), min_size=1, max_size=32).filter(
    lambda s: s.replace("_", "") != ""
)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts(20)
opaque = st.dictionaries(texts(16), json_scalars | st.dictionaries(texts(8), json_scalars, max_size=3), max_size=4)
timestamps = st.integers(-(2**53), 2**53) | st.floats(-(2.0**53), 2.0**53, allow_nan=False, allow_infinity=False)

hellos = st.builds(
    Hello,
    auth=st.none()
    | st.builds(Auth, st.just("bearer"), texts(1024))
    | st.builds(Auth, st.just("none"), st.none() | texts(32)),
    caps=st.none() | st.builds(HelloCaps, profile=st.none() | texts(64), ack=st.booleans()),
    resume=st.none()
    | st.builds(
        ResumeRequest,
        texts(1024),
        st.none() | st.lists(st.builds(ResumeChannel, ids, texts(1024), counters), max_size=64).map(tuple),
    ),
    client=st.none() | st.dictionaries(texts(256), texts(256), max_size=16),
)
hello_oks = st.builds(
    HelloOk,
    texts(256),
    st.builds(
        ServerCaps,
        profile_accepted=texts(64),
        max_frame=st.none() | st.integers(1024, 2**31),
        ack=st.booleans(),
        resumed=st.none() | st.lists(st.builds(ResumedChannel, ids, counters), max_size=64).map(tuple),
        command=st.booleans(),
        eof=st.booleans(),
        files=st.booleans(),
    ),
    st.none() | st.builds(ResumeGrant, texts(1024), st.integers(0, 2**31)),
)
opens = st.builds(
    Open,
    ids,
    st.builds(Target, texts(255), st.integers(0, 65535)),
    st.builds(User, texts(256), opaque),
    st.none() | st.builds(Term, sizes, sizes, st.dictionaries(texts(256), texts(4096), max_size=64)),
)
paths = texts(1024, min_size=1).filter(lambda p: "\0" not in p)
file_specs = st.builds(FileSpec, st.just("get"), paths, ref=st.none() | ids) | st.builds(
    FileSpec,
    st.just("put"),
    paths,
    st.integers(0, FILE_SIZE_MAX),
    st.none() | st.integers(0, FILE_MODE_MAX),
    st.none() | ids,
)
file_opens = st.builds(
    Open, ids, st.builds(Target, texts(255), st.integers(0, 65535)), st.builds(User, texts(256), opaque), file=file_specs
)
ctls = st.one_of(
    hellos,
    hello_oks,
    opens,
    file_opens,
    st.builds(OpenOk, ids, st.none() | texts(1024), st.none() | st.integers(0, FILE_SIZE_MAX)),
    st.builds(OpenErr, ids, texts(64), texts(4096)),
    st.builds(Resize, ids, sizes, sizes),
    st.builds(Signal, ids, sig_names),
    st.builds(Close, ids, st.none() | texts(4096)),
    st.builds(Exit, ids, st.none() | st.integers(-(2**31), 2**31 - 1), st.none() | sig_names),
    st.builds(Flow, ids, st.integers(0, 2**31), st.none() | counters),
    st.builds(Ping, timestamps),
    st.builds(Pong, timestamps),
)


def _big(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


#: Mostly small payloads, sometimes large ones (cheap to build, up to 1 MiB).
payloads = st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=2048),
    st.builds(_big, st.integers(0, 2**32), st.integers(0, MIB)),
)
#: Any maxFrame a peer may announce, plus tiny ones the encoder must still honour.
max_frames = st.one_of(st.integers(1024, 2 * MIB), st.integers(70, 1024), st.sampled_from([1024, MIB]))


def _wire_size(frame: str | bytes) -> int:
    return len(frame.encode()) if isinstance(frame, str) else len(frame)


def _frame_payload_room(profile_id: str, max_frame: int) -> int:
    if profile_id == "nimbus.v1":
        return max_frame - 5
    if profile_id == "lenpfx.v1":
        return max_frame - 9
    return (max_frame - 64) // 4 * 3


# ------------------------------------------------------------------ round trips

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(ctls)
def test_ctl_round_trip_every_profile(m: Any) -> None:
    d = ctl_to_dict(m)
    assert ctl_from_dict(json.loads(json.dumps(d))) == m
    for p in PROFILES:
        frame = p.encode_ctl(m)
        assert isinstance(frame, bytes if p.id == "lenpfx.v1" else str)
        back = p.decode(frame, 2**31)
        assert back == m, p.id
        assert p.decode_ctl(frame) == m
        again = p.encode_ctl(back)
        assert type(again) is type(frame) and again == frame, p.id  # bit-exact


@FAST
@given(ctls)
def test_ctl_frames_are_utf8_compact_json(m: Any) -> None:
    text = get_profile("nimbus.v1").encode_ctl(m)
    assert isinstance(text, str)
    assert "\n" not in text and not text.startswith(" ")
    assert json.loads(text)["t"] == m.t
    env = get_profile("lenpfx.v1").encode_ctl(m)
    assert isinstance(env, bytes)
    assert env[4] == 0x10 and env[5:9] == b"\0\0\0\0"
    assert int.from_bytes(env[:4], "big") == len(env) - 4
    assert env[9:] == text.encode("utf-8")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(["stdout", "stderr"]), ids, payloads, max_frames)
@example("stdout", 1, b"", 1024)
@example("stderr", 2**32 - 1, bytes(MIB), MIB)
@example("stdout", 7, bytes(range(256)) * 4096, MIB)  # exactly 1 MiB: split in 2 everywhere
def test_data_round_trip_and_split(stream: Any, cid: int, payload: bytes, max_frame: int) -> None:
    for p in PROFILES:
        frames = p.encode_data(DataFrame(stream, cid, payload), max_frame)
        room = _frame_payload_room(p.id, max_frame)
        assert len(frames) == max(1, math.ceil(len(payload) / room)), p.id
        parts = []
        for f in frames:
            assert _wire_size(f) <= max_frame, (p.id, _wire_size(f), max_frame)
            d = p.decode(f, max_frame)
            assert isinstance(d, DataFrame) and (d.stream, d.id) == (stream, cid)
            assert type(d.payload) is bytes
            assert d.payload or not payload  # no empty frames, except for an empty payload
            parts.append(d.payload)
        assert b"".join(parts) == payload, p.id
        if len(frames) == 1:
            assert p.encode_data(p.decode_data(frames[0]), max_frame) == frames  # bit-exact


# ------------------------------------------------------------------ fuzzing


def _decode_or_protocol_error(p: Any, frame: str | bytes, max_frame: int) -> Any:
    try:
        return p.decode(frame, max_frame)
    except ProtocolError as exc:
        assert 4000 <= int(exc.code) <= 4099
        return None


FUZZ = settings(max_examples=300, deadline=None)


@FUZZ
@given(st.binary(max_size=4096), st.integers(1024, 8192))
def test_decode_arbitrary_bytes(frame: bytes, max_frame: int) -> None:
    for p in PROFILES:
        _decode_or_protocol_error(p, frame, max_frame)


@FUZZ
@given(st.binary(max_size=64).map(lambda b: b[:1] + b"\0\0\0" + b[1:]))
def test_decode_bytes_with_plausible_header(tail: bytes) -> None:
    # Stream/kind bytes 0x01/0x02/0x10 and small ids are likelier here than in st.binary().
    for head in (b"\x01", b"\x02", b"\x10"):
        _decode_or_protocol_error(PROFILES[0], head + tail, MIB)
        body = head + tail
        _decode_or_protocol_error(PROFILES[2], len(body).to_bytes(4, "big") + body, MIB)


@FUZZ
@given(st.text(max_size=2048), st.integers(1024, 8192))
def test_decode_arbitrary_text(frame: str, max_frame: int) -> None:
    for p in PROFILES:
        _decode_or_protocol_error(p, frame, max_frame)
    body = frame.encode("utf-8")
    _decode_or_protocol_error(PROFILES[2], (len(body) + 5).to_bytes(4, "big") + b"\x10\0\0\0\0" + body, MIB)


FIELDS = sorted(
    {
        "id", "proto", "auth", "scheme", "token", "caps", "profile", "ack", "resume", "channels",
        "resumeKey", "rx", "client", "server", "flow", "profileAccepted", "maxFrame", "resumed",
        "ttlMs", "target", "host", "port", "user", "username", "term", "cols", "rows", "env",
        "code", "msg", "sig", "reason", "credit", "ts", "stream", "data",
    }
)
json_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["bearer", "none", "credit", "stdout", "stderr", "nimbus.v1", "aGk=", "INT"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), inner, max_size=6),
    max_leaves=10,
)
messages_junk = st.builds(
    lambda t, body: {"t": t, **body},
    st.sampled_from(sorted(CTL_TYPES | {"data"})),
    st.dictionaries(st.sampled_from(FIELDS), json_junk, max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(messages_junk)
def test_decode_json_shaped_junk(obj: dict[str, Any]) -> None:
    """Known ``t`` with random fields: refused with ProtocolError or decoded to a stable message."""
    text = json.dumps(obj, allow_nan=True)
    for p in PROFILES:
        frame: str | bytes = text
        if p.id == "lenpfx.v1":
            body = text.encode()
            frame = (len(body) + 5).to_bytes(4, "big") + b"\x10\0\0\0\0" + body
        m = _decode_or_protocol_error(p, frame, MIB)
        if m is None:
            continue
        if isinstance(m, DataFrame):
            assert p.id == "json-base64.v1"
            again = p.encode_data(m, MIB)
            assert [p.decode(f, MIB) for f in again] == [m]
            continue
        again = p.encode_ctl(m)  # whatever was accepted can be sent on
        assert p.decode(again, MIB) == m


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_decode_valid_message_with_one_field_mutated(data: st.DataObject) -> None:
    """Start from a valid message, replace one value with junk: never anything but ProtocolError."""
    m = data.draw(ctls)
    d = ctl_to_dict(m)
    key = data.draw(st.sampled_from(sorted(d)))
    assume(key != "t")
    d[key] = data.draw(json_junk)
    for p in PROFILES:
        text = json.dumps(d, allow_nan=True)
        frame: str | bytes = text
        if p.id == "lenpfx.v1":
            body = text.encode()
            frame = (len(body) + 5).to_bytes(4, "big") + b"\x10\0\0\0\0" + body
        _decode_or_protocol_error(p, frame, 2**31)


def test_deep_nesting_is_refused_before_the_json_parser(monkeypatch: Any) -> None:
    """Depth 10000 never reaches json.loads (it overflows Pyodide's stack: a fatal error)."""
    import nimbus_websocket.core.profiles as profiles

    seen: list[str] = []

    class SpyJson:
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(s: str, **kw: Any) -> Any:
            seen.append(s)
            return json.loads(s, **kw)

    monkeypatch.setattr(profiles, "json", SpyJson)
    bomb = '{"t":"ping","ts":1,"x":' + "[" * 10_000 + "]" * 10_000 + "}"
    for frame in (bomb, "[" * 10_000, '{"a":' * 10_000):
        for p in PROFILES[:2]:
            try:
                p.decode(frame)
            except ProtocolError as exc:
                assert exc.code == 4014
            else:
                raise AssertionError("bomb decoded")
    assert seen == []
    # Brackets inside strings (escaped quotes and backslashes included) are not nesting.
    reason = '"' + "[" * 2000 + '\\"' + "{" * 2000  # JSON: "\"[[[...\\\"{{{..."
    m = PROFILES[0].decode(json.dumps({"t": "close", "id": 1, "reason": reason}))
    assert isinstance(m, Close) and m.reason == reason
    assert len(seen) == 1


# ------------------------------------------------------------------ file channels (open.file [ext])


@pytest.mark.parametrize(
    "file",
    [
        {"op": "put", "path": "a"},  # a put without its size
        {"op": "get", "path": "a", "size": 3},  # size and mode are a put's
        {"op": "get", "path": ""},
        {"op": "get", "path": "a\0b"},
        {"op": "get", "path": "x" * 4097},
        {"op": "copy", "path": "a"},
        {"op": "put", "path": "a", "size": 1, "mode": 0o10000},
        {"op": "put", "path": "a", "size": -1},
    ],
)
def test_bad_open_file_is_4014(file: dict[str, Any]) -> None:
    d = {"t": "open", "id": 1, "target": {"host": "h", "port": 22}, "user": {"username": "u"}, "file": file}
    with pytest.raises(ProtocolError) as ei:
        ctl_from_dict(d)
    assert int(ei.value.code) == 4014


def test_open_file_excludes_term_and_command() -> None:
    base = {"t": "open", "id": 1, "target": {"host": "h", "port": 22}, "user": {"username": "u"}}
    ok = ctl_from_dict({**base, "file": {"op": "get", "path": "/etc/hostname", "ref": 2}})
    assert isinstance(ok, Open) and ok.file == FileSpec("get", "/etc/hostname", ref=2)
    for extra in ({"term": {"cols": 80, "rows": 24}}, {"command": "ls"}):
        with pytest.raises(ProtocolError) as ei:
            ctl_from_dict({**base, **extra, "file": {"op": "get", "path": "x"}})
        assert int(ei.value.code) == 4014
