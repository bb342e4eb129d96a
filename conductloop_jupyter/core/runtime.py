"""The state every part of a conductor shares, and the primitives they build on.

``RuntimeCore`` owns the event sequence, the view, the bounded log, the live agent records
and the sinks. Everything here runs on the conductor's loop thread (see ``loophost``); the
one way in from other threads is ``_emit_threadsafe`` and ``LoopHost.call``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any, Protocol

from .clock import Clock, SystemClock
from .errors import UsageError
from .eventlog import EventLog
from .events import PROGRESS_KINDS, Event, EventKind
from .loophost import LoopHost
from .runs import AgentRecord
from .stall import StallDetector
from .states import AgentState, check_transition
from .view import AgentView, View


class EventSink(Protocol):
    """Where events go besides the conductor itself: the seam the hub link plugs into.

    ``emit`` is called on the conductor's loop thread for every event, in ``seq`` order;
    it must not block (buffer and return).
    """

    def emit(self, event: Event) -> None: ...


def check_positive(what: str, value: object, unit: str) -> None:
    """Raise ``UsageError`` unless ``value`` is a positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UsageError(f"{what} must be a positive number of {unit}, not {value!r}")


class RuntimeCore:
    def __init__(
        self,
        name: str | None,
        *,
        budget_usd: float | None,
        stall_after: float,
        repeat_limit: int,
        clock: Clock | None,
        event_log_size: int,
    ) -> None:
        if budget_usd is not None:
            check_positive("budget_usd", budget_usd, "USD")
        check_positive("stall_after", stall_after, "seconds")
        if not isinstance(repeat_limit, int) or repeat_limit < 2:
            raise UsageError(f"repeat_limit must be an integer of at least 2, not {repeat_limit!r}")
        self.name = name or "conductor"
        self._tag = secrets.token_hex(3)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-") or "conductor"
        #: this conductor's id on the wire; every event it emits carries it
        self.runtime = f"{slug}-{self._tag}"
        self._clock: Clock = clock or SystemClock()
        self._host = LoopHost()
        self._view = View()
        self._log = EventLog(event_log_size)
        self._seq = 0
        self._records: dict[str, AgentRecord] = {}
        self._sinks: list[EventSink] = []
        self._stalls = StallDetector(stall_after, repeat_limit)
        self._budget_limit = budget_usd
        self._budget_step = budget_usd

    # -- events ------------------------------------------------------------------------

    def _emit(self, agent_id: str | None, kind: EventKind, data: dict[str, Any]) -> Event:
        self._seq += 1
        event = Event(self._seq, self._clock.wall(), self.runtime, agent_id, kind, data)
        self._view.apply(event)
        log_full = self._log.append(event)
        for sink in self._sinks:
            sink.emit(event)
        self._observe(event)
        # events this one causes are emitted after it has reached every sink (seq order)
        if agent_id is not None and kind in PROGRESS_KINDS:
            record = self._records.get(agent_id)
            if record is not None and self._stalls.progress(record, self._clock.now()):
                self._emit(agent_id, "agent.stalled", {"stalled": False, "reason": ""})
        if log_full:
            message = (
                f"the in-memory event log is full ({self._log.maxlen:,} events): "
                "the oldest are now dropped; agents, spend and requests stay exact"
            )
            self._emit(None, "log", {"level": "warning", "message": message})
        return event

    def _observe(self, event: Event) -> None:
        """Hook for the conductor (supervisors); called for every event."""

    def _emit_threadsafe(self, agent_id: str | None, kind: EventKind, data: dict[str, Any]) -> None:
        self._host.soon(self._emit, agent_id, kind, data)

    # -- states ------------------------------------------------------------------------

    def _state(self, record: AgentRecord) -> AgentState:
        return self._view.agents[record.agent_id].state

    def _set_state(self, record: AgentRecord, new: AgentState, **extra: Any) -> None:
        old = self._state(record)
        if old is new:
            return
        check_transition(old, new)
        self._emit(record.agent_id, "agent.state", {"state": new.value, **extra})
        if new is AgentState.RUNNING:
            record.last_progress = self._clock.now()

    # -- blocking and waking -----------------------------------------------------------

    async def _block(self, record: AgentRecord) -> None:
        """Wait until ``_poke(record)``; the caller re-checks why it woke."""
        waker = asyncio.get_running_loop().create_future()
        record.waker = waker
        try:
            await waker
        finally:
            record.waker = None

    @staticmethod
    def _poke(record: AgentRecord) -> None:
        waker = record.waker
        if waker is not None and not waker.done():
            waker.set_result(None)

    # -- looking agents up -------------------------------------------------------------

    def _agent(self, agent_id: str) -> AgentView:
        view = self._view.agents.get(agent_id) if isinstance(agent_id, str) else None
        if view is None:
            raise UsageError(f"no agent {agent_id!r} in {self.runtime}; loop.agents() lists them")
        return view

    def _live(self, agent_id: str, verb: str) -> AgentRecord:
        view = self._agent(agent_id)
        if view.state.final:
            raise UsageError(
                f"agent {agent_id} has already ended ({view.state.value}), so it cannot be "
                f"{verb}; start a new run with loop.start({view.name!r}, ...)"
            )
        return self._records[agent_id]
