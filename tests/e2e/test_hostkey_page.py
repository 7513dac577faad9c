"""Issue 15, item 7, in Chromium: a refused SSH host key in the page's words.

The page logs in to the private test sshd through its form (key auth) via a
server whose known_hosts

* has *another* key for the sshd's ``[127.0.0.1]:PORT`` -> "The SSH host key
  of HOST changed — this could be a man-in-the-middle attack. Offered key:
  ED25519 SHA256:…" with the code;
* is empty -> "The SSH host key of HOST is not known to this gateway (ED25519
  SHA256:…); the operator must add it to known_hosts".

The fingerprint shown is the one ``ssh-keygen -lf`` prints for the sshd's
host key; the known_hosts key's fingerprint is shown nowhere.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncssh
import pytest
from demo_page import Demo
from e2e_server import ServerThread

pytestmark = [pytest.mark.timeout(180), pytest.mark.sshd]

BOOT_MS = 60_000
NOTE = "() => document.getElementById('connect-note').textContent"
HOST_KEY_NOTE = "() => document.getElementById('connect-note').textContent.includes('SSH host key')"


def fingerprint(pub: Path) -> str:
    """``SHA256:...`` of a public key file, as ``ssh-keygen -lf`` prints it."""
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.split()[1]


def refused_note(site_dir: Path, sshd: Any, known_hosts: Path, context: Any, shots: Any, name: str) -> str:
    """Log the page in through a server with ``known_hosts``; the form's note after the refusal."""
    from nimbus_websocket.node_runtime.server import SshOptions

    st = ServerThread(
        static_dir=str(site_dir),
        backend="ssh",
        ssh=SshOptions(known_hosts=str(known_hosts)),
        allow_targets=(f"{sshd.host}:{sshd.port}",),
    ).start()
    try:
        q = urlencode({"target": f"{sshd.host}:{sshd.port}", "user": sshd.username})
        demo = Demo(context.new_page()).open(f"{st.http_url}?{q}")
        demo.wait("() => window.nimbusDemo.phase === 'form'", timeout=BOOT_MS, what="the login form")
        page = demo.page
        page.check("input[name=auth][value=key]")
        page.fill("textarea[name=key]", sshd.client_key_text)
        page.click("#connect-form button[type=submit]")
        demo.wait(HOST_KEY_NOTE, what="the host-key note")
        assert demo.demo("phase") == "form"
        assert page.is_visible("#connect-note")
        shots(page, name)
        return str(demo.js(NOTE))
    finally:
        st.stop()


def test_changed_and_unknown_host_keys_are_told_apart(
    context: Any, site_dir: Path, sshd: Any, shots: Any, tmp_path: Path
) -> None:
    host = f"{sshd.host}:{sshd.port}"
    offered = fingerprint(sshd.host_key_path.with_suffix(".pub"))
    other = asyncssh.generate_private_key("ssh-ed25519")
    changed_kh = tmp_path / "changed_known_hosts"
    changed_kh.write_text(f"[{sshd.host}]:{sshd.port} {other.export_public_key().decode().strip()}\n")
    empty_kh = tmp_path / "empty_known_hosts"
    empty_kh.write_text("")

    note = refused_note(site_dir, sshd, changed_kh, context, shots, "host-key-changed")
    sentence = (
        f"The SSH host key of {host} changed — this could be a man-in-the-middle attack. Offered key: ED25519 {offered}"
    )
    assert note == f"Could not open {sshd.username}@{host}: {sentence} [HOST_KEY_CHANGED]", note
    assert other.get_fingerprint("sha256") not in note

    note = refused_note(site_dir, sshd, empty_kh, context, shots, "host-key-unknown")
    sentence = (
        f"The SSH host key of {host} is not known to this gateway (ED25519 {offered});"
        " the operator must add it to known_hosts"
    )
    assert note == f"Could not open {sshd.username}@{host}: {sentence} [HOST_KEY_UNKNOWN]", note
