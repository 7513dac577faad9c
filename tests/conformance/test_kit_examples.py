"""The minimal example server (a standalone script) passes the kit for each profile.

It runs as a subprocess on a free port, with ``--profile``.  They offer no resume, so the
resume and ack cases must show as SKIP, never FAIL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from kithelpers import load_example
from nimbus_websocket.node_runtime.conformance.context import PROFILES, KitOptions
from nimbus_websocket.node_runtime.conformance.runner import format_result, run_kit

pytestmark = pytest.mark.timeout(120)

StartExample = Callable[..., Awaitable[str]]
EXAMPLE_PROFILES = ["json-base64.v1", "lenpfx.v1"]


@pytest.mark.parametrize("profile", EXAMPLE_PROFILES)
async def test_example_passes_its_profile(example_process: StartExample, profile: str) -> None:
    url = await example_process(profile)
    report = await run_kit(KitOptions(url=url, profiles=(profile,), denied_target=("192.0.2.1", 22)))
    assert report.failed == 0, "\n".join(format_result(r) for r in report.results if r.status == "FAIL")
    skipped = {r.case for r in report.results if r.status == "SKIP"}
    resume_cases = {r.case for r in report.results if r.case.startswith(("resume.", "ack."))}
    assert resume_cases and resume_cases <= skipped
    # The examples implement no extension: the file and share cases skip (no caps.files, no caps.share).
    file_cases = {r.case for r in report.results if r.case.startswith(("files.", "share."))}
    assert file_cases and file_cases <= skipped
    assert skipped - resume_cases - file_cases == {"handshake.bad_token", "handshake.no_token"}
    for r in report.results:
        if r.case in resume_cases:
            assert "no resume token" in r.reason
    assert report.seconds < 15


@pytest.mark.parametrize("profile", EXAMPLE_PROFILES)
async def test_example_with_token(example_process: StartExample, profile: str) -> None:
    url = await example_process(profile, "--token", "tok-123")
    report = await run_kit(KitOptions(url=url, profiles=(profile,), token="tok-123", only=("handshake.*", "data.echo")))
    assert report.failed == 0, "\n".join(format_result(r) for r in report.results if r.status == "FAIL")
    for name in ("handshake.bad_token", "handshake.no_token"):
        r = report.result(f"{profile}/{name}")
        assert r is not None and r.status == "PASS", r


async def test_all_profiles_skips_what_the_server_does_not_offer(example_process: StartExample) -> None:
    url = await example_process("lenpfx.v1")
    report = await run_kit(KitOptions(url=url, profiles=PROFILES, only=("handshake.hello_ok",)))
    got = [(r.name, r.status) for r in report.results]
    assert got == [
        ("nimbus.v1/*", "SKIP"),
        ("json-base64.v1/*", "SKIP"),
        ("lenpfx.v1/handshake.hello_ok", "PASS"),
    ]
    assert report.servers["nimbus.v1"]["status"] == "unsupported"


async def test_explicit_unsupported_profile_fails(example_process: StartExample) -> None:
    url = await example_process("json-base64.v1")
    report = await run_kit(KitOptions(url=url, profiles=("lenpfx.v1",)))
    assert [(r.name, r.status) for r in report.results] == [("lenpfx.v1/handshake.probe", "FAIL")]


async def test_default_profile_is_json_base64(in_process_example: StartExample) -> None:
    url = await in_process_example(load_example())  # no profile= : the default
    report = await run_kit(KitOptions(url=url, profiles=PROFILES, only=("handshake.hello_ok",)))
    assert [(r.name, r.status) for r in report.results] == [
        ("nimbus.v1/*", "SKIP"),
        ("json-base64.v1/handshake.hello_ok", "PASS"),
        ("lenpfx.v1/*", "SKIP"),
    ]
