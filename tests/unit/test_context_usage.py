"""``ctx.usage`` with cache and reasoning tokens, priced as genai-prices prices them, and
``ctx.usage_from`` on the providers' own SDK objects (no network)."""

from __future__ import annotations

from typing import Any

import pytest
from genai_prices import Usage, calc_price

import conductloop_jupyter as cl
from tests.unit._steering_support import conductor
from tests.unit.test_provider_usage import (
    ANTHROPIC_USAGE,
    CHAT_USAGE,
    anthropic_message,
    chat_completion,
)


def genai_price(model: str, provider: str, **tokens: int) -> float:
    """genai-prices' own figure for this usage: what ConductLoop must record."""
    return float(calc_price(Usage(**tokens), model_ref=model, provider_id=provider).total_price)


# -- ctx.usage with cache and reasoning tokens ---------------------------------------------

SONNET = "claude-sonnet-4-5"
CACHED = {
    "input_tokens": 10_000,
    "cache_read_tokens": 8_000,
    "cache_write_tokens": 1_000,
    "output_tokens": 500,
}


async def test_usage_event_carries_cache_and_reasoning_tokens_and_genai_prices_cost() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def caller(ctx: cl.Context) -> float | None:
            return ctx.usage(SONNET, **CACHED, reasoning_tokens=200, provider="anthropic")

        run = loop.start("caller")
        cost = await run
        expected = genai_price(SONNET, "anthropic", **CACHED)
        assert cost == pytest.approx(expected, rel=1e-12)
        [usage] = recorder.of(run.agent_id, "usage")
        assert usage.data == {
            "model": SONNET,
            **CACHED,
            "reasoning_tokens": 200,
            "cost_usd": pytest.approx(expected, rel=1e-12),
            "priced_by": "genai-prices",
            "provider": "anthropic",
        }
        # cache reads are priced at their own (lower) rate, not as plain input
        assert expected < genai_price(SONNET, "anthropic", input_tokens=10_000, output_tokens=500)
        row = loop.agents().set_index("agent_id").loc[run.agent_id]
        assert row["cost_usd"] == pytest.approx(expected, rel=1e-12)
        assert (row["input_tokens"], row["output_tokens"]) == (10_000, 500)


async def test_usage_without_cache_tokens_records_them_as_zero() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini")
        async def caller(ctx: cl.Context) -> None:
            ctx.usage(input_tokens=1200, output_tokens=300)

        run = loop.start("caller")
        await run
        [usage] = recorder.of(run.agent_id, "usage")
        assert usage.data["model"] == "gpt-4o-mini"
        zeros = ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
        assert {key: usage.data[key] for key in zeros} == dict.fromkeys(zeros, 0)


@pytest.mark.parametrize(
    "tokens",
    [
        {"input_tokens": 100, "cache_read_tokens": 101},
        {"input_tokens": 100, "cache_write_tokens": 101},
        {"input_tokens": 100, "cache_read_tokens": 60, "cache_write_tokens": 41},
    ],
    ids=["reads", "writes", "both"],
)
async def test_usage_with_cache_tokens_above_input_tokens_raises_usage_error(
    tokens: dict[str, int],
) -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def caller(ctx: cl.Context) -> None:
            ctx.usage(SONNET, output_tokens=1, **tokens)

        run = loop.start("caller")
        with pytest.raises(cl.UsageError, match="cached ones included"):
            await run
        assert recorder.of(run.agent_id, "usage") == []


TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


@pytest.mark.parametrize("field", TOKEN_FIELDS)
@pytest.mark.parametrize("value", [-1, True, 2.0, "3"], ids=["negative", "bool", "float", "str"])
async def test_usage_with_a_negative_or_non_integer_token_count_raises_usage_error(
    field: str, value: object
) -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def caller(ctx: cl.Context) -> None:
            tokens: dict[str, Any] = {"input_tokens": 10, field: value}
            ctx.usage(SONNET, **tokens)

        run = loop.start("caller")
        with pytest.raises(cl.UsageError, match=f"{field} must be a non-negative integer"):
            await run
        assert recorder.of(run.agent_id, "usage") == []


# -- ctx.usage_from: the providers' SDK objects ---------------------------------------------


async def test_usage_from_an_openai_chat_completion_records_it_exactly_and_returns_cost() -> None:
    response = chat_completion(CHAT_USAGE, model="gpt-4o-2024-08-06")
    async with conductor() as (loop, recorder):

        @loop.agent
        async def caller(ctx: cl.Context) -> float | None:
            return ctx.usage_from(response)

        run = loop.start("caller")
        cost = await run
        [usage] = recorder.of(run.agent_id, "usage")
        tokens = {
            "input_tokens": 2_000,
            "cache_read_tokens": 1_536,
            "cache_write_tokens": 128,
            "output_tokens": 900,
        }
        assert {key: usage.data[key] for key in (*tokens, "reasoning_tokens")} == {
            **tokens,
            "reasoning_tokens": 640,
        }
        assert (usage.data["model"], usage.data["provider"]) == ("gpt-4o-2024-08-06", "openai")
        assert cost == usage.data["cost_usd"]
        assert cost == pytest.approx(genai_price("gpt-4o-2024-08-06", "openai", **tokens))


async def test_usage_from_an_anthropic_message_counts_its_cache_as_input_and_returns_cost() -> None:
    response = anthropic_message(ANTHROPIC_USAGE, model=SONNET)
    async with conductor() as (loop, recorder):

        @loop.agent
        async def caller(ctx: cl.Context) -> float | None:
            return ctx.usage_from(response)

        run = loop.start("caller")
        cost = await run
        [usage] = recorder.of(run.agent_id, "usage")
        tokens = {
            "input_tokens": 50 + 3_000 + 1_000,
            "cache_read_tokens": 3_000,
            "cache_write_tokens": 1_000,
            "output_tokens": 200,
        }
        assert {key: usage.data[key] for key in tokens} == tokens
        assert usage.data["reasoning_tokens"] == 120
        assert (usage.data["model"], usage.data["provider"]) == (SONNET, "anthropic")
        assert cost == pytest.approx(genai_price(SONNET, "anthropic", **tokens))


def test_usage_from_in_a_plain_def_agent_records_the_tokens_and_returns_the_cost() -> None:
    response = anthropic_message(ANTHROPIC_USAGE, model=SONNET)
    with cl.Conductor("sync-usage") as loop:

        @loop.agent
        def caller(ctx: cl.SyncContext) -> float | None:
            return ctx.usage_from(response.model_dump(mode="json"))

        run = loop.start("caller")
        cost = run.result(timeout=10)
        expected = genai_price(
            SONNET,
            "anthropic",
            input_tokens=4_050,
            cache_read_tokens=3_000,
            cache_write_tokens=1_000,
            output_tokens=200,
        )
        assert cost == pytest.approx(expected)
        row = loop.agents().set_index("agent_id").loc[run.agent_id]
        assert row["cost_usd"] == pytest.approx(expected)
        assert (row["input_tokens"], row["output_tokens"]) == (4_050, 200)


async def test_usage_from_something_that_is_not_a_response_raises_usage_error() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def caller(ctx: cl.Context) -> None:
            ctx.usage_from({"text": "hello"})

        with pytest.raises(cl.UsageError, match="usage_of expects"):
            await loop.start("caller")
