"""Issue 14, item 6: errors a user understands, against the real server and CLI.

* ``nimbus-ws connect`` to a path the server does not serve prints one line
  naming the path it serves (the 404 to the upgrade says it, ``--base-path``
  included), exit status 255, no traceback;
* a missing and a wrong bearer token both close 4003 ``AUTH_FAILED`` but with
  distinct reasons (``token required`` / ``token not accepted``), which the
  CLI words differently; every refused token gets the same reason, however
  close it was;
* the CLI's table (``node_runtime/client/messages.py``) and the page's
  (``demo_site/messages.mjs``, run in Node) hold the same keys and sentences.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.core.errors import RETRYABLE_CLOSE_CODES, CloseCode, CloseError
from nimbus_websocket.node_runtime.client import messages
from nimbus_websocket.node_runtime.client.api import connect
from nimbus_websocket.node_runtime.client.websockets_impl import WebsocketsImpl
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.policy import (
    REASON_NOT_OWN_USER,
    REASON_TOKEN_NOT_ACCEPTED,
    REASON_TOKEN_REQUIRED,
    AuthPolicy,
)
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "nimbus_websocket", "connect"]
TOKEN = "s3cret-token-for-the-test"


async def run_cli(*args: str, timeout: float = 60) -> tuple[int, str]:
    """``nimbus-ws connect ARGS --command true``: (exit status, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, "--command", "true",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, err.decode("utf-8", "replace")


def one_line(rc: int, err: str) -> str:
    """The CLI failed with 255 and said so in exactly one line, without a traceback."""
    assert "Traceback" not in err, err
    assert rc == 255, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


async def refusal(url: str, token: str | None) -> CloseError:
    """The ``CloseError`` of a host-client connect with ``token`` (or none)."""
    auth = {"scheme": "bearer", "token": token} if token is not None else {"scheme": "none"}
    with pytest.raises(CloseError) as ei:
        conn = await connect(url, websocket_impl=WebsocketsImpl, auth=lambda: auth)
        await conn.close()
    return ei.value


# ---------------------------------------------------------------- wrong path


async def test_connect_to_a_wrong_path_names_the_served_path(make_server: Callable[..., Awaitable[Server]]) -> None:
    srv = await make_server()
    line = one_line(*await run_cli(f"ws://127.0.0.1:{srv.port}/wrong"))
    assert "/wrong" in line and "the server serves /ws/ssh" in line, line
    assert f"ws://127.0.0.1:{srv.port}/ws/ssh" in line and "404" in line, line


async def test_wrong_path_under_a_base_path_names_the_prefixed_path(
    make_server: Callable[..., Awaitable[Server]],
) -> None:
    srv = await make_server(base_path="/term/")
    for path in ("/ws/ssh", "/term/wrong"):  # outside the prefix, and inside it
        line = one_line(*await run_cli(f"ws://127.0.0.1:{srv.port}{path}"))
        assert "the server serves /term/ws/ssh" in line, line


async def test_the_404_body_of_an_upgrade_names_the_endpoint(make_server: Callable[..., Awaitable[Server]]) -> None:
    srv = await make_server(base_path="/term/")
    with pytest.raises(InvalidStatus) as ei:
        async with ws_connect(f"ws://127.0.0.1:{srv.port}/term/nope", open_timeout=10):
            pass
    assert ei.value.response.status_code == 404
    assert ei.value.response.body == b"Not found. The WebSocket endpoint is /term/ws/ssh\n"
    assert messages.served_path(ei.value.response.body) == "/term/ws/ssh"


async def test_a_closed_port_says_the_server_could_not_be_reached(unused_tcp_port: int) -> None:
    line = one_line(*await run_cli(f"ws://127.0.0.1:{unused_tcp_port}/ws/ssh"))
    assert f"Could not reach the server at 127.0.0.1:{unused_tcp_port}" in line and "1006 CONNECT_FAILED" in line, line


# ------------------------------------------------------- missing / wrong token


async def test_missing_and_wrong_token_close_with_distinct_reasons(
    make_server: Callable[..., Awaitable[Server]],
) -> None:
    srv = await make_server(tokens=(TOKEN,))
    missing = await refusal(srv.url, None)
    assert (missing.ws_code, missing.message) == (CloseCode.AUTH_FAILED, REASON_TOKEN_REQUIRED)
    # every refused token gets one reason: a near miss is told nothing more than a stranger
    for wrong in ("x", TOKEN[:-1], TOKEN + "x", TOKEN[:-1] + "X"):
        exc = await refusal(srv.url, wrong)
        assert (exc.ws_code, exc.message) == (CloseCode.AUTH_FAILED, REASON_TOKEN_NOT_ACCEPTED), wrong
    ok = await connect(srv.url, websocket_impl=WebsocketsImpl, auth=lambda: {"scheme": "bearer", "token": TOKEN})
    await ok.close()


async def test_cli_tells_missing_and_wrong_token_apart(make_server: Callable[..., Awaitable[Server]]) -> None:
    srv = await make_server(tokens=(TOKEN,))
    missing = one_line(*await run_cli(srv.url))
    wrong = one_line(*await run_cli(srv.url + "?token=not-it"))
    assert "The server needs a token" in missing and "4003 AUTH_FAILED: token required" in missing, missing
    assert "The token was not accepted" in wrong and "4003 AUTH_FAILED: token not accepted" in wrong, wrong
    assert "not-it" not in wrong  # the token is never echoed


async def test_a_hook_refusal_is_worded_by_what_came() -> None:
    pol = AuthPolicy(hook=lambda scheme, token: None)
    assert await pol.authenticate("none", None) is None
    assert pol.refusal_reason("none", None) == REASON_TOKEN_REQUIRED
    assert pol.refusal_reason("bearer", "") == REASON_TOKEN_REQUIRED
    assert pol.refusal_reason("bearer", "abc") == REASON_TOKEN_NOT_ACCEPTED
    tokens = AuthPolicy(tokens=(TOKEN,))
    assert tokens.refusal_reason("none", None) == REASON_TOKEN_REQUIRED
    assert tokens.refusal_reason("bearer", TOKEN[:-1]) == REASON_TOKEN_NOT_ACCEPTED
    anonymous = AuthPolicy(uid=1234)
    assert await anonymous.authenticate("none", None, peer_uid=4321) is None
    assert anonymous.refusal_reason("none", None) == REASON_NOT_OWN_USER


# ------------------------------------------------------------- the two tables


def _page_tables() -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node missing")
    script = (
        "import(process.argv[1]).then((m) => process.stdout.write(JSON.stringify("
        "{messages: m.MESSAGES, auth: m.AUTH_REASONS, required: m.userMessage('AUTH_FAILED', 'token required'),"
        " unknown: m.userMessage('NO_SUCH_CODE', ''), detail: m.detailLine(4003, 'AUTH_FAILED', 'a\\x1b[2Jb'),"
        " connect: JSON.parse(process.argv[2]).map((c) => m.userMessage('CONNECT_FAILED', 'x', 'h:1', c))})))"
    )
    r = subprocess.run(
        [node, "-e", script, (ROOT / "demo_site" / "messages.mjs").as_uri(), json.dumps(CONNECT_CODES)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    result: dict[str, Any] = json.loads(r.stdout)
    return result


#: The codes a first connection can fail with (the client reports CONNECT_FAILED).
CONNECT_CODES = sorted(RETRYABLE_CLOSE_CODES)


def test_page_and_cli_tables_hold_the_same_codes_and_sentences() -> None:
    page = _page_tables()
    # a server that closed the first connection with a code (4010 full...) is worded by it, alike
    assert page["connect"] == [messages.user_message("CONNECT_FAILED", "x", host="h:1", code=c) for c in CONNECT_CODES]
    assert messages.user_message("CONNECT_FAILED", "x", code=CloseCode.SERVER_OVERLOAD) == "The server is full; try again later"
    assert page["messages"] == dict(messages.MESSAGES)
    assert page["auth"] == dict(messages.AUTH_REASONS)
    assert page["required"] == messages.user_message("AUTH_FAILED", "token required") == "The server needs a token"
    assert page["unknown"] is None and messages.user_message("NO_SUCH_CODE") is None
    assert page["detail"] == messages.detail_line(4003, "AUTH_FAILED", "a\x1b[2Jb") == "4003 AUTH_FAILED: a\\x1b[2Jb"


def test_the_tables_cover_the_codes_a_user_meets() -> None:
    for reason in (REASON_TOKEN_REQUIRED, REASON_TOKEN_NOT_ACCEPTED, REASON_NOT_OWN_USER):
        assert reason in messages.AUTH_REASONS
    for name in (
        "CONNECT_FAILED", "AUTH_FAILED", "RESUME_FAILED", "SERVER_OVERLOAD", "POLICY_VIOLATION",
        "TIMEOUT", "GOING_AWAY", "RETRIES_EXHAUSTED", "NOT_FOUND", "ORIGIN_REFUSED",
    ):
        assert name in messages.MESSAGES, name
    assert messages.user_message("CONNECT_FAILED", "connect failed: ... HTTP 403", host="h:1") == (
        messages.MESSAGES["ORIGIN_REFUSED"]
    )
    assert messages.user_message("CONNECT_FAILED", "connect failed: [Errno 111]", host="h:1") == (
        "Could not reach the server at h:1 — is it running?"
    )


async def test_a_shared_principal_key_maps_a_token_alike_on_every_server() -> None:
    # Two servers draw their own keys: a token is a different principal on each.
    a, b = AuthPolicy(tokens=(TOKEN,)), AuthPolicy(tokens=(TOKEN,))
    assert await a.authenticate("bearer", TOKEN) != await b.authenticate("bearer", TOKEN)
    # A cluster gives both the key derived from its secret: the same principal.
    for pol in (a, b):
        pol.share_principal_key(b"k" * 32)
    assert await a.authenticate("bearer", TOKEN) == await b.authenticate("bearer", TOKEN)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        a.share_principal_key(b"short")
