"""A home whose store already holds events that break the schema (written by an older hub,
which did not check them) still starts: the replay leaves them out and says how many, and
the hub then serves and stores as usual. So does a conductor whose link gets a refusal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.core.events import Event
from conductloop_jupyter.hub.server import stop_embedded
from conductloop_jupyter.hub.store import EventStore
from conductloop_jupyter.testing import EventRecorder, match
from tests.hub._process_support import Procs, free_port, until
from tests.hub._support import get, running_hub, runtime_peer, send_events, started, wire

TS = 1_767_225_600.0

#: what older hubs let into their stores, one of each way it broke their view
POISON = [
    Event(1, TS, "rt-old", "old-1", "agent.started", {"name": "old", "parent": None}),
    Event(2, TS, "rt-old", "old-1", "agent.state", {"state": "bogus"}),
    Event(3, TS, "rt-old", "old-1", "usage", {"model": "m", "output_tokens": 3}),
    Event(
        4, TS, "rt-old", "old-1", "usage", {"model": "m", "input_tokens": "5", "output_tokens": 1}
    ),
    Event(5, TS, "rt-old", None, "agent.started", {"name": "nobody"}),
    Event(6, TS, "rt-old", "old-1", "request.opened", {"request_id": "r1"}),
    Event(7, TS, "rt-old", "old-1", "agent.status", {"text": "still readable"}),
]


def _poisoned(home: Path) -> None:
    home.mkdir(mode=0o700)
    with EventStore(home / "events.sqlite3") as store:
        store.append(POISON)


async def test_a_home_holding_bad_events_starts_leaves_them_out_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "hub"
    await asyncio.to_thread(_poisoned, home)
    with caplog.at_level(logging.WARNING, logger="conductloop.hub"):
        async with running_hub(home) as (_, address):
            [old] = (await get(address, "agents"))["agents"]
            assert (old["agent_id"], old["state"], old["activity"]) == (
                "old-1",
                "queued",
                "still readable",
            )
            assert old["cost_usd"] == 0.0
            assert (await get(address, "pending"))["pending"] == []
            async with runtime_peer(address) as peer:  # and it goes on serving and storing
                status = wire(2, "agent.status", "w-1", text="fresh")
                await send_events(peer, started(1, "w-1"), status)
            stored = (await get(address, "events?after=0&limit=100"))["events"]
            assert len(stored) == len(POISON) + 2
    assert "5 stored event(s) do not fit their kind's schema" in caplog.text


def test_a_conductor_whose_event_is_refused_logs_once_and_never_sends_it_again(
    own_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        _refused_by_the_embedded_hub(own_home, caplog)
    finally:
        stop_embedded()


def _refused_by_the_embedded_hub(own_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    with cl.Conductor("buggy") as loop:  # its embedded hub is this test's (own home)
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def worker(ctx: cl.Context) -> str:
            await ctx.checkpoint()
            return "done"

        with caplog.at_level(logging.WARNING, logger="conductloop.link"):
            run = loop.start("worker")
            recorder.wait_for_sync(match("agent.started", agent_id=run.agent_id))
            for bad in ({"state": "bogus"}, {"state": "worse"}):  # as a buggy runtime would
                loop.core.host.call(loop.core.emit, run.agent_id, "agent.state", bad)
            assert run.result(timeout=10) == "done"
            link = loop.link
            assert link is not None
            assert loop.core.host.wait(link.drain(10))  # all acked: none is sent again
        assert link.refused == 2
        assert caplog.text.count("the hub refused what") == 1
        [agent] = cl.connect(home=str(own_home)).agents().to_dict("records")
        assert (agent["agent_id"], agent["state"]) == (run.agent_id, "done")


def test_a_served_hub_on_a_poisoned_home_starts_again_after_sigkill_and_takes_runtimes(
    procs: Procs, home: Path
) -> None:
    home.mkdir(mode=0o700, exist_ok=True)
    with EventStore(home / "events.sqlite3") as store:
        store.append(POISON)
    for attempt in ("first start", "after SIGKILL"):
        hub, _ = procs.serve(free_port(), name=f"hub-{attempt}")
        [old] = until(lambda: _agents(home) or None, f"the old agent ({attempt})")
        assert (old["agent_id"], old["state"]) == ("old-1", "queued"), attempt
        if attempt == "first start":
            os.kill(hub.pid, signal.SIGKILL)
            assert hub.exit_code() == -signal.SIGKILL
    quick = procs.start("quick", [sys.executable, str(procs.dir / "quick.py")])
    assert quick.expect("RESULT") == ["42"]
    assert quick.exit_code() == 0
    names = {str(a["name"]) for a in _agents(home)}
    assert {"old", "worker"} <= names  # the poisoned history and the new runtime's agent


def _agents(home: Path) -> list[dict[str, object]]:
    try:
        rows: list[dict[str, object]] = cl.connect(home=str(home)).agents().to_dict("records")
    except cl.ConductLoopError:
        return []
    return rows
