"""Smoke test of the peers bench (bench/peers/): the report and two live peers.

The live part starts the two peers that need nothing installed (nimbus, the
bare bridge) on ``cat`` and types a few keystrokes through each wire client;
terminado, webssh and wetty are exercised by ``make bench`` only (they are
installed by the bench itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from peers import measure, runner, servers


def _data() -> dict[str, object]:
    res = runner.Results(runner.params(True))
    for key, *_ in runner.METRICS:
        res.values[key]["nimbus"] = [2.0, 4.0]
        res.values[key]["bridge"] = [2.0, 4.0]
        res.values[key]["terminado"] = [1.0, 2.0]
        res.values[key]["webssh"] = [4.0, 8.0]
        res.extra[key]["terminado"] = [{"half_kib": 1000, "end_kib": 9000}]
        res.extra[key]["webssh"] = [{"half_kib": 1000, "end_kib": 1100}]
    res.fail([m[0] for m in runner.METRICS], "wetty", "failed to start: npm install wetty@3.2.0 failed: E404")
    return res.as_json()


def test_report_shows_ratios_failures_and_growth() -> None:
    data = _data()
    md = runner.markdown(data)
    assert "failed to start: npm install wetty@3.2.0 failed: E404" in md  # never dropped silently
    stream = next(x for x in md.splitlines() if x.startswith("| stream"))
    assert "2.00×" in stream and "0.50×" in stream and "behind" not in stream.split("|")[5]
    echo = next(x for x in md.splitlines() if x.startswith("| keystroke echo p50"))
    assert "**2.00× behind**" in echo  # nimbus slower than terminado: flagged
    slow = next(x for x in md.splitlines() if x.startswith("| server RSS growth"))
    assert "still growing" in slow.split("|")[5] and "still growing" not in slow.split("|")[6]
    assert runner.not_measured(data) == [("wetty", "stream: failed to start: npm install wetty@3.2.0 failed: E404")]


def test_figures_rows_target_rivals_only() -> None:
    rows: list[dict[str, object]] = []

    class F:
        def add(self, section: str, fid: str, label: str, unit: str, measured: list[float], **kw: object) -> None:
            rows.append({"id": fid, **kw})

    runner.add_figures(F(), _data())
    ids = {r["id"]: r for r in rows}
    assert ids["peers.stream.terminado"]["target"] == ("ratio>=", 1.0)
    assert ids["peers.idle.webssh"]["target"] == ("ratio<=", 1.0)
    assert ids["peers.stream.bridge"]["target"] is None
    assert not any(k.endswith(".wetty") for k in ids)


@pytest.mark.parametrize("peer", ["nimbus", "bridge"])
async def test_live_echo(peer: str) -> None:
    run = servers.start(peer, ["cat"])
    try:
        xs = await measure.echo_run(run, 5)
    finally:
        run.stop()
    assert len(xs) == 5 and all(0 < x < measure.READ_TIMEOUT for x in xs)
