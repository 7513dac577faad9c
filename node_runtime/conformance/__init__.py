"""The nimbus.ssh.v1 conformance kit: a wire-level test matrix for any server.

``nimbus-ws conformance URL`` (see :mod:`.cli`) or, from Python::

    from nimbus_websocket.node_runtime.conformance import KitOptions, run_kit

    report = await run_kit(KitOptions(url="ws://127.0.0.1:8765/ws/ssh", profiles=("lenpfx.v1",)))
    assert report.failed == 0, report.summary_line()

Cases talk to the server through a raw ``websockets`` connection and the
core's profile encoders/decoders only (:mod:`.wire`), never through the
client session machine, so a client bug cannot hide a server bug.  The case
list is in :mod:`.cases`; ``TESTING.md`` next to this file explains how to
run the kit and read its output.
"""

from __future__ import annotations

from .cases import CASES, Case
from .context import DEFAULT_COMMANDS, PROFILES, KitOptions, ServerInfo
from .runner import CaseResult, Report, format_result, run_kit, write_report

__all__ = [
    "CASES",
    "DEFAULT_COMMANDS",
    "PROFILES",
    "Case",
    "CaseResult",
    "KitOptions",
    "Report",
    "ServerInfo",
    "format_result",
    "run_kit",
    "write_report",
]
