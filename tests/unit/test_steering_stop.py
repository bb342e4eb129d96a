"""Steering: stop and stop all, in every place an agent can be, and outside cancellation."""

from __future__ import annotations

import asyncio

import pytest

import conductloop_jupyter as cl
from tests.unit._steering_support import conductor, opened

# -- stop --------------------------------------------------------------------------------


async def test_stop_during_approve_ends_the_agent_stopped() -> None:
    async with conductor() as (loop, recorder):
        cleaned: list[str] = []

        @loop.agent
        async def asks(ctx: cl.Context) -> None:
            try:
                await ctx.approve("Go?")
            except cl.AgentStopped as stopped:
                cleaned.append(str(stopped))
                raise

        run = loop.start("asks")
        await opened(recorder, run)
        loop.stop(run.agent_id, by="phone")
        with pytest.raises(cl.AgentStopped, match="stopped by phone"):
            await run
        assert cleaned == ["stopped by phone"]
        assert run.state is cl.AgentState.STOPPED


async def test_stop_during_ask_ends_the_agent_stopped() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def asks(ctx: cl.Context) -> str | None:
            return await ctx.ask("Which?", choices=["x"])

        run = loop.start("asks")
        await opened(recorder, run)
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        states = [e.data["state"] for e in recorder.of(run.agent_id, "agent.state")]
        assert states == ["running", "waiting", "stopped"]


async def test_stop_inside_a_tool_cancels_it_and_records_the_span_as_failed() -> None:
    entered = asyncio.Event()
    async with conductor() as (loop, recorder):

        @loop.agent
        async def tool_user(ctx: cl.Context) -> None:
            async with ctx.tool("slow_api", query="x"):
                entered.set()
                await asyncio.Event().wait()  # an I/O call that never returns

        run = loop.start("tool_user")
        await entered.wait()
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        finished = recorder.of(run.agent_id, "tool.finished")
        assert len(finished) == 1
        assert finished[0].data["ok"] is False
        assert "CancelledError" in finished[0].data["error"]


async def test_stop_is_idempotent_and_stopping_an_ended_agent_does_nothing() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def waits(ctx: cl.Context) -> None:
            await ctx.approve("Go?")

        @loop.agent
        async def quick(ctx: cl.Context) -> str:
            return "ok"

        run = loop.start("waits")
        await opened(recorder, run)
        loop.stop(run.agent_id)
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        loop.stop(run.agent_id)
        done = loop.start("quick")
        assert await done == "ok"
        loop.stop(done.agent_id)
        assert done.state is cl.AgentState.DONE
        assert len(recorder.of(run.agent_id, "command")) == 1
        with pytest.raises(cl.UsageError, match="no agent 'ghost'"):
            loop.stop("ghost")


async def test_stop_all_stops_every_live_agent_and_says_how_many() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def waits(ctx: cl.Context) -> None:
            await ctx.approve("Go?")

        @loop.agent
        async def loops(ctx: cl.Context) -> None:
            while True:
                await ctx.checkpoint()

        runs = [loop.start("waits") for _ in range(3)] + [loop.start("loops") for _ in range(3)]
        for run in runs[:3]:
            await opened(recorder, run)
        assert loop.stop_all(by="phone") == 6
        for run in runs:
            with pytest.raises(cl.AgentStopped):
                await run
        assert set(loop.agents()["state"]) == {"stopped"}
        assert loop.stop_all() == 0


async def test_a_cancellation_from_outside_is_never_swallowed() -> None:
    entered = asyncio.Event()
    async with conductor() as (loop, recorder):

        @loop.agent
        async def victim(ctx: cl.Context) -> None:
            entered.set()
            await asyncio.Event().wait()

        run = loop.start("victim")
        await entered.wait()
        task = run._record.task
        assert task is not None
        task.cancel()  # not ConductLoop's doing: e.g. the kernel shutting down
        with pytest.raises(asyncio.CancelledError):
            await task
        assert run.state is cl.AgentState.STOPPED
        ended = recorder.of(run.agent_id, "agent.state")[-1]
        assert "outside ConductLoop" in ended.data["reason"]
