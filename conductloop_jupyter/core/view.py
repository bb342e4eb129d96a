"""The live view: what every agent is doing now, derived from events and nothing else.

The runtime applies each event it emits; the hub (in its own process) applies the events of
every runtime to its own ``View``, and rebuilds it from the store after a restart. Because
the view only ever reads events, the two always agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, Literal

from .events import Event
from .states import AgentState

RequestKind = Literal["approval", "question", "budget"]

#: The shape of ``View.state()`` and the rules it was derived by: bump it whenever
#: ``View.apply`` derives anything differently, so that a hub replays history instead of
#: restoring a view built by other rules (a change of fields is caught without it).
STATE_VERSION = 2


@dataclass(frozen=True, slots=True)
class Request:
    """Something an agent needs from a human. ``loop.pending()`` returns these, oldest first.

    ``decision`` is ``None`` while open, then ``approved``, ``rejected``, ``answered`` or
    ``withdrawn`` (the agent ended first); ``decided_by`` says who decided.
    """

    id: str
    agent_id: str
    kind: RequestKind
    prompt: str
    choices: tuple[str, ...] | None
    details: dict[str, Any]
    opened: float
    runtime: str = ""
    decision: str | None = None
    decided_by: str | None = None
    answer: str | None = None
    note: str | None = None
    args: dict[str, Any] | None = None

    @property
    def open(self) -> bool:
        return self.decision is None


@dataclass(slots=True)
class AgentView:
    """One agent as the view sees it. Read-only outside ``View.apply``."""

    agent_id: str
    name: str
    runtime: str
    parent: str | None
    model: str | None
    budget_usd: float | None
    input: str
    started: float
    state: AgentState = AgentState.QUEUED
    activity: str = ""
    stalled: bool = False
    stall_reason: str = ""
    cost_usd: float = 0.0
    unpriced_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool: str | None = None
    request: str | None = None
    ended: float | None = None
    last_event: float = 0.0
    result: str | None = None
    error: str | None = None
    # model -> [cost_usd, input_tokens, output_tokens, calls, unpriced_calls]
    by_model: dict[str, list[float]] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "name": self.name,
            "state": self.state.value,
            "activity": self.activity,
            "stalled": self.stalled,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "parent": self.parent,
            "model": self.model,
            "tool": self.tool,
            "request_id": self.request,
            "started": self.started,
            "ended": self.ended,
            "unpriced_calls": self.unpriced_calls,
            "runtime": self.runtime,
            "error": self.error,
        }


class View:
    """Agents and requests, kept current by ``apply(event)``."""

    def __init__(self) -> None:
        self.agents: dict[str, AgentView] = {}
        self.requests: dict[str, Request] = {}
        self._open: dict[str, Request] = {}  # insertion order = oldest first
        self.total_cost_usd = 0.0
        self.skipped = 0  # events that did not fit their kind's schema
        self._apply: dict[str, Callable[[AgentView, Event], None]] = {
            "agent.state": self._state,
            "agent.status": self._status,
            "tool.started": self._tool_started,
            "tool.finished": self._tool_finished,
            "usage": self._usage,
            "request.opened": self._request_opened,
            "agent.result": self._result,
            "agent.error": self._error,
            "agent.stalled": self._stalled,
        }

    def apply(self, event: Event) -> None:
        """Apply one event. It never raises: an event whose data does not fit its kind
        (from an older store, or a runtime that breaks the schema) is counted in
        ``skipped`` and leaves the view as it was before it."""
        try:
            if event.kind == "agent.started":
                self._started(event)
                return
            if event.kind == "request.decided":
                self._request_decided(event)
                return
            agent = self.agents.get(event.agent_id) if event.agent_id else None
            if agent is None:
                return
            handler = self._apply.get(event.kind)
            if handler is not None:
                handler(agent, event)
            agent.last_event = event.ts
        except Exception:  # the schema is checked where events enter; this is the net
            self.skipped += 1

    # -- reading -----------------------------------------------------------------------

    def pending(self) -> list[Request]:
        """Open requests, oldest first."""
        return list(self._open.values())

    def live(self) -> list[AgentView]:
        return [a for a in self.agents.values() if not a.state.final]

    # -- saving and restoring ----------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The whole view as plain data (lists, dicts, str, numbers), for ``from_state``.

        A hub saves it so that a restart replays only later events. It shares nothing
        the view mutates (each agent's ``by_model`` is copied; a ``Request`` and its
        ``details`` are never changed once made), so it may be encoded on another thread
        while the view goes on. Each agent and request is a list of its fields in order
        (their names are given once, beside them).
        """
        agents = []
        for values in map(_agent_values, self.agents.values()):
            row = list(values)
            row[_STATE] = row[_STATE].value
            row[_BY_MODEL] = {model: spent[:] for model, spent in row[_BY_MODEL].items()}
            agents.append(row)
        return {
            "version": STATE_VERSION,
            "agent_fields": list(_AGENT_FIELDS),
            "request_fields": list(_REQUEST_FIELDS),
            "agents": agents,
            "requests": list(map(list, map(_request_values, self.requests.values()))),
            "open": list(self._open),
            "total_cost_usd": self.total_cost_usd,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> View:
        """The view ``state()`` was taken of, equal field for field.

        Raises ``ValueError`` if ``state`` has another version or other fields, or is not
        what ``state()`` makes. It takes ``state``'s lists and dicts for its own.
        """
        try:
            version = state["version"]
            if version != STATE_VERSION:
                raise ValueError(f"view state version {version!r}, not {STATE_VERSION}")
            if (state["agent_fields"], state["request_fields"]) != (
                list(_AGENT_FIELDS),
                list(_REQUEST_FIELDS),
            ):
                raise ValueError("the view state has other fields than this version's")
            view = cls()
            agents, requests = state["agents"], state["requests"]
            if any(len(row) != len(_AGENT_FIELDS) for row in agents) or any(
                len(row) != len(_REQUEST_FIELDS) for row in requests
            ):
                raise ValueError("an agent or a request of the view state lacks fields")
            for row in agents:
                row[_STATE] = AgentState(row[_STATE])
                agent = AgentView(*row)
                view.agents[agent.agent_id] = agent
            for row in requests:
                if row[_CHOICES] is not None:
                    row[_CHOICES] = tuple(row[_CHOICES])
                request = Request(*row)
                view.requests[request.id] = request
            view._open = {key: view.requests[key] for key in state["open"]}
            view.total_cost_usd = state["total_cost_usd"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a view state: {exc!r}") from exc
        return view

    # -- applying ----------------------------------------------------------------------

    def _started(self, event: Event) -> None:
        d = event.data
        assert event.agent_id is not None
        self.agents[event.agent_id] = AgentView(
            agent_id=event.agent_id,
            name=d["name"],
            runtime=event.runtime,
            parent=d.get("parent"),
            model=d.get("model"),
            budget_usd=d.get("budget_usd"),
            input=d.get("input", ""),
            started=event.ts,
            last_event=event.ts,
        )

    @staticmethod
    def _state(agent: AgentView, event: Event) -> None:
        agent.state = AgentState(event.data["state"])
        agent.request = event.data.get("request_id")
        if agent.state.final:
            agent.ended = event.ts
            agent.stalled = False
            agent.tool = None

    @staticmethod
    def _status(agent: AgentView, event: Event) -> None:
        agent.activity = event.data["text"]

    @staticmethod
    def _tool_started(agent: AgentView, event: Event) -> None:
        agent.tool = event.data["tool"]

    @staticmethod
    def _tool_finished(agent: AgentView, event: Event) -> None:
        agent.tool = None

    def _usage(self, agent: AgentView, event: Event) -> None:
        d = event.data
        model, tokens_in, tokens_out, cost = (
            d["model"],
            d["input_tokens"],
            d["output_tokens"],
            d.get("cost_usd"),
        )
        # read and checked before anything changes, so a bad one leaves the view as it was
        if type(model) is not str or type(tokens_in) is not int or type(tokens_out) is not int:
            raise TypeError("usage: model is text, tokens are integers")
        if cost is not None and not (type(cost) in (int, float) and 0 <= cost < math.inf):
            raise TypeError("usage: cost_usd is a finite non-negative number or null")
        agent.input_tokens += tokens_in
        agent.output_tokens += tokens_out
        per_model = agent.by_model.setdefault(model, [0.0, 0, 0, 0, 0])
        per_model[1] += tokens_in
        per_model[2] += tokens_out
        per_model[3] += 1
        if cost is None:
            agent.unpriced_calls += 1
            per_model[4] += 1
        else:
            agent.cost_usd += cost
            per_model[0] += cost
            self.total_cost_usd += cost

    def _request_opened(self, agent: AgentView, event: Event) -> None:
        d = event.data
        choices = d.get("choices")
        request = Request(
            id=d["request_id"],
            agent_id=agent.agent_id,
            kind=d["kind"],
            prompt=d["prompt"],
            choices=tuple(choices) if choices else None,
            details=dict(d.get("details") or {}),
            opened=event.ts,
            runtime=event.runtime,
        )
        self.requests[request.id] = self._open[request.id] = request

    def _request_decided(self, event: Event) -> None:
        d = event.data
        request = self.requests.get(d["request_id"])
        if request is None or request.decision is not None:
            return
        self._open.pop(request.id, None)
        self.requests[request.id] = replace(
            request,
            decision=d["decision"],
            decided_by=d.get("by"),
            answer=d.get("text"),
            note=d.get("note"),
            args=d.get("args"),
        )

    @staticmethod
    def _result(agent: AgentView, event: Event) -> None:
        agent.result = event.data["result"]

    @staticmethod
    def _error(agent: AgentView, event: Event) -> None:
        agent.error = f"{event.data['type']}: {event.data['message']}"

    @staticmethod
    def _stalled(agent: AgentView, event: Event) -> None:
        agent.stalled = bool(event.data["stalled"])
        agent.stall_reason = event.data.get("reason", "") if agent.stalled else ""


_AGENT_FIELDS = tuple(f.name for f in fields(AgentView))
_REQUEST_FIELDS = tuple(f.name for f in fields(Request))
_agent_values = attrgetter(*_AGENT_FIELDS)
_request_values = attrgetter(*_REQUEST_FIELDS)
_STATE = _AGENT_FIELDS.index("state")
_BY_MODEL = _AGENT_FIELDS.index("by_model")
_CHOICES = _REQUEST_FIELDS.index("choices")
