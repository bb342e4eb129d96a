"""Steering: pause, resume and redirect, and steering an agent that has ended."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match
from tests.unit._steering_support import conductor, opened, state

# -- pause and resume --------------------------------------------------------------------


async def test_pause_holds_at_the_next_checkpoint_until_resume() -> None:
    steps: list[int] = []
    async with conductor() as (loop, recorder):

        @loop.agent
        async def stepper(ctx: cl.Context) -> list[int]:
            for n in range(3):
                await ctx.checkpoint()
                steps.append(n)
            return steps

        run = loop.start("stepper")
        loop.pause(run.agent_id)
        await state(recorder, run, "paused")
        assert steps == []
        assert run.state is cl.AgentState.PAUSED
        loop.pause(run.agent_id)  # pausing twice is harmless
        loop.resume(run.agent_id)
        assert await run == [0, 1, 2]


async def test_pause_during_a_tool_span_takes_effect_when_the_span_ends() -> None:
    in_tool, finish_tool = asyncio.Event(), asyncio.Event()
    after_tool: list[str] = []
    async with conductor() as (loop, recorder):

        @loop.agent
        async def tool_user(ctx: cl.Context) -> str:
            async with ctx.tool("fetch", url="https://example.org"):
                in_tool.set()
                await finish_tool.wait()
            after_tool.append("continued")
            return "done"

        run = loop.start("tool_user")
        await in_tool.wait()
        loop.pause(run.agent_id)
        assert run.state is cl.AgentState.RUNNING  # the tool call is not interrupted
        finish_tool.set()
        await state(recorder, run, "paused")
        finished = recorder.of(run.agent_id, "tool.finished")
        assert [e.data["ok"] for e in finished] == [True]  # recorded before the hold
        assert after_tool == []
        loop.resume(run.agent_id)
        assert await run == "done"
        assert after_tool == ["continued"]


async def test_pause_while_waiting_for_a_human_holds_after_the_decision() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return (await ctx.approve("Go?")).approved

        run = loop.start("asks")
        request_id = await opened(recorder, run)
        loop.pause(run.agent_id)
        loop.approve(request_id)
        await state(recorder, run, "paused")
        assert not run.done()
        loop.resume(run.agent_id)
        assert await run is True


async def test_stop_while_paused_ends_the_agent_stopped() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def stepper(ctx: cl.Context) -> None:
            while True:
                await ctx.checkpoint()

        run = loop.start("stepper")
        loop.pause(run.agent_id)
        await state(recorder, run, "paused")
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run


def test_an_agent_paused_while_queued_holds_before_running_any_code() -> None:
    release = threading.Event()
    ran: list[str] = []
    with cl.Conductor("queued", max_threads=1) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        def occupant(ctx: cl.SyncContext) -> None:
            release.wait(10)

        @loop.agent
        def eager(ctx: cl.SyncContext) -> None:
            ran.append("ran")

        first = loop.start("occupant")
        queued = loop.start("eager")  # the only worker thread is busy
        assert queued.state is cl.AgentState.QUEUED
        loop.pause(queued.agent_id)
        release.set()
        first.result(timeout=10)
        recorder.wait_for_sync(match("agent.state", agent_id=queued.agent_id, state="paused"))
        assert ran == []
        loop.resume(queued.agent_id)
        queued.result(timeout=10)
        assert ran == ["ran"]
        states = [e.data["state"] for e in recorder.of(queued.agent_id, "agent.state")]
        assert states == ["running", "paused", "running", "done"]


# -- redirect ----------------------------------------------------------------------------


async def test_redirect_is_delivered_exactly_once_in_order() -> None:
    proceed = asyncio.Event()
    async with conductor() as (loop, recorder):

        @loop.agent
        async def listener(ctx: cl.Context) -> list[list[str]]:
            seen = [await ctx.checkpoint()]
            await proceed.wait()
            seen.append(await ctx.checkpoint())
            seen.append(await ctx.checkpoint())
            return seen

        run = loop.start("listener")
        await recorder.wait_for(match("agent.state", agent_id=run.agent_id, state="running"))
        loop.redirect(run.agent_id, "focus on 2025 papers")
        loop.redirect(run.agent_id, "and cite them", by="phone")
        proceed.set()
        result = await run
        assert result[-2:] == [["focus on 2025 papers", "and cite them"], []]
        assert [e.data for e in recorder.of(run.agent_id, "instruction")] == [
            {"text": "focus on 2025 papers", "by": "python"},
            {"text": "and cite them", "by": "phone"},
        ]


async def test_a_checkpoint_is_a_coroutine_a_task_or_wait_for_can_run() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def waiter(ctx: cl.Context) -> list[list[str]]:
            first = await asyncio.wait_for(ctx.checkpoint(), 5)
            loop.redirect(ctx.agent_id, "next")
            return [first, await asyncio.create_task(ctx.checkpoint()), await ctx.checkpoint()]

        assert await loop.start("waiter") == [[], ["next"], []]


async def test_steering_an_ended_agent_raises_usage_error_naming_it() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def quick(ctx: cl.Context) -> None:
            return None

        run = loop.start("quick")
        await run
        verbs: list[Callable[[], object]] = [
            lambda: loop.pause(run.agent_id),
            lambda: loop.resume(run.agent_id),
            lambda: loop.redirect(run.agent_id, "new plan"),
        ]
        for verb in verbs:
            with pytest.raises(cl.UsageError, match=f"{run.agent_id} has already ended"):
                verb()
        with pytest.raises(cl.UsageError, match="no agent"):
            loop.redirect("nobody-1", "x")
        with pytest.raises(cl.UsageError, match="non-empty text"):
            loop.redirect(run.agent_id, "")
