"""ctx.parallel and ctx.handoff when children fail or are steered: fail fast,
return_exceptions, and stop/pause of a parent reaching its children (core/fanout.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import match
from tests.unit._fanout_support import conductor, ended, rows, states_by_id, wait_for_many

# -- failures ----------------------------------------------------------------------------


async def test_failed_child_stops_running_siblings_and_keeps_finished_ones() -> None:
    async with conductor() as (loop, recorder):
        ids: dict[str, str] = {}
        entered = {label: asyncio.Event() for label in ("quick", "boom", "slow")}
        fire = asyncio.Event()
        forever = asyncio.Event()
        boom_error = ValueError("the summarizer broke")
        caught: list[cl.AgentFailed] = []

        @loop.agent
        async def work(ctx: cl.Context, label: str) -> str:
            ids[label] = ctx.agent_id
            entered[label].set()
            if label == "boom":
                await fire.wait()
                raise boom_error
            if label == "slow":
                await forever.wait()
            return label

        @loop.agent
        async def parent(ctx: cl.Context) -> list[str]:
            try:
                return await ctx.parallel([("work", "quick"), ("work", "boom"), ("work", "slow")])
            except cl.AgentFailed as error:
                caught.append(error)
                raise

        run = loop.start("parent")
        for label in entered:
            await entered[label].wait()
        await ended(recorder, ids["quick"], "done")
        fire.set()

        with pytest.raises(cl.AgentFailed):
            await run
        await ended(recorder, ids["slow"], "stopped")

        [error] = caught
        assert error.agent_id == ids["boom"]
        assert error.name == "work"
        assert error.state == "failed"
        assert error.__cause__ is boom_error
        assert run.state is cl.AgentState.FAILED
        states = states_by_id(loop)
        assert states[ids["quick"]] == "done"
        assert states[ids["boom"]] == "failed"
        assert states[ids["slow"]] == "stopped"
        [quick_result] = recorder.of(ids["quick"], "agent.result")
        assert quick_result.data["result"] == "quick"  # finished work is kept


async def test_no_further_child_starts_once_a_child_has_failed() -> None:
    async with conductor() as (loop, recorder):
        ids: dict[str, str] = {}
        entered = {label: asyncio.Event() for label in ("boom", "slow")}
        fire = asyncio.Event()
        forever = asyncio.Event()

        @loop.agent
        async def work(ctx: cl.Context, label: str) -> str:
            ids[label] = ctx.agent_id
            entered[label].set()
            if label == "boom":
                await fire.wait()
                raise ValueError("broke")
            await forever.wait()
            return label

        @loop.agent
        async def parent(ctx: cl.Context) -> list[str]:
            labels = ["boom", "slow", "never", "never"]
            return await ctx.parallel([("work", label) for label in labels], limit=2)

        run = loop.start("parent")
        await entered["boom"].wait()
        await entered["slow"].wait()
        fire.set()

        with pytest.raises(cl.AgentFailed):
            await run
        await ended(recorder, ids["slow"], "stopped")
        assert "never" not in ids
        assert len(rows(loop, "work")) == 2


async def test_return_exceptions_puts_agent_failed_in_the_slot_and_lets_others_finish() -> None:
    async with conductor() as (loop, recorder):
        ids: dict[str, str] = {}
        go = asyncio.Event()
        boom_error = KeyError("missing")

        @loop.agent
        async def work(ctx: cl.Context, label: str) -> str:
            ids[label] = ctx.agent_id
            if label == "boom":
                raise boom_error
            await go.wait()
            return label

        @loop.agent
        async def parent(ctx: cl.Context) -> list[Any]:
            items = [("work", "first"), ("work", "boom"), ("work", "last")]
            return await ctx.parallel(items, return_exceptions=True)

        run = loop.start("parent")
        await wait_for_many(recorder, match("agent.started", name="work"), 3)
        await ended(recorder, ids["boom"], "failed")
        go.set()  # the siblings were not stopped: they can still finish

        first, failure, last = await run
        assert (first, last) == ("first", "last")
        assert isinstance(failure, cl.AgentFailed)
        assert failure.agent_id == ids["boom"]
        assert failure.state == "failed"
        assert failure.__cause__ is boom_error
        states = states_by_id(loop)
        assert [states[ids[label]] for label in ("first", "boom", "last")] == [
            "done",
            "failed",
            "done",
        ]
        assert run.state is cl.AgentState.DONE


# -- steering a parent and its children --------------------------------------------------


async def test_stopping_the_parent_during_parallel_stops_every_running_child() -> None:
    async with conductor() as (loop, recorder):
        forever = asyncio.Event()

        @loop.agent
        async def summarizer(ctx: cl.Context, chunk: str) -> str:
            await forever.wait()
            return chunk

        @loop.agent
        async def parent(ctx: cl.Context) -> list[str]:
            return await ctx.parallel([("summarizer", c) for c in "abc"])

        run = loop.start("parent")
        running = await wait_for_many(recorder, match("agent.state", state="running"), 4)
        children = [e.agent_id for e in running if e.agent_id != run.agent_id]
        assert len(children) == 3

        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        for child in children:
            await ended(recorder, child, "stopped")
        assert run.state is cl.AgentState.STOPPED
        states = states_by_id(loop)
        assert [states[child] for child in children] == ["stopped"] * 3


async def test_stopping_the_parent_during_handoff_stops_the_child() -> None:
    async with conductor() as (loop, recorder):
        forever = asyncio.Event()
        entered = asyncio.Event()
        writer_ids: list[str] = []

        @loop.agent
        async def writer(ctx: cl.Context, parts: list[str]) -> str:
            writer_ids.append(ctx.agent_id)
            entered.set()
            await forever.wait()
            return "never"

        @loop.agent
        async def researcher(ctx: cl.Context) -> str:
            return await ctx.handoff("writer", ["intro"])

        run = loop.start("researcher")
        await entered.wait()
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        [writer_id] = writer_ids
        await ended(recorder, writer_id, "stopped")
        assert run.state is cl.AgentState.STOPPED
        assert states_by_id(loop)[writer_id] == "stopped"


async def test_stopping_one_child_fails_the_waiting_parent_with_agent_failed_state_stopped() -> (
    None
):
    async with conductor() as (loop, recorder):
        forever = asyncio.Event()
        ids: dict[str, str] = {}
        entered = {label: asyncio.Event() for label in "ab"}
        caught: list[cl.AgentFailed] = []

        @loop.agent
        async def summarizer(ctx: cl.Context, chunk: str) -> str:
            ids[chunk] = ctx.agent_id
            entered[chunk].set()
            await forever.wait()
            return chunk

        @loop.agent
        async def parent(ctx: cl.Context) -> str:
            try:
                await ctx.parallel([("summarizer", "a"), ("summarizer", "b")])
            except cl.AgentFailed as error:
                caught.append(error)
                return "gave up"
            return "finished"

        run = loop.start("parent")
        await entered["a"].wait()
        await entered["b"].wait()
        loop.stop(ids["a"])

        assert await run == "gave up"
        [error] = caught
        assert error.agent_id == ids["a"]
        assert error.state == "stopped"
        assert isinstance(error.__cause__, cl.AgentStopped)
        await ended(recorder, ids["b"], "stopped")  # fail fast: the sibling is stopped too
        assert run.state is cl.AgentState.DONE


async def test_pausing_the_parent_pauses_its_children_at_their_next_gate_until_resumed() -> None:
    async with conductor() as (loop, recorder):
        finish = asyncio.Event()
        ids: dict[str, str] = {}
        entered = {label: asyncio.Event() for label in "ab"}

        @loop.agent
        async def summarizer(ctx: cl.Context, chunk: str) -> str:
            ids[chunk] = ctx.agent_id
            entered[chunk].set()
            while not finish.is_set():
                await ctx.checkpoint()
            return chunk

        @loop.agent
        async def parent(ctx: cl.Context) -> list[str]:
            return await ctx.parallel([("summarizer", "a"), ("summarizer", "b")])

        run = loop.start("parent")
        await entered["a"].wait()
        await entered["b"].wait()

        loop.pause(run.agent_id)
        for chunk in "ab":
            await ended(recorder, ids[chunk], "paused")
        finish.set()  # they cannot see it while they are held at the gate
        loop.resume(run.agent_id)

        assert await run == ["a", "b"]
        [resume] = [e for e in recorder.of(run.agent_id, "command") if e.data["op"] == "resume"]
        for chunk in "ab":
            [done] = [
                e for e in recorder.of(ids[chunk], "agent.state") if e.data["state"] == "done"
            ]
            assert done.seq > resume.seq
        states = states_by_id(loop)
        assert [states[ids[c]] for c in "ab"] == ["done", "done"]
