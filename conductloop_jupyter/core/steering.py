"""Steering: how a human (or a supervisor) changes what agents do.

Steering takes effect at the agent's *gates* (see ``gates``: stop, then budget, then
pause). ``stop`` is idempotent, callable from any thread, and keeps finished work (results
already returned, children already done). An agent that ends with any exception after a
stop was asked for ends ``stopped``, never ``failed``, even when a framework wrapped our
``AgentStopped`` in its own error. A pause requested while the agent is inside a tool span
takes effect when the span ends, after its result is recorded; one requested while it waits
for a human takes effect after the decision, before ``approve``/``ask`` returns.

Pause, resume and stop of an agent apply to its children too (``parallel``/``handoff``):
they are part of its work. ``redirect`` queues a text for that agent only; the next
``checkpoint()`` returns it, exactly once, in order.

Deciding requests is ``requests``' (the first decision wins). Pause, resume and redirect of an agent
that has ended raise ``UsageError``; so does any unknown id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import AgentStopped, UsageError
from .events import clip
from .payloads import is_text

if TYPE_CHECKING:
    from .runtime import Runtime

#: every steering command and its required string fields (the hub's protocol uses this too)
COMMAND_FIELDS: dict[str, tuple[str, ...]] = {
    "approve": ("request_id",),
    "reject": ("request_id",),
    "answer": ("request_id", "text"),
    "pause": ("agent_id",),
    "resume": ("agent_id",),
    "stop": ("agent_id",),
    "stop_all": (),
    "redirect": ("agent_id", "text"),
}


class Steering:
    """What a human (or a supervisor) can do to agents; on the runtime's loop thread."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def stop(self, agent_id: str, by: str) -> None:
        runtime = self._runtime
        if runtime.agent(agent_id).state.final:
            return
        record = runtime.records[agent_id]
        if runtime.gates.stopped(record) is not None:
            return
        runtime.emit(agent_id, "command", {"op": "stop", "by": by})
        runtime.gates.stop(record, AgentStopped(f"stopped by {by}", by=by))

    def stop_all(self, by: str) -> int:
        runtime = self._runtime
        records = [r for r in runtime.records.values() if runtime.gates.stopped(r) is None]
        for record in records:
            self.stop(record.agent_id, by)
        return len(records)

    def pause(self, agent_id: str, by: str, pause: bool) -> None:
        runtime = self._runtime
        record = runtime.live(agent_id, "paused" if pause else "resumed")
        runtime.emit(agent_id, "command", {"op": "pause" if pause else "resume", "by": by})
        runtime.gates.pause(record, pause)

    def redirect(self, agent_id: str, text: str, by: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise UsageError("redirect needs the new instruction as non-empty text")
        if not is_text(text):
            raise UsageError("the new instruction has a lone surrogate: it is not text")
        runtime = self._runtime
        record = runtime.live(agent_id, "redirected")
        runtime.gates.redirect(record, text)
        runtime.emit(agent_id, "instruction", {"text": clip(text), "by": by})
