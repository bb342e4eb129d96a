"""ctx.handoff: a parent hands work to one child and waits for it (rules in core/fanout.py)."""

from __future__ import annotations

import pytest

import conductloop_jupyter as cl
from tests.unit._fanout_support import conductor, rows

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
