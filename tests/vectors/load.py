"""Load and check the golden wire vectors (``valid.json``, ``invalid.json``).

Standard library and ``nimbus_websocket.core`` only -- no pytest -- so the
same checks run on CPython (``tests/core/test_vectors.py``) and inside
Pyodide (``tests/pyodide/test_core_vectors.py``, which ships this file's
source and the vector data into the runtime as strings: the files are not in
the Pyodide file system).

Every check raises ``AssertionError`` with the vector's name on a mismatch.

* a **valid** vector's frames decode (with ``decode`` and the matching
  ``decode_ctl``/``decode_data``) to exactly its ``message``; unless it is
  ``decode_only``, encoding the message gives back exactly its frames --
  same frame type (text ``str`` / binary ``bytes``), same bytes -- and every
  encoded frame fits ``max_frame``;
* an **invalid** vector's frame makes ``decode`` raise ``ProtocolError`` with
  exactly the vector's close ``code`` (and nothing else: no ``RecursionError``,
  ``UnicodeDecodeError``, ``ValueError``...).
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_FRAME = 1 << 20
PROFILES = ("nimbus.v1", "json-base64.v1", "lenpfx.v1")


# ------------------------------------------------------------------ loading


def vector_dir() -> Any:
    """The folder holding the vector files (CPython only)."""
    from pathlib import Path

    return Path(__file__).resolve().parent


def load_file(name: str) -> dict[str, Any]:
    """Parse ``valid.json`` or ``invalid.json`` from :func:`vector_dir`."""
    with open(vector_dir() / name, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def load_bundle() -> dict[str, list[dict[str, Any]]]:
    """Both vector lists: ``{"valid": [...], "invalid": [...]}``."""
    return {"valid": load_file("valid.json")["vectors"], "invalid": load_file("invalid.json")["vectors"]}


def bundle_json() -> str:
    """:func:`load_bundle` as one JSON string (to hand to another runtime)."""
    return json.dumps(load_bundle(), ensure_ascii=False)


def loader_source() -> str:
    """This module's source (to exec it where the file system does not have it)."""
    with open(vector_dir() / "load.py", encoding="utf-8") as f:
        return f.read()


# ----------------------------------------------------------------- checking


def frame_of(f: dict[str, str]) -> str | bytes:
    """``{"text": s}`` -> ``s`` (a text frame); ``{"hex": h}`` -> bytes (a binary frame)."""
    if "hex" in f:
        return bytes.fromhex(f["hex"])
    return f["text"]


def frame_size(frame: str | bytes) -> int:
    """Size on the wire: UTF-8 bytes for text, bytes for binary."""
    return len(frame.encode("utf-8")) if isinstance(frame, str) else len(frame)


def message_of(decoded: Any) -> dict[str, Any]:
    """The vector form of a decoded message: ``ctl_to_dict`` or ``{"data": {...}}``."""
    from nimbus_websocket.core import DataFrame, ctl_to_dict

    if isinstance(decoded, DataFrame):
        return {"data": {"stream": decoded.stream, "id": decoded.id, "payload_hex": decoded.payload.hex()}}
    return ctl_to_dict(decoded)


def _same(a: Any, b: Any) -> bool:
    """Equality that also tells ``1`` from ``True`` and ``1.0`` from ``1`` (JSON types)."""
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_valid(v: dict[str, Any]) -> None:
    """Decode the frames, compare with the message; encode the message, compare the frames."""
    from nimbus_websocket.core import DataFrame, ctl_from_dict, get_profile

    name = v["name"]
    p = get_profile(v["profile"])
    mf = v.get("max_frame", DEFAULT_MAX_FRAME)
    frames = [frame_of(f) for f in v["frames"]]
    msg = v["message"]
    assert frames, f"{name}: no frames"

    decoded = [p.decode(f, mf) for f in frames]
    if "data" in msg:
        want = msg["data"]
        payload = bytes.fromhex(want["payload_hex"])
        parts = []
        for f, d in zip(frames, decoded, strict=True):
            assert isinstance(d, DataFrame), f"{name}: decoded {d!r}, expected a data frame"
            assert (d.stream, d.id) == (want["stream"], want["id"]), f"{name}: stream/id {d.stream}/{d.id}"
            assert type(d.payload) is bytes, f"{name}: payload is {type(d.payload).__name__}"
            assert p.decode_data(f) == d, f"{name}: decode_data differs from decode"
            parts.append(d.payload)
        assert b"".join(parts) == payload, f"{name}: payload mismatch"
        if len(frames) == 1:
            assert message_of(decoded[0]) == msg, f"{name}: {message_of(decoded[0])} != {msg}"
        if not v.get("decode_only"):
            out = p.encode_data(DataFrame(want["stream"], want["id"], payload), mf)
            _check_encoded(name, out, frames, mf)
        return

    assert len(frames) == 1, f"{name}: a control message is one frame"
    (m,) = decoded
    assert not isinstance(m, DataFrame), f"{name}: decoded a data frame, expected {msg['t']}"
    got = message_of(m)
    assert _same(got, msg), f"{name}: decoded {got} != {msg}"
    assert p.decode_ctl(frames[0]) == m, f"{name}: decode_ctl differs from decode"
    typed = ctl_from_dict(msg)
    assert typed == m, f"{name}: ctl_from_dict(message) {typed!r} != decoded {m!r}"
    if not v.get("decode_only"):
        _check_encoded(name, [p.encode_ctl(typed)], frames, mf)


def _check_encoded(name: str, out: list[Any], frames: list[str | bytes], mf: int) -> None:
    assert len(out) == len(frames), f"{name}: encoded {len(out)} frames, expected {len(frames)}"
    for i, (o, f) in enumerate(zip(out, frames, strict=True)):
        assert type(o) is type(f), f"{name}[{i}]: encoded a {type(o).__name__} frame, expected {type(f).__name__}"
        assert o == f, f"{name}[{i}]: encoded\n  {o!r}\nexpected\n  {f!r}"
        assert frame_size(o) <= mf, f"{name}[{i}]: {frame_size(o)} bytes > max_frame {mf}"


def check_invalid(v: dict[str, Any]) -> None:
    """``decode`` must raise ``ProtocolError`` with the vector's code, and nothing else."""
    from nimbus_websocket.core import ProtocolError, get_profile

    name = v["name"]
    p = get_profile(v["profile"])
    mf = v.get("max_frame", DEFAULT_MAX_FRAME)
    frame = frame_of(v["frame"])
    try:
        m = p.decode(frame, mf)
    except ProtocolError as exc:
        assert int(exc.code) == v["code"], f"{name}: closed {int(exc.code)} ({exc.message}), expected {v['code']}"
        assert exc.code.name == v["code_name"], f"{name}: {exc.code.name} != {v['code_name']}"
        return
    except BaseException as exc:  # the point: nothing but ProtocolError may escape
        raise AssertionError(f"{name}: raised {type(exc).__name__}: {str(exc)[:200]}") from None
    raise AssertionError(f"{name}: decoded {m!r} instead of closing with {v['code']}")


def run_bundle(bundle: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Check every vector; returns ``{"valid": n, "invalid": n, "failures": [[name, error], ...]}``."""
    failures: list[list[str]] = []
    counts = {"valid": 0, "invalid": 0}
    for kind, check in (("valid", check_valid), ("invalid", check_invalid)):
        for v in bundle[kind]:
            try:
                check(v)
                counts[kind] += 1
            except AssertionError as exc:
                failures.append([v["name"], str(exc)])
            except Exception as exc:  # report, don't stop: one bad vector must not hide others
                failures.append([v["name"], f"{type(exc).__name__}: {exc}"])
    return {**counts, "failures": failures}
