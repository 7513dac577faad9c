"""Security: every gate tried by someone who wants past it (complements tests/server/test_server_policy.py).

* Origin allow-list: case, port, suffix/prefix, userinfo, trailing dot,
  scheme, ``null``, empty, duplicated headers; the default same-host policy
  against DNS rebinding (``Host`` names the attacker's domain).
* Bearer tokens: prefixes, suffixes, case, whitespace, NUL, look-alikes,
  other schemes; the comparison is constant time (every configured token is
  compared with ``hmac.compare_digest``, and a 4 MiB token costs the same
  whether it differs in its first or its last byte).
* Target allow-list: spellings of loopback and of the allowed host that are
  not the allowed host, ports 0 and others; the SSH backend's loopback-only
  default.
* Resume tokens: format and entropy (>= 128 bits from ``secrets``), single
  use, bound to the principal, valid within the retention window, revoked
  after 5 wrong secrets, and failed resumes rate-limited per client IP (4004).
* Logs: a JSON log at DEBUG over a session with auth, resume, errors and
  traffic holds no payload byte, no token, no resumeKey, no password.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import re
import secrets
import time
from typing import Any

import pytest
from nimbus_websocket.core import (
    Auth,
    Flow,
    Hello,
    HelloCaps,
    OpenErr,
    OpenOk,
    ResumeChannel,
    ResumeRequest,
    ServerConfig,
    SessionRegistry,
    Target,
    User,
    get_profile,
)
from nimbus_websocket.core.messages import Open
from nimbus_websocket.node_runtime.conformance.wire import ServerClosed, Wire
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server import policy as policy_mod
from nimbus_websocket.node_runtime.server.policy import AuthPolicy
from rel_util import RawWs, ServerProcess
from support.proxy import wait_until

pytestmark = pytest.mark.timeout(60)

P = get_profile("nimbus.v1")
ANY_CODE = set(range(1000, 5000))


async def _upgrade(port: int, *, origin: str | list[str] | None = None, host: str | None = None) -> int:
    """HTTP status of a hand-written upgrade request (101 = accepted)."""
    headers = [("Origin", o) for o in ([origin] if isinstance(origin, str) else origin or [])]
    r = await RawWs.connect(port)
    try:
        return await r.handshake(RawWs.upgrade_request(port, host=host, headers=headers))
    finally:
        r.abort()


async def _wire(url: str) -> Wire:
    return await Wire.open(url, P, timeout=10)


# ------------------------------------------------------------------ Origin

GOOD = "https://good.example"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (GOOD, True),
        ("HTTPS://GOOD.EXAMPLE", True),  # scheme and host are case-insensitive (RFC 6454)
        ("https://good.example/", True),  # (browsers never send the slash; harmless)
        ("https://good.example.evil.com", False),
        ("https://evilgood.example", False),
        ("https://evil.example/https://good.example", False),
        ("https://good.example:8443", False),
        ("https://good.example:443", True),  # the same origin (RFC 6454): default ports are dropped on both sides
        ("http://good.example", False),
        ("wss://good.example", False),
        ("https://good.example@evil.com", False),
        ("https://evil.com#@good.example", False),
        ("https://good.example.", False),
        ("null", False),
        ("", False),
        ("*", False),
        ("https://good.example, https://evil.com", False),
        ("https://xn--good-example", False),
    ],
)
async def test_origin_allow_list_tricks(make_server: Any, origin: str, allowed: bool) -> None:
    srv: Server = await make_server(allow_origins=(GOOD,))
    status = await _upgrade(srv.port, origin=origin)
    assert status == (101 if allowed else 403), (origin, status)


async def test_two_origin_headers_are_never_upgraded(make_server: Any) -> None:
    srv: Server = await make_server(allow_origins=(GOOD,))
    for pair in ([GOOD, "https://evil.com"], ["https://evil.com", GOOD], [GOOD, GOOD]):
        status = await _upgrade(srv.port, origin=pair)
        assert status != 101, pair


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:{port}", "127.0.0.1:{port}", True),
        # exact same origin (issue 13.2): another host string or port is another origin
        ("http://localhost:{port}", "127.0.0.1:{port}", False),
        ("http://[::1]:{port}", "127.0.0.1:{port}", False),
        ("http://localhost:{port}", "localhost:{port}", True),
        ("http://127.0.0.1:1", "127.0.0.1:{port}", False),
        ("https://127.0.0.1:{port}", "127.0.0.1:{port}", False),
        ("http://127.0.0.1.evil.example", "127.0.0.1:{port}", False),
        ("http://localhost.evil.example:{port}", "127.0.0.1:{port}", False),
        ("null", "127.0.0.1:{port}", False),
        # DNS rebinding: evil.example resolves to 127.0.0.1, so the browser's Host names it too
        ("http://evil.example:{port}", "evil.example:{port}", False),
        ("http://rebind.127.0.0.1.nip.io:{port}", "rebind.127.0.0.1.nip.io:{port}", False),
    ],
)
async def test_default_same_host_origin_policy(make_server: Any, origin: str, host: str, allowed: bool) -> None:
    """No allow-list, open access on loopback: only the exact origin of the request, on a loopback Host."""
    srv: Server = await make_server()
    status = await _upgrade(srv.port, origin=origin.format(port=srv.port), host=host.format(port=srv.port))
    assert status == (101 if allowed else 403), (origin, host, status)


async def test_no_origin_non_browser_clients_pass(make_server: Any) -> None:
    srv: Server = await make_server(allow_origins=(GOOD,))
    assert await _upgrade(srv.port) == 101


# ------------------------------------------------------------------ tokens

TOKEN = "s3cret-Token-0123456789abcdef"


@pytest.mark.parametrize(
    "attempt",
    [
        TOKEN[:-1],
        TOKEN + "f",
        TOKEN.upper(),
        TOKEN.lower(),
        " " + TOKEN,
        TOKEN + " ",
        TOKEN + "\n",
        TOKEN + "\x00",
        "\u0455" + TOKEN[1:],  # Cyrillic dze for "s"
        TOKEN[::-1],
        "",
        "Bearer " + TOKEN,
        TOKEN + TOKEN,
    ],
    ids=lambda a: repr(a)[:24],
)
async def test_bearer_token_variants_are_refused(make_server: Any, attempt: str) -> None:
    srv: Server = await make_server(tokens=(TOKEN, "second-token"))
    w = await _wire(srv.url)
    await w.send(Hello(auth=Auth("bearer", attempt), caps=HelloCaps("nimbus.v1")))
    assert await w.expect_close(ANY_CODE, "a near-miss token") == 4003


async def test_token_in_the_wrong_place_or_scheme_is_refused(make_server: Any) -> None:
    srv: Server = await make_server(tokens=(TOKEN,))
    tries = [
        {"t": "hello", "proto": 1, "auth": {"scheme": "none", "token": TOKEN}},
        {"t": "hello", "proto": 1, "client": {"token": TOKEN}},
        {"t": "hello", "proto": 1, "auth": {"scheme": "bearer"}},
        {"t": "hello", "proto": 1, "auth": {"scheme": "Bearer", "token": TOKEN}},
    ]
    codes = []
    for obj in tries:
        w = await _wire(srv.url)
        await w.send_json(obj)
        codes.append(await w.expect_close(ANY_CODE, "token misplaced"))
    assert codes == [4003, 4003, 4014, 4014]
    for tok in (TOKEN,):  # and the real one still works
        w = await _wire(srv.url)
        await w.hello(Hello(auth=Auth("bearer", tok), caps=HelloCaps("nimbus.v1")))
        await w.close()


async def test_every_configured_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(policy_mod.hmac, "compare_digest", spy)
    pol = AuthPolicy(("tok-one", "tok-two", "tok-three"))
    for tok, ok in (("tok-one", True), ("tok-three", True), ("tok-nope", False), ("t", False)):
        calls.clear()
        principal = await pol.authenticate("bearer", tok)
        assert (principal is not None) == ok
        assert len(calls) == 3, (tok, calls)  # no early exit on a match, no == anywhere


async def test_token_comparison_time_does_not_depend_on_where_it_differs() -> None:
    """A 4 MiB token differing in its first vs its last byte: same cost (== would differ ~1000x)."""
    size = 4 << 20
    real = "a" * size
    pol = AuthPolicy((real,))
    first = "b" + real[1:]
    last = real[:-1] + "b"

    async def cost(tok: str) -> float:
        t0 = time.perf_counter()
        for _ in range(5):
            assert await pol.authenticate("bearer", tok) is None
        return time.perf_counter() - t0

    samples: dict[str, list[float]] = {"first": [], "last": []}
    for _ in range(7):  # interleaved, medians
        samples["first"].append(await cost(first))
        samples["last"].append(await cost(last))
    med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
    ratio = med["first"] / med["last"]
    assert 1 / 3 < ratio < 3.0, med  # headroom for a loaded machine; == would be ~1000x off


# ------------------------------------------------------------------ targets


async def _open_result(w: Wire, cid: int, host: str, port: int) -> str:
    await w.send(Open(cid, Target(host, port), User("u"), None, "exec true"))
    m = await w.expect(lambda m: isinstance(m, (OpenOk, OpenErr)) and m.id == cid, f"open reply for {host!r}:{port}")
    if isinstance(m, OpenErr):
        return m.code
    await w.send_json({"t": "close", "id": cid})
    return "OPEN_OK"


BYPASS_TRIES = [
    ("LOCALHOST", 22), ("localhost", 22), ("127.0.0.1.", 22), ("[::1]", 22), ("::1", 22),
    ("127.0.0.1", 0), ("127.0.0.1", 2222), ("127.0.0.1", 65535), ("127.1", 22), ("127.0.0.2", 22),
    ("2130706433", 22), ("0x7f000001", 22), ("0177.0.0.1", 22), ("0.0.0.0", 22), ("127.0.0.1 ", 22),
    (" 127.0.0.1", 22), ("127.0.0.1\n", 22), ("127.0.0.1\x00", 22), ("127.0.0.1:22", 22),
    ("127.0.0.1/x", 22), ("::ffff:127.0.0.1", 22), ("", 22),
]


async def test_target_allow_list_bypass_attempts(make_server: Any) -> None:
    srv: Server = await make_server(allow_targets=("127.0.0.1:22",))
    w = await _wire(srv.url)
    await w.hello(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1", True)))
    assert await _open_result(w, 1, "127.0.0.1", 22) == "OPEN_OK"  # the one allowed target
    results = {}
    for i, (host, port) in enumerate(BYPASS_TRIES):
        results[(host, port)] = await _open_result(w, 100 + i, host, port)
        await asyncio.sleep(0.025)  # keep under the 50/s control-rate limit (pacing, not synchronisation)
    assert all(code == "POLICY_DENIED" for code in results.values()), results
    await w.close()


async def test_target_host_names_are_case_insensitive_but_exact(make_server: Any) -> None:
    srv: Server = await make_server(allow_targets=("localhost:22", "[::1]:2222"))
    w = await _wire(srv.url)
    await w.hello(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1", True)))
    got = {}
    tries = [("localhost", 22), ("LocalHost", 22), ("localhost.", 22), ("localhost", 23), ("::1", 2222),
             ("[::1]", 2222), ("::1", 22), ("127.0.0.1", 22)]
    for i, (h, p) in enumerate(tries):
        got[(h, p)] = await _open_result(w, i + 1, h, p)
        await asyncio.sleep(0.025)
    assert got == {
        ("localhost", 22): "OPEN_OK", ("LocalHost", 22): "OPEN_OK", ("localhost.", 22): "POLICY_DENIED",
        ("localhost", 23): "POLICY_DENIED", ("::1", 2222): "OPEN_OK", ("[::1]", 2222): "OPEN_OK",
        ("::1", 22): "POLICY_DENIED", ("127.0.0.1", 22): "POLICY_DENIED",
    }, got
    await w.close()


async def test_ssh_backend_defaults_to_loopback_targets_only(make_server: Any) -> None:
    """No allow-list with the SSH backend: only loopback targets on port 22 get past policy
    (the auth has no ``type``, so the open fails right after the policy, without connecting)."""
    srv: Server = await make_server(backend="ssh")
    w = await _wire(srv.url)
    await w.hello(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1", True)))
    denied = ["10.0.0.1", "example.com", "0.0.0.0", "127.0.0.1.", "localhost.", "169.254.169.254", "[::]", ""]
    allowed = ["127.0.0.1", "localhost", "::1", "127.9.9.9"]
    for i, host in enumerate(denied + allowed):
        await w.send(Open(i + 1, Target(host, 22), User("u", {"password": "x"}), None))
        await asyncio.sleep(0.025)
    codes: dict[str, str] = {}
    while len(codes) < len(denied) + len(allowed):
        m = await w.expect(lambda m: isinstance(m, (OpenOk, OpenErr)), "open replies", timeout=30)
        assert isinstance(m, OpenErr), m
        codes[(denied + allowed)[m.id - 1]] = m.code
    assert all(codes[h] == "POLICY_DENIED" for h in denied), codes
    assert all(codes[h] != "POLICY_DENIED" for h in allowed), codes
    await w.close()


# ------------------------------------------------------------------ resume tokens

TOKEN_RE = re.compile(r"^([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")


async def test_resume_tokens_are_256_bit_csprng_and_unique(make_server: Any) -> None:
    default = inspect.signature(SessionRegistry.__init__).parameters["random_bytes"].default
    assert default is secrets.token_bytes
    srv: Server = await make_server()
    seen: set[str] = set()
    sids: set[str] = set()
    for _ in range(40):
        w = await _wire(srv.url)
        ok = await w.hello(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1", True)))
        assert ok.resume is not None and ok.resume.ttl_ms == 60_000
        m = TOKEN_RE.match(ok.resume.token)
        assert m, ok.resume.token
        secret = m.group(2)
        assert len(secret) * 6 >= 256  # 43 base64url chars = 256 bits (>= 128 required)
        seen.add(secret)
        sids.add(m.group(1))
        await w.close()
    assert len(seen) == 40 and len(sids) == 40


async def _alice_session(srv: Server) -> tuple[str, str]:
    w = await _wire(srv.url)
    ok = await w.hello(Hello(auth=Auth("bearer", "alice"), caps=HelloCaps("nimbus.v1", True)))
    await w.send(Open(1, Target("127.0.0.1", 22), User("u"), None, "exec cat"))
    opened = await w.expect_ctl(OpenOk, 1)
    assert isinstance(opened, OpenOk) and opened.resume_key and ok.resume
    w.abort()  # a drop: the session is retained
    return ok.resume.token, opened.resume_key


async def _try_resume(srv: Server, token: str, key: str, who: str = "alice") -> int | str:
    w = await _wire(srv.url)
    await w.send(Hello(auth=Auth("bearer", who), caps=HelloCaps("nimbus.v1", True),
                       resume=ResumeRequest(token, (ResumeChannel(1, key, 0),))))
    try:
        ok = await w.expect_hello_ok()
    except ServerClosed as exc:
        return exc.code
    assert ok.caps.resumed is not None
    await w.send(Flow(1, 1024))  # confirms the new token: the one used is spent
    await w.roundtrip()
    w.abort()
    return "resumed"


async def _who(scheme: str, token: str | None) -> str | None:
    return token if token in ("alice", "bob") else None


async def test_resume_is_bound_to_the_principal_and_single_use(make_server: Any) -> None:
    srv: Server = await make_server(auth_hook=_who)
    token, key = await _alice_session(srv)
    assert await _try_resume(srv, token, key, who="bob") == 4011  # another principal
    assert await _try_resume(srv, token, key) == "resumed"  # alice still can
    assert await _try_resume(srv, token, key) == 4011  # single use


async def test_resume_works_within_the_window_and_not_after(make_server: Any) -> None:
    srv: Server = await make_server(auth_hook=_who, config=ServerConfig(retention=1.0))
    token, key = await _alice_session(srv)
    assert await _try_resume(srv, token, key) == "resumed"  # well within 1 s
    srv2: Server = await make_server(auth_hook=_who, config=ServerConfig(retention=0.2))
    token, key = await _alice_session(srv2)
    assert await wait_until(lambda: len(srv2.registry) == 0, timeout=5)
    assert await _try_resume(srv2, token, key) == 4011


@pytest.mark.parametrize("wrong", [4, 5])
async def test_five_wrong_secrets_revoke_the_session_token(make_server: Any, wrong: int) -> None:
    srv: Server = await make_server(auth_hook=_who)
    token, key = await _alice_session(srv)
    sid = token.split(".")[0]
    for _ in range(wrong):
        assert await _try_resume(srv, f"{sid}.{secrets.token_urlsafe(32)}", key) == 4011
    assert await _try_resume(srv, token, key) == (4011 if wrong >= 5 else "resumed")


async def test_failed_resumes_are_rate_limited_per_client_ip(make_server: Any) -> None:
    """20 failed resumes from one IP within a minute: further resume attempts get 4004, fresh sessions still work."""
    srv: Server = await make_server(auth_hook=_who)
    token, key = await _alice_session(srv)
    for _ in range(20):  # guesses at unknown sessions: no per-session revocation can stop these
        guess = f"{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"
        assert await _try_resume(srv, guess, key) == 4011
    assert await _try_resume(srv, f"{secrets.token_hex(8)}.x", key) == 4004
    assert await _try_resume(srv, token, key) == 4004  # refused before the lookup: no oracle left
    w = await _wire(srv.url)  # a new session (no resume) is not affected
    await w.hello(Hello(auth=Auth("bearer", "alice"), caps=HelloCaps("nimbus.v1", True)))
    await w.close()


async def test_resume_failure_budget_frees_up_after_its_window(make_server: Any) -> None:
    srv: Server = await make_server(auth_hook=_who, resume_failure_limit=3, resume_failure_window=0.5)
    token, key = await _alice_session(srv)
    for _ in range(3):
        assert await _try_resume(srv, f"{secrets.token_hex(8)}.x", key) == 4011
    assert await _try_resume(srv, token, key) == 4004
    deadline = time.monotonic() + 5
    result: int | str = 4004
    while result == 4004 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        result = await _try_resume(srv, token, key)
    assert result == "resumed"


# ------------------------------------------------------------------ logs


async def test_json_debug_logs_hold_no_payload_token_or_key() -> None:
    marker_in = "PAYLOAD-IN-" + secrets.token_hex(6)
    marker_out = "PAYLOAD-OUT-" + secrets.token_hex(6)
    bearer = "BEARER-" + secrets.token_hex(12)
    wrong = bearer[:-2] + "zz"
    password = "PASSWORD-" + secrets.token_hex(6)
    async with ServerProcess(["--log-format", "json", "--verbose", "--token", bearer]) as sp:
        secrets_seen: list[str] = []
        # a refused token
        w = await _wire(sp.url)
        await w.send(Hello(auth=Auth("bearer", wrong), caps=HelloCaps("nimbus.v1", True)))
        assert await w.expect_close(ANY_CODE, "wrong token") == 4003
        # a session: open with a password, traffic both ways
        w = await _wire(sp.url)
        ok = await w.hello(Hello(auth=Auth("bearer", bearer), caps=HelloCaps("nimbus.v1", True)))
        assert ok.resume is not None
        secrets_seen += [ok.resume.token, ok.resume.token.split(".")[1]]
        await w.send(Open(1, Target("127.0.0.1", 22), User("u", {"password": password}), None,
                          f"printf %s {marker_out}; exec cat"))
        opened = await w.expect_ctl(OpenOk, 1)
        assert isinstance(opened, OpenOk) and opened.resume_key
        secrets_seen.append(opened.resume_key)
        w.auto_credit(1, 65536)
        await w.top_up(1)
        await w.until_output(1, marker_out.encode(), "generated output")
        await w.send_input(1, marker_in.encode())
        await w.until_output(1, marker_in.encode(), "echoed input")
        await w.send_frame(b"\x01\0\0\0\x09" + marker_in.encode())  # data for an unknown channel
        w.abort()
        # a good resume, then errors
        r = await _wire(sp.url)
        ok2 = await r.hello(Hello(auth=Auth("bearer", bearer), caps=HelloCaps("nimbus.v1", True),
                                  resume=ResumeRequest(ok.resume.token, (ResumeChannel(1, opened.resume_key, 0),))))
        assert ok2.resume is not None and ok2.caps.resumed is not None
        secrets_seen += [ok2.resume.token]
        r.chan(1).sent = len(marker_in)  # input sent on the old connection, acknowledged on this one
        await r.grant(1, 65536)
        await r.send_frame('{"t":"ping","ts":"' + marker_in + '"}')  # a protocol error carrying the marker
        assert await r.expect_close(ANY_CODE, "bad ping") == 4014
        bad = await _wire(sp.url)
        await bad.send(Hello(auth=Auth("bearer", bearer), caps=HelloCaps("nimbus.v1", True),
                             resume=ResumeRequest(ok2.resume.token[:-3] + "abc", ())))
        assert await bad.expect_close(ANY_CODE, "bad resume") == 4011
        await asyncio.sleep(0.2)  # fixed window: let the server write its last log lines
    text = "\n".join(sp.lines)
    records = [json.loads(line) for line in sp.lines if line.startswith("{")]
    assert len(records) == sum(1 for line in sp.lines if line.strip() and not line.startswith("nimbus-ws serving")), (
        "every log line is one JSON object"
    )
    events = {r.get("event") for r in records}
    assert {"connect", "auth", "open", "resume_accepted", "resume_rejected", "protocol_error", "close"} <= events, events
    for needle in (marker_in, marker_out, bearer, wrong, password, *secrets_seen):
        assert needle not in text, f"{needle[:12]}... found in the server log"
