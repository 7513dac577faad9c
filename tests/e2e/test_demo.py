"""The demo page end to end with the local PTY backend: Chromium + Pyodide + xterm.js
against the real server.

The cases shared with the SSH backend live in tests/e2e/demo_cases.py
(tests/e2e/test_demo_ssh.py runs them there); the page-level failures
(bad token, server restart) and the README screenshot are here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from demo_cases import *  # noqa: F403 -- the shared cases (demo_cases.__all__), collected here
from demo_cases import served_fixture
from demo_page import Demo
from e2e_server import PTY_COMMAND, REPO_ROOT, ServerThread

pytestmark = pytest.mark.timeout(120)

served = served_fixture("pty")


def test_auth_failure_shows_reason_and_reconnect(context: Any, site_dir: Path, shots: Any) -> None:
    """A terminal error (4003) shows its meaning and a Reconnect button."""
    st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND, tokens=("s3cret",)).start()
    try:
        demo = Demo(context.new_page()).open(st.http_url + "?token=wrong")
        demo.wait("() => window.nimbusDemo.phase === 'error'", timeout=60_000, what="the error")
        msg = demo.page.inner_text("#st-msg")
        assert "The token was not accepted" in msg and "4003 AUTH_FAILED" in msg, msg  # issue 14.6
        assert demo.page.is_visible("#btn-reconnect")
        shots(demo.page, "auth-failed")
        # the right token in the form -> a shell
        demo.page.click("#btn-new")
        demo.page.fill("input[name=token]", "s3cret")
        demo.page.click("#connect-form button[type=submit]")
        demo.wait_ready()
        demo.run("echo token-$((1+1))", r"^token-2$")
    finally:
        st.stop()


def test_server_restart_reconnecting_then_resume_failed(
    context: Any, site_dir: Path, shots: Any
) -> None:
    """Server gone: "reconnecting"; back without the session: 4011 and a working Reconnect."""
    st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND).start()
    port = st.server.port
    st2: ServerThread | None = None
    try:
        demo = Demo(context.new_page()).open(st.http_url)
        demo.wait_ready()
        demo.run("echo before-$((2+3))", r"^before-5$")
        st.stop()
        demo.wait("() => window.nimbusDemo.state === 'reconnecting'", what="reconnecting")
        assert "reconnecting" in demo.page.inner_text("#st-state")
        shots(demo.page, "reconnecting")
        st2 = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND, port=port).start()
        demo.wait(
            "() => window.nimbusDemo.phase === 'error'", timeout=30_000, what="the resume to fail"
        )
        msg = demo.page.inner_text("#st-msg")
        assert "4011" in msg and "session has expired" in msg, msg  # issue 14.6
        demo.wait_screen(r"\[disconnected: This terminal session has expired")
        shots(demo.page, "resume-failed")
        demo.page.keyboard.press("Enter")  # = the Reconnect button
        demo.wait_ready()
        demo.run("echo after-$((3+4))", r"^after-7$")
    finally:
        if st2 is not None:
            st2.stop()


@pytest.mark.skipif(
    not os.environ.get("NIMBUS_DEMO_PNG"), reason="set NIMBUS_DEMO_PNG=1 to refresh docs/demo.png"
)
def test_readme_screenshot(context: Any, site_dir: Path) -> None:
    """Refresh ``docs/demo.png`` (committed; run on demand)."""
    st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND).start()
    try:
        page = context.new_page()
        page.set_viewport_size({"width": 900, "height": 420})
        demo = Demo(page).open(st.http_url)
        demo.wait_ready()
        demo.run(
            "PS1='\\[\\e[1;32m\\]demo@nimbus\\[\\e[0m\\]:\\[\\e[1;34m\\]~\\[\\e[0m\\]$ '; clear",
            r"^demo@nimbus:~\$",
        )
        commands = [
            'echo "$(uname -sm) · TERM=$TERM · $(tput cols)x$(tput lines)"',
            'for i in {16..51}; do printf "\\e[48;5;${i}m  "; done; printf "\\e[0m\\n"',
            "ls --color=always -C /usr",
            "echo nimbus-$((6*7))",
        ]
        for n, command in enumerate(commands, start=2):  # wait for the n-th prompt
            demo.run(command, rf"(?:^demo@nimbus:~\$.*\n(?:.*\n)*){{{n - 1}}}demo@nimbus:~\$")
        out = REPO_ROOT / "docs" / "demo.png"
        out.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(out))
    finally:
        st.stop()
