"""Host (CPython) unit tests of the web runtime's pieces that need no browser.

The JavaScript objects are small fakes; ``_ffi.create_proxy`` is replaced by
a fake whose ``destroy()`` is counted.  What needs a real browser or Pyodide
is in ``tests/pyodide/test_web_runtime*.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from nimbus_websocket.core import (
    ClientOptions,
    CloseError,
    Diagnostic,
    DiagPhase,
    Ping,
    PolicyEvent,
    PolicyKind,
    StateChanged,
)
from nimbus_websocket.core.aio import ConnectOptions
from nimbus_websocket.core.state import ConnState
from nimbus_websocket.node_runtime.client import ChannelOpenError, ResumeOptions, RetryOptions
from nimbus_websocket.web_runtime import _ffi, bridge, storage
from nimbus_websocket.web_runtime.lifecycle import PageLifecycle

try:
    from support.memory import ClientHarness
except ImportError:  # pragma: no cover
    from tests.support.memory import ClientHarness


class FakeProxy:
    """Stands for a ``create_proxy`` proxy."""

    live = 0

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.destroyed = False
        FakeProxy.live += 1

    def __call__(self, *args: Any) -> Any:
        assert not self.destroyed, "called after destroy()"
        return self.fn(*args)

    def destroy(self) -> None:
        assert not self.destroyed, "destroyed twice"
        self.destroyed = True
        FakeProxy.live -= 1


class FakeTarget:
    """``addEventListener``/``removeEventListener`` and a way to fire events."""

    def __init__(self, **attrs: Any) -> None:
        self.listeners: dict[str, list[Any]] = {}
        self.__dict__.update(attrs)

    def addEventListener(self, name: str, fn: Any) -> None:
        self.listeners.setdefault(name, []).append(fn)

    def removeEventListener(self, name: str, fn: Any) -> None:
        self.listeners[name].remove(fn)

    def fire(self, name: str) -> None:
        for fn in list(self.listeners.get(name, [])):
            fn(object())


class Target:
    """Records what the lifecycle reports to the connection (it decides nothing itself)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def page_visibility(self, hidden: bool) -> None:
        self.calls.append(("hidden", hidden))

    def page_online(self, online: bool) -> None:
        self.calls.append(("online", online))

    def persist(self) -> None:
        self.calls.append(("persist",))


@pytest.fixture
def fake_proxies(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    FakeProxy.live = 0
    monkeypatch.setattr(_ffi, "create_proxy", FakeProxy)
    yield


def make_page(hidden: bool = False, online: bool = True) -> tuple[FakeTarget, FakeTarget, Any]:
    doc = FakeTarget(visibilityState="hidden" if hidden else "visible")
    win = FakeTarget()
    nav = type("Nav", (), {"onLine": online})()
    return doc, win, nav


def test_lifecycle_reports_page_events_and_detaches(fake_proxies: None) -> None:
    doc, win, nav = make_page()
    target = Target()
    lc = PageLifecycle(target, document=doc, window=win, navigator=nav)
    lc.attach()
    assert lc.listener_count == 4 and FakeProxy.live == 4
    assert target.calls == []  # visible and online: nothing to report

    doc.visibilityState = "hidden"
    doc.fire("visibilitychange")
    doc.visibilityState = "visible"
    doc.fire("visibilitychange")
    nav.onLine = False
    win.fire("offline")
    nav.onLine = True
    win.fire("online")
    win.fire("pagehide")
    assert target.calls == [
        ("hidden", True),
        ("hidden", False),
        ("online", False),
        ("online", True),
        ("persist",),
    ]

    lc.detach()
    assert lc.listener_count == 0 and FakeProxy.live == 0
    assert all(not fns for fns in doc.listeners.values()) and all(
        not fns for fns in win.listeners.values()
    )


def test_web_connection_reports_page_events_to_the_core(fake_proxies: None) -> None:
    """Page events -> WebConnection -> the core's session, which decides (pauses, suspect rule)."""
    import asyncio

    from nimbus_websocket.web_runtime.connection import WebConnection

    def no_socket(url: str, protocols: list[str]) -> Any:
        raise OSError("no network")

    async def run() -> list[tuple[str, bool]]:
        doc, win, nav = make_page()
        conn = WebConnection(
            "ws://x",
            no_socket,
            page={"document": doc, "window": win, "navigator": nav},
            clock=lambda: 1000.0,
        )
        assert conn.lifecycle is not None
        conn.lifecycle.attach()
        seen = []
        doc.visibilityState = "hidden"
        doc.fire("visibilitychange")
        seen.append(("visibility", conn.session.paused_for("visibility")))
        nav.onLine = False
        win.fire("offline")
        seen.append(("offline", conn.session.paused_for("offline")))
        doc.visibilityState = "visible"
        doc.fire("visibilitychange")
        nav.onLine = True
        win.fire("online")
        seen.append(("visibility", conn.session.paused_for("visibility")))
        seen.append(("offline", conn.session.paused_for("offline")))
        conn.lifecycle.detach()
        return seen

    assert asyncio.run(run()) == [
        ("visibility", True),
        ("offline", True),
        ("visibility", False),
        ("offline", False),
    ]


def test_lifecycle_applies_the_state_at_attach(fake_proxies: None) -> None:
    doc, win, nav = make_page(hidden=True, online=False)
    target = Target()
    lc = PageLifecycle(target, document=doc, window=win, navigator=nav)
    lc.attach()
    assert target.calls == [("hidden", True), ("online", False)]
    assert lc.hidden and lc.offline
    lc.detach()


def test_lifecycle_without_a_page_and_with_a_failing_target(fake_proxies: None) -> None:
    lc = PageLifecycle(Target())  # host: no js globals
    lc.attach()
    assert lc.listener_count == 0 and not lc.hidden and not lc.offline

    class Broken(Target):
        def persist(self) -> None:
            raise RuntimeError("boom")

    doc, win, nav = make_page()
    lc = PageLifecycle(Broken(), document=doc, window=win, navigator=nav)
    lc.attach()
    win.fire("pagehide")  # the exception is logged, never thrown into JavaScript
    lc.detach()


class FakeStorage:
    def __init__(self) -> None:
        self.items: dict[str, Any] = {}
        self.fail = False

    def getItem(self, key: str) -> Any:
        return self.items.get(key, JsNull)

    def setItem(self, key: str, value: str) -> None:
        if self.fail:
            raise RuntimeError("QuotaExceededError")
        self.items[key] = value

    def removeItem(self, key: str) -> None:
        self.items.pop(key, None)


JsNull = type("JsNull", (), {"__repr__": lambda self: "jsnull"})()


def test_session_storage_store_roundtrip_per_url_and_failures() -> None:
    fake = FakeStorage()
    a = storage.SessionStorageStore("ws://a/ws/ssh", storage=fake)
    b = storage.SessionStorageStore("ws://b/ws/ssh", storage=fake)
    assert a.key == "nimbus-websocket:resume:ws://a/ws/ssh" != b.key
    assert a.load() is None  # JS null is not None in Pyodide: any non-string is "nothing"
    state = {
        "v": 1,
        "token": "t",
        "expiresAt": 1,
        "ack": True,
        "profile": "nimbus.v1",
        "channels": [],
    }
    a.save(state)
    assert a.load() == state and b.load() is None
    assert json.loads(fake.items[a.key]) == state
    fake.items[a.key] = "{damaged"
    assert a.load() is None
    fake.items[a.key] = "[1, 2]"
    assert a.load() is None
    fake.fail = True
    a.save(state)  # logged, not raised: resume is an optimisation
    a.clear()
    assert a.key not in fake.items
    assert storage.SessionStorageStore("u", key="mine", storage=fake).key == "mine"


def test_session_storage_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    assert storage.session_storage_available() is False  # host CPython: no js
    with pytest.raises(RuntimeError, match="sessionStorage"):
        storage.SessionStorageStore("ws://x")
    monkeypatch.setattr(
        _ffi, "global_get", lambda name: FakeStorage() if name == "sessionStorage" else None
    )
    assert storage.session_storage_available() is True


def test_bridge_connect_options_from_json() -> None:
    kw = bridge.connect_kwargs(
        {
            "url": "ws://x",
            "auth": "tok",
            "heartbeatIntervalMs": 5000,
            "handshakeTimeoutMs": 2500,
            "highWaterMark": 1024,
            "window": 65536,
            "transport": "auto",
            "lifecycle": False,
            "resume": {"storage": "memory", "ttlMs": 30000, "key": "k"},
            "retry": {"baseMs": 50, "maxRetries": 2},
            "clientInfo": {"app": "demo"},
            "profile": None,  # null: default
        }
    )
    assert kw == {
        "options": ConnectOptions(
            heartbeat_interval=5.0,
            handshake_timeout=2.5,
            high_water_mark=1024,
            window=65536,
            resume=ResumeOptions(storage="memory", ttl_ms=30000),
            retry=RetryOptions(base_ms=50, max_retries=2),
            client_info={"app": "demo"},
        ),
        "lifecycle": False,
        "resume_key": "k",
    }
    # Every shared option has its JSON name and unit on the one options object.
    opts = kw["options"].client_options()
    assert (opts.heartbeat_interval, opts.resume_ttl, opts.retry.base, opts.ping_on_ready) == (
        5.0,
        30.0,
        0.05,
        True,
    )
    assert bridge.connect_kwargs({"verifyTimeoutMs": 300, "suspectAfterMs": 1500})[
        "options"
    ].client_options().suspect_after_s == 1.5
    with pytest.raises(ValueError, match="noSuch"):
        bridge.connect_kwargs({"noSuch": 1})
    with pytest.raises(ValueError, match="retry"):
        bridge.connect_kwargs({"retry": {"base": 1}})
    with pytest.raises(ValueError, match="resume"):
        bridge.connect_kwargs({"resume": {"ttl": 1}})


def test_bridge_error_dicts_and_static_auth() -> None:
    assert bridge.error_dict(CloseError(4003, 4003, "AUTH_FAILED", "no")) == {
        "name": "CloseError",
        "wsCode": 4003,
        "appCode": 4003,
        "code": "AUTH_FAILED",
        "message": "no",
    }
    assert (
        bridge.error_dict(ChannelOpenError("TARGET_UNREACHABLE", "x"))["name"] == "ChannelOpenError"
    )
    assert bridge.error_dict(ValueError("bad"))["code"] == "BAD_ARGUMENT"
    assert bridge.error_dict(RuntimeError("?"))["code"] == "INTERNAL_ERROR"
    provider = bridge._auth_provider("tok", None)
    assert provider is not None and provider() == {"scheme": "bearer", "token": "tok"}
    provider = bridge._auth_provider({"scheme": "none"}, None)
    assert provider is not None and provider() == {"scheme": "none"}
    assert bridge._auth_provider(None, None) is None


def test_bridge_js_keys_is_the_one_snake_to_camel_conversion() -> None:
    assert bridge.js_keys(
        {"buffered_amount": 1, "rtt_ms": 2, "ws_code": 3, "web_socket_stream": True, "why": "x"}
    ) == {"bufferedAmount": 1, "rttMs": 2, "wsCode": 3, "webSocketStream": True, "why": "x"}
    assert bridge.js_keys({"bufferedAmount": 1, "code": "c"}) == {"bufferedAmount": 1, "code": "c"}


def _dispatched(events: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """What JavaScript receives for ``events``: ``(name, parsed JSON)`` per dispatch."""
    got: list[tuple[str, Any]] = []
    handle = bridge.ConnectionHandle(
        lambda name, payload: got.append((name, json.loads(payload))),
        ["statechange", "diagnostic", "policy"],
    )
    on = handle.listeners()
    for ev in events:
        name = {Diagnostic: "diagnostic", PolicyEvent: "policy", StateChanged: "statechange"}.get(type(ev))
        if name is not None:
            on[name](ev)
    return got


def test_bridge_diagnostic_json_has_the_camel_case_keys_js_reads() -> None:
    """A Diagnostic with snake_case extras reaches JavaScript exactly as before the rename."""
    ev = Diagnostic(
        1234.5,
        DiagPhase.TRANSPORT,
        "transport_closed",
        {"ws_code": 1006, "reason": "", "buffered_amount": 7, "rtt_ms": 12.5},
    )
    assert ev.to_dict()["ws_code"] == 1006  # Python sees snake_case
    assert _dispatched([ev]) == [
        (
            "diagnostic",
            {
                "timestamp": 1234.5,
                "phase": "transport",
                "code": "transport_closed",
                "wsCode": 1006,
                "reason": "",
                "bufferedAmount": 7,
                "rttMs": 12.5,
            },
        )
    ]
    policy = PolicyEvent(PolicyKind.CREDIT_GRANT, 1, None, 4096)
    state = StateChanged(ConnState.AUTHENTICATING, ConnState.READY, "hello_ok")
    assert _dispatched([policy, state]) == [
        ("policy", {"kind": "credit_grant", "channel": 1, "reason": None, "value": 4096}),
        ("statechange", {"old": "authenticating", "new": "ready", "state": "ready", "reason": "hello_ok"}),
    ]


def test_bridge_json_of_a_scripted_session_keeps_the_keys_of_each_diagnostic() -> None:
    """The core's own diagnostics, through the bridge: the camelCase keys the facade always had."""
    h = ClientHarness(ClientOptions(verify_timeout=5.0))
    h.connect()
    now = h.clock()
    h.client.verify(now, "visibility", hidden_ms=30_000)
    h.drain()
    h.feed(Ping(1.0))  # connection_verified
    h.client.verify(now, "online")
    h.drain()
    h.tick_to(now + 6.0)  # verify failed: abandoned as a drop, reconnect scheduled
    h.tick_to(h.client.next_deadline() or now)  # reconnect attempt
    h.client.transport_opened(h.clock())
    h.drain()
    h.feed("not json")  # protocol error
    keys: dict[str, set[str]] = {}
    for name, d in _dispatched(h.events):
        if name == "diagnostic":
            keys.setdefault(d["code"], set(d))  # the first of each code
    base = {"timestamp", "phase", "code", "bufferedAmount", "rttMs"}
    expected = {
        "connection_suspect": {"why", "hiddenMs"},
        "connection_verified": {"why", "waitedMs"},
        "connection_verify_failed": {"why", "timeoutMs"},
        "transport_closed": {"wsCode", "reason"},
        "reconnect_scheduled": {"attempt", "delayMs"},
        "reconnect_attempt": {"attempt"},
        "hello_sent": {"resume"},
        "protocol_error": {"closeCode", "message"},
    }
    for code, extra in expected.items():
        assert keys.get(code) == base | extra, (code, keys.get(code))
    assert all("_" not in k for ks in keys.values() for k in ks), keys


class FakeJsSocket:
    """The JavaScript WebSocket as BrowserWebSocket sees it."""

    def __init__(self, url: str, protocols: Any = None) -> None:
        self.url = url
        self.protocols = protocols
        self.binaryType = "blob"
        self.bufferedAmount = 0
        self.readyState = 1
        self.protocol = "nimbus.ssh.v1"
        self.sent: list[Any] = []
        self.closed: list[tuple[int, str]] = []
        self.onopen = self.onmessage = self.onclose = self.onerror = None
        self.amount_reads = 0

    def __getattribute__(self, name: str) -> Any:
        if name == "bufferedAmount":
            object.__setattr__(
                self, "amount_reads", object.__getattribute__(self, "amount_reads") + 1
            )
        return object.__getattribute__(self, name)

    def send(self, data: Any) -> None:
        self.sent.append(data)

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


class FakeArrayBuffer:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def to_bytes(self) -> bytes:
        return self.raw


@pytest.fixture
def fake_js(monkeypatch: pytest.MonkeyPatch, fake_proxies: None) -> Any:
    class Js:
        class WebSocket:
            @staticmethod
            def new(url: str, protocols: Any = None) -> FakeJsSocket:
                return FakeJsSocket(url, protocols)

        class Function:
            @staticmethod
            def new(_arg: str, _body: str) -> Any:
                return lambda f: lambda ev: f(ev.data)

        class Uint8Array:
            @staticmethod
            def new(buffer: FakeArrayBuffer, offset: int, n: int) -> tuple[str, bytes]:
                return ("view", buffer.raw[offset : offset + n])

    monkeypatch.setattr(_ffi, "js", Js)
    monkeypatch.setattr(_ffi, "to_js", lambda x: x)
    return Js


def test_browser_websocket_messages_views_buffered_amount_and_proxies(fake_js: Any) -> None:
    from nimbus_websocket.web_runtime.socket import BrowserWebSocket

    sock = BrowserWebSocket("ws://h/ws/ssh", ["nimbus.ssh.v1"], js_class=fake_js.WebSocket)
    js_ws = sock.js_socket
    assert js_ws.binaryType == "arraybuffer" and sock.live_proxies == 4
    got: list[Any] = []
    views: list[Any] = []

    def on_message(ev: Any) -> None:
        got.append(ev.data)
        if isinstance(ev.data, bytes):
            views.append(sock.payload_location(ev.data[5:]))
            views.append(sock.payload_location(b"x" * (len(ev.data) - 5)))  # same length, other bytes

    sock.onmessage = on_message
    frame = b"\x01\x00\x00\x00\x01" + bytes(range(256)) * 300
    js_ws.onmessage(type("Ev", (), {"data": FakeArrayBuffer(frame)})())
    js_ws.onmessage(type("Ev", (), {"data": '{"t":"pong","ts":1}'})())
    assert got == [frame, '{"t":"pong","ts":1}']
    assert len(views) == 2 and views[1] is None
    buffer, offset, length = views[0]
    assert (offset, length) == (5, len(frame) - 5) and isinstance(buffer, FakeArrayBuffer)
    assert (
        sock.current_message is None and sock.payload_location(frame[5:]) is None
    )  # only during onmessage
    assert (sock.messages_received, sock.bytes_received) == (2, len(frame))

    # bufferedAmount is read from JavaScript only after a send, until it is seen at 0 again.
    reads = js_ws.amount_reads
    assert sock.bufferedAmount == 0 and js_ws.amount_reads == reads
    sock.send(b"abc")
    js_ws.bufferedAmount = 3
    assert sock.bufferedAmount == 3
    js_ws.bufferedAmount = 0
    assert sock.bufferedAmount == 0 and sock.bufferedAmount == 0
    assert js_ws.amount_reads == reads + 2
    assert js_ws.sent == [b"abc"]

    # The JS close event finishes the socket: listeners detached, proxies destroyed.
    closes: list[Any] = []
    sock.onclose = closes.append
    finished: list[bool] = []
    sock.notify_finished(lambda: finished.append(True))
    js_ws.onclose(type("Ev", (), {"code": 1001, "reason": "bye", "wasClean": True})())
    assert [(c.code, c.reason) for c in closes] == [(1001, "bye")] and finished == [True]
    assert sock.live_proxies == 0 and FakeProxy.live == 0 and js_ws.onmessage is None
    assert sock.readyState == 3


def test_browser_websocket_abort_reports_a_drop(fake_js: Any) -> None:
    from nimbus_websocket.web_runtime.socket import BrowserWebSocket

    sock = BrowserWebSocket("ws://h/ws/ssh", js_class=fake_js.WebSocket)
    closes: list[Any] = []
    sock.onclose = closes.append
    sock.abort("no answer")
    sock.abort()  # once only
    # Both codes are the core's: reported 1006 (a network loss), sent 4000 (the server keeps the session).
    assert [(c.code, c.reason) for c in closes] == [(1006, "no answer")]
    assert sock.js_socket.closed == [(4000, "no answer")]
    assert sock.live_proxies == 0 and FakeProxy.live == 0
    with pytest.raises(ValueError):
        sock.binaryType = "blob"
