"""ctx.parallel: results in item order, parent links, the limit, bad items (core/fanout.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import match
from tests.unit._fanout_support import conductor, ended, rows

# -- results and structure ---------------------------------------------------------------


async def test_parallel_returns_results_in_item_order_whatever_order_children_finish_in() -> None:
    async with conductor() as (loop, recorder):
        release = {chunk: asyncio.Event() for chunk in "abc"}
        entered = {chunk: asyncio.Event() for chunk in "abc"}
        ids: dict[str, str] = {}
        finished: list[str] = []

        @loop.agent
        async def summarizer(ctx: cl.Context, chunk: str) -> str:
            ids[chunk] = ctx.agent_id
            entered[chunk].set()
            await release[chunk].wait()
            finished.append(chunk)
            return chunk.upper()

        @loop.agent
        async def parent(ctx: cl.Context, chunks: list[str]) -> list[str]:
            return await ctx.parallel([("summarizer", c) for c in chunks])

        run = loop.start("parent", ["a", "b", "c"])
        for chunk in "abc":
            await entered[chunk].wait()
        for chunk in "cab":  # finish in a different order than the items
            release[chunk].set()
            await ended(recorder, ids[chunk], "done")

        assert await run == ["A", "B", "C"]
        assert finished == ["c", "a", "b"]


async def test_children_record_the_parent_agent_id_in_agents_and_context() -> None:
    async with conductor() as (loop, _recorder):
        seen_parents: list[str | None] = []

        @loop.agent
        async def summarizer(ctx: cl.Context, chunk: str) -> int:
            seen_parents.append(ctx.parent)
            return len(chunk)

        @loop.agent
        async def parent(ctx: cl.Context) -> list[int]:
            return await ctx.parallel([("summarizer", "ab"), ("summarizer", "xyz")])

        run = loop.start("parent")
        assert await run == [2, 3]
        children = rows(loop, "summarizer")
        assert len(children) == 2
        assert {child["parent"] for child in children} == {run.agent_id}
        assert seen_parents == [run.agent_id, run.agent_id]
        assert pd.isna(rows(loop, "parent")[0]["parent"])


async def test_parallel_of_an_empty_list_returns_an_empty_list_and_starts_nothing() -> None:
    async with conductor() as (loop, _recorder):

        @loop.agent
        async def summarizer(ctx: cl.Context, chunk: str) -> str:
            return chunk

        @loop.agent
        async def parent(ctx: cl.Context) -> list[str]:
            return await ctx.parallel([])

        run = loop.start("parent")
        assert await run == []
        assert run.state is cl.AgentState.DONE
        assert rows(loop, "summarizer") == []


# -- limit -------------------------------------------------------------------------------


async def test_limit_caps_the_children_running_at_once_and_reaches_it() -> None:
    async with conductor() as (loop, recorder):
        limit, items = 3, 10
        running = 0
        peak = 0
        full = asyncio.Event()
        release = asyncio.Event()

        @loop.agent
        async def worker(ctx: cl.Context, i: int) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if running == limit:
                full.set()
            await asyncio.sleep(0)  # let the others overlap with this one
            await release.wait()
            running -= 1
            return i * 10

        @loop.agent
        async def parent(ctx: cl.Context) -> list[int]:
            return await ctx.parallel([("worker", i) for i in range(items)], limit=limit)

        run = loop.start("parent")
        await full.wait()
        # children start lazily: only `limit` exist while they are all busy
        assert len(recorder.of(kind="agent.started")) == 1 + limit
        release.set()

        assert await run == [i * 10 for i in range(items)]
        assert peak == limit
        workers = rows(loop, "worker")
        assert len(workers) == items
        assert {w["state"] for w in workers} == {"done"}


async def test_limit_starts_the_next_child_as_soon_as_one_finishes_while_others_run() -> None:
    async with conductor() as (loop, recorder):
        release = {i: asyncio.Event() for i in range(4)}
        entered = {i: asyncio.Event() for i in range(4)}

        @loop.agent
        async def worker(ctx: cl.Context, i: int) -> int:
            entered[i].set()
            await release[i].wait()
            return i

        @loop.agent
        async def parent(ctx: cl.Context) -> list[int]:
            return await ctx.parallel([("worker", i) for i in range(4)], limit=2)

        run = loop.start("parent")
        await entered[0].wait()
        await entered[1].wait()
        release[0].set()
        # worker 1 is still busy: the slot worker 0 freed goes to worker 2 at once
        await recorder.wait_for(match("agent.started", name="worker", input="2"))
        assert not entered[3].is_set()
        release[1].set()
        await recorder.wait_for(match("agent.started", name="worker", input="3"))
        release[2].set()
        release[3].set()
        assert await run == [0, 1, 2, 3]


@pytest.mark.parametrize("bad_limit", [0, -1, "2", 1.5, True])
async def test_invalid_limit_raises_usage_error_and_starts_no_child(bad_limit: Any) -> None:
    async with conductor() as (loop, _recorder):

        @loop.agent
        async def summarizer(ctx: cl.Context, chunk: str) -> str:
            return chunk

        @loop.agent
        async def parent(ctx: cl.Context) -> list[str]:
            return await ctx.parallel([("summarizer", "a"), ("summarizer", "b")], limit=bad_limit)

        run = loop.start("parent")
        with pytest.raises(cl.UsageError, match="limit"):
            await run
        assert run.state is cl.AgentState.FAILED
        assert rows(loop, "summarizer") == []


async def test_a_thousand_children_with_limit_fifty_all_complete_in_order() -> None:
    async with conductor() as (loop, _recorder):
        running = 0
        peak = 0

        @loop.agent
        async def worker(ctx: cl.Context, i: int) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)
            await ctx.checkpoint()
            running -= 1
            return i * 2

        @loop.agent
        async def parent(ctx: cl.Context) -> list[int]:
            return await ctx.parallel([("worker", i) for i in range(1000)], limit=50)

        run = loop.start("parent")
        assert await run == [i * 2 for i in range(1000)]
        assert 1 < peak <= 50
        workers = rows(loop, "worker")
        assert len(workers) == 1000
        assert {w["state"] for w in workers} == {"done"}
        assert {w["parent"] for w in workers} == {run.agent_id}


# -- bad items ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([("summarizer", "a"), "summarizer"], "tuple"),
        ([("summarizer", "a"), ()], "tuple"),
        ("summarizer", "list of"),
        ([("summarizer", "a"), ("nobody", "b")], "no agent named 'nobody'"),
        ([("summarizer", "a"), ("summarizer",)], "cannot take these arguments"),
        ([("summarizer", "a"), ("summarizer", "b", "extra")], "cannot take these arguments"),
    ],
    ids=["not-a-tuple", "empty-tuple", "a-string", "unknown-agent", "missing-arg", "extra-arg"],
)
async def test_bad_items_raise_usage_error_before_any_child_starts(
    items: Any, message: str
) -> None:
    async with conductor() as (loop, _recorder):

        @loop.agent
        async def summarizer(ctx: cl.Context, chunk: str) -> str:
            return chunk

        @loop.agent
        async def parent(ctx: cl.Context) -> str:
            try:
                await ctx.parallel(items)
            except cl.UsageError as error:
                return str(error)
            return "no error"

        run = loop.start("parent")
        assert message in await run
        assert rows(loop, "summarizer") == []
