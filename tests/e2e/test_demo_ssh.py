"""The demo page end to end with the SSH backend against the private test sshd
(key login through the page's form), plus the password login.

The cases are shared with the PTY backend: tests/e2e/demo_cases.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from demo_cases import *  # noqa: F403 -- the shared cases (demo_cases.__all__), collected here
from demo_cases import served_fixture
from demo_page import Demo
from e2e_server import ServerThread

pytestmark = pytest.mark.timeout(120)

served = served_fixture("ssh")


def test_ssh_password_login(context: Any, site_dir: Path, sshd: Any, shots: Any) -> None:
    if sshd.password_user is None:
        pytest.skip("no password user on this machine (needs root + useradd)")
    from nimbus_websocket.node_runtime.server import SshOptions

    st = ServerThread(
        static_dir=str(site_dir),
        backend="ssh",
        ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)),
        allow_targets=(f"{sshd.host}:{sshd.port}",),
    ).start()
    try:
        q = urlencode({"target": f"{sshd.host}:{sshd.port}", "user": sshd.password_user})
        demo = Demo(context.new_page()).open(f"{st.http_url}?{q}")
        demo.wait("() => window.nimbusDemo.phase === 'form'", timeout=60_000, what="the form")
        demo.page.fill("input[name=password]", "wrong-password")
        demo.page.click("#connect-form button[type=submit]")
        demo.wait("() => window.nimbusDemo.phase === 'form'", what="the form again")
        assert demo.page.is_visible("#connect-note")
        shots(demo.page, "ssh-login-failed")
        demo.page.fill("input[name=password]", sshd.password)
        demo.page.click("#connect-form button[type=submit]")
        demo.wait_ready()
        demo.run("echo user=$(id -un)", rf"^user={re.escape(sshd.password_user)}$")
        assert sshd.password not in demo.page.url
    finally:
        st.stop()
