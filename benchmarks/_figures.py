"""The table every benchmark prints (what was measured, its figure, the baseline measured
in the same run, their ratio, the target and PASS/MISS), and the small measuring helpers
the scripts share.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Figure:
    what: str
    figure: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    ok: bool | None = None  # None: informative, no target

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


def print_table(title: str, rows: Sequence[Figure]) -> None:
    headers = ("what", "figure", "baseline", "ratio", "target", "")
    cells = [(r.what, r.figure, r.baseline, r.ratio, r.target, r.verdict) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    print(f"\n{title}\n{line}\n{'-' * len(line)}")
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} us"


def best(repeat: int, run: Callable[[], T]) -> tuple[float, T]:
    """The best wall time of ``repeat`` runs (the least disturbed), and the last result."""
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result  # type: ignore[return-value]


def load_average() -> float:
    """Print the one-minute load average (other work shows up in the figures); return it."""
    load = os.getloadavg()[0]
    print(f"\nload average while measuring: {load:.2f} on {os.cpu_count()} cores")
    return load
