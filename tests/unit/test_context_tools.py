"""Tool spans from a framework's callbacks: ``ctx.tool_started`` / ``ctx.tool_finished``,
the ``call_id`` both events carry, errors, misuse, and spans open side by side."""

from __future__ import annotations

import asyncio

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder
from tests.unit._steering_support import conductor


async def test_tool_started_and_finished_record_one_span_under_the_frameworks_call_id() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> str:
            call_id = ctx.tool_started("search", call_id="toolu_01", query="agents", k=3)
            ctx.tool_finished(call_id)
            return call_id

        run = loop.start("framework")
        assert await run == "toolu_01"
        [started] = recorder.of(run.agent_id, "tool.started")
        [finished] = recorder.of(run.agent_id, "tool.finished")
        assert started.data["call_id"] == finished.data["call_id"] == "toolu_01"
        assert started.data["tool"] == finished.data["tool"] == "search"
        assert started.data["args"] == {"query": "agents", "k": 3}
        assert started.data["span"] == finished.data["span"]
        assert finished.data["ok"] is True
        assert "error" not in finished.data


async def test_tool_started_without_a_call_id_returns_a_fresh_one_per_span() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> list[str]:
            ids = [ctx.tool_started("search"), ctx.tool_started("fetch")]
            for call_id in ids:
                ctx.tool_finished(call_id)
            return ids

        run = loop.start("framework")
        ids = await run
        assert len(set(ids)) == 2
        assert [e.data["call_id"] for e in recorder.of(run.agent_id, "tool.started")] == ids


async def test_a_tool_finished_with_an_exception_or_a_text_is_recorded_not_ok_with_its_text() -> (
    None
):
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            ctx.tool_finished(ctx.tool_started("parse"), error=ValueError("bad json"))
            ctx.tool_finished(ctx.tool_started("fetch"), error="rate limited (429)")

        run = loop.start("framework")
        await run
        finished = recorder.of(run.agent_id, "tool.finished")
        assert [(e.data["tool"], e.data["ok"], e.data["error"]) for e in finished] == [
            ("parse", False, "ValueError: bad json"),
            ("fetch", False, "rate limited (429)"),
        ]
        assert run.state is cl.AgentState.DONE  # a failed tool call is not a failed agent


async def test_two_spans_open_at_once_are_both_recorded_whatever_order_they_end_in() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            first = ctx.tool_started("search", call_id="a", q="x")
            second = ctx.tool_started("search", call_id="b", q="y")
            ctx.tool_finished(second)
            ctx.tool_finished(first, error="timeout")

        run = loop.start("framework")
        await run
        started = recorder.of(run.agent_id, "tool.started")
        finished = recorder.of(run.agent_id, "tool.finished")
        assert [(e.data["call_id"], e.data["args"]) for e in started] == [
            ("a", {"q": "x"}),
            ("b", {"q": "y"}),
        ]
        assert [(e.data["call_id"], e.data["ok"]) for e in finished] == [("b", True), ("a", False)]
        spans = {e.data["call_id"]: e.data["span"] for e in started}
        assert spans["a"] != spans["b"]
        assert {e.data["call_id"]: e.data["span"] for e in finished} == spans


async def test_spans_from_parallel_tasks_of_one_agent_are_all_recorded() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            async def call(n: int) -> None:
                call_id = ctx.tool_started("lookup", n=n)
                await asyncio.sleep(0)  # the others start while this one is open
                ctx.tool_finished(call_id)

            await asyncio.gather(*(call(n) for n in range(4)))

        run = loop.start("framework")
        await run
        started = recorder.of(run.agent_id, "tool.started")
        finished = recorder.of(run.agent_id, "tool.finished")
        assert sorted(e.data["args"]["n"] for e in started) == [0, 1, 2, 3]
        assert max(e.seq for e in started) < min(e.seq for e in finished)  # all open at once
        assert {e.data["call_id"] for e in started} == {e.data["call_id"] for e in finished}


async def test_finishing_an_unknown_or_already_finished_call_id_raises_usage_error() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> list[str]:
            complaints = []
            with pytest.raises(cl.UsageError, match="no open tool call 'ghost'") as unknown:
                ctx.tool_finished("ghost")
            complaints.append(str(unknown.value))
            call_id = ctx.tool_started("search")
            ctx.tool_finished(call_id)
            with pytest.raises(cl.UsageError, match="no open tool call") as twice:
                ctx.tool_finished(call_id)
            complaints.append(str(twice.value))
            return complaints

        run = loop.start("framework")
        assert len(await run) == 2
        assert len(recorder.of(run.agent_id, "tool.finished")) == 1


async def test_starting_a_call_id_that_is_open_already_raises_usage_error() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            ctx.tool_started("search", call_id="dup")
            with pytest.raises(cl.UsageError, match=r"'dup' .* is already open"):
                ctx.tool_started("fetch", call_id="dup")
            ctx.tool_finished("dup")
            ctx.tool_finished(ctx.tool_started("fetch", call_id="dup"))  # closed: reusable

        run = loop.start("framework")
        await run
        assert [e.data["tool"] for e in recorder.of(run.agent_id, "tool.started")] == [
            "search",
            "fetch",
        ]


@pytest.mark.parametrize(
    ("name", "call_id", "complaint"),
    [("", None, "needs the tool's name"), ("search", "", "non-empty string")],
    ids=["no-name", "empty-call-id"],
)
async def test_tool_started_without_a_name_or_with_an_empty_call_id_raises_usage_error(
    name: str, call_id: str | None, complaint: str
) -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def framework(ctx: cl.Context) -> None:
            ctx.tool_started(name, call_id=call_id)

        run = loop.start("framework")
        with pytest.raises(cl.UsageError, match=complaint):
            await run
        assert recorder.of(run.agent_id, "tool.started") == []


async def test_async_with_tool_events_carry_the_same_call_id() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def searcher(ctx: cl.Context) -> None:
            async with ctx.tool("search", query="agents"):
                pass
            with pytest.raises(KeyError):
                async with ctx.tool("fetch"):
                    raise KeyError("missing")

        run = loop.start("searcher")
        await run
        started = recorder.of(run.agent_id, "tool.started")
        finished = recorder.of(run.agent_id, "tool.finished")
        ids = [e.data["call_id"] for e in started]
        assert all(ids)
        assert len(set(ids)) == 2
        assert [e.data["call_id"] for e in finished] == ids
        assert [e.data["ok"] for e in finished] == [True, False]
        assert finished[1].data["error"] == "KeyError: 'missing'"


def test_tool_callbacks_in_a_plain_def_agent_record_the_span_with_its_call_id() -> None:
    with cl.Conductor("sync-tools") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        def framework(ctx: cl.SyncContext) -> None:
            ctx.tool_finished(ctx.tool_started("search", call_id="c1", q="x"), error="no hits")
            with ctx.tool("fetch"):
                pass

        run = loop.start("framework")
        run.result(timeout=10)
        started = recorder.of(run.agent_id, "tool.started")
        finished = recorder.of(run.agent_id, "tool.finished")
        assert started[0].data["call_id"] == finished[0].data["call_id"] == "c1"
        assert (finished[0].data["ok"], finished[0].data["error"]) == (False, "no hits")
        assert started[1].data["call_id"] == finished[1].data["call_id"]
        assert finished[1].data["ok"] is True
