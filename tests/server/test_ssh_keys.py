"""Unit tests of node_runtime/server/ssh_keys.py: a private key's KDF cost is read
(and capped) before anything is decrypted; decryption runs off the loop, two at a time."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.asn1 import ObjectIdentifier, der_encode
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from nimbus_websocket.node_runtime.server.ssh_keys import (
    Kdf,
    KeyCaps,
    KeyCost,
    KeyLoader,
    KeyRefused,
    inspect_private_key,
)

pytestmark = pytest.mark.timeout(60)

PBES2 = ObjectIdentifier("1.2.840.113549.1.5.13")
PBKDF2 = ObjectIdentifier("1.2.840.113549.1.5.12")
HMAC_SHA256 = ObjectIdentifier("1.2.840.113549.2.9")
AES256_CBC = ObjectIdentifier("2.16.840.1.101.3.4.1.42")
SCRYPT = ObjectIdentifier("1.3.6.1.4.1.11591.4.11")


def pem(label: str, der: bytes, headers: str = "") -> str:
    b64 = base64.b64encode(der).decode()
    body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n{headers}{body}\n-----END {label}-----\n"


def pkcs8_pbkdf2(
    iterations: int, passphrase: str = "pass", *, claimed: int | None = None, key_text: str | None = None
) -> str:
    """A PKCS#8 ``ENCRYPTED PRIVATE KEY`` (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) of
    ``key_text`` (default a new ed25519 key), encrypted with ``iterations``; the header says
    ``claimed`` (default the same).  A key claiming more than it was encrypted with is never
    decrypted by a server that caps."""
    source = asyncssh.import_private_key(key_text) if key_text else asyncssh.generate_private_key("ssh-ed25519")
    plain = source.export_private_key("pkcs8-der")
    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(passphrase.encode())
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()
    count = iterations if claimed is None else claimed
    alg = (PBES2, ((PBKDF2, (salt, count, (HMAC_SHA256, None))), (AES256_CBC, iv)))
    return pem("ENCRYPTED PRIVATE KEY", der_encode((alg, ct)))


def ssh_keygen(tmp: Path, rounds: int | None, passphrase: str = "pass", kind: str = "ed25519") -> str:
    """``ssh-keygen`` (the tool users have) writes an OpenSSH key; ``rounds=None``: unencrypted."""
    path = tmp / f"k-{kind}-{rounds}"
    argv = ["ssh-keygen", "-q", "-t", kind, "-f", str(path), "-N", passphrase if rounds else ""]
    if rounds:
        argv += ["-a", str(rounds)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return path.read_text()


def set_openssh_rounds(text: str, rounds: int) -> str:
    """The same OpenSSH key with its bcrypt rounds field rewritten (a hostile client's edit)."""
    lines = text.strip().splitlines()
    blob = bytearray(base64.b64decode("".join(lines[1:-1])))
    magic = b"openssh-key-v1\x00"
    pos = len(magic)
    for _ in range(2):  # ciphername, kdfname
        pos += 4 + int.from_bytes(blob[pos : pos + 4], "big")
    pos += 4  # kdfoptions length
    salt_len = int.from_bytes(blob[pos : pos + 4], "big")
    at = pos + 4 + salt_len
    blob[at : at + 4] = rounds.to_bytes(4, "big")
    return pem("OPENSSH PRIVATE KEY", bytes(blob))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("keys")
    return {
        "openssh16": ssh_keygen(tmp, 16),
        "openssh_plain": ssh_keygen(tmp, None),
    }


# ------------------------------------------------------------------ reading the cost


def test_openssh_bcrypt_rounds_are_read(keys: dict[str, str]) -> None:
    assert inspect_private_key(keys["openssh16"]).cost == KeyCost(Kdf.BCRYPT, 16)
    assert inspect_private_key(keys["openssh_plain"]).cost == KeyCost(Kdf.NONE, 0)
    assert inspect_private_key(set_openssh_rounds(keys["openssh16"], 128)).cost == KeyCost(Kdf.BCRYPT, 128)


@pytest.mark.parametrize("rounds", [129, 10_000, 2**32 - 1])
def test_openssh_rounds_over_the_cap_are_refused_without_decrypting(keys: dict[str, str], rounds: int) -> None:
    hostile = set_openssh_rounds(keys["openssh16"], rounds)
    t = time.perf_counter()
    with pytest.raises(KeyRefused, match=f"{rounds} bcrypt rounds"):
        inspect_private_key(hostile)
    assert time.perf_counter() - t < 0.5
    assert inspect_private_key(hostile, KeyCaps(max_bcrypt_rounds=rounds)).cost.rounds == rounds


def test_pkcs8_pbkdf2_iterations_are_read() -> None:
    assert inspect_private_key(pkcs8_pbkdf2(2048)).cost == KeyCost(Kdf.PBKDF2, 2048)
    assert inspect_private_key(pkcs8_pbkdf2(1, claimed=600_000)).cost == KeyCost(Kdf.PBKDF2, 600_000)
    assert inspect_private_key(pkcs8_pbkdf2(1, claimed=1_000_000)).cost == KeyCost(Kdf.PBKDF2, 1_000_000)
    # what the usual tools write: asyncssh (2048) and cryptography / OpenSSL
    k = asyncssh.generate_private_key("ssh-ed25519")
    written = k.export_private_key("pkcs8-pem", "pw").decode()
    assert inspect_private_key(written).cost == KeyCost(Kdf.PBKDF2, 2048)
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pyca = ed25519.Ed25519PrivateKey.generate().private_bytes(
        s.Encoding.PEM, s.PrivateFormat.PKCS8, s.BestAvailableEncryption(b"pw")
    )
    assert inspect_private_key(pyca.decode()).cost.kdf is Kdf.PBKDF2


@pytest.mark.parametrize("claimed", [1_000_001, 8_400_000, 2**31 - 1, 2**64])
def test_pkcs8_iterations_over_the_cap_are_refused(claimed: int) -> None:
    with pytest.raises(KeyRefused, match="PBKDF2 iterations"):
        inspect_private_key(pkcs8_pbkdf2(1, claimed=claimed))


def test_legacy_pbe_and_pkcs1_encryption() -> None:
    k = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    pbes1 = k.export_private_key("pkcs8-pem", "pw", cipher_name="des-cbc", hash_name="md5", pbe_version=1).decode()
    assert inspect_private_key(pbes1).cost == KeyCost(Kdf.LEGACY_PBE, 2048)
    pkcs1 = k.export_private_key("pkcs1-pem", "pw").decode()
    checked = inspect_private_key(pkcs1)
    assert checked.cost == KeyCost(Kdf.PEM_MD5, 1)
    assert "Proc-Type: 4,ENCRYPTED" in checked.pem
    assert inspect_private_key(k.export_private_key("pkcs1-pem").decode()).cost == KeyCost(Kdf.NONE, 0)
    assert inspect_private_key(k.export_private_key("pkcs8-pem").decode()).cost == KeyCost(Kdf.NONE, 0)
    # a legacy PBE header claiming a huge count
    body = base64.b64decode("".join(pbes1.strip().splitlines()[1:-1]))
    alg_oid = ObjectIdentifier("1.2.840.113549.1.5.3")
    hostile = pem("ENCRYPTED PRIVATE KEY", der_encode(((alg_oid, (b"12345678", 10**7)), body[-64:])))
    with pytest.raises(KeyRefused, match="PBE iterations"):
        inspect_private_key(hostile)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "not a PEM"),
        ("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: aes256-cbc\nKey-Derivation: Argon2id\n", "not a PEM"),
        ("-----BEGIN FOO PRIVATE KEY-----\nAAAA\n-----END FOO PRIVATE KEY-----\n", "unsupported private key type"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n", "without its END"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\n!!!!\n-----END OPENSSH PRIVATE KEY-----\n", "not base64"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n", "openssh-key-v1"),
        ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n", "PKCS#8"),
        ("\u00e9" * 10, "ASCII"),
        ("A" * 10241, "too long"),
    ],
)
def test_unreadable_or_unsupported_keys_are_refused(text: str, reason: str) -> None:
    with pytest.raises(KeyRefused, match=reason):
        inspect_private_key(text)


def test_der_bytes_and_other_kdfs_are_refused() -> None:
    with pytest.raises(KeyRefused):
        inspect_private_key("0\x82\x01\x00")  # binary DER in a string
    scrypt = (PBES2, ((SCRYPT, (b"salt", 1 << 20, 8, 1)), (AES256_CBC, b"\x00" * 16)))
    with pytest.raises(KeyRefused, match="only PBKDF2"):
        inspect_private_key(pem("ENCRYPTED PRIVATE KEY", der_encode((scrypt, b"\x00" * 32))))


def test_two_keys_in_one_openssh_blob_are_refused(keys: dict[str, str]) -> None:
    lines = keys["openssh_plain"].strip().splitlines()
    blob = bytearray(base64.b64decode("".join(lines[1:-1])))
    pos = len(b"openssh-key-v1\x00")
    for _ in range(3):
        pos += 4 + int.from_bytes(blob[pos : pos + 4], "big")
    blob[pos : pos + 4] = (2).to_bytes(4, "big")
    with pytest.raises(KeyRefused, match="exactly one key"):
        inspect_private_key(pem("OPENSSH PRIVATE KEY", bytes(blob)))


def test_asyncssh_gets_only_the_block_that_was_checked(keys: dict[str, str]) -> None:
    """Text around the block, and a second (hostile) block after it, never reach asyncssh."""
    hostile = pkcs8_pbkdf2(1, claimed=2**31 - 1)
    text = "comment: mine\r\n" + keys["openssh_plain"].replace("\n", "\r\n") + hostile
    checked = inspect_private_key(text)
    assert checked.cost == KeyCost(Kdf.NONE, 0)
    assert checked.pem.count("BEGIN") == 1 and "ENCRYPTED" not in checked.pem
    assert asyncssh.import_private_key(checked.pem).public_data == asyncssh.import_private_key(
        keys["openssh_plain"]
    ).public_data


# ------------------------------------------------------------------ loading


async def test_loader_decrypts_what_passes_and_reports_errors(keys: dict[str, str]) -> None:
    loader = KeyLoader()
    key = await loader.load(pkcs8_pbkdf2(2048, "s3cret"), "s3cret")
    assert key.algorithm == b"ssh-ed25519"
    assert (await loader.load(keys["openssh_plain"], None)).algorithm == b"ssh-ed25519"
    with pytest.raises(KeyRefused, match="unusable private key"):
        await loader.load(pkcs8_pbkdf2(2048, "s3cret"), "wrong")
    with pytest.raises(KeyRefused, match="passphrase must be a string"):
        await loader.load(pkcs8_pbkdf2(2048), 42)  # type: ignore[arg-type]
    with pytest.raises(KeyRefused, match="bcrypt rounds"):
        await loader.load(set_openssh_rounds(keys["openssh16"], 5000), "pass")


async def test_rsa_keys_over_the_bit_cap_are_refused() -> None:
    k = asyncssh.generate_private_key("ssh-rsa", key_size=3072)
    text = k.export_private_key("openssh").decode()
    assert (await KeyLoader().load(text, None)).algorithm == b"ssh-rsa"
    with pytest.raises(KeyRefused, match="3072 bits"):
        await KeyLoader(KeyCaps(max_key_bits=2048)).load(text, None)


async def test_at_most_two_decryptions_run_at_once(monkeypatch: pytest.MonkeyPatch, keys: dict[str, str]) -> None:
    release = threading.Event()
    entered: list[int] = []
    lock = threading.Lock()
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def slow_import(data: Any, passphrase: Any = None) -> asyncssh.SSHKey:
        with lock:
            entered.append(1)
            threads.add(threading.get_ident())
        assert release.wait(30)
        return asyncssh.generate_private_key("ssh-ed25519")

    monkeypatch.setattr(asyncssh, "import_private_key", slow_import)
    loader = KeyLoader(concurrency=2)
    tasks = [asyncio.create_task(loader.load(keys["openssh_plain"], None)) for _ in range(5)]
    deadline = time.monotonic() + 10
    while len(entered) < 2:
        assert time.monotonic() < deadline, "two decryptions never started"
        await asyncio.sleep(0.01)
    # the event loop still runs while two decryptions block their threads
    t = time.perf_counter()
    await asyncio.sleep(0)
    assert time.perf_counter() - t < 0.5
    await asyncio.sleep(0.2)  # room for a third to start, were the bound broken (not synchronisation)
    assert len(entered) == 2 and loader.active == 2
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert len(entered) == 5 and loader.peak == 2 and loader.active == 0
    assert loop_thread not in threads
