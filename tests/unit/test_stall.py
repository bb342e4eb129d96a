"""Stall detection: no progress for ``stall_after`` seconds, or the same tool call repeated.

Time is a ``ManualClock``: nothing here waits for real time. The stall watcher checks on the
clock; once it has emitted an ``agent.stalled`` event it is already asleep again, so a test
that has seen one of its events can advance the clock and know the watcher will look.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, ManualClock, match

STALL_AFTER = 10.0


@asynccontextmanager
async def conductor(
    clock: ManualClock, **kwargs: Any
) -> AsyncIterator[tuple[cl.Conductor, EventRecorder]]:
    async with cl.Conductor("stall", clock=clock, **kwargs) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        yield loop, recorder


def stalled(loop: cl.Conductor, agent_id: str) -> bool:
    frame = loop.agents()
    found = frame[frame["agent_id"] == agent_id]
    assert len(found) == 1
    return bool(found.iloc[0]["stalled"])


def stall_events(recorder: EventRecorder, agent_id: str) -> list[cl.Event]:
    return recorder.of(agent_id, "agent.stalled")


def register_canary(loop: cl.Conductor, ticks: asyncio.Queue[str]) -> None:
    """An agent that idles in its own await and reports progress on each tick."""

    @loop.agent
    async def canary(ctx: cl.Context) -> str:
        ctx.status("idle")
        while (text := await ticks.get()) != "end":
            ctx.status(text)
        return "canary done"


async def advance_past_stalls(
    clock: ManualClock,
    recorder: EventRecorder,
    canary: cl.AgentRun,
    ticks: asyncio.Queue[str],
    steps: Sequence[float],
) -> None:
    """Advance the clock by each step and wait until the watcher has checked every agent.

    The canary is idle, so each check marks it stalled; once that event is seen, the
    same check has looked at every other agent. Its progress then clears it for the next.
    """
    for seconds in steps:
        since = len(recorder.events)
        clock.advance(seconds)
        await recorder.wait_for(
            match("agent.stalled", agent_id=canary.agent_id, stalled=True), since=since
        )
        await ticks.put("tick")
        await recorder.wait_for(
            match("agent.stalled", agent_id=canary.agent_id, stalled=False), since=since
        )


# -- idle: no progress for stall_after seconds --------------------------------------------


async def test_agent_silent_in_its_own_await_for_stall_after_seconds_is_marked_stalled() -> None:
    clock = ManualClock()
    answered, finish = asyncio.Event(), asyncio.Event()
    async with conductor(clock, stall_after=STALL_AFTER) as (loop, recorder):

        @loop.agent
        async def slow(ctx: cl.Context) -> str:
            ctx.status("waiting for the service")
            await answered.wait()
            ctx.status("the service answered")
            await finish.wait()
            return "ok"

        run = loop.start("slow")
        await recorder.wait_for(match("agent.status", agent_id=run.agent_id))
        assert stalled(loop, run.agent_id) is False

        clock.advance(STALL_AFTER)
        event = await recorder.wait_for(match("agent.stalled", agent_id=run.agent_id, stalled=True))
        assert "no progress" in event.data["reason"]
        assert "10" in event.data["reason"]
        assert stalled(loop, run.agent_id) is True
        assert run.state is cl.AgentState.RUNNING  # stalled is shown beside running

        answered.set()
        cleared = await recorder.wait_for(
            match("agent.stalled", agent_id=run.agent_id, stalled=False)
        )
        progress = recorder.of(run.agent_id, "agent.status")[-1]
        assert progress.data["text"] == "the service answered"
        assert progress.seq < cleared.seq
        assert stalled(loop, run.agent_id) is False
        assert [e.data["stalled"] for e in stall_events(recorder, run.agent_id)] == [True, False]

        finish.set()
        assert await run == "ok"


async def test_idle_stall_counts_from_each_agents_own_last_progress() -> None:
    clock = ManualClock()
    spoke, release = asyncio.Event(), asyncio.Event()
    async with conductor(clock, stall_after=STALL_AFTER) as (loop, recorder):

        @loop.agent
        async def quiet(ctx: cl.Context) -> None:
            ctx.status("thinking")
            await release.wait()

        @loop.agent
        async def chatty(ctx: cl.Context) -> None:
            ctx.status("thinking")
            await spoke.wait()
            ctx.status("still thinking")
            await release.wait()

        early, late = loop.start("quiet"), loop.start("chatty")
        await recorder.wait_for(match("agent.status", agent_id=early.agent_id))
        await recorder.wait_for(match("agent.status", agent_id=late.agent_id))
        clock.advance(2)  # before the watcher's first check
        spoke.set()
        await recorder.wait_for(
            match("agent.status", agent_id=late.agent_id, text="still thinking")
        )

        clock.advance(STALL_AFTER - 2)  # quiet: 10 s without progress, chatty: 8 s
        await recorder.wait_for(match("agent.stalled", agent_id=early.agent_id, stalled=True))
        assert stall_events(recorder, late.agent_id) == []
        assert stalled(loop, late.agent_id) is False

        clock.advance(3)  # chatty: 11 s without progress
        await recorder.wait_for(match("agent.stalled", agent_id=late.agent_id, stalled=True))
        assert stalled(loop, early.agent_id) is True
        assert stalled(loop, late.agent_id) is True

        release.set()
        await early
        await late
        assert stalled(loop, early.agent_id) is False  # an ended agent is not stalled


# -- repeat: the same tool call over and over ---------------------------------------------


async def test_same_tool_call_repeat_limit_times_in_a_row_is_a_stall_until_another_call() -> None:
    clock = ManualClock()
    more, switch, finish = asyncio.Event(), asyncio.Event(), asyncio.Event()
    async with conductor(clock, repeat_limit=4) as (loop, recorder):

        @loop.agent
        async def looping(ctx: cl.Context) -> str:
            for _ in range(3):
                async with ctx.tool("search", query="same thing"):
                    pass
            ctx.status("searched three times")
            await more.wait()
            async with ctx.tool("search", query="same thing"):
                pass
            await switch.wait()
            async with ctx.tool("fetch", url="https://example.org"):
                pass
            await finish.wait()
            return "moved on"

        run = loop.start("looping")
        await recorder.wait_for(match("agent.status", agent_id=run.agent_id))
        assert stall_events(recorder, run.agent_id) == []  # 3 < repeat_limit=4
        assert stalled(loop, run.agent_id) is False

        more.set()
        event = await recorder.wait_for(match("agent.stalled", agent_id=run.agent_id, stalled=True))
        assert "search" in event.data["reason"]
        assert "4" in event.data["reason"]
        tool_calls = [e for e in recorder.of(run.agent_id, "tool.started") if e.seq < event.seq]
        assert len(tool_calls) == 4
        assert stalled(loop, run.agent_id) is True
        assert run.state is cl.AgentState.RUNNING

        switch.set()
        cleared = await recorder.wait_for(
            match("agent.stalled", agent_id=run.agent_id, stalled=False)
        )
        fetch = recorder.of(run.agent_id, "tool.started")[-1]
        assert fetch.data["tool"] == "fetch"
        assert fetch.seq < cleared.seq
        assert stalled(loop, run.agent_id) is False

        finish.set()
        assert await run == "moved on"


async def test_same_tool_with_other_arguments_is_not_a_repeat() -> None:
    clock = ManualClock()
    async with conductor(clock) as (loop, recorder):  # default repeat_limit: 3

        @loop.agent
        async def searching(ctx: cl.Context) -> None:
            for query in ["a", "b", "a", "b", "c", "a"]:
                async with ctx.tool("search", query=query):
                    pass
            ctx.status("varied searches done")
            for _ in range(3):
                async with ctx.tool("search", query="d"):
                    pass
            ctx.status("repeated searches done")

        run = loop.start("searching")
        await run
        events = recorder.of(run.agent_id)
        varied = next(e for e in events if e.data.get("text") == "varied searches done")
        (stall,) = stall_events(recorder, run.agent_id)
        assert stall.data["stalled"] is True
        assert varied.seq < stall.seq
        last_search = [e for e in events if e.kind == "tool.started"][-1]
        assert last_search.data["args"] == {"query": "d"}
        assert last_search.seq < stall.seq  # the third identical call made it a stall


# -- waiting for a human or for children is not a stall -----------------------------------


async def test_agent_waiting_for_approval_is_never_marked_stalled() -> None:
    clock = ManualClock()
    ticks: asyncio.Queue[str] = asyncio.Queue()
    async with conductor(clock, stall_after=STALL_AFTER) as (loop, recorder):
        register_canary(loop, ticks)

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            ctx.status("about to ask")
            return (await ctx.approve("Deploy to production?")).approved

        canary = loop.start("canary")
        run = loop.start("asks")
        opened = await recorder.wait_for(match("request.opened", agent_id=run.agent_id))
        await recorder.wait_for(match("agent.status", agent_id=canary.agent_id))

        await advance_past_stalls(clock, recorder, canary, ticks, [STALL_AFTER, 1_000, 1e6])
        assert stall_events(recorder, run.agent_id) == []
        assert stalled(loop, run.agent_id) is False
        assert run.state is cl.AgentState.WAITING

        assert loop.approve(opened.data["request_id"]) is True
        assert await run is True
        await ticks.put("end")
        assert await canary == "canary done"
        assert stall_events(recorder, run.agent_id) == []


async def test_parent_waiting_for_its_children_is_never_marked_stalled() -> None:
    clock = ManualClock()
    ticks: asyncio.Queue[str] = asyncio.Queue()
    release = asyncio.Event()
    async with conductor(clock, stall_after=STALL_AFTER) as (loop, recorder):
        register_canary(loop, ticks)

        @loop.agent
        async def child(ctx: cl.Context, n: int) -> int:
            ctx.status(f"child {n} working")
            await release.wait()
            return n

        @loop.agent
        async def parent(ctx: cl.Context) -> list[int]:
            return await ctx.parallel([("child", 0), ("child", 1)])

        canary = loop.start("canary")
        run = loop.start("parent")
        await recorder.wait_for(match("agent.status", agent_id=canary.agent_id))
        await recorder.wait_for(match("agent.status", text="child 0 working"))
        await recorder.wait_for(match("agent.status", text="child 1 working"))

        await advance_past_stalls(clock, recorder, canary, ticks, [STALL_AFTER, 1_000, 1e6])
        assert stall_events(recorder, run.agent_id) == []
        assert stalled(loop, run.agent_id) is False
        assert run.state is cl.AgentState.RUNNING
        agents = loop.agents()
        children = agents[agents["parent"] == run.agent_id]
        assert len(children) == 2
        assert children["stalled"].all()  # they are silent in their own await

        release.set()
        assert await run == [0, 1]
        await ticks.put("end")
        assert await canary == "canary done"
        assert stall_events(recorder, run.agent_id) == []
