"""The exceptions ConductLoop raises, in one place.

    ConductLoopError            base of everything below
    ├── UsageError              the API was called in a way that cannot work; the message says
    │                           what to do instead (unknown id, pause of a finished agent, ...)
    ├── AgentStopped            raised inside an agent that a human (or a supervisor) stopped
    │   └── BudgetExceeded      ... stopped because its budget request was rejected
    ├── AgentFailed             a child agent (parallel / handoff) did not finish; the parent
    │                           sees this, with the child's own exception as ``__cause__``
    ├── PairingError            a phone pairing code that is unknown, used or expired, or
    │                           too many failed attempts (``retry_after`` says how long)
    └── TransitionError         an agent state change outside the table in ``states.py``;
                                always a bug in ConductLoop, never the user's fault

Usage mistakes (``UsageError``) are kept apart from run failures (the others), so that
``except AgentStopped`` in agent code never hides a programming error. ``BudgetExceeded``
is an ``AgentStopped`` because a rejected budget is a stop: cleanup written for one is right
for the other.
"""

from __future__ import annotations


class ConductLoopError(Exception):
    """Base class of every error ConductLoop raises."""


class UsageError(ConductLoopError):
    """The API was used in a way that cannot work. The message says what to do instead."""


class AgentStopped(ConductLoopError):
    """Raised inside an agent that was stopped; the agent ends in state ``stopped``."""

    def __init__(self, message: str = "the agent was stopped", *, by: str | None = None) -> None:
        super().__init__(message)
        self.by = by


class BudgetExceeded(AgentStopped):
    """Raised inside an agent whose budget request was rejected."""


class AgentFailed(ConductLoopError):
    """A child agent started by ``ctx.parallel`` or ``ctx.handoff`` did not finish.

    ``state`` is the child's final state (``failed``, ``stopped`` or ``lost``); the child's
    own exception, when there is one, is ``__cause__``.
    """

    def __init__(self, agent_id: str, name: str, state: str, reason: str) -> None:
        super().__init__(f"child agent {agent_id} ({name}) ended {state}: {reason}")
        self.agent_id = agent_id
        self.name = name
        self.state = state
        self.reason = reason


class PairingError(ConductLoopError):
    """A pairing code that is unknown, already used or expired; or too many failed tries."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransitionError(ConductLoopError):
    """An agent state change that the transition table does not allow."""
