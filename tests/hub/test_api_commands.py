"""Commands over the hub's REST API: paging events, refused commands and their statuses,
timeouts and runtimes gone; and commands that round-trip to a real ``cl.Conductor``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.hub.discovery import HubAddress
from conductloop_jupyter.testing import EventRecorder, match
from tests.hub._support import (
    api,
    command,
    get,
    running_hub,
    runtime_peer,
    send_events,
    started,
    state,
    wire,
)

# -- REST ----------------------------------------------------------------------------------


async def test_events_are_paged_by_id_and_filtered_by_agent(tmp_path: Path) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address) as runtime:
        await send_events(
            runtime,
            started(1, "w-1"),
            started(2, "w-2"),
            wire(3, "agent.status", "w-1", text="a"),
            wire(4, "agent.status", "w-2", text="b"),
            wire(5, "agent.status", "w-1", text="c"),
        )
        page = await get(address, "events?after=1&limit=2")
        assert ([e["id"] for e in page["events"]], page["last_id"]) == ([2, 3], 5)
        mine = await get(address, "events?after=0&agent_id=w-1")
        assert [e["id"] for e in mine["events"]] == [1, 3, 5]
        assert (await get(address, "events?after=5"))["events"] == []
        for bad in ("after=x", "after=-1", "limit=0", "limit=10001"):
            status, body = await api(address, "events?" + bad)
            assert (status, body["error"]["code"]) == (400, "bad_message"), bad


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"op": "pause", "agent_id": "nobody"}, 404, "unknown_agent"),
        ({"op": "approve", "request_id": "r-none"}, 404, "unknown_request"),
        ("{not json", 400, "bad_json"),
        ("[1]", 400, "bad_json"),
        ({"op": "approve"}, 400, "bad_message"),
        ({"op": "redirect", "agent_id": "w-1"}, 400, "bad_message"),
        ({"op": "reboot"}, 400, "bad_message"),
    ],
    ids=[
        "unknown-agent",
        "unknown-request",
        "malformed",
        "not-an-object",
        "missing-request-id",
        "missing-text",
        "unknown-op",
    ],
)
async def test_a_refused_rest_command_gets_its_http_status_and_error_code(
    tmp_path: Path, body: Any, status: int, code: str
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address):
        answer = await command(address, body)
        assert answer[0] == status
        assert answer[1]["error"]["code"] == code
        assert answer[1]["error"]["message"]


async def test_a_command_the_runtime_does_not_answer_in_time_is_504_timeout(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path / "hub") as (server, address), runtime_peer(address) as rt:
        await send_events(rt, started(1, "w-1"), state(2, "w-1", "running"))
        assert server.hub is not None
        server.hub.command_timeout = 0.2
        status, body = await command(address, {"op": "pause", "agent_id": "w-1"})
        assert (status, body["error"]["code"]) == (504, "timeout")
        assert (await rt.until(lambda m: m["type"] == "command"))["command"]["op"] == "pause"


async def test_a_command_in_flight_when_its_runtime_disconnects_is_503_runtime_gone(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path / "hub", lost_after=30) as (_, address):
        async with runtime_peer(address) as runtime:
            await send_events(runtime, started(1, "w-1"), state(2, "w-1", "running"))
            in_flight = asyncio.ensure_future(command(address, {"op": "stop", "agent_id": "w-1"}))
            sent = await runtime.until(lambda m: m["type"] == "command")
            assert sent["command"] == {"op": "stop", "agent_id": "w-1", "by": "client"}
        status, body = await asyncio.wait_for(in_flight, 10)
        assert (status, body["error"]["code"]) == (503, "runtime_gone")
        # and later commands for its agents, while it stays away
        status, body = await command(address, {"op": "pause", "agent_id": "w-1"})
        assert (status, body["error"]["code"]) == (503, "runtime_gone")


# -- commands to a real Conductor ----------------------------------------------------------


@asynccontextmanager
async def conductor(
    address: HubAddress, monkeypatch: pytest.MonkeyPatch, name: str = "steer"
) -> AsyncIterator[tuple[cl.Conductor, EventRecorder]]:
    monkeypatch.setenv("CONDUCTLOOP_HUB_SECRET", address.secret)
    async with cl.Conductor(name, hub=address.url) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        yield loop, recorder


async def request_of(recorder: EventRecorder, run: cl.AgentRun) -> str:
    event = await recorder.wait_for(match("request.opened", agent_id=run.agent_id))
    return str(event.data["request_id"])


async def synced(loop: cl.Conductor) -> None:
    """Wait until the hub has acknowledged every event the conductor emitted so far."""
    assert loop.link is not None
    assert await loop.link.drain(10)


async def test_approve_over_rest_decides_once_and_the_agent_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        conductor(address, monkeypatch) as (loop, recorder),
    ):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return (await ctx.approve("Deploy?", details={"env": "prod"})).approved

        run = loop.start("asks")
        request_id = await request_of(recorder, run)
        await synced(loop)
        [pending] = (await get(address, "pending"))["pending"]
        assert (pending["id"], pending["agent_id"], pending["kind"], pending["details"]) == (
            request_id,
            run.agent_id,
            "approval",
            {"env": "prod"},
        )
        approve = {"op": "approve", "request_id": request_id, "note": "ship it", "by": "forged"}
        assert await command(address, approve, by="tester") == (200, {"ok": True, "result": True})
        assert await command(address, approve) == (200, {"ok": True, "result": False})
        assert await asyncio.wait_for(run, 10) is True
        decided = loop.request(request_id)
        assert (decided.decision, decided.decided_by, decided.note) == (
            "approved",
            "tester",  # the hub sets `by` from the caller, not from the body
            "ship it",
        )
        await synced(loop)
        assert (await get(address, "pending"))["pending"] == []
        [agent] = (await get(address, "agents"))["agents"]
        assert (agent["agent_id"], agent["state"]) == (run.agent_id, "done")


async def test_steering_a_finished_agent_is_409_usage_and_stopping_it_is_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        conductor(address, monkeypatch) as (loop, _),
    ):

        @loop.agent
        async def quick(ctx: cl.Context) -> str:
            return "done"

        run = loop.start("quick")
        assert await asyncio.wait_for(run, 10) == "done"
        await synced(loop)
        for refused in (
            {"op": "pause", "agent_id": run.agent_id},
            {"op": "resume", "agent_id": run.agent_id},
            {"op": "redirect", "agent_id": run.agent_id, "text": "more"},
        ):
            status, body = await command(address, refused)
            assert (status, body["error"]["code"]) == (409, "usage"), refused
            assert run.agent_id in body["error"]["message"]
        stop = {"op": "stop", "agent_id": run.agent_id}
        assert await command(address, stop) == (200, {"ok": True, "result": None})
        assert run.state is cl.AgentState.DONE


async def test_stop_all_stops_every_agent_of_every_connected_runtime_and_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        conductor(address, monkeypatch, "one") as (one, one_events),
        conductor(address, monkeypatch, "two") as (two, two_events),
    ):
        runs: list[tuple[cl.Conductor, EventRecorder, cl.AgentRun]] = []
        for loop, recorder, count in ((one, one_events, 2), (two, two_events, 1)):

            @loop.agent
            async def waits(ctx: cl.Context) -> bool:
                return (await ctx.approve("Go on?")).approved

            for _ in range(count):
                run = loop.start("waits")
                await request_of(recorder, run)
                runs.append((loop, recorder, run))
        await synced(one)
        await synced(two)
        assert await command(address, {"op": "stop_all"}) == (200, {"ok": True, "result": 3})
        for _, recorder, run in runs:
            await recorder.wait_for(match("agent.state", agent_id=run.agent_id, state="stopped"))
            with pytest.raises(cl.AgentStopped):
                await asyncio.wait_for(run, 10)
        assert await command(address, {"op": "stop_all"}) == (200, {"ok": True, "result": 0})
        await synced(one)
        await synced(two)
        states = [a["state"] for a in (await get(address, "agents"))["agents"]]
        assert states == ["stopped"] * 3
        assert (await get(address, "pending"))["pending"] == []


async def test_a_command_for_an_agent_whose_runtime_disconnected_is_503_runtime_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub", lost_after=30) as (_, address),
        conductor(address, monkeypatch) as (loop, recorder),
    ):

        @loop.agent
        async def waits(ctx: cl.Context) -> bool:
            return (await ctx.approve("Go on?")).approved

        run = loop.start("waits")
        request_id = await request_of(recorder, run)
        await synced(loop)
        assert loop.link is not None
        await loop.link.aclose()  # the runtime's connection goes; its agent waits on

        async def disconnected() -> None:  # each look is a request to the hub: no sleeping
            while any(r["connected"] for r in (await get(address, "status"))["runtimes"]):
                pass

        await asyncio.wait_for(disconnected(), 10)
        for body in (
            {"op": "approve", "request_id": request_id},
            {"op": "pause", "agent_id": run.agent_id},
            {"op": "stop", "agent_id": run.agent_id},
        ):
            status, answer = await command(address, body)
            assert (status, answer["error"]["code"]) == (503, "runtime_gone"), body
        assert run.state is cl.AgentState.WAITING  # nothing reached it
        assert loop.request(request_id).open
