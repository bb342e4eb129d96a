"""ctx.parallel and ctx.handoff: children a parent waits for (rules in core/fanout.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pandas as pd
import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match


@asynccontextmanager
async def conductor() -> AsyncIterator[tuple[cl.Conductor, EventRecorder]]:
    async with cl.Conductor("fanout", hub=False) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        yield loop, recorder


async def ended(recorder: EventRecorder, agent_id: str, state: str) -> None:
    await recorder.wait_for(match("agent.state", agent_id=agent_id, state=state))


async def wait_for_many(
    recorder: EventRecorder, predicate: Callable[[cl.Event], bool], count: int
) -> list[cl.Event]:
    """The first ``count`` recorded events that match ``predicate``, waiting for them."""
    found: list[cl.Event] = []
    since = 0
    while len(found) < count:
        event = await recorder.wait_for(predicate, since=since)
        found.append(event)
        since = next(i for i, e in enumerate(recorder.events) if e is event) + 1
    return found


def rows(loop: cl.Conductor, name: str) -> list[dict[str, Any]]:
    frame = loop.agents()
    return frame[frame["name"] == name].to_dict("records")


def states_by_id(loop: cl.Conductor) -> dict[str, str]:
    frame = loop.agents()
    return dict(zip(frame["agent_id"], frame["state"], strict=True))


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


# -- handoff -----------------------------------------------------------------------------


async def test_handoff_returns_the_child_result_passes_kwargs_and_records_a_handoff_event() -> None:
    async with conductor() as (loop, recorder):
        writer_ids: list[str] = []
        writer_parents: list[str | None] = []

        @loop.agent
        async def writer(ctx: cl.Context, parts: list[str], *, style: str = "plain") -> str:
            writer_ids.append(ctx.agent_id)
            writer_parents.append(ctx.parent)
            return f"{style}: " + " + ".join(parts)

        @loop.agent
        async def researcher(ctx: cl.Context) -> str:
            return await ctx.handoff("writer", ["intro", "body"], style="bold")

        run = loop.start("researcher")
        assert await run == "bold: intro + body"

        [writer_id] = writer_ids
        assert writer_parents == [run.agent_id]
        [handoff] = recorder.of(run.agent_id, "handoff")
        assert handoff.data["to"] == writer_id
        assert handoff.data["name"] == "writer"
        assert rows(loop, "writer")[0]["parent"] == run.agent_id


async def test_handoff_to_a_failing_child_raises_agent_failed_in_the_parent() -> None:
    async with conductor() as (loop, _recorder):
        writer_error = RuntimeError("writer crashed")
        caught: list[cl.AgentFailed] = []

        @loop.agent
        async def writer(ctx: cl.Context, parts: list[str]) -> str:
            raise writer_error

        @loop.agent
        async def researcher(ctx: cl.Context) -> str:
            try:
                return await ctx.handoff("writer", ["intro"])
            except cl.AgentFailed as error:
                caught.append(error)
                return "recovered"

        run = loop.start("researcher")
        assert await run == "recovered"
        [error] = caught
        [writer_row] = rows(loop, "writer")
        assert error.agent_id == writer_row["agent_id"]
        assert error.state == "failed"
        assert error.__cause__ is writer_error
        assert writer_row["state"] == "failed"


async def test_handoff_with_wrong_arguments_raises_usage_error_and_starts_no_child() -> None:
    async with conductor() as (loop, _recorder):

        @loop.agent
        async def writer(ctx: cl.Context, parts: list[str]) -> str:
            return "never"

        @loop.agent
        async def researcher(ctx: cl.Context) -> str:
            return await ctx.handoff("writer", ["intro"], tone="dry")

        run = loop.start("researcher")
        with pytest.raises(cl.UsageError, match="cannot take these arguments"):
            await run
        assert rows(loop, "writer") == []


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
