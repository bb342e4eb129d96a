"""The runtime: pure asyncio + stdlib + genai-prices. No I/O, no UI or server imports."""

from .conductor import BaseConductor
from .context import Context, SyncContext, ToolSpan
from .errors import (
    AgentFailed,
    AgentStopped,
    BudgetExceeded,
    ConductLoopError,
    PairingError,
    TransitionError,
    UsageError,
)
from .events import KINDS, SCHEMA_VERSION, Event
from .runs import AgentRun
from .runtime import EventSink
from .states import TRANSITIONS, AgentState
from .view import AgentView, Request, View

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "AgentFailed",
    "AgentRun",
    "AgentState",
    "AgentStopped",
    "AgentView",
    "BaseConductor",
    "BudgetExceeded",
    "ConductLoopError",
    "Context",
    "Event",
    "EventSink",
    "PairingError",
    "Request",
    "SyncContext",
    "ToolSpan",
    "TransitionError",
    "UsageError",
    "View",
]
