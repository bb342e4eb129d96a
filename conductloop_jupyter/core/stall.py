"""Stall detection: an agent that makes no progress, or repeats itself.

Two conditions, both shown beside ``running`` (``stalled`` is not a state):

- *idle*: no progress event for ``stall_after`` seconds while running (an agent blocked in
  a gate, waiting for a human or for its children, is not idle);
- *repeat*: the same tool called with the same arguments ``repeat_limit`` times in a row.

An idle stall clears at the agent's next progress event; a repeat stall clears when it
calls a different tool (or the same one with other arguments). The conductor emits
``agent.stalled`` when either starts or clears. Time comes from the injected clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from .runs import AgentRecord


class StallDetector:
    def __init__(self, stall_after: float, repeat_limit: int) -> None:
        self.stall_after = float(stall_after)
        self.repeat_limit = repeat_limit

    @property
    def interval(self) -> float:
        """How often the conductor checks for idle agents."""
        return min(self.stall_after / 4, 5.0)

    @staticmethod
    def progress(record: AgentRecord, now: float) -> bool:
        """Note progress; ``True`` when this clears an idle stall."""
        record.last_progress = now
        if record.stall == "idle":
            record.stall = None
            return True
        return False

    def tool(self, record: AgentRecord, key: tuple[str, str]) -> str | None:
        """Note a tool call; return ``"stalled"`` or ``"cleared"`` when that changes."""
        if key == record.tool_key:
            record.repeats += 1
        else:
            record.tool_key, record.repeats = key, 1
            if record.stall == "repeat":
                record.stall = None
                return "cleared"
        if record.repeats >= self.repeat_limit and record.stall != "repeat":
            record.stall = "repeat"
            return "stalled"
        return None

    def idle(self, running: Iterable[AgentRecord], now: float) -> list[AgentRecord]:
        """Running agents, not blocked in a gate, silent for ``stall_after`` seconds."""
        found = []
        for record in running:
            if (
                record.stall is None
                and record.waker is None
                and now - record.last_progress >= self.stall_after
            ):
                record.stall = "idle"
                found.append(record)
        return found
