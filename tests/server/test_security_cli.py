"""Issue 13, item 17: the ``nimbus-ws`` command line, run as a subprocess.

* no prefix matching anywhere (``--tok`` is not ``--token-env``), and no usage
  error echoes a value (it may be a secret typed in the wrong place);
* ``serve`` reads tokens from ``--token-file`` and ``$NIMBUS_TOKEN`` (not in
  ``ps``); ``--token`` still works;
* ``connect URL?token=T`` sends ``T`` as the bearer token and strips it from
  the request line.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.node_runtime.cli import build_parser
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server
from reliability.rel_util import ServerProcess

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cret-tok-" + secrets.token_hex(4)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimbus_websocket", *args],
        capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["connect", "ws://127.0.0.1:9/ws/ssh", "--tok", SECRET],
        ["connect", "ws://127.0.0.1:9/ws/ssh", f"--tok={SECRET}"],
        ["connect", "ws://127.0.0.1:9/ws/ssh", "--token", SECRET],
        ["connect", "ws://127.0.0.1:9/ws/ssh", "--pass", SECRET],
        ["serve", "--tok", SECRET],
        ["serve", "--token-f", SECRET],
        ["serve", "--port", SECRET],  # a value where an int belongs: not echoed either
        ["serve", "--backend", SECRET],
        ["conformance", "ws://127.0.0.1:9/ws/ssh", "--tok", SECRET],
        ["--tok", SECRET, "serve"],
    ],
)
def test_abbreviations_fail_and_never_echo_the_value(argv: list[str]) -> None:
    r = cli(*argv)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "usage:" in r.stderr
    assert SECRET not in r.stderr + r.stdout, r.stderr


def test_every_parser_has_abbreviations_off() -> None:
    parser = build_parser()
    assert parser.allow_abbrev is False
    subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert subs and subs[0].choices
    for name, sub in subs[0].choices.items():  # type: ignore[union-attr]
        assert sub.allow_abbrev is False, name


def test_token_env_naming_a_missing_variable_does_not_echo_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != SECRET}
    r = cli("connect", "ws://127.0.0.1:9/ws/ssh", "--token-env", SECRET, "-c", "true", env=env)
    assert r.returncode == 2 and "--token-env" in r.stderr
    assert SECRET not in r.stderr


# ------------------------------------------------------------- serve tokens


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


async def _auth_code(url: str, token: str | None) -> int:
    """0 when ``hello`` is accepted, else the close code."""
    c = await WireClient.connect(url)
    try:
        await c.hello(token)
    except Exception:
        return await c.expect_close()
    await c.close()
    return 0


async def test_token_file_keeps_tokens_out_of_ps(tmp_path: Path) -> None:
    one, two = "file-tok-" + secrets.token_hex(8), "file-tok-" + secrets.token_hex(8)
    f = tmp_path / "tokens"
    f.write_text(f"# operators\n\n{one}\n   \n  {two}  \n# {SECRET}\n")
    async with ServerProcess(["--token-file", str(f)]) as sp:
        cmd = _cmdline(sp.pid)
        assert one not in cmd and two not in cmd
        assert await _auth_code(sp.url, one) == 0
        assert await _auth_code(sp.url, two) == 0
        assert await _auth_code(sp.url, None) == 4003
        assert await _auth_code(sp.url, f"# {SECRET}") == 4003  # comments are not tokens
        assert await _auth_code(sp.url, SECRET) == 4003


async def test_nimbus_token_environment_variable(tmp_path: Path) -> None:
    tok = "env-tok-" + secrets.token_hex(8)
    async with ServerProcess([], env={**os.environ, "NIMBUS_TOKEN": tok}) as sp:
        assert tok not in _cmdline(sp.pid)
        assert await _auth_code(sp.url, tok) == 0
        assert await _auth_code(sp.url, None) == 4003


async def test_token_flag_still_works_with_a_warning() -> None:
    tok = "flag-tok-" + secrets.token_hex(8)
    async with ServerProcess(["--token", tok]) as sp:
        assert await _auth_code(sp.url, tok) == 0
        assert await _auth_code(sp.url, "other") == 4003
    assert any("visible to other local users" in line for line in sp.lines)
    assert not any(tok in line for line in sp.lines)


@pytest.mark.parametrize("content", ["", "# only a comment\n\n"])
def test_a_token_file_without_tokens_refuses_to_start(tmp_path: Path, content: str) -> None:
    f = tmp_path / "tokens"
    f.write_text(content)
    r = cli("serve", "--port", "0", "--token-file", str(f))
    assert r.returncode != 0 and "holds no token" in r.stderr


def test_unreadable_token_file_and_empty_env_refuse_to_start(tmp_path: Path) -> None:
    r = cli("serve", "--port", "0", "--token-file", str(tmp_path / "missing"))
    assert r.returncode != 0 and "cannot read --token-file" in r.stderr
    r = cli("serve", "--port", "0", env={**os.environ, "NIMBUS_TOKEN": "  "})
    assert r.returncode != 0 and "NIMBUS_TOKEN is set but empty" in r.stderr


# ------------------------------------------------------- connect ?token=


async def _run_connect(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nimbus_websocket", "connect", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_url_token_is_the_bearer_token_and_never_sent_in_the_url(make_server: Any) -> None:
    tok = "url-tok-" + secrets.token_hex(8)
    srv: Server = await make_server(tokens=(tok,))
    seen: list[str] = []
    route = srv._route

    async def spy(ws: Any, request: Any) -> Any:
        seen.append(request.path)
        return await route(ws, request)

    srv._route = spy  # type: ignore[method-assign]
    code, out, err = await _run_connect(f"{srv.url}?x=1&token={tok}", "-T", "-c", "echo url-$((6*7))")
    assert code == 0, err
    assert "url-42" in out
    assert seen == ["/ws/ssh?x=1"], seen
    assert tok not in err
    # twice, empty, or together with --token-env: a clear one-line refusal, nothing sent
    for args in ([f"{srv.url}?token={tok}&token=b"], [f"{srv.url}?token="]):
        code, _, err = await _run_connect(*args, "-T", "-c", "true")
        assert code == 2 and "at most one non-empty ?token=" in err and tok not in err
    code, _, err = await _run_connect(f"{srv.url}?token={tok}", "--token-env", "PATH", "-T", "-c", "true")
    assert code == 2 and "give the bearer token once" in err
    assert len(seen) == 1
    # and a wrong URL token fails like a wrong --token-env (without echoing it)
    code, _, err = await _run_connect(f"{srv.url}?token=wrong-{tok}", "-T", "-c", "true")
    assert code == 255 and tok not in err
