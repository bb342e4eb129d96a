"""Tool spans: one ``tool.started`` and one ``tool.finished`` per tool call, by ``call_id``.

A span opens with ``ctx.tool_started(name, call_id=None, **args)`` (a framework's callback)
or by entering ``ctx.tool(...)``, and closes with ``ctx.tool_finished(call_id, error=None)``
or by leaving the block. An agent may have several open at once (parallel tool calls).
An error, an exception or a text, is recorded as ``ok: false`` with its text. A call id
that is not open, or one that is open already, raises ``UsageError``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .events import clip

if TYPE_CHECKING:
    from .runs import AgentRecord
    from .runtime import Runtime


class ToolCalls:
    """One agent's open tool calls: written only by ``Tools``."""

    __slots__ = ("count", "open")

    def __init__(self) -> None:
        self.count = itertools.count(1)
        self.open: dict[str, tuple[int, str, float]] = {}  # call id -> (span, tool, start)


class Tools:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def started(
        self, record: AgentRecord, tool: str, args: dict[str, Any], call_id: str | None
    ) -> str:
        if not isinstance(tool, str) or not tool:
            raise UsageError("a tool span needs the tool's name: ctx.tool('search', ...)")
        if call_id is not None and (not isinstance(call_id, str) or not call_id):
            raise UsageError(f"a tool call id is a non-empty string, not {call_id!r}")
        calls = record.tools
        if calls is None:
            calls = record.tools = ToolCalls()
        span = next(calls.count)
        if call_id is None:
            call_id = f"call-{span}"
        elif call_id in calls.open:
            raise UsageError(f"tool call {call_id!r} of {record.agent_id} is already open")
        runtime = self._runtime
        calls.open[call_id] = (span, tool, runtime.clock.now())
        runtime.emit(
            record.agent_id,
            "tool.started",
            {"span": span, "call_id": call_id, "tool": tool, "args": args},
        )
        runtime.stalls.tool(record, tool, args)
        return call_id

    def finished(self, record: AgentRecord, call_id: str, error: object = None) -> None:
        calls = record.tools
        found = calls.open.pop(call_id, None) if calls is not None else None
        if found is None:
            raise UsageError(
                f"no open tool call {call_id!r} of {record.agent_id}: "
                "ctx.tool_started(...) returns the id to finish"
            )
        span, tool, start = found
        runtime = self._runtime
        data: dict[str, Any] = {
            "span": span,
            "call_id": call_id,
            "tool": tool,
            "ok": error is None,
            "duration_s": runtime.clock.now() - start,
        }
        if error is not None:
            text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
            data["error"] = clip(str(text), 500)
        runtime.emit(record.agent_id, "tool.finished", data)
