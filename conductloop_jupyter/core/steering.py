"""Steering: how a human (or a supervisor) changes what agents do.

Every await point an agent passes through ours (``checkpoint``, ``approve``, ``ask``, the
start and end of a ``tool`` span, ``parallel``/``handoff``) is a *gate*. A gate checks,
in this order:

1. **stop**: raise ``AgentStopped`` (``BudgetExceeded`` when a budget was rejected) in the
   agent; it ends ``stopped``. ``stop`` is idempotent, callable from any thread, and keeps
   finished work (results already returned, children already done). An async agent that is
   *not* at a gate (inside a tool body, awaiting its own I/O) has its task cancelled at once:
   it sees ``CancelledError`` there, and ``AgentStopped`` at the next gate or tool-span exit.
   A cancellation that ConductLoop did not issue is never swallowed: the agent ends
   ``stopped`` and the ``CancelledError`` propagates. A plain ``def`` agent (a thread) cannot
   be interrupted: it sees the stop at its next gate.
2. **budget**: if the agent's own budget or the conductor's is used up, open (or join) a
   budget request and wait (``waiting``). Approving raises the budget by its original amount
   above what is spent; rejecting stops the agent (the conductor's budget: every agent).
3. **pause**: hold here (``paused``) until ``resume`` (or ``stop``). A pause requested while
   the agent is inside a tool span takes effect when the span ends, after its result is
   recorded; one requested while it waits for a human takes effect after the decision,
   before ``approve``/``ask`` returns.

Pause, resume and stop of an agent apply to its children too (``parallel``/``handoff``):
they are part of its work. ``redirect`` queues a text for that agent only; the next
``checkpoint()`` returns it, exactly once, in order.

Requests (approvals, questions, budgets): the first decision wins; a later one returns
``False``, and ``Request.decided_by`` says who decided. When an agent ends while its request
is open, the request is withdrawn. Pause, resume and redirect of an agent that has ended
raise ``UsageError``; so does any unknown id.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping
from typing import Any

from .errors import AgentStopped, BudgetExceeded, UsageError
from .events import clip, jsonable
from .runs import AgentRecord
from .runtime import RuntimeCore
from .states import AgentState
from .view import Request, RequestKind

#: who steers when a call gives no ``by=``: "python", or "supervisor:<name>" inside a
#: supervisor (set by the conductor), so the events say who decided
ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("conductloop_actor", default="python")

_DECISIONS_FOR: dict[str, frozenset[str]] = {
    "approval": frozenset({"approved", "rejected"}),
    "budget": frozenset({"approved", "rejected"}),
    "question": frozenset({"answered", "rejected"}),
}


class SteeringMixin(RuntimeCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_count = 0
        self._waiters: dict[str, set[AgentRecord]] = {}  # request id -> agents blocked on it
        # open budget requests -> ("agent", its agent) or ("conductor", None)
        self._budget_requests: dict[str, tuple[str, AgentRecord | None]] = {}

    # -- gates -------------------------------------------------------------------------

    def _clear(self, record: AgentRecord) -> bool:
        """True when a gate has nothing to do (the fast path of every gate)."""
        return (
            record.stop is None
            and not record.pause
            and record.budget_limit is None
            and self._budget_limit is None
        )

    async def _gate(self, record: AgentRecord) -> None:
        while True:
            if record.stop is not None:
                raise record.stop
            budget = self._budget_due(record)
            if budget is not None:
                await self._await_request(record, budget)
                continue
            if record.pause:
                self._set_state(record, AgentState.PAUSED)
                await self._hold(record)
                continue
            self._set_state(record, AgentState.RUNNING)
            return

    async def _hold(self, record: AgentRecord) -> None:
        """Stay paused until resumed or stopped."""
        while record.pause and record.stop is None:
            await self._block(record)

    def _take_instructions(self, record: AgentRecord) -> list[str]:
        texts = list(record.instructions)
        record.instructions.clear()
        return texts

    # -- requests ----------------------------------------------------------------------

    def _open_request(
        self,
        record: AgentRecord,
        kind: RequestKind,
        prompt: str,
        choices: list[str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError("a request needs a prompt: the question a human will read")
        if choices is not None:
            choices = [str(c) for c in choices]
            if not choices:
                raise UsageError("choices, when given, must not be empty")
        self._request_count += 1
        request_id = f"r{self._request_count}-{self._tag}"
        self._emit(
            record.agent_id,
            "request.opened",
            {
                "request_id": request_id,
                "kind": kind,
                "prompt": clip(prompt),
                "choices": choices,
                "details": jsonable(dict(details or {})),
            },
        )
        return request_id

    async def _await_request(self, record: AgentRecord, request_id: str) -> Request:
        """Wait (``waiting``) until the request is decided; withdraw it if we leave first."""
        waiters = self._waiters.setdefault(request_id, set())
        waiters.add(record)
        self._set_state(record, AgentState.WAITING, request_id=request_id)
        try:
            while self._view.requests[request_id].open:
                if record.stop is not None:
                    raise record.stop
                await self._block(record)
        finally:
            waiters.discard(record)
            if not waiters:
                del self._waiters[request_id]
                if self._view.requests[request_id].open:
                    self._decide(request_id, "withdrawn", "conductloop")
        if record.stop is not None:
            raise record.stop
        self._set_state(record, AgentState.RUNNING)
        return self._view.requests[request_id]

    def _decide(
        self,
        request_id: str,
        decision: str,
        by: str,
        text: str | None = None,
        note: str | None = None,
    ) -> bool:
        request = self._view.requests.get(request_id) if isinstance(request_id, str) else None
        if request is None:
            raise UsageError(f"no request {request_id!r}; loop.pending() lists the open ones")
        if decision != "withdrawn" and decision not in _DECISIONS_FOR[request.kind]:
            raise UsageError(_wrong_verb(request, decision))
        if decision == "answered":
            text = _check_answer(request, text)
        if not request.open:
            return False
        data: dict[str, Any] = {"request_id": request_id, "decision": decision, "by": by}
        if text is not None:
            data["text"] = text
        if note is not None:
            data["note"] = clip(str(note))
        self._emit(request.agent_id, "request.decided", data)
        budget = self._budget_requests.pop(request_id, None)
        if budget is not None:
            self._settle_budget(budget, decision, by)
        for record in self._waiters.get(request_id, ()):
            self._poke(record)
        return True

    # -- budgets -----------------------------------------------------------------------

    def _budget_due(self, record: AgentRecord) -> str | None:
        """The budget request this agent must wait on, opening it if needed."""
        limit = record.budget_limit
        if limit is not None and self._view.agents[record.agent_id].cost_usd >= limit:
            return self._budget_request(record, "agent")
        limit = self._budget_limit
        if limit is not None and self._view.total_cost_usd >= limit:
            return self._budget_request(record, "conductor")
        return None

    def _budget_request(self, record: AgentRecord, scope: str) -> str:
        for request_id, (open_scope, owner) in self._budget_requests.items():
            if open_scope == scope and (scope == "conductor" or owner is record):
                return request_id
        if scope == "agent":
            spent, limit, step = (
                self._view.agents[record.agent_id].cost_usd,
                record.budget_limit,
                record.budget_step,
            )
            prompt = (
                f"{record.spec.name} ({record.agent_id}) has spent {usd(spent)} of its "
                f"{usd(limit)} budget. Approve to allow {usd(step)} more; reject to stop it."
            )
        else:
            spent, limit, step = self._view.total_cost_usd, self._budget_limit, self._budget_step
            prompt = (
                f"The agents of {self.name} have spent {usd(spent)} of its {usd(limit)} "
                f"budget. Approve to allow {usd(step)} more; reject to stop all of them."
            )
        assert limit is not None
        assert step is not None
        details = {
            "scope": scope,
            "spent_usd": spent,
            "budget_usd": limit,
            "new_budget_usd": max(limit, spent) + step,
        }
        request_id = self._open_request(record, "budget", prompt, details=details)
        self._budget_requests[request_id] = (scope, record if scope == "agent" else None)
        return request_id

    def _settle_budget(
        self, budget: tuple[str, AgentRecord | None], decision: str, by: str
    ) -> None:
        record = budget[1]
        if decision == "approved":
            if record is not None:
                assert record.budget_limit is not None
                assert record.budget_step is not None
                spent = self._view.agents[record.agent_id].cost_usd
                record.budget_limit = max(record.budget_limit, spent) + record.budget_step
            else:
                assert self._budget_limit is not None
                assert self._budget_step is not None
                spent = self._view.total_cost_usd
                self._budget_limit = max(self._budget_limit, spent) + self._budget_step
        elif decision == "rejected":
            targets = [record] if record is not None else list(self._records.values())
            for target in targets:
                self._stop_record(target, BudgetExceeded(f"budget rejected by {by}", by=by))

    # -- stop, pause, resume, redirect (on the loop thread) ----------------------------

    def _stop_record(self, record: AgentRecord, reason: AgentStopped) -> None:
        if record.stop is not None or record.outcome is not None:
            return
        record.stop = reason
        for child in list(record.children):
            self._stop_record(child, AgentStopped(f"its parent {record.agent_id} was stopped"))
        if record.waker is not None:
            self._poke(record)
        elif (
            record.started
            and record.task is not None
            and record.task is not _current_task()
            and record.task.cancel(msg="conductloop: stop")
        ):
            record.cancels += 1

    def _stop(self, agent_id: str, by: str) -> None:
        if self._agent(agent_id).state.final or self._records[agent_id].stop is not None:
            return
        self._emit(agent_id, "command", {"op": "stop", "by": by})
        self._stop_record(self._records[agent_id], AgentStopped(f"stopped by {by}", by=by))

    def _stop_all(self, by: str) -> int:
        records = [r for r in self._records.values() if r.stop is None]
        for record in records:
            self._stop(record.agent_id, by)
        return len(records)

    def _pause(self, agent_id: str, by: str, pause: bool) -> None:
        record = self._live(agent_id, "paused" if pause else "resumed")
        self._emit(agent_id, "command", {"op": "pause" if pause else "resume", "by": by})
        for target in (record, *record.descendants()):
            target.pause = pause
            if not pause:
                self._poke(target)

    def _redirect(self, agent_id: str, text: str, by: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise UsageError("redirect needs the new instruction as non-empty text")
        record = self._live(agent_id, "redirected")
        record.instructions.append(text)
        self._emit(agent_id, "instruction", {"text": clip(text), "by": by})

    # -- the public steering API: thread-safe -----------------------------------------

    def pending(self) -> list[Request]:
        """Open requests (approvals, questions, budgets), oldest first."""
        return self._host.call(self._view.pending)

    def request(self, request_id: str) -> Request:
        """One request, open or decided (``decision``, ``decided_by``, ``answer``)."""
        found = self._host.call(self._view.requests.get, request_id)
        if found is None:
            raise UsageError(f"no request {request_id!r}; loop.pending() lists the open ones")
        return found

    def approve(self, request_id: str, note: str | None = None, *, by: str | None = None) -> bool:
        """Approve a request. ``True`` if this call decided it, ``False`` if already decided."""
        return self._host.call(self._decide, request_id, "approved", by or ACTOR.get(), None, note)

    def reject(self, request_id: str, note: str | None = None, *, by: str | None = None) -> bool:
        """Reject a request (a question: decline to answer; ``ctx.ask`` returns ``None``)."""
        return self._host.call(self._decide, request_id, "rejected", by or ACTOR.get(), None, note)

    def answer(self, request_id: str, text: str, *, by: str | None = None) -> bool:
        """Answer a question; with choices, ``text`` must be one of them."""
        return self._host.call(self._decide, request_id, "answered", by or ACTOR.get(), text)

    def pause(self, agent_id: str, *, by: str | None = None) -> None:
        """Hold the agent (and its children) at its next gate until ``resume``."""
        self._host.call(self._pause, agent_id, by or ACTOR.get(), True)

    def resume(self, agent_id: str, *, by: str | None = None) -> None:
        """Let a paused agent (and its children) go on."""
        self._host.call(self._pause, agent_id, by or ACTOR.get(), False)

    def stop(self, agent_id: str, *, by: str | None = None) -> None:
        """Stop the agent and its children. Idempotent; an ended agent is left as it is."""
        self._host.call(self._stop, agent_id, by or ACTOR.get())

    def stop_all(self, *, by: str | None = None) -> int:
        """Stop every agent of this conductor; return how many were running."""
        return self._host.call(self._stop_all, by or ACTOR.get())

    def redirect(self, agent_id: str, text: str, *, by: str | None = None) -> None:
        """Queue a new instruction; the agent's next ``checkpoint()`` returns it, once."""
        self._host.call(self._redirect, agent_id, text, by or ACTOR.get())

    def handle_command(self, command: Mapping[str, Any]) -> Any:
        """Carry out a steering command as the hub sends it (``{"op": ..., ...}``).

        The seam a hub link plugs into; raises ``UsageError`` on a malformed command.
        """
        if not isinstance(command, Mapping):
            raise UsageError("a command must be an object with an 'op' field")
        op, by = command.get("op"), command.get("by", "hub")
        if not isinstance(op, str) or op not in COMMAND_FIELDS:
            raise UsageError(f"unknown command op {op!r}; one of {', '.join(COMMAND_FIELDS)}")
        fields = COMMAND_FIELDS[op]
        missing = [f for f in fields if not isinstance(command.get(f), str)]
        if missing:
            raise UsageError(f"command {op!r} needs string field(s): {', '.join(missing)}")
        args = [command[f] for f in fields]
        if op in ("approve", "reject"):
            return getattr(self, op)(*args, command.get("note"), by=str(by))
        return getattr(self, op)(*args, by=str(by))


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


def usd(amount: float | None) -> str:
    """Money for people: cents when it is dollars, four decimals when it is less."""
    if amount is None:
        return "$?"
    return f"${amount:,.2f}" if abs(amount) >= 1 else f"${amount:.4f}"


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _wrong_verb(request: Request, decision: str) -> str:
    if request.kind == "question":
        return (
            f"request {request.id} is a question: answer it with loop.answer(id, text) "
            "or decline it with loop.reject(id)"
        )
    what = "a budget request" if request.kind == "budget" else "an approval"
    return f"request {request.id} is {what}: use loop.approve(id) or loop.reject(id)"


def _check_answer(request: Request, text: str | None) -> str:
    if not isinstance(text, str) or not text.strip():
        raise UsageError("an answer must be non-empty text")
    if request.choices is not None and text not in request.choices:
        raise UsageError(
            f"request {request.id} accepts one of {list(request.choices)}, not {text!r}"
        )
    return clip(text)
