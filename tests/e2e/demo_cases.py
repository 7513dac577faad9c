"""The demo page's end-to-end cases, shared by both backends' test files.

tests/e2e/test_demo.py runs them with the local PTY backend (bash, no rc
files), tests/e2e/test_demo_ssh.py with the SSH backend against the private
test sshd (key login through the page's form): two files, so pytest-xdist
runs the halves on different workers.  Not a test file itself (no ``test_``
prefix); screenshots of each state land in ``artifacts/e2e/``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from demo_page import Demo
from e2e_server import PTY_COMMAND, ServerThread

#: What a backend's test file collects: ``from demo_cases import *``.
__all__ = [
    "open_demo",
    "test_echo",
    "test_resize_follows_window",
    "test_reload_resumes_same_shell",
    "test_exit_tears_down",
    "test_large_stream_exact_and_bounded",
    "test_hidden_tab_pauses_stream",
    "test_ctrl_c_under_flood",
]

MiB = 1 << 20
#: The client's largest credit window (core.flow.DEFAULT_MAX_WINDOW): what may
#: still arrive after a pause, plus one coalesced backend read in flight.
MAX_WINDOW = 2 * MiB
SLACK = 128 * 1024


@dataclass
class Served:
    """One server under test and how the page logs in to it."""

    backend: str
    server: ServerThread
    query: dict[str, str]
    key_text: str | None = None

    @property
    def url(self) -> str:
        q = urlencode(self.query)
        return self.server.http_url + (f"?{q}" if q else "")


def served_fixture(backend: str) -> Any:
    """The module-scoped ``served`` fixture for one backend (``pty`` or ``ssh``).

    test_demo.py and test_demo_ssh.py each bind it for their backend, so the two
    halves of the suite run on different xdist workers."""

    @pytest.fixture(scope="module", name="served")
    def served(request: pytest.FixtureRequest, site_dir: Path) -> Iterator[Served]:
        if backend == "pty":
            st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND).start()
            try:
                yield Served("pty", st, {})
            finally:
                st.stop()
            return
        from nimbus_websocket.node_runtime.server import SshOptions

        sshd = request.getfixturevalue("sshd")
        st = ServerThread(
            static_dir=str(site_dir),
            backend="ssh",
            ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)),
            allow_targets=(f"{sshd.host}:{sshd.port}",),  # the default is loopback port 22 only
        ).start()
        try:
            yield Served(
                "ssh",
                st,
                {"target": f"{sshd.host}:{sshd.port}", "user": sshd.username},
                key_text=sshd.client_key_text,
            )
        finally:
            st.stop()

    return served


def login(demo: Demo, served: Served) -> None:
    """The SSH backend asks for credentials in the form: use the private key."""
    if served.backend != "ssh":
        return
    demo.wait("() => window.nimbusDemo.phase === 'form'", timeout=60_000, what="the login form")
    page = demo.page
    assert page.input_value("input[name=target]") == served.query["target"]
    assert page.input_value("input[name=user]") == served.query["user"]
    page.check("input[name=auth][value=key]")
    page.fill("textarea[name=key]", served.key_text or "")
    page.click("#connect-form button[type=submit]")


@pytest.fixture
def open_demo(context: Any, served: Served) -> Callable[..., Demo]:
    """``open_demo()`` -> a page with a shell at the ``e2e$ `` prompt."""

    def open_(shots: Any = None, prompt: bool = True) -> Demo:
        demo = Demo(context.new_page()).open(served.url)
        if shots:
            shots(demo.page, "loading")
        login(demo, served)
        demo.wait_ready()
        if prompt:
            demo.set_prompt()
        return demo

    return open_


def wait_server(served: Served, pred: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll ``pred`` on the server's loop (bounded) until it holds; ``pred`` runs on
    that loop, so it reads server state directly (never ``ServerThread.sync``)."""

    async def poll() -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            await asyncio.sleep(0.02)
        return pred()

    assert served.server.call(poll(), timeout + 5), f"server: {what} (timed out after {timeout} s)"


def channel_sent(served: Served, demo: Demo) -> int:
    """Total output bytes the server sent on the page's channel."""
    cid = demo.demo("channelId")

    def get() -> list[int]:
        return [
            int(c.sent)
            for s in served.server.server.registry.sessions()
            if s.conn is not None  # connected: the page's session
            for c in s.channels.values()
            if c.id == cid
        ]

    sent = served.server.sync(get)
    assert len(sent) == 1, f"cannot tell the page's channel apart: {sent}"
    return sent[0]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------- tests


def test_echo(open_demo: Callable[..., Demo], shots: Any) -> None:
    """connect -> shell -> `echo nimbus-$((6*7))` -> `nimbus-42` in the xterm buffer."""
    demo = open_demo(shots=shots, prompt=False)
    assert "ready" in demo.status()
    screen = demo.run("echo nimbus-$((6*7))", r"^nimbus-42\s*$")
    assert "nimbus-$((6*7))" in screen  # the echo of what was typed
    shots(demo.page, "ready")


def test_resize_follows_window(open_demo: Callable[..., Demo], shots: Any) -> None:
    demo = open_demo()
    cols0, rows0 = demo.js("() => [window.nimbusDemo.term.cols, window.nimbusDemo.term.rows]")
    demo.run("stty size", rf"^{rows0} {cols0}$")
    demo.page.set_viewport_size({"width": 760, "height": 440})
    cols, rows = demo.wait(
        "([c, r]) => { const t = window.nimbusDemo.term; return (t.cols !== c && t.rows !== r) ? [t.cols, t.rows] : false; }",
        [cols0, rows0],
        what="xterm to fit the smaller window",
    )
    assert cols < cols0 and rows < rows0
    demo.run("clear; stty size", rf"^{rows} {cols}$")
    shots(demo.page, "resized")


# Installed before the page's scripts on every load of the tab: records the
# decoded output stream; on pagehide it is appended to sessionStorage, so the
# transcript of the page before a reload plus the one after can be compared.
TRANSCRIPT_TAP = """
window.__e2eText = '';
const dec = new TextDecoder();
window.__nimbusTap = (b) => { window.__e2eText += dec.decode(b, {stream: true}); };
addEventListener('pagehide', () => {
    sessionStorage.setItem('e2e-before', (sessionStorage.getItem('e2e-before') || '') + window.__e2eText);
});
"""


def test_reload_resumes_same_shell(
    context: Any, open_demo: Callable[..., Demo], served: Served, shots: Any
) -> None:
    """A reload within the resume TTL attaches to the same shell; output in flight arrives once."""
    context.add_init_script(TRANSCRIPT_TAP)
    demo = open_demo()
    pid = demo.shell_pid()
    demo.run("NIMBUS_E2E=kept-$((3*4)); echo set-$((2*2))", r"^set-4$")
    demo.wait_prompt()
    sessions_before = served.server.sync(lambda: len(served.server.server.registry))
    # Output produced while the page reloads: numbered lines L1..L150.
    demo.type("for i in $(seq 1 150); do echo L$i; sleep 0.02; done; echo loop-$((9*9))-done")
    demo.page.keyboard.press("Enter")
    demo.wait_screen(r"^L5$")
    demo.page.reload()
    demo.wait_ready()
    assert demo.demo("resumed") is True, (
        f"the page opened a new session instead of resuming: {demo.demo('events')}"
    )
    screen = demo.wait_screen(r"^loop-81-done$", timeout=20_000)
    shots(demo.page, "reloaded")
    before = demo.js("() => sessionStorage.getItem('e2e-before')")
    after = demo.js("() => window.__e2eText")
    assert re.search(r"^L(\d+)$", screen, re.M), "no loop output after the reload"
    numbers = [int(n) for n in re.findall(r"(?<![$\w])L(\d+)\r\n", before + after)]
    assert numbers == list(range(1, 151)), f"lost or repeated lines: {numbers}"
    in_flight = len(re.findall(r"(?<![$\w])L\d+\r\n", after))
    assert in_flight > 0, "nothing arrived after the reload"
    demo.wait_prompt()
    assert demo.shell_pid() == pid
    demo.run("echo var=$NIMBUS_E2E", r"^var=kept-12$")
    assert served.server.sync(lambda: len(served.server.server.registry)) == sessions_before


def test_exit_tears_down(open_demo: Callable[..., Demo], served: Served, shots: Any) -> None:
    demo = open_demo()
    pid = demo.shell_pid()
    channels, backends = served.server.channel_count(), len(served.server.backends())
    demo.type("exit 3")
    demo.page.keyboard.press("Enter")
    demo.wait("() => window.nimbusDemo.phase === 'exited'", what="the exit to show")
    assert demo.demo("exit") == {"code": 3, "sig": None}
    demo.wait_screen(r"process exited with code 3")
    assert "exited" in demo.status()
    shots(demo.page, "exited")
    srv = served.server
    wait_server(served, lambda: srv.channels_now() == channels - 1, "channel closed")
    wait_server(served, lambda: len(srv.server._backends) == backends - 1, "backend released")
    wait_server(served, lambda: not srv.server._closing, "backend reaped")
    wait_server(served, lambda: not pid_alive(pid), f"shell {pid} gone")
    # Enter starts a new session on the same connection (PTY; SSH asks again)
    if served.backend == "pty":
        demo.page.keyboard.press("Enter")
        demo.wait_ready()
        demo.set_prompt()
        assert demo.shell_pid() != pid


def test_large_stream_exact_and_bounded(
    open_demo: Callable[..., Demo], served: Served, context: Any, shots: Any
) -> None:
    """100 MB through xterm.js: every byte arrives once, the JS heap stays bounded."""
    total = 100_000_000 if served.backend == "pty" else 20_000_000
    demo = open_demo()
    page = demo.page
    cdp = context.new_cdp_session(page)
    demo.js(
        """() => { const d = window.nimbusDemo; d.xs = 0;
            d.tap = (b) => { let n = 0; for (let i = 0; i < b.length; i++) if (b[i] === 120) n++; d.xs += n; }; }"""
    )
    cdp.send("HeapProfiler.collectGarbage")
    idle = cdp.send("Runtime.getHeapUsage")["usedSize"]
    wasm0 = demo.js("() => window.nimbusDemo.wasmBytes()")
    t0 = time.monotonic()
    # '\170' is 'x': the typed command itself contains no 'x'
    demo.type(
        f"head -c {total} /dev/zero | tr '\\0' '\\170' | fold -w 100; echo; echo stream-$((6*7))-end"
    )
    page.keyboard.press("Enter")
    peak = idle
    done = f"() => window.nimbusDemo.xs >= {total} && window.nimbusDemo.cursorLine() === 'e2e$'"
    deadline = time.monotonic() + 90
    while True:  # bounded: sample the heap while waiting for the end marker
        peak = max(peak, cdp.send("Runtime.getHeapUsage")["usedSize"])
        try:
            page.wait_for_function(done, timeout=250, polling=100)
            break
        except Exception:
            assert time.monotonic() < deadline, f"stream did not finish: rx={demo.demo('rx')}"
    secs = time.monotonic() - t0
    wasm1 = demo.js("() => window.nimbusDemo.wasmBytes()")
    shots(page, "stream-done")
    demo.wait_screen(r"^stream-42-end$")
    assert demo.demo("xs") == total
    rx = demo.wait_rx_stable(300)
    assert rx == channel_sent(served, demo), "page and server disagree on the byte count"
    assert rx >= total + total // 100  # + a CR LF per 100 x
    print(
        f"\n{served.backend}: {rx / MiB:.1f} MiB in {secs:.1f} s ({rx / MiB / secs:.1f} MiB/s); "
        f"JS heap idle {idle / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB; "
        f"Pyodide memory {wasm0 / MiB:.0f} -> {wasm1 / MiB:.0f} MiB"
    )
    assert peak - idle < 64 * MiB, f"JS heap grew {(peak - idle) / MiB:.1f} MiB"
    # The Python side (WebAssembly memory, which never shrinks) stays bounded too.
    assert wasm1 - wasm0 < 64 * MiB, f"Pyodide memory grew {(wasm1 - wasm0) / MiB:.0f} MiB"


def test_hidden_tab_pauses_stream(
    open_demo: Callable[..., Demo], served: Served, shots: Any
) -> None:
    demo = open_demo()
    demo.type("yes nimbus-flood | tr -d '\\n' | fold -w 99")
    demo.page.keyboard.press("Enter")
    demo.wait("() => window.nimbusDemo.rx > 1048576", what="the flood to run")
    demo.set_hidden(True)
    demo.wait(
        "() => window.nimbusDemo.pauseReasons.includes('visibility')",
        what="the visibility pause",
    )
    at_pause = demo.demo("rx")
    assert demo.page.is_visible("#st-pause")
    assert "visibility" in demo.page.inner_text("#st-pause")
    assert any(
        e["type"] == "policy" and e["kind"] == "flow_pause" and e["reason"] == "visibility"
        for e in demo.demo("events")
    )
    stopped = demo.wait_rx_stable(500)
    assert stopped - at_pause <= MAX_WINDOW + SLACK, f"{stopped - at_pause} bytes after the pause"
    shots(demo.page, "hidden-paused")
    demo.set_hidden(False)
    demo.wait("(n) => window.nimbusDemo.rx > n + 1048576", stopped, what="the stream to continue")
    demo.wait("() => window.nimbusDemo.pauseReasons.length === 0", what="the pause to end")
    # (the flood ends with the session: the context fixture closes it with 1000)


def test_ctrl_c_under_flood(open_demo: Callable[..., Demo], served: Served, shots: Any) -> None:
    demo = open_demo()
    demo.type("yes")
    demo.page.keyboard.press("Enter")
    demo.wait("() => window.nimbusDemo.rx > 2 * 1048576", what="`yes` to flood")
    rx0 = demo.demo("rx")
    t0 = time.monotonic()
    demo.page.keyboard.press("Control+C")
    demo.wait_prompt(timeout=5_000)
    took = time.monotonic() - t0
    drained = demo.demo("rx") - rx0
    print(f"\nCtrl-C: prompt after {took:.2f} s, {drained / MiB:.2f} MiB drained meanwhile")
    shots(demo.page, "ctrl-c")
    # What is in flight must still be rendered: the client's window, plus (SSH)
    # the SSH channel window -- 128 KiB (ssh_backend.SSH_WINDOW), not asyncssh's
    # 2 MiB default, which took 1.2-3.5 s here.
    assert took < 1.0, f"prompt came back after {took:.2f} s"
    demo.run("echo alive-$((2*50))", r"^alive-100$")


# ------------------------------------------------------- errors and the form
