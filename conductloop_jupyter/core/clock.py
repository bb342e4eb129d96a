"""Time, injected: the core never reads a clock or sleeps except through a ``Clock``.

Tests pass ``conductloop_jupyter.testing.ManualClock`` and advance it by hand, so stall
detection is tested without waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds, for durations and stall detection."""

    def wall(self) -> float:
        """Seconds since the epoch, for event timestamps."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the running loop."""


class SystemClock:
    """The real clock."""

    now = staticmethod(time.monotonic)
    wall = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
