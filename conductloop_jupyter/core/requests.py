"""Requests: approvals, questions and budget stops that wait for a human.

The first decision wins; a later one returns ``False``, and ``Request.decided_by`` says who
decided. When every task that waits on a request leaves first (the agent ended, was
stopped, or its framework cancelled the call), the request is withdrawn. A decision may
carry the human's ``note`` (reaching the agent, and a framework as its rejection message)
and, for an approval, edited ``args`` (a framework's edited tool input).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .events import clip, jsonable
from .payloads import is_text, json_problem
from .states import AgentState
from .view import Request, RequestKind

if TYPE_CHECKING:
    from .runs import AgentRecord
    from .runtime import Runtime

#: called with (decision, by) once a request is decided (how budgets settle)
OnDecided = Callable[[str, str], None]

_DECISIONS_FOR: dict[str, frozenset[str]] = {
    "approval": frozenset({"approved", "rejected"}),
    "budget": frozenset({"approved", "rejected"}),
    "question": frozenset({"answered", "rejected"}),
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What a human decided on ``ctx.approve(...)``: truthy exactly when approved.

    >>> decision = await ctx.approve("Delete 40 files?")
    >>> if decision: ...                  # approved
    >>> decision.note                     # the human's words, or None
    >>> decision.args                     # edited arguments, or None
    """

    approved: bool
    note: str | None = None
    by: str | None = None
    args: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return self.approved

    @classmethod
    def of(cls, request: Request) -> Decision:
        return cls(request.decision == "approved", request.note, request.decided_by, request.args)


class Requests:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._count = 0
        self._waiters: dict[str, set[AgentRecord]] = {}  # request id -> agents waiting on it
        self._asking: dict[AgentRecord, int] = {}  # agent -> how many of its tasks wait
        self._on_decided: dict[str, OnDecided] = {}

    def new(
        self,
        record: AgentRecord,
        kind: RequestKind,
        prompt: str,
        choices: list[str] | None = None,
        details: Mapping[str, Any] | None = None,
        on_decided: OnDecided | None = None,
    ) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError("a request needs a prompt: the question a human will read")
        if choices is not None:
            choices = [str(c) for c in choices]
            if not choices:
                raise UsageError("choices, when given, must not be empty")
        if details is not None and not isinstance(details, Mapping):
            raise UsageError(f"details must be a mapping (a dict), not {details!r}")
        runtime = self._runtime
        self._count += 1
        request_id = f"r{self._count}-{runtime.tag}"
        runtime.emit(
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
        if on_decided is not None:
            self._on_decided[request_id] = on_decided
        return request_id

    def waiting(self, record: AgentRecord) -> bool:
        """Whether some task of the agent waits for a human."""
        return record in self._asking

    async def wait(self, record: AgentRecord, request_id: str) -> Request:
        """Wait (``waiting``) until the request is decided; withdraw it if all leave first."""
        runtime = self._runtime
        gates, view = runtime.gates, runtime.view
        waiters = self._waiters.setdefault(request_id, set())
        waiters.add(record)
        asking = self._asking.get(record, 0)
        self._asking[record] = asking + 1
        if not asking:
            if runtime.state_of(record) is AgentState.PAUSED:  # held by another of its tasks
                runtime.set_state(record, AgentState.RUNNING)
            runtime.set_state(record, AgentState.WAITING, request_id=request_id)
        try:
            while view.requests[request_id].open:
                stop = gates.stopped(record)
                if stop is not None:
                    raise stop
                await gates.block(record)
        finally:
            waiters.discard(record)
            if not waiters:
                del self._waiters[request_id]
                if view.requests[request_id].open:
                    self.decide(request_id, "withdrawn", "conductloop")
            left = self._asking[record] - 1
            if left:
                self._asking[record] = left
            else:
                del self._asking[record]
                # no task of it waits for a human now, however this one left: decided, or
                # cancelled by its framework (a timeout); a stopped agent goes to its end
                if gates.stopped(record) is None and record.outcome is None:
                    runtime.set_state(record, AgentState.RUNNING)
        stop = gates.stopped(record)
        if stop is not None:
            raise stop
        return view.requests[request_id]

    def decide(
        self,
        request_id: str,
        decision: str,
        by: str,
        text: str | None = None,
        note: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> bool:
        runtime = self._runtime
        request = runtime.view.requests.get(request_id) if isinstance(request_id, str) else None
        if request is None:
            raise UsageError(f"no request {request_id!r}; loop.pending() lists the open ones")
        if decision != "withdrawn" and decision not in _DECISIONS_FOR[request.kind]:
            raise UsageError(_wrong_verb(request, decision))
        if decision == "answered":
            text = _check_answer(request, text)
        if note is not None and not is_text(note):
            raise UsageError(f"a note is text (without lone surrogates), not {note!r}")
        if args is not None:
            args = _check_args(request, decision, args)
        if not request.open:
            return False
        data: dict[str, Any] = {"request_id": request_id, "decision": decision, "by": by}
        if text is not None:
            data["text"] = text
        if note is not None:
            data["note"] = clip(note)
        if args is not None:
            data["args"] = args
        runtime.emit(request.agent_id, "request.decided", data)
        settle = self._on_decided.pop(request_id, None)
        if settle is not None:
            settle(decision, by)
        for record in self._waiters.get(request_id, ()):
            runtime.gates.wake(record)
        return True


def _wrong_verb(request: Request, decision: str) -> str:
    if request.kind == "question":
        return (
            f"request {request.id} is a question: answer it with loop.answer(id, text) "
            "or decline it with loop.reject(id)"
        )
    what = "a budget request" if request.kind == "budget" else "an approval"
    return f"request {request.id} is {what}: use loop.approve(id) or loop.reject(id)"


def _check_answer(request: Request, text: str | None) -> str:
    if not isinstance(text, str) or not text.strip() or not is_text(text):
        raise UsageError("an answer must be non-empty text (without lone surrogates)")
    if request.choices is not None and text not in request.choices:
        raise UsageError(
            f"request {request.id} accepts one of {list(request.choices)}, not {text!r}"
        )
    return clip(text)


def _check_args(request: Request, decision: str, args: Mapping[str, Any]) -> dict[str, Any]:
    if request.kind != "approval" or decision != "approved":
        raise UsageError("edited args go with approving an approval: loop.approve(id, args={...})")
    if not isinstance(args, Mapping):
        raise UsageError(f"args are the edited arguments as a dict, not {args!r}")
    problem = json_problem(dict(args))
    if problem is not None:
        raise UsageError(f"args must be JSON data (str, numbers, lists, dicts): {problem}")
    return {str(key): value for key, value in args.items()}
