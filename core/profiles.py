"""Wire profiles: how control messages and data frames become WebSocket frames.

A profile (:class:`WireProfile`) turns :data:`~.messages.Ctl` and
:class:`~.messages.DataFrame` into WebSocket messages and back.  Text frames
are ``str``, binary frames ``bytes``.  Three profiles ship (``protocol.md``
section 5); applications may :func:`register_profile` their own.

``max_frame`` bounds the whole WebSocket message, envelope included
(contract 12.2): ``encode_data`` splits payloads so no frame exceeds it, and
``decode`` refuses a larger frame with ``FRAME_TOO_LARGE`` (4008).

Byte layouts (all integers big-endian)::

    nimbus.v1   data   [stream:1][id:4][payload]          stream 0x01 stdout, 0x02 stderr
                ctl    UTF-8 JSON text frame
    json-base64 every frame is a JSON text frame; data is
                {"t":"data","id":N,"stream":"stdout"|"stderr","data":"<base64>"}
    lenpfx.v1   [length:4][kind:1][id:4][payload]      length = 5 + len(payload)
                kind 0x10 control JSON (id 0), 0x01 stdout, 0x02 stderr
"""

from __future__ import annotations

import binascii
import json
import re
import struct
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias, runtime_checkable

from .errors import CloseCode, ProtocolError
from .messages import CHANNEL_ID_MAX, Ctl, DataFrame, Stream, ctl_from_dict, ctl_to_dict

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_PROFILE",
    "Frame",
    "JsonBase64Profile",
    "LenPfxProfile",
    "NimbusV1Profile",
    "WireProfile",
    "available_profiles",
    "get_profile",
    "profile_for_subprotocol",
    "register_profile",
]

Frame: TypeAlias = str | bytes
#: Default ``maxFrame``: 1 MiB for the whole WebSocket message.
DEFAULT_MAX_FRAME = 1 << 20
#: Profile used when ``hello.caps.profile`` is missing.
DEFAULT_PROFILE = "nimbus.v1"
#: Deepest JSON nesting accepted in a control message (the deepest legal one is 4).
MAX_JSON_DEPTH = 8

_STREAM_CODE: dict[str, int] = {"stdout": 0x01, "stderr": 0x02}
_CODE_STREAM: dict[int, Stream] = {0x01: "stdout", 0x02: "stderr"}
_HDR = struct.Struct(">BI")
_LHDR = struct.Struct(">IBI")
_KIND_CTL = 0x10
_NO_LIMIT = 1 << 62


@runtime_checkable
class WireProfile(Protocol):
    """What every wire profile provides.

    ``decode`` is the receive path: it classifies a frame and returns either a
    control message or a data frame, raising :class:`ProtocolError` with the
    contract's close code for anything malformed.
    """

    id: str
    subprotocols: tuple[str, ...]

    def encode_ctl(self, m: Ctl) -> Frame:
        """Encode one control message as one frame."""
        ...

    def decode_ctl(self, frame: Frame) -> Ctl:
        """Decode a frame that must be a control message."""
        ...

    def encode_data(self, df: DataFrame, max_frame: int = DEFAULT_MAX_FRAME) -> list[Frame]:
        """Encode ``df`` as frames of at most ``max_frame`` bytes each."""
        ...

    def decode_data(self, frame: Frame) -> DataFrame:
        """Decode a frame that must be a data frame."""
        ...

    def decode(self, frame: Frame, max_frame: int = DEFAULT_MAX_FRAME) -> Ctl | DataFrame:
        """Decode any frame of this profile."""
        ...

    def on_negotiated(self, max_frame: int) -> None:
        """Hook called once ``hello``/``hello_ok`` settled this profile."""
        ...


# A JSON string (skipped whole, escapes included) or one bracket: for the nesting pre-scan.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def _scan_depth(text: str) -> None:
    """Refuse nesting deeper than ``MAX_JSON_DEPTH`` before ``json.loads`` sees it.

    The C parser recurses once per level: CPython raises ``RecursionError``
    near 1000 levels, but in Pyodide ~10000 levels overflow the WebAssembly
    stack first -- a fatal error of the whole runtime, not an exception.
    """
    depth = 0
    for m in _JSON_TOKENS.finditer(text):
        c = m.group()
        if c == "[" or c == "{":
            depth += 1
            if depth > MAX_JSON_DEPTH + 1:
                raise ProtocolError(CloseCode.MALFORMED_FRAME, "JSON nested too deeply")
        elif c == "]" or c == "}":
            depth -= 1


def _json_loads(text: str | bytes) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if text.count("[") + text.count("{") > MAX_JSON_DEPTH + 1:
            _scan_depth(text)  # cheap: only messages with many brackets are scanned
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError(CloseCode.MALFORMED_FRAME, "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ProtocolError(CloseCode.MALFORMED_FRAME, f"invalid JSON: {exc}") from None
    _check_depth(obj, 0)
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} not allowed")


def _check_depth(obj: Any, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ProtocolError(CloseCode.MALFORMED_FRAME, "JSON nested too deeply")
    if isinstance(obj, dict):
        for v in obj.values():
            if isinstance(v, (dict, list)):
                _check_depth(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)):
                _check_depth(v, depth + 1)


def _json_dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def _check_size(frame: Frame, max_frame: int) -> None:
    # For text, len(str) <= len(utf-8 bytes), so check the cheap bound first.
    n = len(frame)
    if n > max_frame or (isinstance(frame, str) and n * 4 > max_frame and len(frame.encode()) > max_frame):
        raise ProtocolError(CloseCode.FRAME_TOO_LARGE, f"frame of {n} units over maxFrame {max_frame}")


def _check_id(cid: int) -> None:
    if not 1 <= cid <= CHANNEL_ID_MAX:
        raise ProtocolError(CloseCode.MALFORMED_FRAME, f"channel id {cid} out of range")


def _split(payload: bytes, chunk: int) -> list[memoryview]:
    mv = memoryview(payload)
    if len(mv) <= chunk:
        return [mv]
    return [mv[i : i + chunk] for i in range(0, len(mv), chunk)]


class NimbusV1Profile:
    """``nimbus.v1`` (subprotocol ``nimbus.ssh.v1``): JSON text control, binary data."""

    id = "nimbus.v1"
    subprotocols: tuple[str, ...] = ("nimbus.ssh.v1",)
    overhead = _HDR.size

    def encode_ctl(self, m: Ctl) -> Frame:
        """Control messages are compact JSON in a text frame."""
        return _json_dumps(ctl_to_dict(m))

    def decode_ctl(self, frame: Frame) -> Ctl:
        """A text frame holding one JSON object."""
        if not isinstance(frame, str):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "control message must be a text frame")
        return ctl_from_dict(_json_loads(frame))

    def encode_data(self, df: DataFrame, max_frame: int = DEFAULT_MAX_FRAME) -> list[Frame]:
        """``[stream][id][payload]`` binary frames, split at ``max_frame``."""
        hdr = _HDR.pack(_STREAM_CODE[df.stream], df.id)
        chunk = max_frame - _HDR.size
        if len(df.payload) <= chunk:
            return [hdr + df.payload]
        return [hdr + part for part in _split(df.payload, chunk)]

    def decode_data(self, frame: Frame) -> DataFrame:
        """Parse a binary data frame."""
        if not isinstance(frame, (bytes, bytearray, memoryview)):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "data must be a binary frame")
        if len(frame) < _HDR.size:
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "data frame shorter than its 5-byte header")
        code, cid = _HDR.unpack_from(frame)
        stream = _CODE_STREAM.get(code)
        if stream is None:
            raise ProtocolError(CloseCode.MALFORMED_FRAME, f"reserved stream byte 0x{code:02x}")
        if not cid:  # a 32-bit field: 0 is the only id out of range
            _check_id(cid)
        return DataFrame(stream, cid, bytes(frame[_HDR.size :]))

    def decode(self, frame: Frame, max_frame: int = DEFAULT_MAX_FRAME) -> Ctl | DataFrame:
        """Text frames are control, binary frames are data."""
        _check_size(frame, max_frame)
        if isinstance(frame, str):
            return self.decode_ctl(frame)
        return self.decode_data(frame)

    def on_negotiated(self, max_frame: int) -> None:
        """Nothing to set up."""


class JsonBase64Profile:
    """``json-base64.v1``: every frame is JSON text; data payloads are base64."""

    id = "json-base64.v1"
    subprotocols: tuple[str, ...] = ("nimbus.ssh.json-base64.v1",)
    #: JSON around the base64 text for the largest id: {"t":"data","id":4294967295,...}
    overhead = 64

    def encode_ctl(self, m: Ctl) -> Frame:
        """Compact JSON text."""
        return _json_dumps(ctl_to_dict(m))

    def decode_ctl(self, frame: Frame) -> Ctl:
        """A text frame holding a control message (not ``t: data``)."""
        m = self.decode(frame, _NO_LIMIT)  # size is the caller's check (decode with max_frame)
        if isinstance(m, DataFrame):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "expected a control message, got data")
        return m

    def encode_data(self, df: DataFrame, max_frame: int = DEFAULT_MAX_FRAME) -> list[Frame]:
        """One JSON text frame per chunk; chunks sized so the text fits ``max_frame``."""
        chunk = (max_frame - self.overhead) // 4 * 3
        if chunk <= 0:
            raise ValueError("max_frame too small for json-base64.v1")
        prefix = f'{{"t":"data","id":{df.id},"stream":"{df.stream}","data":"'
        return [
            prefix + binascii.b2a_base64(part, newline=False).decode("ascii") + '"}'
            for part in _split(df.payload, chunk)
        ]

    def decode_data(self, frame: Frame) -> DataFrame:
        """A ``t: data`` JSON frame."""
        m = self.decode(frame, _NO_LIMIT)  # size is the caller's check (decode with max_frame)
        if not isinstance(m, DataFrame):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "expected data, got a control message")
        return m

    def decode(self, frame: Frame, max_frame: int = DEFAULT_MAX_FRAME) -> Ctl | DataFrame:
        """Every frame must be text JSON; ``t: data`` is data, anything else control."""
        _check_size(frame, max_frame)
        if not isinstance(frame, str):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "json-base64.v1 uses text frames only")
        obj = _json_loads(frame)
        if isinstance(obj, dict) and obj.get("t") == "data":
            return _b64_data(obj)
        return ctl_from_dict(obj)

    def on_negotiated(self, max_frame: int) -> None:
        """Nothing to set up."""


def _b64_data(obj: dict[str, Any]) -> DataFrame:
    cid = obj.get("id")
    stream = obj.get("stream")
    data = obj.get("data")
    if isinstance(cid, bool) or not isinstance(cid, int):
        raise ProtocolError(CloseCode.MALFORMED_FRAME, "data.id must be an integer")
    _check_id(cid)
    if stream not in _STREAM_CODE:
        raise ProtocolError(CloseCode.MALFORMED_FRAME, f"unknown stream {str(stream)[:16]!r}")
    if not isinstance(data, str):
        raise ProtocolError(CloseCode.MALFORMED_FRAME, "data.data must be a base64 string")
    try:
        payload = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(CloseCode.MALFORMED_FRAME, "data.data is not valid base64") from None
    return DataFrame(stream, cid, payload)


class LenPfxProfile:
    """``lenpfx.v1``: ``[length u32][kind u8][id u32][payload]`` binary envelopes.

    ``length`` covers the bytes after itself (kind + id + payload), so it is
    always ``len(frame) - 4``; one envelope per WebSocket message.
    """

    id = "lenpfx.v1"
    subprotocols: tuple[str, ...] = ("nimbus.ssh.lenpfx.v1",)
    overhead = _LHDR.size

    def encode_ctl(self, m: Ctl) -> Frame:
        """Kind 0x10 envelope around UTF-8 JSON; id field 0."""
        body = _json_dumps(ctl_to_dict(m)).encode()
        return _LHDR.pack(5 + len(body), _KIND_CTL, 0) + body

    def decode_ctl(self, frame: Frame) -> Ctl:
        """An envelope of kind 0x10."""
        m = self.decode(frame, _NO_LIMIT)  # size is the caller's check (decode with max_frame)
        if isinstance(m, DataFrame):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "expected a control envelope, got data")
        return m

    def encode_data(self, df: DataFrame, max_frame: int = DEFAULT_MAX_FRAME) -> list[Frame]:
        """Kind 0x01/0x02 envelopes, split at ``max_frame``."""
        kind = _STREAM_CODE[df.stream]
        chunk = max_frame - _LHDR.size
        return [
            _LHDR.pack(5 + len(part), kind, df.id) + part for part in _split(df.payload, chunk)
        ]

    def decode_data(self, frame: Frame) -> DataFrame:
        """An envelope of kind 0x01 or 0x02."""
        m = self.decode(frame, _NO_LIMIT)  # size is the caller's check (decode with max_frame)
        if not isinstance(m, DataFrame):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "expected data, got a control envelope")
        return m

    def decode(self, frame: Frame, max_frame: int = DEFAULT_MAX_FRAME) -> Ctl | DataFrame:
        """Check the envelope, then dispatch on ``kind``."""
        _check_size(frame, max_frame)
        if isinstance(frame, str):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "lenpfx.v1 uses binary frames only")
        if len(frame) < _LHDR.size:
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "envelope shorter than its 9-byte header")
        length, kind, cid = _LHDR.unpack_from(frame)
        if length != len(frame) - 4:
            raise ProtocolError(
                CloseCode.MALFORMED_FRAME, f"length field {length} != {len(frame) - 4} bytes after it"
            )
        if kind == _KIND_CTL:
            try:
                text = bytes(frame[_LHDR.size :]).decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(CloseCode.MALFORMED_FRAME, "control envelope is not UTF-8") from None
            return ctl_from_dict(_json_loads(text))
        stream = _CODE_STREAM.get(kind)
        if stream is None:
            raise ProtocolError(CloseCode.MALFORMED_FRAME, f"reserved kind byte 0x{kind:02x}")
        _check_id(cid)
        return DataFrame(stream, cid, bytes(frame[_LHDR.size :]))

    def on_negotiated(self, max_frame: int) -> None:
        """Nothing to set up."""


# --------------------------------------------------------------------- registry

_REGISTRY: dict[str, WireProfile] = {}


def register_profile(profile: WireProfile, *, replace: bool = False) -> None:
    """Make ``profile`` resolvable by its id (and its subprotocols).

    Registering an id twice raises ``ValueError`` unless ``replace`` is true.
    The registry is the core's only global mutable state.
    """
    if not isinstance(profile, WireProfile):
        raise TypeError("profile does not implement WireProfile")
    if profile.id in _REGISTRY and not replace:
        raise ValueError(f"profile {profile.id!r} already registered")
    _REGISTRY[profile.id] = profile


def get_profile(profile_id: str | WireProfile) -> WireProfile:
    """Return the registered profile ``profile_id`` (a profile object passes through).

    Raises ``KeyError`` for an unknown id.
    """
    if not isinstance(profile_id, str):
        return profile_id
    try:
        return _REGISTRY[profile_id]
    except KeyError:
        raise KeyError(f"unknown wire profile {profile_id!r}") from None


def available_profiles() -> tuple[str, ...]:
    """Ids of every registered profile, in registration order."""
    return tuple(_REGISTRY)


def profile_for_subprotocol(subprotocol: str | None) -> WireProfile | None:
    """The registered profile that owns WebSocket ``subprotocol``, or ``None``."""
    if subprotocol is None:
        return None
    for p in _REGISTRY.values():
        if subprotocol in p.subprotocols:
            return p
    return None


_FACTORY: tuple[Callable[[], WireProfile], ...] = (NimbusV1Profile, JsonBase64Profile, LenPfxProfile)
for _f in _FACTORY:
    register_profile(_f())
