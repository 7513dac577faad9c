"""Browser-only behaviour of the web runtime, in Chromium: page visibility, online/offline,
sessionStorage resume across a "reload", and the JavaScript facade in a page.

Headless Chromium never hides a page or goes offline by itself: the tests
redefine ``document.visibilityState`` / ``navigator.onLine`` with
``Object.defineProperty`` and dispatch the events.  A page reload is
simulated the way the page sees it: ``pagehide`` (the resume state is
persisted), the old connection stops without ending the session, and a new
connection is made from what ``sessionStorage`` holds.  Node has none of
this (no document, no sessionStorage): those runs are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_pyodide import run_in_pyodide
from web.web_servers import ServeProcess

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parents[1]
HELPERS = TESTS / "web" / "pyodide_helpers.py"
FACADE = TESTS.parent / "web_runtime" / "js" / "nimbus.mjs"


@pytest.fixture(scope="module")
def web_helpers_src() -> str:
    """Source of tests/web/pyodide_helpers.py (executed inside Pyodide)."""
    return HELPERS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def sh_server(web_server_main: tuple[str, int, Any]) -> Iterator[ServeProcess]:
    """The reference server; channels run ``/bin/sh``.  The test pages come from
    pytest-pyodide's web server, another origin: allow-listed (docs/security.md, 2)."""
    host, port, _ = web_server_main
    with ServeProcess("--pty-command", "exec /bin/sh", "--allow-origin", f"http://{host}:{port}") as srv:
        yield srv


@pytest.fixture
def chrome(selenium_nimbus: Any) -> Any:
    """The Chromium runtime only."""
    if selenium_nimbus.browser == "node":
        pytest.skip("browser-only: Node has no document, window events or sessionStorage")
    return selenium_nimbus


# ------------------------------------------------- visibility, online/offline


@run_in_pyodide
async def _page_policies(selenium: Any, helpers_src: str, url: str) -> dict[str, Any]:
    import time
    import types

    from js import Event, window
    from nimbus_websocket.web_runtime import ResumeOptions, connect

    h = types.ModuleType("h")
    exec(helpers_src, h.__dict__)
    rec = h.Recorder()
    skew = [0.0]

    def clock() -> float:  # wall clock that the test can move forward
        return time.time() + skew[0]

    conn = await connect(
        url, resume=ResumeOptions(storage="memory"), clock=clock, on=rec.listeners()
    )
    got = [0]
    ch = await conn.open_session(
        h.TARGET, h.USER, on={"data": lambda b: got.__setitem__(0, got[0] + len(b))}
    )
    credit = conn.session.channel(ch.id).credit
    await ch.send(b"exec cat /dev/zero\n")  # endless; every pause below must stop it
    await h.wait_for(lambda: got[0] > 1_000_000, 20, "output to flow")
    r: dict[str, Any] = {"lifecycle_listeners": conn.lifecycle.listener_count}

    async def stalls(reason: str) -> tuple[int, int]:
        """Credit is withheld for ``reason``: the server spends what it holds, then stops."""
        assert reason in conn.pause_reasons, conn.pause_reasons
        at_pause = credit.granted
        await h.wait_for(
            lambda: credit.received == credit.granted, 20, f"output to stop ({reason})"
        )
        return at_pause, credit.granted

    async def flows_again(before: int) -> None:
        await h.wait_for(
            lambda: credit.granted > before and got[0] > before, 20, "output to flow again"
        )

    # 1. hidden for a moment: pause, stall, resume -- not suspect.
    h.set_visibility("hidden")
    r["short_hidden"] = await stalls("visibility")
    h.set_visibility("visible")
    await flows_again(r["short_hidden"][1])
    r["suspect_after_short"] = rec.codes().count("connection_suspect")

    # 2. hidden for longer than the heartbeat interval (clock moved 25 s): verified on return.
    h.set_visibility("hidden")
    r["long_hidden"] = await stalls("visibility")
    skew[0] += 25.0
    h.set_visibility("visible")
    await h.wait_for(lambda: "connection_verified" in rec.codes(), 10, "verification")
    await flows_again(r["long_hidden"][1])

    # 3. offline: pause, stall; online: resume and verify.
    h.set_online(False)
    r["offline"] = await stalls("offline")
    h.set_online(True)
    await flows_again(r["offline"][1])
    await h.wait_for(
        lambda: rec.codes().count("connection_verified") == 2, 10, "verification after online"
    )

    # 4. pagehide persists the resume state (exact rx).
    persisted = rec.codes().count("resume_store_persist")
    window.dispatchEvent(Event.new("pagehide"))
    r["pagehide_persists"] = rec.codes().count("resume_store_persist") - persisted

    h.restore_page()
    suspect = [d for d in rec.diags if d["code"] == "connection_suspect"]
    r["suspect"] = [(d["why"], d.get("hidden_ms", 0) >= 25_000) for d in suspect]
    r["kinds"] = [k for k in rec.kinds() if k[0] != "credit_grant"]
    r["verify_failed"] = rec.codes().count("connection_verify_failed")
    await ch.signal("INT")
    await conn.close()
    r["listeners_after_close"] = conn.lifecycle.listener_count
    return r


def test_visibility_and_offline_pause_credit_and_verify(
    chrome: Any, web_helpers_src: str, sh_server: ServeProcess
) -> None:
    r = _page_policies(chrome, web_helpers_src, sh_server.url)
    assert r["lifecycle_listeners"] == 4  # visibilitychange, offline, online, pagehide
    # While paused no credit is granted: the output stops at what was granted when it paused.
    for phase in ("short_hidden", "long_hidden", "offline"):
        at_pause, at_stall = r[phase]
        assert at_pause == at_stall, (phase, r[phase])
    assert r["suspect_after_short"] == 0
    assert r["suspect"] == [("visibility", True), ("online", False)]
    assert r["verify_failed"] == 0
    pauses = [k for k in r["kinds"] if k[0] in ("flow_pause", "flow_resume")]
    assert pauses == [
        ("flow_pause", "visibility"),
        ("flow_resume", "visibility"),
        ("flow_pause", "visibility"),
        ("flow_resume", "visibility"),
        ("flow_pause", "offline"),
        ("flow_resume", "offline"),
    ]
    assert r["pagehide_persists"] == 1
    assert r["listeners_after_close"] == 0


# ------------------------------------------------------ sessionStorage resume


@run_in_pyodide
async def _reload_resume(selenium: Any, helpers_src: str, url: str) -> dict[str, Any]:
    import json
    import time
    import types

    from js import Event, sessionStorage, window
    from nimbus_websocket.core import CloseError
    from nimbus_websocket.web_runtime import connect

    h = types.ModuleType("h")
    exec(helpers_src, h.__dict__)
    key = "nimbus-websocket:resume:" + url
    sessionStorage.removeItem(key)

    def stored_text() -> str | None:
        value = sessionStorage.getItem(key)  # a str, or JS null (jsnull, not None)
        return value if isinstance(value, str) else None

    r: dict[str, Any] = {}

    # Page 1: a shell printing numbers; the page goes away in the middle of the output.
    out1 = bytearray()
    conn1 = await connect(url)  # web default: resume state in sessionStorage, TTL 60 s
    ch1 = await conn1.open_session(h.TARGET, h.USER, on={"data": out1.extend})
    await ch1.send(b"echo pid=$$; seq 1 300000; exit 5\n")
    await h.wait_for(lambda: len(out1) > 300_000, 20, "some output")
    window.dispatchEvent(Event.new("pagehide"))  # -> conn.persist(): the exact rx
    stored = json.loads(stored_text())
    await conn1.close(4000, "page reload")  # not 1000: the server keeps the session
    r["rx_stored"] = stored["channels"][0]["rx"]
    r["rx_page1"] = len(out1)
    r["ttl_ms"] = stored["expiresAt"] - int(time.time() * 1000)
    r["stored_after_page1"] = stored_text() is not None

    # Page 2: a new connection finds the state and gets the same channel back.
    out2 = bytearray()
    restored: list[Any] = []

    def on_channel(ch: Any) -> None:
        restored.append(ch)
        ch.on("data", out2.extend)

    conn2 = await connect(url, on={"channel": on_channel})
    r["resumed_ids"] = [c.id for c in conn2.resumed_channels]
    r["same_id"] = (
        bool(restored) and restored[0].id == ch1.id and restored[0] is conn2.resumed_channels[0]
    )
    r["exit"] = await restored[0].wait_closed()
    text = bytes(out1 + out2).decode()
    first, _, numbers = text.partition("\n")
    r["pid_line"] = first.startswith("pid=")
    r["exact"] = numbers == "".join(f"{i}\n" for i in range(1, 300_001))
    await conn2.close()  # 1000: session over, state cleared
    r["cleared_on_close"] = stored_text() is None

    # A stored state the server does not know: 4011, the state is cleared, a typed error.
    bogus = {"v": 1, "token": "0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "ack": True,
             "expiresAt": int(time.time() * 1000) + 30_000, "profile": "nimbus.v1",
             "channels": [{"id": 1, "resumeKey": "x", "rx": 0}]}  # fmt: skip
    sessionStorage.setItem(key, json.dumps(bogus))
    try:
        await connect(url)
        r["bogus"] = "connected"
    except CloseError as exc:
        r["bogus"] = (exc.ws_code, exc.code)
    r["cleared_on_4011"] = stored_text() is None

    # An expired state is not used (TTL honoured): a fresh session.
    bogus["expiresAt"] = int(time.time() * 1000) - 1
    sessionStorage.setItem(key, json.dumps(bogus))
    rec = h.Recorder()
    conn3 = await connect(url, on=rec.listeners())
    r["expired"] = (
        [d.get("why") for d in rec.diags if d["code"] == "resume_store_clear"],
        conn3.resumed_channels,
    )
    await conn3.close()
    return r


def test_session_storage_resume_after_reload(
    chrome: Any, web_helpers_src: str, sh_server: ServeProcess
) -> None:
    r = _reload_resume(chrome, web_helpers_src, sh_server.url)
    assert r["rx_stored"] == r["rx_page1"]  # persisted on pagehide from the exact byte
    assert 50_000 < r["ttl_ms"] <= 60_000
    assert r["stored_after_page1"]
    assert r["same_id"] and len(r["resumed_ids"]) == 1
    assert r["exit"] == 5
    assert r["pid_line"] and r["exact"]  # same shell, output continued where it stopped
    assert r["cleared_on_close"]
    assert r["bogus"] == (4011, "RESUME_FAILED") and r["cleared_on_4011"]
    assert r["expired"] == (["expired"], [])


# ------------------------------------------------------------- JS facade


FACADE_TEST = """
const mod = await import(URL.createObjectURL(new Blob([FACADE_SRC], {type: "text/javascript"})));
const nimbus = mod.createNimbus(pyodide);
const r = {version: nimbus.version};
const states = [];
const grants = [];
const conn = await nimbus.connect({url: URL_, resume: {storage: "memory"}, on: {
  statechange: (e) => states.push(e.new),
  policy: (p) => { if (p.kind === "credit_grant") grants.push(p); },
}});
const until = async (pred, ms, what) => {  // condition wait with a deadline
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error("timeout: " + what);
    await new Promise((res) => setTimeout(res, 5));
  }
};
r.state = conn.state;
r.info = conn.info;

// Bad arguments and refused connections are NimbusErrors.
try { await conn.openSession({target: {host: "127.0.0.1", port: 22}}); } catch (e) { r.badOpen = [e.name, e.code]; }
try { await nimbus.connect({url: "ws://127.0.0.1:9/ws/ssh", retry: {maxRetries: 0}}); }
catch (e) { r.refused = [e instanceof mod.NimbusError, e.code, e.wsCode]; }

// xterm.js-style consumption: a chunk counts once `done` is called.
const held = [];
let total = 0;
const N = 3000000;
const ch = await conn.openSession({target: {host: "127.0.0.1", port: 22}, user: {username: "t"}});
await ch.send(new TextEncoder().encode(`head -c ${N} /dev/zero; exit 4\\n`));
// Output that arrives before the first listener is kept (unconsumed) and delivered in order.
await until(() => ch._buf.length > 0, 10000, "output before any listener");
ch.on("data", (bytes, done) => { total += bytes.length; held.push(done); });
await until(() => total === 262144, 10000, "one window");
r.heldAt = total;          // the whole first window, nothing consumed yet...
r.grantsHeld = grants.filter((g) => g.channel === ch.id).length;  // ...so no grant after the first
r.heldChunks = held.length;
const pump = setInterval(() => { while (held.length) held.shift()(); }, 2);
r.exit = await ch.waitClosed();
clearInterval(pump);
r.total = total;
r.chState = ch.state;

// Strings and Node-style views in, resize, signal.
const echo = [];
const sh = await conn.openSession({target: {host: "127.0.0.1", port: 22}, user: {username: "t"}});
sh.on("data", (b) => { echo.push(...b); });
await sh.send("echo hi-");
await sh.send(new Uint16Array([0x6f6b, 0x0a0a]));  // a non-Uint8Array view: "ko" and two newlines
await until(() => new TextDecoder().decode(new Uint8Array(echo)).includes("hi-ko"), 5000, "echo");
sh.resize(90, 20);
await sh.signal("TERM");
const closed = await sh.closed;
r.sig = [closed.exitStatus, closed.exitSignal];
r.pauseReasons = conn.pauseReasons;
r.resumed = conn.resumedChannels.length;
await conn.close();
r.after = [conn.state, states];
return r;
"""


def test_js_facade_in_a_page(chrome: Any, sh_server: ServeProcess) -> None:
    import json

    code = FACADE_TEST.replace(
        "FACADE_SRC", json.dumps(FACADE.read_text(encoding="utf-8"))
    ).replace("URL_", json.dumps(sh_server.url))
    r = chrome.run_js(code)
    assert r["version"] and r["state"] == "ready"
    assert r["info"]["protocol"] == "nimbus.ssh.v1" and r["info"]["pauseReasons"] == []
    assert r["badOpen"] == ["TypeError", "BAD_ARGUMENT"]
    assert r["refused"][0] and r["refused"][1] == "CONNECT_FAILED"
    assert (
        r["heldAt"] == 262144 and r["grantsHeld"] == 1 and r["heldChunks"] >= 1
    )  # credit waits for done()
    assert r["exit"] == 4 and r["total"] == 3_000_000 and r["chState"] == "closed"
    assert r["sig"] == [None, "TERM"]
    assert r["pauseReasons"] == [] and r["resumed"] == 0
    assert r["after"] == ["closed", ["connecting", "authenticating", "ready", "closed"]]
