"""Generate the golden wire vectors ``valid.json`` and ``invalid.json``.

    .venv/bin/python tests/vectors/make_vectors.py          # rewrite the files
    .venv/bin/python tests/vectors/make_vectors.py --check  # exit 1 if they are stale

The frames are built here *independently of the core*: plain ``json.dumps``
(compact separators, UTF-8, keys in the order written below), ``int.to_bytes``
and ``base64`` following the byte layouts of ``protocol.md`` section 5 and
section 12.  The core is not imported, so the vector test compares the core
against a second, hand-written encoder -- and the output files were reviewed
by hand; after a deliberate wire change, regenerate and review the diff.

Vector formats (one vector per line in the files)::

    valid:   {"name", "profile", "frames": [{"text": str} | {"hex": str}, ...],
              "message": <ctl_to_dict(...)> | {"data": {"stream", "id", "payload_hex"}},
              "max_frame"?: int,          # decode limit and encode split size
              "decode_only"?: true,       # a non-canonical spelling: decode only
              "note"?: str}
    invalid: {"name", "profile", "frame": {"text"} | {"hex"}, "code": int,
              "code_name": str, "max_frame"?: int, "note"?: str}

``code`` is the close code the receiver must use (``ProtocolError.code``).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROFILES = ("nimbus.v1", "json-base64.v1", "lenpfx.v1")
STREAM = {"stdout": 0x01, "stderr": 0x02}
KIND_CTL = 0x10
MAX_FRAME = 1 << 20

MALFORMED, UNSUPPORTED_MESSAGE, FRAME_TOO_LARGE, BAD_HELLO = 4014, 4009, 4008, 4002
CODE_NAMES = {
    4002: "BAD_HELLO",
    4008: "FRAME_TOO_LARGE",
    4009: "UNSUPPORTED_MESSAGE",
    4014: "MALFORMED_FRAME",
}

# ----------------------------------------------------------------- encoders


def j(d: Any) -> str:
    """Compact JSON exactly as the contract's senders write it."""
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def nimbus_data(stream: str, cid: int, payload: bytes) -> bytes:
    """nimbus.v1 binary data frame: [stream:1][id:4 BE][payload]."""
    return bytes([STREAM[stream]]) + u32(cid) + payload


def lenpfx(kind: int, cid: int, body: bytes) -> bytes:
    """lenpfx.v1 envelope: [length:4 BE][kind:1][id:4 BE][body]; length = 5 + len(body)."""
    return u32(5 + len(body)) + bytes([kind]) + u32(cid) + body


def b64_data(stream: str, cid: int, payload: bytes) -> str:
    """json-base64.v1 data frame (key order t, id, stream, data; padded standard base64)."""
    return j({"t": "data", "id": cid, "stream": stream, "data": base64.b64encode(payload).decode()})


def text(s: str) -> dict[str, str]:
    return {"text": s}


def hexf(b: bytes) -> dict[str, str]:
    return {"hex": b.hex()}


def ctl_frame(profile: str, msg: dict[str, Any]) -> dict[str, str]:
    if profile == "lenpfx.v1":
        return hexf(lenpfx(KIND_CTL, 0, j(msg).encode("utf-8")))
    return text(j(msg))


def data_frame(profile: str, stream: str, cid: int, payload: bytes) -> dict[str, str]:
    if profile == "nimbus.v1":
        return hexf(nimbus_data(stream, cid, payload))
    if profile == "lenpfx.v1":
        return hexf(lenpfx(STREAM[stream], cid, payload))
    return text(b64_data(stream, cid, payload))


def data_msg(stream: str, cid: int, payload: bytes) -> dict[str, Any]:
    return {"data": {"stream": stream, "id": cid, "payload_hex": payload.hex()}}


# ------------------------------------------------------------ control messages
# Keys in canonical order: "t" first, then the fields in the order of the
# contract's table (hello: proto, auth, caps, resume, client; hello_ok: server,
# caps{flow, profileAccepted, maxFrame, ack, resumed}, resume{token, ttlMs}).

TOKEN = "00112233445566ff.q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80"
NEW_TOKEN = "00112233445566ff.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
KEY1 = "k1k1k1k1k1k1k1k1k1k1k1k1"
KEY7 = "Zm9vYmFyYmF6cXV4cXV1eA=="


def ctl_messages(profile: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, wire dict) of every control message shape covered, for ``profile``."""
    return [
        ("hello_minimal", {"t": "hello", "proto": 1}),
        (
            "hello_full",
            {
                "t": "hello",
                "proto": 1,
                "auth": {"scheme": "bearer", "token": "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"},
                "caps": {"profile": profile, "ack": True},
                "resume": {
                    "token": TOKEN,
                    "channels": [
                        {"id": 1, "resumeKey": KEY1, "rx": 123456},
                        {"id": 7, "resumeKey": KEY7, "rx": 0},
                    ],
                },
                "client": {"name": "nimbus-web", "version": "0.1.0"},
            },
        ),
        (
            "hello_auth_none_caps",
            {"t": "hello", "proto": 1, "auth": {"scheme": "none"}, "caps": {"profile": profile}},
        ),
        ("hello_resume_plain", {"t": "hello", "proto": 1, "resume": {"token": TOKEN}}),
        (
            "hello_resume_no_channels",
            {"t": "hello", "proto": 1, "caps": {"ack": True}, "resume": {"token": TOKEN, "channels": []}},
        ),
        (
            "hello_ok_minimal",
            {"t": "hello_ok", "server": "nimbus-ws/0.1.0", "caps": {"flow": "credit", "profileAccepted": profile}},
        ),
        (
            "hello_ok_full",
            {
                "t": "hello_ok",
                "server": "nimbus-ws/0.1.0",
                "caps": {
                    "flow": "credit",
                    "profileAccepted": profile,
                    "maxFrame": 1048576,
                    "ack": True,
                    "resumed": {"channels": [{"id": 1, "rx": 4096}, {"id": 7, "rx": 0}]},
                },
                "resume": {"token": NEW_TOKEN, "ttlMs": 60000},
            },
        ),
        (
            "hello_ok_resumed_empty",
            {
                "t": "hello_ok",
                "server": "s",
                "caps": {"flow": "credit", "profileAccepted": profile, "maxFrame": 1024, "resumed": {"channels": []}},
                "resume": {"token": NEW_TOKEN, "ttlMs": 0},
            },
        ),
        (
            "open_minimal",
            {
                "t": "open",
                "id": 1,
                "target": {"host": "db.internal", "port": 22},
                "user": {"username": "alice", "auth": {}},
            },
        ),
        (
            "open_term",
            {
                "t": "open",
                "id": 2,
                "target": {"host": "10.0.0.5", "port": 2222},
                "user": {"username": "bob", "auth": {"password": "hunter2"}},
                "term": {"cols": 80, "rows": 24},
            },
        ),
        (
            "open_term_env",
            {
                "t": "open",
                "id": 4294967295,
                "target": {"host": "::1", "port": 65535},
                "user": {"username": "root", "auth": {"key": {"kind": "ed25519", "pem": "-----BEGIN..."}}},
                "term": {"cols": 10000, "rows": 1, "env": {"TERM": "xterm-256color", "LANG": "de_DE.UTF-8"}},
            },
        ),
        ("open_ok", {"t": "open_ok", "id": 1}),
        ("open_ok_resume_key", {"t": "open_ok", "id": 1, "resumeKey": KEY1}),
        (
            "open_err",
            {"t": "open_err", "id": 3, "code": "TARGET_UNREACHABLE", "msg": "connect: connection refused"},
        ),
        (
            "open_err_unicode",
            {"t": "open_err", "id": 3, "code": "AUTH_FAILED", "msg": "Zugriff verweigert \u2014 \u043a\u043b\u044e\u0447 \u65e5\u672c \U0001f512"},
        ),
        ("resize", {"t": "resize", "id": 1, "cols": 132, "rows": 43}),
        ("resize_extremes", {"t": "resize", "id": 1, "cols": 1, "rows": 10000}),
        ("signal_int", {"t": "signal", "id": 1, "sig": "INT"}),
        ("signal_winch", {"t": "signal", "id": 1, "sig": "SIGRT_1"}),
        ("close", {"t": "close", "id": 1}),
        ("close_reason_escapes", {"t": "close", "id": 1, "reason": 'user said "bye"\\\n\t\u0000\u001f'}),
        ("close_reason_brackets", {"t": "close", "id": 1, "reason": '[[[[[[[[[[{{{{{{{{{{"]]\\[[[[[[[[[[' + "{" * 20}),
        ("exit_code", {"t": "exit", "id": 1, "code": 0}),
        ("exit_code_negative", {"t": "exit", "id": 1, "code": -2147483648}),
        ("exit_sig", {"t": "exit", "id": 1, "sig": "KILL"}),
        ("exit_bare", {"t": "exit", "id": 1}),
        ("flow_credit", {"t": "flow", "id": 1, "credit": 262144}),
        ("flow_credit_max", {"t": "flow", "id": 1, "credit": 2147483648}),
        ("flow_ack", {"t": "flow", "id": 1, "credit": 131072, "ack": 9007199254740991}),
        ("flow_input_ack", {"t": "flow", "id": 1, "credit": 0, "ack": 16384}),
        ("ping_int", {"t": "ping", "ts": 1712345678901}),
        ("ping_float", {"t": "ping", "ts": 1712345678901.5}),
        ("ping_zero", {"t": "ping", "ts": 0}),
        ("pong", {"t": "pong", "ts": 1712345678901.5}),
        ("pong_negative", {"t": "pong", "ts": -0.25}),
    ]


ALL_BYTES = bytes(range(256))


def data_cases() -> list[tuple[str, str, int, bytes]]:
    return [
        ("data_stdout", "stdout", 1, b"hello\r\n"),
        ("data_stderr", "stderr", 1, b"bash: nope: command not found\n"),
        ("data_stdout_empty", "stdout", 1, b""),
        ("data_stderr_empty", "stderr", 2, b""),
        ("data_all_bytes", "stdout", 4294967295, ALL_BYTES),
        ("data_utf8_and_escapes", "stdout", 3, "\x1b[1;32m\u00e9\u65e5\U0001f600\x1b[0m".encode()),
        ("data_one_byte", "stderr", 65536, b"\x00"),
    ]


def valid_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in PROFILES:
        for name, msg in ctl_messages(p):
            out.append({"name": f"{p}/{name}", "profile": p, "frames": [ctl_frame(p, msg)], "message": msg})
        for name, stream, cid, payload in data_cases():
            out.append(
                {
                    "name": f"{p}/{name}",
                    "profile": p,
                    "frames": [data_frame(p, stream, cid, payload)],
                    "message": data_msg(stream, cid, payload),
                }
            )

    # Splitting at maxFrame, and a frame of exactly maxFrame (the bound is inclusive).
    payload = bytes(i % 251 for i in range(300))
    out.append(
        {
            "name": "nimbus.v1/data_split_105",
            "profile": "nimbus.v1",
            "max_frame": 105,
            "note": "maxFrame bounds the whole message: 5-byte header + 100 payload bytes per frame",
            "frames": [hexf(nimbus_data("stdout", 9, payload[i : i + 100])) for i in (0, 100, 200)],
            "message": data_msg("stdout", 9, payload),
        }
    )
    out.append(
        {
            "name": "lenpfx.v1/data_split_109",
            "profile": "lenpfx.v1",
            "max_frame": 109,
            "note": "9-byte envelope header + 100 payload bytes per frame",
            "frames": [hexf(lenpfx(0x02, 9, payload[i : i + 100])) for i in (0, 100, 200)],
            "message": data_msg("stderr", 9, payload),
        }
    )
    out.append(
        {
            "name": "json-base64.v1/data_split_196",
            "profile": "json-base64.v1",
            "max_frame": 196,
            "note": "chunks of (196 - 64) // 4 * 3 = 99 payload bytes (132 base64 chars)",
            "frames": [text(b64_data("stdout", 9, payload[i : i + 99])) for i in (0, 99, 198, 297)],
            "message": data_msg("stdout", 9, payload),
        }
    )
    exact = bytes(i % 256 for i in range(1019))
    out.append(
        {
            "name": "nimbus.v1/data_exactly_max_frame",
            "profile": "nimbus.v1",
            "max_frame": 1024,
            "note": "1024 bytes = maxFrame: the bound is inclusive",
            "frames": [hexf(nimbus_data("stdout", 1, exact))],
            "message": data_msg("stdout", 1, exact),
        }
    )
    out.append(
        {
            "name": "lenpfx.v1/data_exactly_max_frame",
            "profile": "lenpfx.v1",
            "max_frame": 1024,
            "note": "1024 bytes = maxFrame: the bound is inclusive",
            "frames": [hexf(lenpfx(0x01, 1, exact[:1015]))],
            "message": data_msg("stdout", 1, exact[:1015]),
        }
    )
    b64_exact = bytes(i % 256 for i in range(720))  # base64 960 chars + 45 + 2 = 1007 bytes <= 1024
    out.append(
        {
            "name": "json-base64.v1/data_one_full_chunk",
            "profile": "json-base64.v1",
            "max_frame": 1024,
            "note": "(1024 - 64) // 4 * 3 = 720 payload bytes fit one frame",
            "frames": [text(b64_data("stdout", 1, b64_exact))],
            "message": data_msg("stdout", 1, b64_exact),
        }
    )

    # Non-canonical spellings a receiver must accept (never produced by the encoder).
    def decode_only(p: str, name: str, frame: dict[str, str], msg: dict[str, Any], note: str) -> None:
        out.append({"name": f"{p}/{name}", "profile": p, "decode_only": True, "note": note, "frames": [frame], "message": msg})

    for p in PROFILES:
        def raw(s: str, p: str = p) -> dict[str, str]:
            return hexf(lenpfx(KIND_CTL, 0, s.encode())) if p == "lenpfx.v1" else text(s)

        decode_only(p, "close_whitespace_key_order", raw(' { "id" : 5 ,\n "t" : "close" } '),
                    {"t": "close", "id": 5}, "insignificant whitespace, keys in any order")
        decode_only(p, "ping_unknown_fields", raw('{"t":"ping","ts":7,"x":{"y":[1,2,null]},"z":"ignored"}'),
                    {"t": "ping", "ts": 7}, "unknown optional fields are ignored")
        decode_only(p, "open_without_user_auth", raw('{"t":"open","id":1,"target":{"host":"h","port":22},"user":{"username":"u"}}'),
                    {"t": "open", "id": 1, "target": {"host": "h", "port": 22}, "user": {"username": "u", "auth": {}}},
                    "open.user.auth is optional; it decodes as {}")
        decode_only(p, "hello_ack_false_nulls", raw('{"t":"hello","proto":1,"caps":{"ack":false},"auth":null,"resume":null}'),
                    {"t": "hello", "proto": 1, "caps": {}}, "caps.ack false is the default; null optional objects are absent")
        decode_only(p, "exit_code_null", raw('{"t":"exit","id":1,"code":null,"sig":"TERM"}'),
                    {"t": "exit", "id": 1, "sig": "TERM"}, "null optional field is absent")
        decode_only(p, "ping_escaped_t", raw('{"\\u0074":"\\u0070ing","ts":1.0}'),
                    {"t": "ping", "ts": 1.0}, "JSON string escapes in keys and values")
    decode_only("json-base64.v1", "data_key_order_extra", text('{"data":"aGk=","stream":"stderr","x":1,"id":3,"t":"data"}'),
                data_msg("stderr", 3, b"hi"), "data keys in any order, unknown keys ignored")
    decode_only("lenpfx.v1", "ctl_ascii_escapes", hexf(lenpfx(KIND_CTL, 0, b'{"t":"open_err","id":1,"code":"X","msg":"\\u00e9"}')),
                {"t": "open_err", "id": 1, "code": "X", "msg": "\u00e9"}, "ensure_ascii-style escapes decode to the same text")
    return out


# -------------------------------------------------------------- invalid frames

BOMB = 10_000


def invalid_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def bad(p: str, name: str, frame: dict[str, str], code: int, note: str, max_frame: int | None = None) -> None:
        v: dict[str, Any] = {"name": f"{p}/{name}", "profile": p, "frame": frame, "code": code, "code_name": CODE_NAMES[code]}
        if max_frame is not None:
            v["max_frame"] = max_frame
        v["note"] = note
        out.append(v)

    nv, jb, lp = PROFILES

    # ---- nimbus.v1 binary data
    bad(nv, "data_empty", hexf(b""), MALFORMED, "truncated header: 0 of 5 bytes")
    bad(nv, "data_truncated_1", hexf(b"\x01"), MALFORMED, "truncated header: stream byte only")
    bad(nv, "data_truncated_4", hexf(b"\x01\x00\x00\x00"), MALFORMED, "truncated header: 4 of 5 bytes")
    bad(nv, "data_stream_00", hexf(b"\x00" + u32(1) + b"x"), MALFORMED, "reserved stream byte 0x00")
    bad(nv, "data_stream_03", hexf(b"\x03" + u32(1) + b"x"), MALFORMED, "reserved stream byte 0x03")
    bad(nv, "data_stream_10", hexf(b"\x10" + u32(1) + b"x"), MALFORMED, "0x10 is lenpfx's control kind, reserved here")
    bad(nv, "data_stream_ff", hexf(b"\xff" + u32(1)), MALFORMED, "reserved stream byte 0xff, empty payload")
    bad(nv, "data_id_0", hexf(nimbus_data("stdout", 0, b"x")), MALFORMED, "channel ids are 1..2^32-1")
    bad(nv, "data_over_max_frame", hexf(nimbus_data("stdout", 1, bytes(1020))), FRAME_TOO_LARGE, "1025 bytes > maxFrame 1024", 1024)

    # ---- JSON control (nimbus.v1 text frames; the same parser serves every profile)
    J = [
        ("json_empty", "", MALFORMED, "empty text frame"),
        ("json_truncated", '{"t":"close","id":1', MALFORMED, "invalid JSON: unterminated object"),
        ("json_trailing_garbage", '{"t":"close","id":1}x', MALFORMED, "invalid JSON: extra data"),
        ("json_single_quotes", "{'t':'close','id':1}", MALFORMED, "invalid JSON"),
        ("json_array", '[{"t":"close","id":1}]', MALFORMED, "a control message must be an object"),
        ("json_null", "null", MALFORMED, "a control message must be an object"),
        ("json_string", '"close"', MALFORMED, "a control message must be an object"),
        ("json_nesting_bomb_arrays", '{"t":"ping","ts":1,"x":' + "[" * BOMB + "]" * BOMB + "}", MALFORMED,
         "depth 10000 inside an unknown field: refused, no RecursionError"),
        ("json_nesting_bomb_objects", '{"a":' * BOMB + "1" + "}" * BOMB, MALFORMED, "depth 10000 objects at top level"),
        ("json_nesting_bomb_unclosed", "[" * BOMB, MALFORMED, "depth 10000, never closed"),
        ("json_nan", '{"t":"ping","ts":NaN}', MALFORMED, "NaN is not JSON"),
        ("json_infinity", '{"t":"ping","ts":Infinity}', MALFORMED, "Infinity is not JSON"),
        ("json_neg_infinity", '{"t":"pong","ts":-Infinity}', MALFORMED, "-Infinity is not JSON"),
        ("json_huge_int_5000", '{"t":"flow","id":1,"credit":' + "9" * 5000 + "}", MALFORMED, "5000-digit integer"),
        ("json_huge_int_4000_ts", '{"t":"ping","ts":' + "9" * 4000 + "}", MALFORMED, "4000-digit integer: parses, out of range"),
        ("json_ts_too_big", '{"t":"ping","ts":9007199254740993}', MALFORMED, "|ts| must be <= 2^53"),
        ("json_ts_string", '{"t":"ping","ts":"1"}', MALFORMED, "ts must be a number"),
        ("json_t_missing", '{"id":1}', MALFORMED, "no t"),
        ("json_t_number", '{"t":1,"id":1}', MALFORMED, "t must be a string"),
        ("unknown_t", '{"t":"shell","id":1}', UNSUPPORTED_MESSAGE, "unknown t"),
        ("unknown_t_data_in_nimbus", '{"t":"data","id":1,"stream":"stdout","data":"aGk="}', UNSUPPORTED_MESSAGE,
         "t=data exists only in json-base64.v1"),
        ("close_id_0", '{"t":"close","id":0}', MALFORMED, "id 0"),
        ("close_id_2_32", '{"t":"close","id":4294967296}', MALFORMED, "id 2^32"),
        ("close_id_negative", '{"t":"close","id":-1}', MALFORMED, "negative id"),
        ("close_id_float", '{"t":"close","id":1.0}', MALFORMED, "1.0 is not an integer"),
        ("close_id_bool", '{"t":"close","id":true}', MALFORMED, "bool where int expected"),
        ("close_id_string", '{"t":"close","id":"1"}', MALFORMED, "string where int expected"),
        ("close_missing_id", '{"t":"close"}', MALFORMED, "missing required id"),
        ("close_reason_number", '{"t":"close","id":1,"reason":5}', MALFORMED, "reason must be a string"),
        ("resize_cols_0", '{"t":"resize","id":1,"cols":0,"rows":24}', MALFORMED, "cols 0"),
        ("resize_cols_10001", '{"t":"resize","id":1,"cols":10001,"rows":24}', MALFORMED, "cols 10001"),
        ("resize_rows_0", '{"t":"resize","id":1,"cols":80,"rows":0}', MALFORMED, "rows 0"),
        ("resize_missing_rows", '{"t":"resize","id":1,"cols":80}', MALFORMED, "missing rows"),
        ("open_term_cols_0", '{"t":"open","id":1,"target":{"host":"h","port":22},"user":{"username":"u"},"term":{"cols":0,"rows":24}}',
         MALFORMED, "term.cols 0"),
        ("open_missing_target", '{"t":"open","id":1,"user":{"username":"u"}}', MALFORMED, "missing target"),
        ("open_port_string", '{"t":"open","id":1,"target":{"host":"h","port":"22"},"user":{"username":"u"}}', MALFORMED,
         "port must be an integer"),
        ("open_port_65536", '{"t":"open","id":1,"target":{"host":"h","port":65536},"user":{"username":"u"}}', MALFORMED,
         "port out of range"),
        ("open_env_value_number", '{"t":"open","id":1,"target":{"host":"h","port":22},"user":{"username":"u"},"term":{"cols":80,"rows":24,"env":{"A":1}}}',
         MALFORMED, "env values must be strings"),
        ("flow_credit_negative", '{"t":"flow","id":1,"credit":-1}', MALFORMED, "negative credit"),
        ("flow_credit_2_31_plus_1", '{"t":"flow","id":1,"credit":2147483649}', MALFORMED, "credit above 2^31"),
        ("flow_credit_bool", '{"t":"flow","id":1,"credit":true}', MALFORMED, "bool where int expected"),
        ("flow_credit_missing", '{"t":"flow","id":1,"ack":5}', MALFORMED, "missing required credit"),
        ("flow_ack_negative", '{"t":"flow","id":1,"credit":0,"ack":-1}', MALFORMED, "negative ack"),
        ("signal_missing_sig", '{"t":"signal","id":1}', MALFORMED, "missing sig"),
        ("signal_sig_number", '{"t":"signal","id":1,"sig":2}', MALFORMED, "sig must be a string"),
        ("signal_sig_empty", '{"t":"signal","id":1,"sig":""}', MALFORMED, "empty signal name"),
        ("signal_sig_shell", '{"t":"signal","id":1,"sig":"INT; rm -rf"}', MALFORMED, "not a signal name"),
        ("exit_code_string", '{"t":"exit","id":1,"code":"0"}', MALFORMED, "code must be an integer"),
        ("open_err_missing_msg", '{"t":"open_err","id":1,"code":"X"}', MALFORMED, "missing msg"),
        ("hello_proto_2", '{"t":"hello","proto":2}', BAD_HELLO, "unsupported protocol version"),
        ("hello_proto_0", '{"t":"hello","proto":0}', BAD_HELLO, "unsupported protocol version"),
        ("hello_proto_missing", '{"t":"hello"}', MALFORMED, "proto is required"),
        ("hello_proto_string", '{"t":"hello","proto":"1"}', MALFORMED, "proto must be an integer"),
        ("hello_bearer_without_token", '{"t":"hello","proto":1,"auth":{"scheme":"bearer"}}', MALFORMED, "bearer needs a token"),
        ("hello_auth_scheme_unknown", '{"t":"hello","proto":1,"auth":{"scheme":"basic","token":"x"}}', MALFORMED, "unknown auth scheme"),
        ("hello_caps_not_object", '{"t":"hello","proto":1,"caps":"nimbus.v1"}', MALFORMED, "caps must be an object"),
        ("hello_resume_channels_not_list", '{"t":"hello","proto":1,"resume":{"token":"x","channels":{}}}', MALFORMED,
         "resume.channels must be an array"),
        ("hello_ok_missing_caps", '{"t":"hello_ok","server":"s"}', MALFORMED, "missing caps"),
        ("hello_ok_flow_window", '{"t":"hello_ok","server":"s","caps":{"flow":"window","profileAccepted":"nimbus.v1"}}', MALFORMED,
         "flow must be credit"),
        ("hello_ok_max_frame_tiny", '{"t":"hello_ok","server":"s","caps":{"flow":"credit","profileAccepted":"nimbus.v1","maxFrame":10}}',
         MALFORMED, "maxFrame below 1024"),
        ("hello_ok_max_frame_1023", '{"t":"hello_ok","server":"s","caps":{"flow":"credit","profileAccepted":"nimbus.v1","maxFrame":1023}}',
         MALFORMED, "maxFrame below 1024"),
    ]
    for name, s, code, note in J:
        bad(nv, name, text(s), code, note)
    bad(nv, "ctl_over_max_frame", text(j({"t": "close", "id": 1, "reason": "x" * 993})), FRAME_TOO_LARGE,
        "text frame of 1025 bytes > maxFrame 1024", 1024)
    bad(nv, "ctl_over_max_frame_utf8", text(j({"t": "close", "id": 1, "reason": "\u00e9" * 600})), FRAME_TOO_LARGE,
        "632 characters but 1232 UTF-8 bytes > maxFrame 1024: the bound is in bytes", 1024)

    # ---- json-base64.v1
    bad(jb, "binary_frame", hexf(nimbus_data("stdout", 1, b"hi")), MALFORMED, "json-base64.v1 has no binary frames")
    bad(jb, "binary_frame_json_bytes", hexf(b'{"t":"ping","ts":1}'), MALFORMED, "even JSON in a binary frame")
    bad(jb, "base64_unpadded", text('{"t":"data","id":1,"stream":"stdout","data":"aGk"}'), MALFORMED, "missing padding")
    bad(jb, "base64_bad_char", text('{"t":"data","id":1,"stream":"stdout","data":"a!k="}'), MALFORMED, "not base64 alphabet")
    bad(jb, "base64_urlsafe", text('{"t":"data","id":1,"stream":"stdout","data":"-_-_"}'), MALFORMED, "base64url alphabet is not base64")
    bad(jb, "base64_newline", text('{"t":"data","id":1,"stream":"stdout","data":"aGk=\\n"}'), MALFORMED, "trailing newline")
    bad(jb, "base64_excess_after_padding", text('{"t":"data","id":1,"stream":"stdout","data":"aGk=aGk="}'), MALFORMED, "data after padding")
    bad(jb, "data_stream_stdin", text('{"t":"data","id":1,"stream":"stdin","data":""}'), MALFORMED, "unknown stream")
    bad(jb, "data_stream_missing", text('{"t":"data","id":1,"data":""}'), MALFORMED, "missing stream")
    bad(jb, "data_id_0", text(b64_data("stdout", 0, b"x")), MALFORMED, "id 0")
    bad(jb, "data_id_2_32", text('{"t":"data","id":4294967296,"stream":"stdout","data":""}'), MALFORMED, "id 2^32")
    bad(jb, "data_id_bool", text('{"t":"data","id":true,"stream":"stdout","data":""}'), MALFORMED, "bool where int expected")
    bad(jb, "data_payload_missing", text('{"t":"data","id":1,"stream":"stdout"}'), MALFORMED, "missing data")
    bad(jb, "data_payload_array", text('{"t":"data","id":1,"stream":"stdout","data":[104,105]}'), MALFORMED, "data must be a string")
    bad(jb, "invalid_json", text('{"t":"data",'), MALFORMED, "invalid JSON")
    bad(jb, "nesting_bomb", text("[" * BOMB + "]" * BOMB), MALFORMED, "depth 10000")
    bad(jb, "unknown_t", text('{"t":"stdin","id":1}'), UNSUPPORTED_MESSAGE, "unknown t")
    bad(jb, "hello_proto_2", text('{"t":"hello","proto":2,"caps":{"profile":"json-base64.v1"}}'), BAD_HELLO, "proto 2")
    bad(jb, "data_over_max_frame", text(b64_data("stdout", 1, bytes(735))), FRAME_TOO_LARGE, "1027 bytes > maxFrame 1024", 1024)

    # ---- lenpfx.v1
    ctl = lambda s: hexf(lenpfx(KIND_CTL, 0, s if isinstance(s, bytes) else s.encode()))  # noqa: E731
    bad(lp, "text_frame", text('{"t":"ping","ts":1}'), MALFORMED, "lenpfx.v1 has no text frames")
    bad(lp, "empty", hexf(b""), MALFORMED, "truncated header: 0 of 9 bytes")
    bad(lp, "truncated_header_8", hexf(u32(4) + b"\x01" + b"\x00\x00\x01"), MALFORMED, "truncated header: 8 of 9 bytes")
    bad(lp, "length_too_big", hexf(u32(8) + b"\x01" + u32(1) + b"xy"), MALFORMED, "length 8 but 7 bytes follow")
    bad(lp, "length_too_small", hexf(u32(6) + b"\x01" + u32(1) + b"xy"), MALFORMED, "length 6 but 7 bytes follow")
    bad(lp, "length_excludes_kind_id", hexf(u32(2) + b"\x01" + u32(1) + b"xy"), MALFORMED,
        "length counting only the payload (a common misreading)")
    bad(lp, "length_includes_itself", hexf(u32(11) + b"\x01" + u32(1) + b"xy"), MALFORMED, "length counting its own 4 bytes")
    bad(lp, "kind_00", hexf(lenpfx(0x00, 1, b"x")), MALFORMED, "reserved kind 0x00")
    bad(lp, "kind_03", hexf(lenpfx(0x03, 1, b"x")), MALFORMED, "reserved kind 0x03")
    bad(lp, "kind_11", hexf(lenpfx(0x11, 0, b'{"t":"ping","ts":1}')), MALFORMED, "reserved kind 0x11")
    bad(lp, "kind_ff", hexf(lenpfx(0xFF, 1, b"")), MALFORMED, "reserved kind 0xff")
    bad(lp, "data_id_0", hexf(lenpfx(0x01, 0, b"x")), MALFORMED, "id 0")
    bad(lp, "ctl_not_utf8", ctl(b'{"t":"close","id":1,"reason":"\xff\xfe"}'), MALFORMED, "control JSON must be UTF-8")
    bad(lp, "ctl_truncated_utf8", ctl(b'{"t":"close","id":1,"reason":"\xc3"}'), MALFORMED, "truncated UTF-8 sequence")
    bad(lp, "ctl_empty", ctl(b""), MALFORMED, "empty control envelope")
    bad(lp, "ctl_invalid_json", ctl("{"), MALFORMED, "invalid JSON")
    bad(lp, "ctl_nesting_bomb", ctl('{"t":"ping","ts":1,"x":' + "[" * BOMB + "]" * BOMB + "}"), MALFORMED, "depth 10000")
    bad(lp, "ctl_nan", ctl('{"t":"ping","ts":NaN}'), MALFORMED, "NaN")
    bad(lp, "ctl_unknown_t", ctl('{"t":"shell","id":1}'), UNSUPPORTED_MESSAGE, "unknown t")
    bad(lp, "ctl_hello_proto_2", ctl('{"t":"hello","proto":2}'), BAD_HELLO, "proto 2")
    bad(lp, "ctl_resize_cols_10001", ctl('{"t":"resize","id":1,"cols":10001,"rows":1}'), MALFORMED, "cols 10001")
    bad(lp, "data_over_max_frame", hexf(lenpfx(0x01, 1, bytes(1016))), FRAME_TOO_LARGE, "1025 bytes > maxFrame 1024", 1024)
    return out


# ------------------------------------------------------------------ output


def render(kind: str, vectors: list[dict[str, Any]]) -> str:
    """One vector per line, so reviews and diffs stay readable."""
    head = {
        "format": 1,
        "kind": kind,
        "generator": "tests/vectors/make_vectors.py",
        "contract": "/work/shared/design/protocol.md sections 5, 8, 12",
    }
    lines = [json.dumps(v, ensure_ascii=False, separators=(", ", ": ")) for v in vectors]
    header = json.dumps(head, ensure_ascii=False)[:-1]
    return header + ', "vectors": [\n' + ",\n".join(lines) + "\n]}\n"


def build() -> dict[str, str]:
    """File name -> content."""
    return {"valid.json": render("valid", valid_vectors()), "invalid.json": render("invalid", invalid_vectors())}


def main(argv: list[str]) -> int:
    files = build()
    if "--check" in argv:
        stale = [n for n, c in files.items() if (HERE / n).read_text(encoding="utf-8") != c]
        if stale:
            print("stale:", ", ".join(stale))
            return 1
        return 0
    for name, content in files.items():
        (HERE / name).write_text(content, encoding="utf-8")
        print(f"wrote {HERE / name} ({content.count(chr(10)) - 1} vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
