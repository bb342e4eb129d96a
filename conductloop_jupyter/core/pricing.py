"""Pricing LLM usage offline with genai-prices' bundled price data.

Counts follow genai-prices' (and OpenTelemetry's) convention: ``input_tokens`` is every
input token, cached ones included; ``cache_read_tokens`` and ``cache_write_tokens`` are
the parts of it read from and written to the provider's prompt cache, each priced at its
own rate, and the rest at the plain input rate.
"""

from __future__ import annotations

import sys
import threading
from functools import lru_cache

from .errors import UsageError

_preload_lock = threading.Lock()
_preloading: threading.Thread | None = None


def preload() -> None:
    """Import genai-prices on a daemon thread, once, so that the first ``price_usd`` does
    not hold an agents' loop while it loads (~0.18 s: pydantic and its price data)."""
    global _preloading
    with _preload_lock:
        if _preloading is None and "genai_prices" not in sys.modules:
            _preloading = threading.Thread(target=_import, name="conductloop-prices", daemon=True)
            _preloading.start()


def _import() -> None:
    import genai_prices  # noqa: F401


@lru_cache(maxsize=4096)
def price_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    provider: str | None = None,
    *,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float | None:
    """Cost in USD, or ``None`` when genai-prices does not know ``model``.

    >>> price_usd("claude-sonnet-4-5", 10_000, 500, "anthropic", cache_read_tokens=8_000)
    0.0159
    """
    # Imported here: genai-prices takes ~0.18 s to import, and only pricing needs it.
    from genai_prices import Usage, calc_price

    try:
        calculation = calc_price(
            Usage(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read_tokens,
                cache_write_tokens=cache_write_tokens,
            ),
            model_ref=model,
            provider_id=provider,
        )
    except LookupError:
        return None
    except ValueError as error:  # a count that is negative, or cache tokens beyond input_tokens
        raise UsageError(f"cannot price this usage: {error}") from None
    return float(calculation.total_price)
