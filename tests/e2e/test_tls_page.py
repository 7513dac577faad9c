"""Issue 14, item 1 in the browser: the demo page over ``https://``, its shell over ``wss://``.

The server serves the built site with a certificate for 127.0.0.1 made by
the test (``support/tls_certs.py``); Chromium is told to accept it
(``ignore_https_errors``: the test CA is not in its trust store).  The page
loads, runs a command, reloads and resumes the same shell.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import PTY_COMMAND, ServerThread
from support.tls_certs import make_tls

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tls_server(site_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    files = make_tls(tmp_path_factory.mktemp("tls"))
    st = ServerThread(
        static_dir=str(site_dir), pty_command=PTY_COMMAND, cert=str(files.cert), key=str(files.key)
    ).start()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture
def tls_context(browser: Any) -> Iterator[Any]:
    """A fresh context accepting the test's self-signed chain (like the shared ``context``)."""
    ctx = browser.new_context(viewport={"width": 1000, "height": 620}, device_scale_factor=1, ignore_https_errors=True)
    try:
        yield ctx
    finally:
        for page in ctx.pages:  # end the sessions (close 1000): no shell lingers for the resume window
            with contextlib.suppress(Exception):
                page.evaluate(
                    "() => Promise.race([window.nimbusDemo?.conn?.close(),"
                    " new Promise((r) => setTimeout(r, 2000))])"
                )
        ctx.close()


def _all_tls(st: ServerThread) -> bool:
    """The server has open WebSockets and every one runs over TLS."""
    tls = st.sync(lambda: [c.transport.get_extra_info("ssl_object") is not None for c in st.server.connections])
    return bool(tls) and all(tls)


def test_https_page_runs_a_command_and_resumes_after_reload(
    tls_server: ServerThread, tls_context: Any, shots: Any
) -> None:
    url = f"https://127.0.0.1:{tls_server.server.port}/"
    assert tls_server.server.access_url == url
    demo = Demo(tls_context.new_page()).open(url)
    demo.wait_ready()
    assert demo.js("() => location.protocol") == "https:"
    assert _all_tls(tls_server)
    demo.set_prompt()
    pid = demo.shell_pid()
    demo.run("NIMBUS_TLS=kept-$((5*5)); echo tls-$((6*7))", r"^tls-42$")
    demo.wait_prompt()
    shots(demo.page, "https-ready")
    sessions = tls_server.sync(lambda: len(tls_server.server.registry))

    demo.page.reload()
    demo.wait_ready()
    assert demo.demo("resumed") is True, f"a new session instead of a resume: {demo.demo('events')}"
    assert demo.shell_pid() == pid
    demo.run("echo var=$NIMBUS_TLS", r"^var=kept-25$")
    assert tls_server.sync(lambda: len(tls_server.server.registry)) == sessions
    assert _all_tls(tls_server)
    shots(demo.page, "https-resumed")
