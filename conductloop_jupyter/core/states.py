"""Agent states and the one table of allowed transitions.

::

    queued ──▶ running ◀──▶ waiting        (needs a human: approval, question or budget)
                 ▲  │
                 │  └──▶ paused ──▶ running
                 │
    any live state ──▶ done | failed | stopped | lost      (final; lost = its runtime died)

``stalled`` is not a state: it is a condition shown beside ``running``.
"""

from __future__ import annotations

import enum

from .errors import TransitionError


class AgentState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({AgentState.DONE, AgentState.FAILED, AgentState.STOPPED, AgentState.LOST})

_ENDINGS = {AgentState.FAILED, AgentState.STOPPED, AgentState.LOST}

TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    AgentState.QUEUED: frozenset({AgentState.RUNNING, *_ENDINGS}),
    AgentState.RUNNING: frozenset(
        {AgentState.WAITING, AgentState.PAUSED, AgentState.DONE, *_ENDINGS}
    ),
    AgentState.WAITING: frozenset({AgentState.RUNNING, *_ENDINGS}),
    AgentState.PAUSED: frozenset({AgentState.RUNNING, *_ENDINGS}),
    AgentState.DONE: frozenset(),
    AgentState.FAILED: frozenset(),
    AgentState.STOPPED: frozenset(),
    AgentState.LOST: frozenset(),
}


def check_transition(old: AgentState, new: AgentState) -> None:
    """Raise ``TransitionError`` unless ``old -> new`` is in ``TRANSITIONS``."""
    if new not in TRANSITIONS[old]:
        raise TransitionError(f"an agent cannot go from {old.value} to {new.value}")
