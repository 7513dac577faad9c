"""The cluster secret: resume tokens any instance can verify, and relay credentials.

Every instance of one cluster reads the same secret (``--cluster-secret-file``).
Two keys are derived from it (HMAC-SHA256 with a fixed label each), so a value
made for one use is never accepted for the other:

* **resume tokens** keep the format of PROTOCOL.md section 8,
  ``<sid>.<secret>`` with 32 bytes of secret in unpadded base64url; in a
  cluster those 32 bytes are ``nonce (16 random bytes) || MAC (16 bytes)``,
  the MAC over the session id and the nonce.  Any instance checks the MAC
  before it relays a resume: a forged or damaged token is refused locally
  (4011) and never reaches the owner.  The owner still compares the whole
  secret in constant time (single use, principal binding: the core's rules).
* **relay credentials**: the ``X-Nimbus-Relay`` header an instance presents
  when it opens the instance-to-instance WebSocket -- a timestamp, the relaying
  instance and the client's address it forwards, under a MAC.  Only a request
  carrying a valid one is believed about its ``X-Forwarded-For`` and skips the
  Origin check (the relaying instance did both).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

from ...core.resume import parse_token

__all__ = ["MIN_SECRET_BYTES", "RELAY_HEADER", "RELAY_SKEW", "ClusterSecret", "SecretError"]

#: Shortest secret accepted (bytes of the file, stripped): 128 bits of entropy at least.
MIN_SECRET_BYTES = 16
#: The header carrying the relay credential.
RELAY_HEADER = "X-Nimbus-Relay"
#: Seconds a relay credential stays valid either side of the owner's clock.
RELAY_SKEW = 30.0
_NONCE = 16
_MAC = 16


class SecretError(ValueError):
    """The secret file is missing, unreadable or too short (one line for the operator)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class ClusterSecret:
    """Keys derived from the shared secret; signs and checks tokens and relay credentials."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise SecretError(f"the cluster secret must be at least {MIN_SECRET_BYTES} bytes")
        self._token_key = hmac.new(secret, b"nimbus-ws cluster: resume tokens", hashlib.sha256).digest()
        self._relay_key = hmac.new(secret, b"nimbus-ws cluster: relay", hashlib.sha256).digest()
        self._secret = secret

    def derive(self, label: str) -> bytes:
        """A 32-byte key for ``label``, the same on every instance (e.g. the principal key)."""
        return hmac.new(self._secret, b"nimbus-ws cluster: " + label.encode(), hashlib.sha256).digest()

    @classmethod
    def from_file(cls, path: str) -> ClusterSecret:
        """Read the secret from ``path`` (surrounding whitespace stripped)."""
        try:
            with open(path, "rb") as f:
                data = f.read(4096).strip()
        except OSError as exc:
            raise SecretError(f"cannot read --cluster-secret-file {path}: {exc.strerror or exc}") from None
        try:
            return cls(data)
        except SecretError as exc:
            raise SecretError(f"--cluster-secret-file {path}: {exc}") from None

    # ------------------------------------------------------------ resume tokens
    def token_secret(self, sid: str) -> str:
        """A fresh token secret for session ``sid``: a random nonce and its MAC (43 characters)."""
        nonce = secrets.token_bytes(_NONCE)
        return _b64(nonce + self._token_mac(sid, nonce))

    def token_valid(self, token: str) -> str | None:
        """The session id of ``token`` if its MAC is right, else ``None`` (constant-time compare)."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        sid, secret = parsed
        raw = _unb64(secret)
        if raw is None or len(raw) != _NONCE + _MAC:
            return None
        if not hmac.compare_digest(raw[_NONCE:], self._token_mac(sid, raw[:_NONCE])):
            return None
        return sid

    def _token_mac(self, sid: str, nonce: bytes) -> bytes:
        return hmac.new(self._token_key, sid.encode("ascii", "replace") + b"." + nonce, hashlib.sha256).digest()[:_MAC]

    # -------------------------------------------------------- relay credentials
    def relay_credential(self, instance: str, client: str, now: float | None = None) -> str:
        """The ``X-Nimbus-Relay`` value for a relay from ``instance`` on behalf of ``client``."""
        ts = str(int(time.time() if now is None else now))
        return f"v1.{ts}.{instance}.{self._relay_mac(ts, instance, client)}"

    def relay_valid(self, value: str | None, client: str | None, now: float | None = None) -> str | None:
        """The relaying instance's id if ``value`` is a valid credential for ``client``, else ``None``."""
        if not value or client is None:
            return None
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        _, ts, instance, mac = parts
        t = time.time() if now is None else now
        if abs(t - int(ts)) > RELAY_SKEW:
            return None
        if not hmac.compare_digest(mac.encode(), self._relay_mac(ts, instance, client).encode()):
            return None
        return instance

    def _relay_mac(self, ts: str, instance: str, client: str) -> str:
        msg = f"{ts}|{instance}|{client}".encode("utf-8", "replace")
        return _b64(hmac.new(self._relay_key, msg, hashlib.sha256).digest())
