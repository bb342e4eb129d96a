"""Pricing LLM usage offline with genai-prices' bundled price data."""

from __future__ import annotations

from functools import lru_cache

from genai_prices import Usage, calc_price


@lru_cache(maxsize=4096)
def price_usd(
    model: str, input_tokens: int, output_tokens: int, provider: str | None = None
) -> float | None:
    """Cost in USD, or ``None`` when genai-prices does not know ``model``."""
    try:
        calculation = calc_price(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model_ref=model,
            provider_id=provider,
        )
    except LookupError:
        return None
    return float(calculation.total_price)
