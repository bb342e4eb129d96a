"""Several tasks of one agent waiting at once (a framework's parallel tool calls): every
waiter is woken by a decision, a resume or a stop, and the agent's state says why it waits."""

from __future__ import annotations

import asyncio

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match
from tests.unit._steering_support import conductor, state


async def opened_by_prompt(
    recorder: EventRecorder, run: cl.AgentRun, *prompts: str
) -> dict[str, str]:
    """Prompt -> request id, once the agent has opened a request with each prompt."""
    ids = {}
    for prompt in prompts:
        event = await recorder.wait_for(
            match("request.opened", agent_id=run.agent_id, prompt=prompt)
        )
        ids[prompt] = str(event.data["request_id"])
    return ids


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")], ids=["a-first", "b-first"])
async def test_two_approvals_gathered_in_one_agent_both_return_in_either_order(
    order: tuple[str, str],
) -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> list[bool]:
            decisions = await asyncio.gather(ctx.approve("a"), ctx.approve("b"))
            return [bool(d) for d in decisions]

        run = loop.start("framework")
        ids = await opened_by_prompt(recorder, run, "a", "b")
        first, second = order
        assert loop.approve(ids[first]) is True
        assert loop.reject(ids[second]) is True
        expected = {first: True, second: False}
        assert await run == [expected["a"], expected["b"]]
        assert loop.pending() == []


async def test_the_agent_shows_waiting_while_any_of_its_tasks_waits_for_a_human() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            async def call(prompt: str) -> None:
                await ctx.approve(prompt)
                ctx.log(f"{prompt} back")

            await asyncio.gather(call("a"), call("b"))

        run = loop.start("framework")
        ids = await opened_by_prompt(recorder, run, "a", "b")
        assert run.state is cl.AgentState.WAITING
        loop.approve(ids["a"])
        await recorder.wait_for(match("log", agent_id=run.agent_id, message="a back"))
        assert run.state is cl.AgentState.WAITING  # b still waits for a human
        loop.approve(ids["b"])
        await run
        states = [e.data["state"] for e in recorder.of(run.agent_id, "agent.state")]
        assert states == ["running", "waiting", "running", "done"]


async def test_a_pause_shows_paused_only_once_no_task_of_the_agent_waits_for_a_human() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            async def call(prompt: str) -> None:
                await ctx.approve(prompt)  # a pause holds it after the decision
                ctx.log(f"{prompt} back")

            await asyncio.gather(call("a"), call("b"))

        run = loop.start("framework")
        ids = await opened_by_prompt(recorder, run, "a", "b")
        loop.pause(run.agent_id)
        loop.approve(ids["a"])  # a's task is now held by the pause while b's still asks
        loop.approve(ids["b"])
        paused = await recorder.wait_for(
            match("agent.state", agent_id=run.agent_id, state="paused")
        )
        [b_decided] = [
            e
            for e in recorder.of(run.agent_id, "request.decided")
            if e.data["request_id"] == ids["b"]
        ]
        assert paused.seq > b_decided.seq  # not paused while b still waited for a human
        assert recorder.of(run.agent_id, "log") == []  # a was held, not let through
        loop.resume(run.agent_id)
        await run
        resumed = recorder.of(run.agent_id, "command")[-1]
        assert resumed.data["op"] == "resume"
        logs = recorder.of(run.agent_id, "log")
        assert sorted(e.data["message"] for e in logs) == ["a back", "b back"]
        assert all(e.seq > resumed.seq for e in logs)


async def test_parallel_tool_spans_paused_inside_both_end_once_resumed_and_the_agent_goes_on() -> (
    None
):
    async with conductor() as (loop, recorder):
        release = asyncio.Event()

        @loop.agent
        async def framework(ctx: cl.Context) -> str:
            async def call(n: int) -> int:
                async with ctx.tool("lookup", n=n):
                    await release.wait()
                return n

            results = await asyncio.gather(call(1), call(2))
            await ctx.checkpoint()
            ctx.status("went on")
            return f"results {results}"

        run = loop.start("framework")
        await recorder.wait_for(match("tool.started", agent_id=run.agent_id, args={"n": 2}))
        loop.pause(run.agent_id)
        release.set()  # both spans end while paused: each is held when it ends
        await state(recorder, run, "paused")
        assert len(recorder.of(run.agent_id, "tool.finished")) == 2
        assert recorder.of(run.agent_id, "agent.status") == []
        loop.resume(run.agent_id)
        assert await run == "results [1, 2]"
        assert recorder.of(run.agent_id, "agent.status")[-1].data["text"] == "went on"


async def test_stop_while_several_tasks_wait_gives_every_waiter_agent_stopped() -> None:
    async with conductor() as (loop, recorder):
        release = asyncio.Event()
        stopped: list[str] = []

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            async def approval(prompt: str) -> None:
                try:
                    await ctx.approve(prompt)
                except cl.AgentStopped:
                    stopped.append(prompt)
                    raise

            async def tool_call() -> None:
                try:
                    async with ctx.tool("lookup"):
                        await release.wait()
                except cl.AgentStopped:  # held by the pause at the span's end
                    stopped.append("tool")
                    raise

            await asyncio.gather(approval("a"), approval("b"), tool_call())

        run = loop.start("framework")
        await opened_by_prompt(recorder, run, "a", "b")
        await recorder.wait_for(match("tool.started", agent_id=run.agent_id))
        loop.pause(run.agent_id)
        release.set()
        # a span's end is a gate: once tool.finished is recorded, that task is held
        await recorder.wait_for(match("tool.finished", agent_id=run.agent_id))
        assert len(run._record.gate.waiters) == 3  # two approvals and the pause
        assert run.state is cl.AgentState.WAITING
        loop.stop(run.agent_id, by="phone")
        with pytest.raises(cl.AgentStopped, match="stopped by phone"):
            await run
        assert sorted(stopped) == ["a", "b", "tool"]
        assert run.state is cl.AgentState.STOPPED
        assert loop.pending() == []


async def test_stop_while_parallel_tasks_of_one_agent_are_paused_stops_them_all() -> None:
    async with conductor() as (loop, recorder):
        go = asyncio.Event()
        stopped: list[int] = []

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            async def call(n: int) -> None:
                try:
                    await ctx.checkpoint()
                except cl.AgentStopped:
                    stopped.append(n)
                    raise

            await go.wait()
            await asyncio.gather(*(call(n) for n in range(3)))

        run = loop.start("framework")
        await state(recorder, run, "running")
        loop.pause(run.agent_id)
        go.set()
        await state(recorder, run, "paused")
        assert len(run._record.gate.waiters) == 3  # every task is held by the pause
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        assert sorted(stopped) == [0, 1, 2]
        assert run.state is cl.AgentState.STOPPED


async def test_a_framework_cancelling_one_waiting_call_withdraws_its_request_and_goes_on() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> str:
            first = asyncio.create_task(ctx.approve("a"))
            await ctx.approve("b")
            first.cancel()  # the framework gives up on the other call: not a stop
            try:
                await first
            except asyncio.CancelledError:
                return "cancelled, not stopped"
            return "not cancelled"

        run = loop.start("framework")
        ids = await opened_by_prompt(recorder, run, "a", "b")
        loop.approve(ids["b"])
        assert await run == "cancelled, not stopped"
        assert loop.request(ids["a"]).decision == "withdrawn"
        states = [e.data["state"] for e in recorder.of(run.agent_id, "agent.state")]
        assert states == ["running", "waiting", "running", "done"]


async def test_an_approval_its_framework_cancels_leaves_the_agent_running_not_waiting() -> None:
    async with conductor() as (loop, recorder):
        give_up, finish = asyncio.Event(), asyncio.Event()

        @loop.agent
        async def framework(ctx: cl.Context) -> str:
            call = asyncio.create_task(ctx.approve("a"))
            await give_up.wait()
            call.cancel()  # as a framework's timeout does
            with pytest.raises(asyncio.CancelledError):
                await call
            ctx.status("went on")
            await finish.wait()
            await ctx.checkpoint()
            return "done"

        run = loop.start("framework")
        ids = await opened_by_prompt(recorder, run, "a")
        give_up.set()
        await recorder.wait_for(match("agent.status", agent_id=run.agent_id, text="went on"))
        assert run.state is cl.AgentState.RUNNING
        assert loop.request(ids["a"]).decision == "withdrawn"
        finish.set()
        assert await run == "done"
