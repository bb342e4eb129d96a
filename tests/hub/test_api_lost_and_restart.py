"""A runtime that stays away has its live agents lost; a hub that restarts has every event
with the same ids and the same view.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from conductloop_jupyter.testing import ManualClock
from tests.hub._support import (
    client_peer,
    get,
    is_event,
    opened,
    running_hub,
    runtime_peer,
    send_events,
    started,
    state,
    usage,
    wire,
)

# -- lost runtimes -------------------------------------------------------------------------


async def test_a_runtime_that_does_not_come_back_has_its_live_agents_lost_and_requests_withdrawn(
    tmp_path: Path,
) -> None:
    lost_after = 3.0
    clock = ManualClock()  # the hub's: the test moves it past lost_after itself
    async with (
        running_hub(tmp_path / "hub", lost_after=lost_after, clock=clock) as (_, address),
        client_peer(address) as client,
    ):
        async with runtime_peer(address) as runtime:
            await send_events(
                runtime,
                started(1, "w-1"),
                state(2, "w-1", "running"),
                opened(3, "w-1", "r1"),
                state(4, "w-1", "waiting", request_id="r1"),
                started(5, "w-2"),
                state(6, "w-2", "running"),
                state(7, "w-2", "done"),
            )
        await asyncio.wait_for(clock.sleepers(1), 10)  # the hub noticed: its timer runs
        clock.advance(lost_after - 0.001)
        agents = {a["agent_id"]: a["state"] for a in (await get(address, "agents"))["agents"]}
        assert agents["w-1"] == "waiting"  # not lost before lost_after
        clock.advance(0.001)
        events = await client.events_until(is_event("agent.state", "w-1", state="lost"))
        hub_events = [e for e in events if e["runtime"] == "hub"]
        assert [(e["kind"], e["agent_id"]) for e in hub_events] == [
            ("request.decided", "w-1"),
            ("agent.state", "w-1"),
        ]
        assert hub_events[0]["data"] == {"request_id": "r1", "decision": "withdrawn", "by": "hub"}
        assert "rt-a" in hub_events[1]["data"]["reason"]
        agents = {a["agent_id"]: a["state"] for a in (await get(address, "agents"))["agents"]}
        assert agents == {"w-1": "lost", "w-2": "done"}  # a finished agent stays finished
        assert (await get(address, "pending"))["pending"] == []


async def test_a_runtime_that_reconnects_before_lost_after_is_not_marked_lost(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path / "hub", lost_after=1.0) as (_, address),
        client_peer(address) as client,
    ):
        async with runtime_peer(address, "rt-a") as runtime:
            await send_events(runtime, started(1, "a-1"), state(2, "a-1", "running"))
        async with runtime_peer(address, "rt-a", acked=2) as runtime:
            # rt-b disconnects after rt-a did: its agent is lost after rt-a's would have been
            async with runtime_peer(address, "rt-b") as other:
                await send_events(
                    other, started(1, "b-1", "rt-b"), state(2, "b-1", "running", "rt-b")
                )
            events = await client.events_until(is_event("agent.state", "b-1", state="lost"))
            assert not [e for e in events if e["agent_id"] == "a-1" and e["runtime"] == "hub"]
            agents = {a["agent_id"]: a["state"] for a in (await get(address, "agents"))["agents"]}
            assert agents == {"a-1": "running", "b-1": "lost"}
            await send_events(runtime, wire(3, "agent.status", "a-1", text="back"))


# -- restarting the hub --------------------------------------------------------------------


async def test_stopping_the_hub_closes_every_runtime_and_client_connection(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (server, address),
        runtime_peer(address) as runtime,
        client_peer(address) as client,
    ):
        await send_events(runtime, started(1, "w-1"))
        await server.stop()
        # the runtime learns at once that this hub is gone (and replays to the next one)
        await runtime.closed()
        await client.closed()
        assert runtime.ended
        assert client.ended


async def test_a_restarted_hub_has_every_event_with_the_same_ids_and_the_same_view(
    tmp_path: Path,
) -> None:
    home = tmp_path / "hub"
    async with running_hub(home, lost_after=30) as (_, address):
        async with runtime_peer(address) as runtime:
            await send_events(runtime, started(1, "w-1"), state(2, "w-1", "running"))
            await send_events(
                runtime,
                usage(3, "w-1", 0.125),
                opened(4, "w-1", "r1"),
                state(5, "w-1", "waiting", request_id="r1"),
                started(6, "w-2"),
                state(7, "w-2", "failed", reason="boom"),
            )
        before = {
            path: await get(address, path) for path in ("events?after=0", "agents", "pending")
        }
        status_before = await get(address, "status")
    async with running_hub(home, lost_after=30) as (_, address):
        after = {path: await get(address, path) for path in ("events?after=0", "agents", "pending")}
        assert after == before
        assert [e["id"] for e in after["events?after=0"]["events"]] == list(range(1, 8))
        status = await get(address, "status")
        assert (status["last_id"], status["spend_usd"], status["agents"], status["pending"]) == (
            status_before["last_id"],
            status_before["spend_usd"],
            {"waiting": 1, "failed": 1},
            1,
        )
        async with runtime_peer(address, acked=7) as runtime:  # welcome: its last seq
            await send_events(runtime, wire(8, "agent.status", "w-1", text="resumed"))
        [newest] = (await get(address, "events?after=7"))["events"]
        assert (newest["id"], newest["seq"]) == (8, 8)
