"""Issue 14, item 6, in Chromium: the page's error line says in plain words what
happened, with the code and the server's raw reason on a smaller detail line.

* a wrong ``?token=`` -> "The token was not accepted", detail "4003
  AUTH_FAILED: token not accepted"; no token where one is needed -> "The
  server needs a token";
* the server gone when the page connects (its port closed) -> "Could not reach
  the server at HOST:PORT — is it running?", detail "1006 CONNECT_FAILED";
* a ``?ws=`` path the server does not serve (the browser sees only 1006) ->
  the page asks the server over HTTP and says there is no endpoint there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import PTY_COMMAND, ServerThread

pytestmark = pytest.mark.timeout(180)

BOOT_MS = 60_000
ERROR = "() => window.nimbusDemo.phase === 'error'"


def error_line(demo: Demo) -> tuple[str, str]:
    """(the status bar's sentence, its detail line)."""
    sentence = demo.js("() => document.getElementById('st-msg').firstChild?.textContent ?? ''")
    detail = demo.page.inner_text("#st-msg-detail")
    return str(sentence).strip(), detail


def test_wrong_and_missing_token_are_told_apart(context: Any, site_dir: Path, shots: Any) -> None:
    st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND, tokens=("s3cret",)).start()
    try:
        demo = Demo(context.new_page()).open(st.http_url + "?token=wrong")
        demo.wait(ERROR, timeout=BOOT_MS, what="the error")
        assert error_line(demo) == ("The token was not accepted", "4003 AUTH_FAILED: token not accepted")
        assert demo.page.inner_text("#notice-text") == "The token was not accepted"
        assert demo.page.inner_text("#notice-detail") == "4003 AUTH_FAILED: token not accepted"
        # the detail line is smaller than the sentence
        sizes = demo.js(
            "() => ['notice-text', 'notice-detail'].map((id) =>"
            " parseFloat(getComputedStyle(document.getElementById(id)).fontSize))"
        )
        assert sizes[1] < sizes[0], sizes
        shots(demo.page, "wrong-token")

        demo = Demo(context.new_page()).open(st.http_url)
        demo.wait(ERROR, timeout=BOOT_MS, what="the error")
        assert error_line(demo) == ("The server needs a token", "4003 AUTH_FAILED: token required")
        shots(demo.page, "missing-token")
    finally:
        st.stop()


def test_a_closed_port_says_the_server_could_not_be_reached(context: Any, site_dir: Path, shots: Any) -> None:
    st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND).start()
    stopped = False
    try:
        host = f"127.0.0.1:{st.server.port}"
        demo = Demo(context.new_page()).open(st.http_url + "?connect=0")  # the form, no connection yet
        demo.wait("() => window.nimbusDemo.phase === 'form'", timeout=BOOT_MS, what="the form")
        st.stop()  # the port closes: nothing listens where the page connects
        stopped = True
        demo.page.click("#connect-form button[type=submit]")
        demo.wait(ERROR, timeout=30_000, what="the error")
        # the probe (fetch of the endpoint) finds nothing either: the sentence stays
        demo.wait("() => window.nimbusDemo.error?.probe != null", what="the probe")
        sentence, detail = error_line(demo)
        assert sentence == f"Could not reach the server at {host} — is it running?", sentence
        assert detail.startswith("1006 CONNECT_FAILED"), detail
        assert demo.demo("error.probe") == "CONNECT_FAILED"
        shots(demo.page, "unreachable")
    finally:
        if not stopped:
            st.stop()


def test_a_path_the_server_does_not_serve(context: Any, site_dir: Path, shots: Any) -> None:
    st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND).start()
    try:
        demo = Demo(context.new_page()).open(st.http_url + "?ws=/nowhere")
        demo.wait(
            "() => window.nimbusDemo.phase === 'error' && window.nimbusDemo.error?.probe === 'NOT_FOUND'",
            timeout=BOOT_MS, what="the error, after the probe",
        )
        sentence, detail = error_line(demo)
        assert sentence == f"There is no terminal endpoint at this address on 127.0.0.1:{st.server.port}", sentence
        assert detail.startswith("1006 CONNECT_FAILED"), detail
        shots(demo.page, "wrong-path")
    finally:
        st.stop()
