"""Private keys a client sends to the SSH backend (``open.user.auth`` of type ``key``).

An encrypted private key costs what its key-derivation function asks for, and
the *sender* chooses that cost: an OpenSSH key carries its bcrypt rounds, a
PKCS#8 key its PBKDF2 iteration count.  Decrypting one with 8.4 M PBKDF2
iterations on the event loop froze every other connection for 2.3 s (issue
13.4).  So, before anything is decrypted:

* :func:`inspect_private_key` reads the one PEM block asyncssh would read,
  decodes the structure far enough to find the cost, and refuses a key above
  :class:`KeyCaps` (or in a form it cannot read) with :class:`KeyRefused`.
  What asyncssh is then given is that block re-armoured from the decoded
  bytes, so it cannot read anything the check did not see.
* :class:`KeyLoader` decrypts in a worker thread (``asyncio.to_thread``),
  at most ``concurrency`` at a time per event loop.  PBKDF2 (OpenSSL, through
  ``cryptography``) and bcrypt release the GIL while they run.

The caps (defaults, :class:`KeyCaps`) and what they cost here (one core):

=====================================  ==========  ===========================
KDF                                    cap         normal keys
=====================================  ==========  ===========================
OpenSSH ``bcrypt`` rounds              128         ``ssh-keygen`` 16 (0.1 s);
                                                   ``-a 100`` (0.7 s); 128 is
                                                   0.9 s
PKCS#8 PBES2 PBKDF2 iterations         1 000 000   2 048 (OpenSSL) to 600 000
                                                   (OWASP); 1 M SHA-256 is
                                                   0.13 s
PKCS#8 PBES1 / PKCS#12 iterations      100 000     2 048; asyncssh runs these
                                                   KDFs in Python (0.07 s)
PKCS#1 ``Proc-Type: 4,ENCRYPTED``      --          one MD5 round: no cap
=====================================  ==========  ===========================

RSA keys above 8192 bits are refused once loaded (a 16384-bit signature,
which asyncssh computes on the event loop during authentication, takes 0.8 s);
the key text is at most 10 KiB.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import re
import threading
from dataclasses import dataclass
from typing import Final

import asyncssh

__all__ = ["CheckedKey", "Kdf", "KeyCaps", "KeyCost", "KeyLoader", "KeyRefused", "inspect_private_key"]

_OPENSSH_MAGIC: Final = b"openssh-key-v1\x00"
_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )?)PRIVATE KEY-----")
#: PEM names asyncssh reads as private keys: OpenSSH, PKCS#8 (plain or encrypted), PKCS#1.
_PEM_NAMES: Final = frozenset({"OPENSSH", "ENCRYPTED", "", "RSA", "DSA", "EC"})

_PBES2: Final = "1.2.840.113549.1.5.13"
_PBKDF2: Final = "1.2.840.113549.1.5.12"
#: PBES1 (PKCS#5 v1.5) and PKCS#12 password-based encryption: ``params = {salt, iterations}``.
_LEGACY_PBE: Final = frozenset(
    {f"1.2.840.113549.1.5.{n}" for n in (1, 3, 4, 6, 10, 11)} | {f"1.2.840.113549.1.12.1.{n}" for n in range(1, 7)}
)


class Kdf(enum.Enum):
    """How a private key's decryption key is derived from its passphrase."""

    #: Not encrypted.
    NONE = "none"
    #: PKCS#1 PEM ``Proc-Type: 4,ENCRYPTED``: one MD5 round (no cost to cap).
    PEM_MD5 = "pem-md5"
    #: OpenSSH ``openssh-key-v1``: ``bcrypt_pbkdf`` with the key's rounds.
    BCRYPT = "bcrypt"
    #: PKCS#8 PBES2 with PBKDF2.
    PBKDF2 = "pbkdf2"
    #: PKCS#8 PBES1 or PKCS#12 PBE (KDFs asyncssh computes in Python).
    LEGACY_PBE = "legacy-pbe"


@dataclass(frozen=True)
class KeyCaps:
    """Limits on a client's private key, checked before it is decrypted."""

    #: OpenSSH bcrypt rounds (``ssh-keygen -a``; its default is 16).
    max_bcrypt_rounds: int = 128
    #: PKCS#8 PBES2 PBKDF2 iterations.
    max_pbkdf2_iterations: int = 1_000_000
    #: PKCS#8 PBES1 / PKCS#12 iterations.
    max_legacy_iterations: int = 100_000
    #: Characters of key text.
    max_text: int = 10 * 1024
    #: RSA (and DSA) modulus bits, checked once the key is loaded.
    max_key_bits: int = 8192


@dataclass(frozen=True)
class KeyCost:
    """A key's KDF and its cost parameter (rounds or iterations; 0 when unencrypted)."""

    kdf: Kdf
    rounds: int


@dataclass(frozen=True)
class CheckedKey:
    """A key that passed :func:`inspect_private_key`."""

    #: The PEM block that was checked, re-armoured from its decoded bytes: what asyncssh gets.
    pem: str
    cost: KeyCost


class KeyRefused(ValueError):
    """The key is unreadable, of an unsupported form, or over a cap (the text names no secret)."""


# ------------------------------------------------------------------ PEM


def _first_pem_block(text: str) -> tuple[str, dict[str, str], bytes]:
    """``(name, headers, der)`` of the first ``-----BEGIN ... PRIVATE KEY-----`` block."""
    lines = text.split("\n")
    found = next(((i, m) for i, raw in enumerate(lines) if (m := _BEGIN.fullmatch(raw.rstrip()))), None)
    if found is None:
        raise KeyRefused("not a PEM or OpenSSH private key")
    i, m = found
    name = m.group(1).strip()
    if name not in _PEM_NAMES:
        raise KeyRefused("unsupported private key type")
    end = f"-----END {name + ' ' if name else ''}PRIVATE KEY-----"
    headers: dict[str, str] = {}
    body: list[str] = []
    in_headers = True
    for raw in lines[i + 1 :]:
        line = raw.strip()
        if line == end:
            break
        if in_headers and ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip()] = value.strip()
            continue
        in_headers = False
        if line:
            body.append(line)
    else:
        raise KeyRefused("PEM block without its END line")
    try:
        der = binascii.a2b_base64("".join(body).encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        raise KeyRefused("PEM body is not base64") from None
    if not der:
        raise KeyRefused("empty PEM body")
    return name, headers, der


def _armour(name: str, headers: dict[str, str], der: bytes) -> str:
    label = f"{name + ' ' if name else ''}PRIVATE KEY"
    b64 = base64.b64encode(der).decode("ascii")
    out = [f"-----BEGIN {label}-----"]
    if headers:
        out += [f"{k}: {v}" for k, v in headers.items()] + [""]
    out += [b64[i : i + 64] for i in range(0, len(b64), 64)]
    out.append(f"-----END {label}-----")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ OpenSSH


class _SshReader:
    """RFC 4251 ``uint32`` and ``string`` fields, bounds-checked."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise KeyRefused("truncated OpenSSH private key")
        v = int.from_bytes(self.data[self.pos : self.pos + 4], "big")
        self.pos += 4
        return v

    def string(self) -> bytes:
        n = self.uint32()
        if self.pos + n > len(self.data):
            raise KeyRefused("truncated OpenSSH private key")
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v


def _openssh_cost(blob: bytes, caps: KeyCaps) -> KeyCost:
    if not blob.startswith(_OPENSSH_MAGIC):
        raise KeyRefused("not an openssh-key-v1 private key")
    r = _SshReader(blob[len(_OPENSSH_MAGIC) :])
    cipher, kdf, kdf_options, nkeys = r.string(), r.string(), r.string(), r.uint32()
    if nkeys != 1:
        raise KeyRefused("an OpenSSH private key file must hold exactly one key")
    if cipher == b"none":
        return KeyCost(Kdf.NONE, 0)  # asyncssh derives nothing for an unencrypted key
    if kdf != b"bcrypt":
        raise KeyRefused("unsupported OpenSSH key derivation")
    opts = _SshReader(kdf_options)
    opts.string()  # salt
    rounds = opts.uint32()
    if opts.pos != len(kdf_options):
        raise KeyRefused("malformed OpenSSH bcrypt options")
    if rounds > caps.max_bcrypt_rounds:
        raise KeyRefused(f"key derivation too costly: {rounds} bcrypt rounds (at most {caps.max_bcrypt_rounds})")
    return KeyCost(Kdf.BCRYPT, rounds)


# ------------------------------------------------------------------ PKCS#8 (a minimal DER walk)

_SEQUENCE, _INTEGER, _OCTET_STRING, _OID = 0x30, 0x02, 0x04, 0x06


class _Der:
    """One DER element: its tag and content, with the position after it."""

    __slots__ = ("content", "end", "tag")

    def __init__(self, tag: int, content: bytes, end: int) -> None:
        self.tag = tag
        self.content = content
        self.end = end


def _der_at(buf: bytes, pos: int) -> _Der:
    if pos + 2 > len(buf):
        raise KeyRefused("truncated PKCS#8 structure")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise KeyRefused("malformed PKCS#8 structure")
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        width = n & 0x7F
        if not 1 <= width <= 4 or pos + width > len(buf):
            raise KeyRefused("malformed PKCS#8 structure")
        n = int.from_bytes(buf[pos : pos + width], "big")
        pos += width
    if pos + n > len(buf):
        raise KeyRefused("truncated PKCS#8 structure")
    return _Der(tag, buf[pos : pos + n], pos + n)


def _children(seq: _Der) -> list[_Der]:
    if seq.tag != _SEQUENCE:
        raise KeyRefused("malformed PKCS#8 structure")
    out: list[_Der] = []
    pos = 0
    while pos < len(seq.content):
        el = _der_at(seq.content, pos)
        out.append(el)
        pos = el.end
    return out


def _oid(el: _Der) -> str:
    if el.tag != _OID or not el.content:
        raise KeyRefused("malformed PKCS#8 structure")
    values: list[int] = []
    v = 0
    for b in el.content:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            values.append(v)
            v = 0
    head = min(values[0] // 40, 2) if values else 0
    arcs = [head, values[0] - 40 * head, *values[1:]] if values else []
    return ".".join(map(str, arcs))


def _uint(el: _Der) -> int:
    if el.tag != _INTEGER or not el.content or el.content[0] & 0x80:
        raise KeyRefused("malformed PKCS#8 iteration count")
    return int.from_bytes(el.content, "big")


def _iterations(params: _Der) -> int:
    """``{salt OCTET STRING, iterationCount INTEGER, ...}`` (PBKDF2-params, PBEParameter)."""
    fields = _children(params)
    if len(fields) < 2 or fields[0].tag != _OCTET_STRING:
        raise KeyRefused("malformed PKCS#8 key derivation parameters")
    return _uint(fields[1])


def _pkcs8_cost(der: bytes, caps: KeyCaps) -> KeyCost:
    top = _der_at(der, 0)
    fields = _children(top)
    if len(fields) != 2 or fields[1].tag != _OCTET_STRING:
        raise KeyRefused("malformed PKCS#8 EncryptedPrivateKeyInfo")
    alg = _children(fields[0])
    if len(alg) != 2:
        raise KeyRefused("malformed PKCS#8 encryption algorithm")
    scheme = _oid(alg[0])
    if scheme == _PBES2:
        kdf_and_enc = _children(alg[1])
        if len(kdf_and_enc) != 2:
            raise KeyRefused("malformed PKCS#8 PBES2 parameters")
        kdf = _children(kdf_and_enc[0])
        if len(kdf) != 2 or _oid(kdf[0]) != _PBKDF2:
            raise KeyRefused("unsupported PKCS#8 key derivation (only PBKDF2)")
        n = _iterations(kdf[1])
        if n > caps.max_pbkdf2_iterations:
            raise KeyRefused(f"key derivation too costly: {n} PBKDF2 iterations (at most {caps.max_pbkdf2_iterations})")
        return KeyCost(Kdf.PBKDF2, n)
    if scheme in _LEGACY_PBE:
        n = _iterations(alg[1])
        if n > caps.max_legacy_iterations:
            raise KeyRefused(f"key derivation too costly: {n} PBE iterations (at most {caps.max_legacy_iterations})")
        return KeyCost(Kdf.LEGACY_PBE, n)
    raise KeyRefused("unsupported PKCS#8 encryption")


# ------------------------------------------------------------------ the entry points


def inspect_private_key(text: str, caps: KeyCaps | None = None) -> CheckedKey:
    """The key's KDF cost, checked against ``caps``; :class:`KeyRefused` otherwise.

    Reads no further than the cost: nothing is decrypted.  Binary (DER) keys,
    PuTTY files and keys of other forms are refused.
    """
    caps = caps or KeyCaps()
    if not isinstance(text, str):
        raise KeyRefused("private_key must be a string")
    if len(text) > caps.max_text:
        raise KeyRefused(f"private key text too long (at most {caps.max_text} characters)")
    if not text.isascii():
        raise KeyRefused("private key text must be ASCII")
    name, headers, der = _first_pem_block(text)
    kept: dict[str, str] = {}
    if name == "OPENSSH":
        cost = _openssh_cost(der, caps)
    elif name == "ENCRYPTED":
        cost = _pkcs8_cost(der, caps)
    elif headers.get("Proc-Type") == "4,ENCRYPTED" and name != "":
        dek = headers.get("DEK-Info", "")
        if len(dek) > 128:
            raise KeyRefused("malformed PEM DEK-Info")
        kept = {"Proc-Type": "4,ENCRYPTED", "DEK-Info": dek}
        cost = KeyCost(Kdf.PEM_MD5, 1)
    else:
        cost = KeyCost(Kdf.NONE, 0)
    return CheckedKey(_armour(name, kept, der), cost)


class KeyLoader:
    """Checks, then decrypts private keys off the event loop, ``concurrency`` at a time."""

    def __init__(self, caps: KeyCaps | None = None, concurrency: int = 2) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.caps = caps or KeyCaps()
        self.concurrency = concurrency
        self._gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._lock = threading.Lock()
        #: Decryptions running now, and the most seen at once (for tests and metrics).
        self.active = 0
        self.peak = 0

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._gate is None or self._gate[0] is not loop:
            self._gate = (loop, asyncio.Semaphore(self.concurrency))
        return self._gate[1]

    async def load(self, text: str, passphrase: str | None) -> asyncssh.SSHKey:
        """The key, or :class:`KeyRefused` (over a cap, unreadable, wrong passphrase)."""
        checked = inspect_private_key(text, self.caps)
        if passphrase is not None and not isinstance(passphrase, str):
            raise KeyRefused("passphrase must be a string")
        async with self._semaphore():
            return await asyncio.to_thread(self._import, checked.pem, passphrase)

    def _import(self, pem: str, passphrase: str | None) -> asyncssh.SSHKey:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            try:
                key = asyncssh.import_private_key(pem, passphrase)
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError, TypeError) as exc:
                raise KeyRefused(f"unusable private key: {str(exc)[:120]}") from None
            bits = getattr(key.pyca_key, "key_size", 0)
            if isinstance(bits, int) and bits > self.caps.max_key_bits:
                raise KeyRefused(f"key too large: {bits} bits (at most {self.caps.max_key_bits})")
            return key
        finally:
            with self._lock:
                self.active -= 1
