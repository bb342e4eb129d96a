"""The runtime: pure asyncio + stdlib + genai-prices. No I/O, no UI or server imports."""

from .context import Context, SyncContext, ToolSpan, current_context
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
from .port import AgentPort
from .requests import Decision
from .runs import AgentRun
from .runtime import EventSink, Runtime
from .states import TRANSITIONS, AgentState
from .view import AgentView, Request, View

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "AgentFailed",
    "AgentPort",
    "AgentRun",
    "AgentState",
    "AgentStopped",
    "AgentView",
    "BudgetExceeded",
    "ConductLoopError",
    "Context",
    "Decision",
    "Event",
    "EventSink",
    "PairingError",
    "Request",
    "Runtime",
    "SyncContext",
    "ToolSpan",
    "TransitionError",
    "UsageError",
    "View",
    "current_context",
]
