"""Running the case matrix: probe each profile, run its cases, collect a report.

:func:`run_kit` is the library entry point (the CLI is a thin wrapper)::

    report = await run_kit(KitOptions(url="ws://127.0.0.1:8765/ws/ssh", profiles=PROFILES))
    report.failed  # number of failed cases

Per profile the runner first *probes*: one upgrade and ``hello``.  A server
that refuses the profile (HTTP 4xx at the upgrade or close 4001) yields a
single SKIP line when several profiles were asked for, a FAIL otherwise; a
probe that fails for another reason is one FAIL and the profile's cases are
not run.  Then every applicable case runs, one after the other, each on
fresh connections and bounded by ``KitOptions.case_timeout``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ...core.errors import CloseCode
from ...core.profiles import get_profile
from .cases import CASES, Case
from .context import Ctx, KitOptions, ServerInfo
from .wire import ConnectRefused, KitFailure, ServerClosed, Skip

__all__ = ["CaseResult", "Report", "format_result", "run_kit", "selected_cases"]

Status = Literal["PASS", "FAIL", "SKIP"]
#: Frames shown under a FAIL line (the JSON report keeps up to 48).
FRAMES_SHOWN = 10


@dataclass
class CaseResult:
    """The outcome of one case (or of a profile probe)."""

    profile: str
    case: str
    status: Status
    reason: str
    seconds: float = 0.0
    frames: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``profile/case``."""
        return f"{self.profile}/{self.case}"


@dataclass
class Report:
    """Every result of a run, plus what was learnt about the server."""

    url: str
    results: list[CaseResult] = field(default_factory=list)
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        """Number of results with ``status``."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def passed(self) -> int:
        """PASS count."""
        return self.count("PASS")

    @property
    def failed(self) -> int:
        """FAIL count."""
        return self.count("FAIL")

    @property
    def skipped(self) -> int:
        """SKIP count."""
        return self.count("SKIP")

    def summary_line(self) -> str:
        """``N passed, N failed, N skipped``."""
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"

    def result(self, name: str) -> CaseResult | None:
        """The result named ``profile/case`` (``None`` if it did not run)."""
        return next((r for r in self.results if r.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "url": self.url,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "servers": self.servers,
            "summary": {"passed": self.passed, "failed": self.failed, "skipped": self.skipped},
            "results": [asdict(r) | {"name": r.name, "seconds": round(r.seconds, 3)} for r in self.results],
        }


def format_result(r: CaseResult, *, frames: bool = True) -> str:
    """``PASS|FAIL|SKIP name — reason``, and on FAIL the last frames, indented."""
    line = f"{r.status} {r.name} — {r.reason}"
    if frames and r.status == "FAIL" and r.frames:
        line += "".join(f"\n      {f}" for f in r.frames[-FRAMES_SHOWN:])
    return line


def selected_cases(opts: KitOptions, profile_id: str) -> list[Case]:
    """Cases of ``profile_id`` after ``--only`` and ``--skip-slow``."""
    out = []
    for c in CASES:
        if c.profiles is not None and profile_id not in c.profiles:
            continue
        if opts.only and not any(fnmatch.fnmatchcase(c.name, p) for p in opts.only):
            continue
        out.append(c)
    return out


async def _probe(opts: KitOptions, profile_id: str) -> ServerInfo:
    log: deque[str] = deque(maxlen=48)
    ctx = Ctx(opts, get_profile(profile_id), None, log)
    try:
        w, ok = await ctx.ready()
        return ServerInfo(ok, w.subprotocol)
    finally:
        await ctx.cleanup()


async def _run_case(c: Case, opts: KitOptions, profile_id: str, info: ServerInfo) -> CaseResult:
    log: deque[str] = deque(maxlen=48)
    ctx = Ctx(opts, get_profile(profile_id), info, log)
    t0 = time.monotonic()
    status: Status
    if opts.skip_slow and c.slow:
        return CaseResult(profile_id, c.name, "SKIP", "slow case (--skip-slow)")
    try:
        detail = await asyncio.wait_for(c.fn(ctx), opts.case_timeout)
        status, reason = "PASS", detail
    except Skip as exc:
        status, reason = "SKIP", str(exc)
    except KitFailure as exc:
        status, reason = "FAIL", str(exc)
    except TimeoutError:
        status, reason = "FAIL", f"case did not finish within {opts.case_timeout:g} s"
    except Exception as exc:  # a kit bug must not stop the run; it shows as a failure
        status, reason = "FAIL", f"kit error: {type(exc).__name__}: {exc}"
    finally:
        await ctx.cleanup()
    frames = list(log) if status == "FAIL" else []
    return CaseResult(profile_id, c.name, status, reason, time.monotonic() - t0, frames)


async def run_kit(opts: KitOptions, emit: Callable[[CaseResult], None] | None = None) -> Report:
    """Run the matrix for every profile in ``opts.profiles``; ``emit`` sees each result as it lands."""
    report = Report(opts.url, started=datetime.now(UTC).isoformat(timespec="seconds"))
    t_run = time.monotonic()

    def add(r: CaseResult) -> None:
        report.results.append(r)
        if emit is not None:
            emit(r)

    several = len(opts.profiles) > 1
    for pid in opts.profiles:
        t0 = time.monotonic()
        try:
            info = await asyncio.wait_for(_probe(opts, pid), opts.timeout * 2 + 1)
        except (ConnectRefused, ServerClosed, KitFailure, TimeoutError) as exc:
            unsupported = (isinstance(exc, ConnectRefused) and exc.status is not None and 400 <= exc.status < 500) or (
                isinstance(exc, ServerClosed) and exc.code == CloseCode.UNSUPPORTED_PROFILE
            )
            why = str(exc) if not isinstance(exc, TimeoutError) else f"no hello_ok within {opts.timeout * 2 + 1:g} s"
            report.servers[pid] = {"status": "unsupported" if unsupported else "handshake failed", "reason": why}
            if unsupported and several:
                add(CaseResult(pid, "*", "SKIP", f"server does not offer this profile ({why})", time.monotonic() - t0))
            else:
                add(CaseResult(pid, "handshake.probe", "FAIL", f"handshake failed, no case run: {why}", time.monotonic() - t0))
            continue
        ok = info.hello_ok
        report.servers[pid] = {
            "status": "tested",
            "server": ok.server,
            "subprotocol": info.subprotocol,
            "maxFrame": ok.caps.max_frame,
            "resume": ok.resume is not None,
        }
        for c in selected_cases(opts, pid):
            add(await _run_case(c, opts, pid, info))
        report.servers[pid]["seconds"] = round(time.monotonic() - t0, 3)
    report.seconds = time.monotonic() - t_run
    return report


def write_report(report: Report, path: str) -> None:
    """Write the JSON report to ``path``."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report.to_json(), fh, indent=2)
        fh.write("\n")


def describe_server(report: Report, pid: str) -> str:
    """One-line description of what the probe found (for the CLI's header lines)."""
    s = report.servers.get(pid, {})
    if s.get("status") != "tested":
        return f"{pid}: {s.get('status', 'not run')}"
    return (
        f"{pid}: server {s['server']!r}, subprotocol {s['subprotocol']}, maxFrame {s['maxFrame'] or 'default'}, "
        f"resume {'yes' if s['resume'] else 'no'}, {s.get('seconds', 0):.1f} s"
    )

