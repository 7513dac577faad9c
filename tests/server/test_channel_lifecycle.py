"""Issue 13 items 15 and 16: channel lifecycle against the real server, raw wire.

15. ``open {id:1}``, ``close {id:1}``, ``open {id:1, command:"echo second"}`` back
    to back: the reopened channel prints ``second`` and exits 0 (a backend whose
    channel closed while it started never reports into the reused id), and no
    process outlives its channel: closing it, or ending the session, kills the
    process group (SIGHUP, SIGKILL after ``KILL_GRACE``) and reaps it.
16. Input sent before ``open_ok`` is held and delivered once the backend runs,
    in order; under ``caps.ack`` the acks cover exactly the bytes delivered.

The children-of-the-server checks run ``python -m nimbus_websocket serve`` as a
subprocess (tests/reliability/rel_util.py) and read ``/proc/<pid>/task/*/children``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nimbus_websocket.core.events import BackendOpen
from nimbus_websocket.core.messages import Close, Eof, Exit, Flow, Open, OpenOk
from nimbus_websocket.node_runtime.conformance.wire import (
    DEFAULT_TARGET,
    DEFAULT_TERM,
    DEFAULT_USER,
    WireClient,
)
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.backend import KILL_GRACE, LocalProcessBackend
from reliability.rel_util import ServerProcess, wait_for

ITERATIONS = 100
#: Bound of one iteration (connect, three opens' worth of process starts, exit) under load.
STEP_TIMEOUT = 15.0
#: Bound of the whole 100-iteration run.
RUN_BUDGET = 55.0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's ``children`` list)."""
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return out


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (a reparented orphan may wait for PID 1's reaping)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def forget_channel(c: WireClient, cid: int) -> None:
    """The close of ``cid`` completed: a reopened ``cid`` is a new channel to the kit's observer too."""
    c.wire.channels.pop(cid, None)
    c.out.pop(cid, None)


async def reopen_sequence(url: str, i: int) -> None:
    """One iteration of item 15 on its own session."""
    c = await WireClient.connect(url)
    try:
        await c.hello()
        await c.send(Open(1, DEFAULT_TARGET, DEFAULT_USER, DEFAULT_TERM))  # the login shell
        await c.send(Close(1))
        await c.send(Open(1, DEFAULT_TARGET, DEFAULT_USER, DEFAULT_TERM, command="echo second"))
        await c.until(lambda m: isinstance(m, Close) and m.id == 1, STEP_TIMEOUT)
        forget_channel(c, 1)
        await c.until(lambda m: isinstance(m, OpenOk) and m.id == 1, STEP_TIMEOUT)
        await c.send(Flow(1, 1 << 16))
        ex = await c.until_exit(1, STEP_TIMEOUT)
        out = bytes(c.out.get(1, b""))
        assert b"second" in out and (ex.code, ex.sig) == (0, None), f"iteration {i}: {ex} after {out!r}"
        if i % 2 == 0:  # close the channel, then the session; else the session's end closes it
            await c.close_channel(1)
            await c.until(lambda m: isinstance(m, Close) and m.id == 1, STEP_TIMEOUT)
    finally:
        await c.close()


async def test_a_reopened_channel_id_works_and_no_process_outlives_its_channel() -> None:
    async with ServerProcess() as sp:
        t0 = time.monotonic()
        for i in range(ITERATIONS):
            async with asyncio.timeout(STEP_TIMEOUT * 2):
                await reopen_sequence(sp.url, i)
            assert time.monotonic() - t0 < RUN_BUDGET, f"{i + 1} iterations took over {RUN_BUDGET} s"
        # Every session ended (close 1000): within the grace plus a margin, no shell is left.
        await wait_for(lambda: not children(sp.pid), KILL_GRACE + 10, "the server's children to be reaped")
        assert not [ln for ln in sp.lines if "Traceback" in ln or "Task exception" in ln], sp.lines[-20:]


@pytest.mark.parametrize("end", ["channel_close", "session_end"])
async def test_close_kills_a_process_group_that_ignores_sighup(end: str) -> None:
    # Without a terminal there is no job control: the background sleep shares the group.
    script = "trap '' HUP; sleep 300 & echo pids $$ $!; wait"
    async with ServerProcess() as sp:
        c = await WireClient.connect(sp.url)
        await c.hello()
        await c.send(Open(1, DEFAULT_TARGET, DEFAULT_USER, None, command=script))
        await c.until(lambda m: isinstance(m, OpenOk) and m.id == 1)
        await c.send(Flow(1, 1 << 16))
        mt = await c.until_match(1, rb"pids (\d+) (\d+)\n")
        leader, member = int(mt.group(1)), int(mt.group(2))
        assert leader in children(sp.pid) and alive(member)
        t = time.monotonic()
        if end == "channel_close":
            await c.close_channel(1)
            await c.until(lambda m: isinstance(m, Close) and m.id == 1)
        await c.close()
        await wait_for(lambda: not alive(leader) and not alive(member), KILL_GRACE + 10, "the process group to die")
        await wait_for(lambda: not children(sp.pid), 10, "the leader to be reaped")
        took = time.monotonic() - t
        assert took < KILL_GRACE + 8, took


@pytest.mark.parametrize("first_start_ends", ["before_the_second", "after_the_second"])
async def test_a_backend_of_a_closed_channel_never_touches_the_reopened_id(
    make_server: Callable[..., Awaitable[Server]], first_start_ends: str
) -> None:
    """Both orders of the race, made deterministic: the first channel's backend
    finishes starting before or after the second channel's."""
    gates = [asyncio.Event(), asyncio.Event()]
    made: list[_GatedBackend] = []

    def factory(sink: Any, ev: BackendOpen) -> _GatedBackend:
        be = _GatedBackend(gates[len(made)], sink, ev.term, ev.command)
        made.append(be)
        return be

    srv = await make_server(backend_factory=factory)
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.send(Open(1, DEFAULT_TARGET, DEFAULT_USER, DEFAULT_TERM, command="sleep 300"))
    await c.send(Close(1))
    await c.send(Open(1, DEFAULT_TARGET, DEFAULT_USER, DEFAULT_TERM, command="echo second"))
    await c.until(lambda m: isinstance(m, Close) and m.id == 1)
    forget_channel(c, 1)
    await wait_for(lambda: len(made) == 2, 10, "both backends to be made")
    first, second = made

    async def first_is_gone() -> None:
        gates[0].set()
        await wait_for(lambda: first.proc is not None, 10, "the first backend to start")
        assert first.proc is not None
        await asyncio.wait_for(first.wait_closed(), KILL_GRACE + 10)  # closed as soon as it started

    if first_start_ends == "before_the_second":
        await first_is_gone()
    gates[1].set()
    await c.until(lambda m: isinstance(m, OpenOk) and m.id == 1)
    await c.send(Flow(1, 1 << 16))
    ex = await c.until_exit(1)
    assert (ex.code, ex.sig) == (0, None) and b"second" in bytes(c.out[1])
    if first_start_ends == "after_the_second":
        await first_is_gone()
    # Nothing of the first process reached the channel: a second exit or data after
    # the exit would have failed the kit's observer while it read up to this pong.
    await c.wire.roundtrip("after the first backend ended")
    assert [m for m in c.ctl if isinstance(m, Exit)] == [ex]
    assert first.proc is not None and first.proc.returncode is not None
    await c.close()


# ----------------------------------------------------------------- item 16


class _GatedBackend(LocalProcessBackend):
    """A local backend whose start waits for the test (the channel stays OPENING meanwhile)."""

    def __init__(self, gate: asyncio.Event, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.gate = gate

    async def start(self) -> None:
        await asyncio.wait_for(self.gate.wait(), 30)
        await super().start()


@pytest.fixture
async def gated(make_server: Callable[..., Awaitable[Server]]) -> tuple[Server, asyncio.Event]:
    gate = asyncio.Event()

    def factory(sink: Any, ev: BackendOpen) -> _GatedBackend:
        return _GatedBackend(gate, sink, ev.term, ev.command)

    return await make_server(backend_factory=factory), gate


async def _open_cat_with_early_input(srv: Server, gate: asyncio.Event, *early: Any) -> WireClient:
    c = await WireClient.connect(srv.url)
    ok = await c.hello(ack=True)
    assert ok.caps.ack
    await c.send(Open(1, DEFAULT_TARGET, DEFAULT_USER, None, command="cat"))
    for m in early:
        await (c.type(1, m) if isinstance(m, str) else c.send(m))
    await c.wire.roundtrip("the early input was processed")  # the server read it, in order, before...
    assert c.wire.chan(1).open_ok is None  # ...the backend started: it arrived before open_ok
    gate.set()
    await c.until(lambda m: isinstance(m, OpenOk) and m.id == 1)
    await c.send(Flow(1, 1 << 16))
    return c


async def _until_ack(c: WireClient, n: int) -> list[int]:
    acks = c.wire.chan(1).acks
    deadline = time.monotonic() + 10
    while not acks or acks[-1] < n:
        await c.recv(max(0.01, deadline - time.monotonic()))
    return acks


async def test_input_before_open_ok_is_delivered_in_order_and_acked_exactly(
    gated: tuple[Server, asyncio.Event],
) -> None:
    srv, gate = gated
    c = await _open_cat_with_early_input(srv, gate, "early\n")
    await c.type(1, "late\n")
    await c.until_output(1, b"early\nlate\n")
    acks = await _until_ack(c, 11)
    assert bytes(c.out[1]) == b"early\nlate\n"
    # The kit's observer already failed on an ack above the bytes sent or going back;
    # here: the last ack covers exactly the 11 bytes cat echoed, none more.
    assert acks[-1] == 11 == c.wire.chan(1).sent
    await c.wire.quiet(0.2)
    assert acks[-1] == 11
    await c.close()


async def test_eof_before_open_ok_follows_the_early_input(gated: tuple[Server, asyncio.Event]) -> None:
    srv, gate = gated
    c = await _open_cat_with_early_input(srv, gate, "one\n", "two\n", Eof(1))
    ex = await c.until_exit(1)
    assert isinstance(ex, Exit) and ex.code == 0
    assert bytes(c.out[1]) == b"one\ntwo\n"
    assert (await _until_ack(c, 8))[-1] == 8
    await c.close()


async def test_early_input_against_the_cli_server() -> None:
    """The issue's own sequence, no gate: ``open cat`` and ``early`` back to back."""
    async with ServerProcess() as sp:
        c = await WireClient.connect(sp.url)
        await c.hello(ack=True)
        await c.send(Open(1, DEFAULT_TARGET, DEFAULT_USER, None, command="cat"))
        await c.type(1, "early\n")
        await c.until(lambda m: isinstance(m, OpenOk) and m.id == 1)
        await c.send(Flow(1, 1 << 16))
        await c.type(1, "late\n")
        await c.until_output(1, b"early\nlate\n")
        assert (await _until_ack(c, 11))[-1] == 11
        assert re.fullmatch(rb"early\nlate\n", bytes(c.out[1]))
        await c.close()
