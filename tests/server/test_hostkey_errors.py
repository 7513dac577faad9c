"""Issue 15, item 7: a refused SSH host key says which key and whether it *changed*.

Against the private OpenSSH sshd (tests/support/sshd.py):

* an empty known_hosts: ``open_err HOST_KEY_UNKNOWN`` with ``hostKey``
  ``{keyType, fingerprint, known: false, host}``, the fingerprint and type
  being what ``ssh-keygen -lf`` prints for the sshd's host key;
* a known_hosts with *another* key for ``[127.0.0.1]:PORT``:
  ``HOST_KEY_CHANGED`` (``known: true``), the offered key's fingerprint, and
  nothing of the known_hosts entry (its fingerprint appears nowhere);
* the matching known_hosts still connects;
* the typed error reaches the host client (``ChannelOpenError.host_key``) and
  the CLI words it (``node_runtime/client/messages.py``); the page's table
  (``demo_site/messages.mjs``, in Node) holds the same sentences;
* ``open_err.hostKey`` round-trips through the core and a malformed one is
  ``MALFORMED_FRAME``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest
from nimbus_websocket.core import HostKey, Open, OpenErr, OpenOk, Target, Term, User
from nimbus_websocket.core.errors import ChannelOpenError, CloseCode, ErrorCode, ProtocolError
from nimbus_websocket.core.messages import ctl_from_dict, ctl_to_dict
from nimbus_websocket.node_runtime.client import messages
from nimbus_websocket.node_runtime.client.api import connect
from nimbus_websocket.node_runtime.client.websockets_impl import WebsocketsImpl
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server, SshOptions

try:
    from support.sshd import TestSshd
except ImportError:  # pragma: no cover - run from the repository root
    from tests.support.sshd import TestSshd

pytestmark = [pytest.mark.timeout(90), pytest.mark.sshd]

ROOT = Path(__file__).resolve().parents[2]


def keygen_fingerprint(pub: Path) -> tuple[str, str]:
    """``(type, SHA256:...)`` as ``ssh-keygen -lf`` prints them: ``256 SHA256:... comment (ED25519)``."""
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, timeout=30, check=True).stdout
    fields = out.split()
    return fields[-1].strip("()"), fields[1]


def other_key_line(sshd: TestSshd) -> tuple[str, str]:
    """A known_hosts line with a fresh key for the sshd's address, and that key's fingerprint."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    pub = key.export_public_key().decode().strip()
    return f"[{sshd.host}]:{sshd.port} {pub}\n", key.get_fingerprint("sha256")


async def server_with(make_server, sshd: TestSshd, known_hosts: Path) -> Server:  # type: ignore[no-untyped-def]
    srv: Server = await make_server(
        backend="ssh", ssh=SshOptions(known_hosts=str(known_hosts)), allow_targets=(f"{sshd.host}:{sshd.port}",)
    )
    return srv


def key_user(sshd: TestSshd) -> User:
    return User(sshd.username, {"type": "key", "private_key": sshd.client_key_text})


async def open_answer(srv: Server, sshd: TestSshd) -> OpenErr | OpenOk:
    c = await WireClient.connect(srv.url)
    try:
        await c.hello()
        await c.send(Open(1, Target(sshd.host, sshd.port), key_user(sshd), Term()))
        m = await c.until(lambda m: isinstance(m, (OpenErr, OpenOk)))
        assert isinstance(m, (OpenErr, OpenOk)), m
        return m
    finally:
        await c.close()


async def test_an_unknown_host_key_is_named_with_its_fingerprint(make_server, sshd: TestSshd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    m = await open_answer(await server_with(make_server, sshd, empty), sshd)
    assert isinstance(m, OpenErr), m
    key_type, fingerprint = keygen_fingerprint(sshd.host_key_path.with_suffix(".pub"))
    assert m.code == "HOST_KEY_UNKNOWN"
    assert m.host_key == HostKey(key_type, fingerprint, False, f"{sshd.host}:{sshd.port}")
    assert (key_type, fingerprint[:7]) == ("ED25519", "SHA256:")
    assert fingerprint in m.msg  # an older client, which ignores hostKey, still sees it


async def test_a_changed_host_key_says_so_and_hides_the_known_one(make_server, sshd: TestSshd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    line, known_fp = other_key_line(sshd)
    other = tmp_path / "known_hosts"
    other.write_text(line)
    srv = await server_with(make_server, sshd, other)
    m = await open_answer(srv, sshd)
    assert isinstance(m, OpenErr), m
    key_type, fingerprint = keygen_fingerprint(sshd.host_key_path.with_suffix(".pub"))
    assert m.code == "HOST_KEY_CHANGED"
    assert m.host_key == HostKey(key_type, fingerprint, True, f"{sshd.host}:{sshd.port}")
    wire = json.dumps(ctl_to_dict(m))
    assert known_fp not in wire and known_fp.removeprefix("SHA256:") not in wire
    assert line.split()[-1] not in wire  # nor the known key itself

    # The host client gets the typed error; the CLI words it in one line.
    conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
    try:
        with pytest.raises(ChannelOpenError) as ei:
            await conn.open_session(target={"host": sshd.host, "port": sshd.port}, user={"username": sshd.username, "auth": {"type": "key", "private_key": sshd.client_key_text}})
    finally:
        await conn.close()
    assert ei.value.code is ErrorCode.HOST_KEY_CHANGED and ei.value.host_key == m.host_key
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nimbus_websocket", "connect", srv.url,
        "--target", f"{sshd.host}:{sshd.port}", "--user", sshd.username,
        "--identity", str(sshd.client_key_path), "--command", "true",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode("utf-8", "replace")
    assert proc.returncode == 255 and "Traceback" not in text, text
    expected = (
        f"The SSH host key of {sshd.host}:{sshd.port} changed — this could be a man-in-the-middle attack."
        f" Offered key: ED25519 {fingerprint} [HOST_KEY_CHANGED]"
    )
    assert expected in text, text


async def test_the_matching_key_still_connects(make_server, sshd: TestSshd) -> None:  # type: ignore[no-untyped-def]
    m = await open_answer(await server_with(make_server, sshd, sshd.known_hosts_path), sshd)
    assert isinstance(m, OpenOk), m


def test_open_err_host_key_round_trips_and_is_validated() -> None:
    hk = HostKey("ED25519", "SHA256:" + "A" * 43, True, "[::1]:2222")
    m = OpenErr(3, "HOST_KEY_CHANGED", "changed", hk)
    d = ctl_to_dict(m)
    assert d["hostKey"] == {"keyType": "ED25519", "fingerprint": "SHA256:" + "A" * 43, "known": True, "host": "[::1]:2222"}
    assert ctl_from_dict(json.loads(json.dumps(d))) == m
    assert hk.code is ErrorCode.HOST_KEY_CHANGED and HostKey("RSA", "SHA256:x", False, "h:22").code is ErrorCode.HOST_KEY_UNKNOWN
    assert "hostKey" not in ctl_to_dict(OpenErr(3, "AUTH_FAILED", "no"))
    for bad in ({"keyType": 5, "fingerprint": "f", "host": "h"}, {"keyType": "X" * 33, "fingerprint": "f", "host": "h"},
                {"keyType": "RSA", "fingerprint": "f", "host": "h", "known": "yes"}, {"keyType": "RSA", "host": "h"}, "x"):
        with pytest.raises(ProtocolError) as ei:
            ctl_from_dict({**d, "hostKey": bad})
        assert ei.value.code is CloseCode.MALFORMED_FRAME


def test_page_and_cli_word_a_host_key_alike() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node missing")
    hk = {"keyType": "ED25519", "fingerprint": "SHA256:abc\x1b[31m", "known": True, "host": "10.0.0.1:22"}
    script = (
        "import(process.argv[1]).then((m) => console.log(JSON.stringify({table: m.HOST_KEY_MESSAGES,"
        " changed: m.hostKeyMessage('HOST_KEY_CHANGED', JSON.parse(process.argv[2])),"
        " unknown: m.hostKeyMessage('HOST_KEY_UNKNOWN', JSON.parse(process.argv[2])),"
        " none: m.hostKeyMessage('HOST_KEY_UNKNOWN', null), plain: m.userMessage('HOST_KEY_CHANGED')})))"
    )
    out = subprocess.run(
        [node, "-e", script, (ROOT / "demo_site" / "messages.mjs").as_uri(), json.dumps(hk)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    page = json.loads(out)
    key = HostKey(hk["keyType"], hk["fingerprint"], True, hk["host"])  # type: ignore[arg-type]
    assert page["table"] == dict(messages.HOST_KEY_MESSAGES)
    assert page["changed"] == messages.host_key_message("HOST_KEY_CHANGED", key)
    assert page["unknown"] == messages.host_key_message("HOST_KEY_UNKNOWN", key)
    assert page["changed"] == (
        "The SSH host key of 10.0.0.1:22 changed — this could be a man-in-the-middle attack."
        " Offered key: ED25519 SHA256:abc\\x1b[31m"
    )
    assert page["none"] is None and messages.host_key_message("HOST_KEY_UNKNOWN", None) is None
    assert page["plain"] == messages.user_message("HOST_KEY_CHANGED")
