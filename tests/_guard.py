"""What the blocking-call guard (blockbuster) lets through everywhere in the suite.

A module's first import runs its top-level code once, in whatever needs it first: the
package loads its heavy parts (genai-prices, tornado, pandas) when first used, and the
conductor preloads genai-prices on a thread, so an agent's first ``ctx.usage`` may wait
for that import's module lock. That is a one-off import, not a blocking call of ours.
"""

from __future__ import annotations

from typing import Any

FIRST_IMPORT = ("<frozen importlib._bootstrap>", {"_find_and_load", "_lock_unlock_module"})


def allow_first_imports(blockbuster: Any) -> Any:
    for function in blockbuster.functions.values():
        function.can_block_in(*FIRST_IMPORT)
    return blockbuster
