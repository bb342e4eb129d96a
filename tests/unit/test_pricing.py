"""price_usd: every input token counted once, cache tokens at their own rates, exactly as
genai-prices prices the same usage; and genai-prices imported only when something is priced."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from conductloop_jupyter.core.errors import UsageError
from conductloop_jupyter.core.pricing import price_usd


def genai_prices_figure(model: str, provider: str | None, **counts: int) -> float:
    return float(calc_price(Usage(**counts), model_ref=model, provider_id=provider).total_price)


def rates(model: str, provider: str) -> Any:
    """The model's per-million-token prices in genai-prices' data."""
    return calc_price(Usage(input_tokens=0), model_ref=model, provider_id=provider).model_price


def test_anthropic_cache_reads_and_writes_are_priced_at_their_own_rates() -> None:
    counts = {
        "input_tokens": 10_000,
        "output_tokens": 500,
        "cache_read_tokens": 6_000,
        "cache_write_tokens": 3_000,
    }
    priced = price_usd(
        "claude-opus-4-1",
        10_000,
        500,
        "anthropic",
        cache_read_tokens=6_000,
        cache_write_tokens=3_000,
    )
    assert priced == genai_prices_figure("claude-opus-4-1", "anthropic", **counts)
    # input_tokens includes the cached ones: only 1,000 are billed at the plain input rate
    r = rates("claude-opus-4-1", "anthropic")
    assert all(
        isinstance(rate, Decimal)
        for rate in (r.input_mtok, r.cache_read_mtok, r.cache_write_mtok, r.output_mtok)
    )
    by_hand = (
        1_000 * r.input_mtok
        + 6_000 * r.cache_read_mtok
        + 3_000 * r.cache_write_mtok
        + 500 * r.output_mtok
    ) / 1_000_000
    assert priced == float(by_hand)
    assert priced != price_usd("claude-opus-4-1", 10_000, 500, "anthropic")


def test_openai_cached_input_costs_less_than_the_same_input_uncached() -> None:
    cached = price_usd("gpt-4o", 2_000, 300, "openai", cache_read_tokens=1_536)
    assert cached == genai_prices_figure(
        "gpt-4o", "openai", input_tokens=2_000, output_tokens=300, cache_read_tokens=1_536
    )
    plain = price_usd("gpt-4o", 2_000, 300, "openai")
    assert cached is not None
    assert plain is not None
    assert cached < plain


def test_google_thoughts_counted_in_output_tokens_are_priced_at_the_output_rate() -> None:
    # genai-prices reads a Gemini response's output as candidates + thoughts and has no
    # separate price for reasoning: the output total is what it bills.
    with_thoughts = genai_prices_figure(
        "gemini-2.5-flash",
        "google",
        input_tokens=1_000,
        output_tokens=300 + 700,
        output_reasoning_tokens=700,
    )
    assert price_usd("gemini-2.5-flash", 1_000, 300 + 700, "google") == with_thoughts
    assert price_usd("gemini-2.5-flash", 1_000, 300, "google") != with_thoughts


def test_the_positional_form_without_cache_tokens_still_prices_a_call() -> None:
    figure = genai_prices_figure("gpt-4o-mini", "openai", input_tokens=1_000, output_tokens=500)
    assert price_usd("gpt-4o-mini", 1_000, 500, "openai") == figure
    assert price_usd("gpt-4o-mini", 1_000, 500) == figure


@pytest.mark.parametrize("provider", [None, "openai", "no-such-provider"])
def test_a_model_genai_prices_does_not_know_is_unpriced(provider: str | None) -> None:
    assert price_usd("no-such-model-v0", 100, 10, provider) is None


def test_cache_tokens_beyond_input_tokens_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"cannot price this usage: .*cannot exceed input_tokens"):
        price_usd("claude-opus-4-1", 1_000, 10, "anthropic", cache_read_tokens=2_000)


def test_importing_pricing_does_not_import_genai_prices_until_a_call_is_priced() -> None:
    code = (
        "import sys\n"
        "from conductloop_jupyter.core.pricing import price_usd\n"
        "print('genai_prices' in sys.modules)\n"
        "price_usd('gpt-4o-mini', 1, 1)\n"
        "print('genai_prices' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True"]
