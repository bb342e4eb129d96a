"""Stall detection: an agent that makes no progress, or repeats itself.

Two conditions, both shown beside ``running`` (``stalled`` is not a state):

- *idle*: no progress event for ``stall_after`` seconds while running (an agent blocked in
  a gate, waiting for a human or for its children, is not idle);
- *repeat*: the same tool called with the same arguments ``repeat_limit`` times in a row.

An idle stall clears at the agent's next progress event; a repeat stall clears when it
calls a different tool (or the same one with other arguments). The runtime emits
``agent.stalled`` when either starts or clears. Time comes from the injected clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .events import canonical
from .states import AgentState

if TYPE_CHECKING:
    from .runs import AgentRecord
    from .runtime import Runtime


class StallState:
    """One agent's slice of stall detection: written only here."""

    __slots__ = ("last_progress", "repeats", "stall", "tool_key")

    def __init__(self, now: float) -> None:
        self.last_progress = now
        self.stall: str | None = None  # None, "idle" or "repeat"
        self.tool_key: tuple[str, str] | None = None
        self.repeats = 0


class StallDetector:
    def __init__(self, stall_after: float, repeat_limit: int) -> None:
        self.stall_after = float(stall_after)
        self.repeat_limit = repeat_limit

    @property
    def interval(self) -> float:
        """How often the runtime checks for idle agents."""
        return min(self.stall_after / 4, 5.0)

    @staticmethod
    def progress(state: StallState, now: float) -> bool:
        """Note progress; ``True`` when this clears an idle stall."""
        state.last_progress = now
        if state.stall == "idle":
            state.stall = None
            return True
        return False

    def tool(self, state: StallState, key: tuple[str, str]) -> str | None:
        """Note a tool call; return ``"stalled"`` or ``"cleared"`` when that changes."""
        if key == state.tool_key:
            state.repeats += 1
        else:
            state.tool_key, state.repeats = key, 1
            if state.stall == "repeat":
                state.stall = None
                return "cleared"
        if state.repeats >= self.repeat_limit and state.stall != "repeat":
            state.stall = "repeat"
            return "stalled"
        return None

    def idle(self, running: Iterable[tuple[AgentRecord, bool]], now: float) -> list[AgentRecord]:
        """Running agents, not held in a gate (``blocked``), silent for ``stall_after`` s."""
        found = []
        for record, blocked in running:
            state = record.stall
            if (
                state.stall is None
                and not blocked
                and now - state.last_progress >= self.stall_after
            ):
                state.stall = "idle"
                found.append(record)
        return found


class Stalls:
    """The runtime's stall detection: marks, clears and the watch task for idle agents."""

    def __init__(self, runtime: Runtime, stall_after: float, repeat_limit: int) -> None:
        self._runtime = runtime
        self.detector = StallDetector(stall_after, repeat_limit)
        self._task: asyncio.Task[None] | None = None

    def progress(self, record: AgentRecord, now: float) -> None:
        if self.detector.progress(record.stall, now):
            self._runtime.emit(record.agent_id, "agent.stalled", {"stalled": False, "reason": ""})

    def running(self, record: AgentRecord, now: float) -> None:
        record.stall.last_progress = now

    def tool(self, record: AgentRecord, tool: str, args: object) -> None:
        change = self.detector.tool(record.stall, (tool, canonical(args)))
        if change is not None and record.outcome is None:
            repeats = record.stall.repeats
            reason = f"called {tool} {repeats} times in a row with the same arguments"
            stalled = change == "stalled"
            self._runtime.emit(
                record.agent_id,
                "agent.stalled",
                {"stalled": stalled, "reason": reason if stalled else ""},
            )

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make sure the watch task runs while agents are alive."""
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._watch(), name="conductloop:stalls")

    async def _watch(self) -> None:
        runtime, detector = self._runtime, self.detector
        while runtime.records and not runtime.closed:
            await runtime.clock.sleep(detector.interval)
            agents = runtime.view.agents
            running = (
                (r, runtime.gates.blocked(r))
                for r in runtime.records.values()
                if agents[r.agent_id].state is AgentState.RUNNING
            )
            for record in detector.idle(running, runtime.clock.now()):
                seconds = detector.stall_after
                runtime.emit(
                    record.agent_id,
                    "agent.stalled",
                    {"stalled": True, "reason": f"no progress for {seconds:g} s"},
                )

    def release(self) -> asyncio.Task[None] | None:
        """Cancel the watch task (the runtime is closing); return it to be awaited."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task
