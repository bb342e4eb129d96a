"""``ctx.log(message, level, **fields)``: structured fields beside the message and level,
and the fields that cannot be stored."""

from __future__ import annotations

from typing import Any

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder
from tests.unit._steering_support import conductor


async def test_log_fields_are_stored_in_the_event_data_beside_message_and_level() -> None:
    url = "https://example.org/a"
    async with conductor() as (loop, recorder):

        @loop.agent
        async def fetcher(ctx: cl.Context) -> None:
            ctx.log("fetched", url=url, n=3)
            ctx.log("slow", "warning", seconds=2.5, tags=["net"], meta={"try": 1}, gone=None)
            ctx.log("plain")

        run = loop.start("fetcher")
        await run
        assert [e.data for e in recorder.of(run.agent_id, "log")] == [
            {"level": "info", "message": "fetched", "url": url, "n": 3},
            {
                "level": "warning",
                "message": "slow",
                "seconds": 2.5,
                "tags": ["net"],
                "meta": {"try": 1},
                "gone": None,
            },
            {"level": "info", "message": "plain"},
        ]


def test_log_fields_from_a_plain_def_agent_are_stored_the_same_way() -> None:
    with cl.Conductor("sync-log") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        def fetcher(ctx: cl.SyncContext) -> None:
            ctx.log("fetched", level="debug", url="u", n=3)

        run = loop.start("fetcher")
        run.result(timeout=10)
        logs = [e.data for e in recorder.of(run.agent_id, "log")]
        assert logs == [{"level": "debug", "message": "fetched", "url": "u", "n": 3}]


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"message": "shadowed"}, "named 'message'"),
        ({"obj": object()}, "JSON"),
        ({"ratio": float("nan")}, "JSON"),
        ({"big": float("inf")}, "JSON"),
        ({"ids": {1, 2}}, "JSON"),
        ({"nested": {"deep": [object()]}}, "JSON"),
    ],
    ids=["message", "object", "nan", "inf", "set", "nested-object"],
)
async def test_log_with_a_reserved_or_non_json_field_raises_usage_error_and_logs_nothing(
    fields: dict[str, Any], complaint: str
) -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def logger(ctx: cl.Context) -> None:
            ctx.log("hello", **fields)  # `message` is positional-only: message= is a field

        run = loop.start("logger")
        with pytest.raises(cl.UsageError, match=complaint):
            await run
        assert recorder.of(run.agent_id, "log") == []
        assert run.state is cl.AgentState.FAILED


async def test_log_with_an_unknown_level_raises_usage_error() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def logger(ctx: cl.Context) -> None:
            ctx.log("hello", "loud")  # type: ignore[arg-type]

        with pytest.raises(cl.UsageError, match="log level"):
            await loop.start("logger")
