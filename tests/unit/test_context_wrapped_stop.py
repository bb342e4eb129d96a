"""A stop that a framework wraps in its own error (the OpenAI Agents SDK re-raises as its
``UserError``) still ends the agent ``stopped``, never ``failed``."""

from __future__ import annotations

import asyncio

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match
from tests.unit._steering_support import conductor, opened


class FrameworkError(Exception):
    """What a framework raises when a tool it called raised."""


async def test_an_agent_that_wraps_agent_stopped_in_its_own_error_ends_stopped() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            try:
                await ctx.approve("Run the tool?")
            except cl.AgentStopped as stopped:
                raise FrameworkError(f"tool failed: {stopped}") from stopped

        run = loop.start("framework")
        await opened(recorder, run)
        loop.stop(run.agent_id, by="phone")
        with pytest.raises(cl.AgentStopped, match="stopped by phone"):
            await run
        assert run.state is cl.AgentState.STOPPED
        assert recorder.of(run.agent_id, "agent.error") == []


async def test_an_agent_turning_the_cancel_of_its_own_sleep_into_an_error_ends_stopped() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            ctx.status("sleeping")
            try:
                await asyncio.sleep(3600)  # its own await: a stop cancels it here
            except asyncio.CancelledError as cancelled:
                raise FrameworkError("the run was interrupted") from cancelled

        run = loop.start("framework")
        await recorder.wait_for(match("agent.status", agent_id=run.agent_id, text="sleeping"))
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        assert run.state is cl.AgentState.STOPPED
        assert recorder.of(run.agent_id, "agent.error") == []


async def test_a_framework_error_after_a_stop_in_a_tool_span_ends_the_agent_stopped() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            try:
                async with ctx.tool("slow_api"):
                    await asyncio.Event().wait()
            except cl.AgentStopped as stopped:
                raise FrameworkError("tool call failed") from stopped

        run = loop.start("framework")
        await recorder.wait_for(match("tool.started", agent_id=run.agent_id))
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        assert run.state is cl.AgentState.STOPPED


async def test_an_agent_that_swallows_the_stop_and_returns_ends_done_with_its_result() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> str:
            try:
                await ctx.approve("Run the tool?")
            except cl.AgentStopped:
                return "partial results"  # as a framework that turns a tool error into text
            return "approved"

        run = loop.start("framework")
        await opened(recorder, run)
        loop.stop(run.agent_id)
        assert await run == "partial results"
        states = [e.data["state"] for e in recorder.of(run.agent_id, "agent.state")]
        assert states == ["running", "waiting", "running", "done"]


async def test_the_same_error_without_a_stop_ends_the_agent_failed() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            await ctx.checkpoint()
            raise FrameworkError("a real failure")

        run = loop.start("framework")
        with pytest.raises(FrameworkError):
            await run
        assert run.state is cl.AgentState.FAILED
        [error] = recorder.of(run.agent_id, "agent.error")
        assert error.data["type"] == "FrameworkError"


async def test_a_subagent_whose_framework_wraps_its_stop_ends_stopped() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def parent(ctx: cl.Context) -> str:
            try:
                async with ctx.subagent("handoff") as sub:
                    try:
                        await sub.approve("Go on?")
                    except cl.AgentStopped as stopped:
                        raise FrameworkError("handoff failed") from stopped
            except cl.AgentFailed as failed:
                return failed.state
            return "not raised"

        run = loop.start("parent")
        sub = await recorder.wait_for(match("agent.started", name="handoff"))
        await recorder.wait_for(match("request.opened", agent_id=sub.agent_id))
        assert sub.agent_id is not None
        loop.stop(sub.agent_id)
        assert await run == "stopped"
        assert recorder.of(sub.agent_id, "agent.error") == []


def test_a_plain_def_agent_that_wraps_agent_stopped_in_its_own_error_ends_stopped() -> None:
    with cl.Conductor("sync-wrapped") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        def framework(ctx: cl.SyncContext) -> None:
            try:
                ctx.approve("Run the tool?")
            except cl.AgentStopped as stopped:
                raise FrameworkError("tool failed") from stopped

        run = loop.start("framework")
        recorder.wait_for_sync(match("request.opened", agent_id=run.agent_id))
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            run.result(timeout=10)
        assert run.state is cl.AgentState.STOPPED
        assert recorder.of(run.agent_id, "agent.error") == []


def test_a_plain_def_agent_that_wraps_a_stop_seen_at_its_checkpoint_ends_stopped() -> None:
    with cl.Conductor("sync-wrapped-loop") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        def framework(ctx: cl.SyncContext) -> None:
            ctx.status("looping")
            try:
                while True:
                    ctx.checkpoint()
            except cl.AgentStopped:
                raise FrameworkError("interrupted") from None  # the stop is not even chained

        run = loop.start("framework")
        recorder.wait_for_sync(match("agent.status", agent_id=run.agent_id, text="looping"))
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            run.result(timeout=10)
        assert run.state is cl.AgentState.STOPPED


def test_a_plain_def_agent_that_swallows_the_stop_and_returns_ends_done() -> None:
    with cl.Conductor("sync-swallowed") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        def framework(ctx: cl.SyncContext) -> str:
            try:
                ctx.approve("Run the tool?")
            except cl.AgentStopped:
                return "partial results"
            return "approved"

        run = loop.start("framework")
        recorder.wait_for_sync(match("request.opened", agent_id=run.agent_id))
        loop.stop(run.agent_id)
        assert run.result(timeout=10) == "partial results"
        assert run.state is cl.AgentState.DONE
