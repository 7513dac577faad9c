"""Deliberately broken servers are caught: the right case FAILs and the kit exits 1.

* a server that sends output without credit (a core patch on the reference
  server: channels start with 1 MiB of credit instead of 0);
* a server that answers an unknown message type with nothing (a subclass of
  the example server's Connection, json-base64 profile, that ignores 4009
  errors);
* a server that closes malformed frames with the wrong code (a subclass of
  the example server's Connection, lenpfx profile, that closes 1008 instead
  of 4014);
* a server that resumes an exactly-once channel from the wrong offset (a
  core patch: it ignores the client's ``rx`` and continues after what it sent).

The servers run in this event loop; the kit runs as a CLI subprocess.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kithelpers import load_example, run_cli
from nimbus_websocket.core import ResumeRequest
from nimbus_websocket.core.server import ServerSession
from nimbus_websocket.node_runtime.server import Server

pytestmark = pytest.mark.timeout(90)


def _status(out: str, name: str) -> str:
    m = re.search(rf"^(PASS|FAIL|SKIP) {re.escape(name)} — (.*)$", out, re.M)
    assert m is not None, f"{name} missing from:\n{out}"
    return f"{m.group(1)} {m.group(2)}"


async def test_server_ignoring_credit(reference: Callable[..., Awaitable[Server]], monkeypatch: pytest.MonkeyPatch) -> None:
    orig = ServerSession.channel_opened

    def opened_with_credit(self: ServerSession, cid: int, file_size: int | None = None) -> None:
        orig(self, cid, file_size)
        ch = self.channels.get(cid)
        if ch is not None:
            ch.credit += 1 << 20  # the bug: initial credit is not 0
            self.flush(ch)

    monkeypatch.setattr(ServerSession, "channel_opened", opened_with_credit)
    srv = await reference()
    rc, out = await run_cli(srv.url, "--only", "credit.*", "--only", "handshake.hello_ok", "--timeout", "2")
    assert rc == 1, out
    assert _status(out, "nimbus.v1/handshake.hello_ok").startswith("PASS")
    for name in ("credit.none_without_grant", "credit.never_beyond"):
        status = _status(out, f"nimbus.v1/{name}")
        assert status.startswith("FAIL") and "credit outstanding" in status, status
    # The failure shows the frames involved.
    assert re.search(r"^\s+\S+ c1 < data stdout#1 ", out, re.M), out
    assert re.search(r"^\d+ passed, [1-9]\d* failed, \d+ skipped$", out, re.M)


async def test_server_silent_on_unknown_type(in_process_example: Callable[..., Awaitable[str]]) -> None:
    mod = load_example()

    class Silent(mod.Connection):  # type: ignore[name-defined,misc]
        def fail(self, code: int, reason: str) -> None:
            if code == mod.UNSUPPORTED_MESSAGE:
                return  # the bug: an unknown type is dropped, the connection stays open
            super().fail(code, reason)

    url = await in_process_example(mod, profile="json-base64.v1", connection_class=Silent)
    rc, out = await run_cli(url, "--profile", "json-base64.v1", "--only", "error.*", "--timeout", "1.5", "--skip-slow")
    assert rc == 1, out
    status = _status(out, "json-base64.v1/error.unknown_type")
    assert status.startswith("FAIL") and "no close within" in status and "4009" in status, status
    assert _status(out, "json-base64.v1/error.bad_json").startswith("PASS")
    assert "conformance_bogus" in out  # the offending frame is shown
    assert re.search(r"^\d+ passed, 1 failed, \d+ skipped$", out, re.M), out


async def test_server_wrong_code_for_malformed_frames(in_process_example: Callable[..., Awaitable[str]]) -> None:
    mod = load_example()

    class WrongCode(mod.Connection):  # type: ignore[name-defined,misc]
        def fail(self, code: int, reason: str) -> None:
            # the bug: malformed frames close with 1008 instead of 4014
            super().fail(1008 if code == mod.MALFORMED_FRAME else code, reason)

    url = await in_process_example(mod, profile="lenpfx.v1", connection_class=WrongCode)
    rc, out = await run_cli(url, "--profile", "lenpfx.v1", "--only", "error.*", "--only", "data.echo", "--timeout", "2")
    assert rc == 1, out
    for name in ("truncated_frame", "reserved_stream", "stderr_from_client", "bad_json", "length_mismatch", "missing_field"):
        status = _status(out, f"lenpfx.v1/error.{name}")
        assert status.startswith("FAIL") and "closed with 1008" in status and "4014" in status, status
    for name in ("data.echo", "error.unknown_type", "error.duplicate_id", "error.credit_overflow"):
        assert _status(out, f"lenpfx.v1/{name}").startswith("PASS")


async def test_server_resuming_from_the_wrong_offset(
    reference: Callable[..., Awaitable[Server]], monkeypatch: pytest.MonkeyPatch
) -> None:
    orig = ServerSession.rebind

    def rebind_after_sent(self: ServerSession, req: ResumeRequest) -> Any:
        # The bug: replay from what was sent, not from the client's rx (bytes in flight are lost).
        wrong = tuple(
            dataclasses.replace(c, rx=self.channels[c.id].sent) if c.id in self.channels else c
            for c in req.channels or ()
        )
        return orig(self, dataclasses.replace(req, channels=wrong))

    monkeypatch.setattr(ServerSession, "rebind", rebind_after_sent)
    srv = await reference()
    rc, out = await run_cli(srv.url, "--profile", "json-base64.v1", "--only", "ack.*", "--only", "resume.same_shell")
    assert rc == 1, out
    status = _status(out, "json-base64.v1/ack.exactly_once")
    assert status.startswith("FAIL") and "gap" in status, status
    assert _status(out, "json-base64.v1/ack.input_ack").startswith("PASS")
    assert _status(out, "json-base64.v1/resume.same_shell").startswith("PASS")
