"""The conformance kit against the reference server: every profile passes, in time.

The kit runs in-process (``run_kit``) against a reference server started in
the same event loop on 127.0.0.1:0 with the PTY backend; the CLI runs as a
subprocess for the exit status, the output format and the JSON report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from kithelpers import run_cli
from nimbus_websocket.node_runtime.conformance.cases import CASES
from nimbus_websocket.node_runtime.conformance.context import PROFILES, KitOptions
from nimbus_websocket.node_runtime.conformance.runner import Report, format_result, run_kit
from nimbus_websocket.node_runtime.server import Server

pytestmark = pytest.mark.timeout(120)

MakeServer = Callable[..., Awaitable[Server]]
LINE = re.compile(r"^(PASS|FAIL|SKIP) \S+/\S+ — .+$")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed, (\d+) skipped$")


def _failures(report: Report) -> str:
    return "\n".join(format_result(r) for r in report.results if r.status == "FAIL")


@pytest.mark.parametrize("profile", PROFILES)
async def test_reference_passes_every_case(reference: MakeServer, profile: str) -> None:
    srv = await reference()
    opts = KitOptions(url=srv.url, profiles=(profile,), denied_target=("192.0.2.1", 22))
    report = await run_kit(opts)
    assert report.failed == 0, _failures(report)
    skipped = {r.case for r in report.results if r.status == "SKIP"}
    # Only the token cases skip: the server accepts anonymous loopback clients.
    assert skipped == {"handshake.bad_token", "handshake.no_token"}
    ran = {r.case for r in report.results}
    assert ran == {c.name for c in CASES if c.profiles is None or profile in c.profiles}
    for name in ("resume.same_shell", "ack.exactly_once", "credit.never_beyond", "error.control_flood"):
        r = report.result(f"{profile}/{name}")
        assert r is not None and r.status == "PASS", r
    assert report.seconds < 15, f"matrix for {profile} took {report.seconds:.1f} s"


async def test_reference_requiring_a_token(reference: MakeServer) -> None:
    srv = await reference(tokens=("s3cret-token",))
    opts = KitOptions(url=srv.url, token="s3cret-token", only=("handshake.*", "open.ok"))
    report = await run_kit(opts)
    assert report.failed == 0, _failures(report)
    for name in ("handshake.bad_token", "handshake.no_token"):
        r = report.result(f"nimbus.v1/{name}")
        assert r is not None and r.status == "PASS" and "4003" in r.reason, r


async def test_wrong_token_is_a_probe_failure(reference: MakeServer) -> None:
    srv = await reference(tokens=("s3cret-token",))
    report = await run_kit(KitOptions(url=srv.url, token="not-it", profiles=PROFILES))
    # One FAIL per profile, nothing else run: the handshake itself is refused.
    assert [(r.case, r.status) for r in report.results] == [("handshake.probe", "FAIL")] * 3
    assert "4003" in report.results[0].reason


async def test_cli_output_exit_status_and_report(reference: MakeServer, tmp_path: Path) -> None:
    srv = await reference()
    out_file = tmp_path / "report.json"
    rc, out = await run_cli(
        srv.url, "--profile", "lenpfx.v1", "--only", "handshake.*", "--only", "close.*",
        "--only", "credit.*", "--report", str(out_file),
    )
    assert rc == 0, out
    lines = out.strip().splitlines()
    cases = [ln for ln in lines if not ln.startswith("#")][:-1]
    assert cases and all(LINE.match(ln) for ln in cases), out
    m = SUMMARY.match(lines[-1])
    assert m is not None, lines[-1]
    assert int(m.group(2)) == 0 and int(m.group(1)) + int(m.group(3)) == len(cases)
    report = json.loads(out_file.read_text())
    assert report["summary"] == {"passed": int(m.group(1)), "failed": 0, "skipped": int(m.group(3))}
    assert report["servers"]["lenpfx.v1"]["status"] == "tested"
    assert {r["name"] for r in report["results"]} == {ln.split()[1] for ln in cases}
    assert all(set(r) >= {"name", "profile", "case", "status", "reason", "seconds", "frames"} for r in report["results"])


async def test_cli_list() -> None:
    rc, out = await run_cli("--list", "--profile", "all")
    assert rc == 0
    assert "nimbus.v1/credit.never_beyond (slow)" in out
    assert "lenpfx.v1/error.length_mismatch" in out and "nimbus.v1/error.length_mismatch" not in out
    assert "bulk=head -c {n} /dev/zero" in out


async def test_cli_unreachable_server_fails_fast() -> None:
    rc, out = await run_cli("ws://127.0.0.1:9/ws/ssh", "--timeout", "2", timeout=30)
    assert rc == 1
    assert "FAIL nimbus.v1/handshake.probe — handshake failed" in out
    assert out.strip().splitlines()[-1] == "0 passed, 1 failed, 0 skipped"
