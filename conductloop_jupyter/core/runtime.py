"""``Runtime``: the one object that owns a conductor's agents, and the port agents talk to.

It owns the event sequence and ``emit``, the view, the bounded log, the live agent
records, the registered agents, the sinks and the loop host. Small collaborators each own
their slice of per-agent state: ``gates`` (stop, pause, waiters), ``budgets``, ``requests``
(open, await, decide), ``stalls``, ``tools``, ``supervisors``; ``fanout`` runs children.
``Context`` talks to it only through the methods of ``port.AgentPort``;
``cl.Conductor`` is the public class built on it.

Everything here runs on the runtime's loop thread (see ``loophost``); the ways in from
other threads are ``emit_threadsafe`` and ``host.call``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import re
import secrets
from collections.abc import Callable, Coroutine, Mapping, Sequence
from threading import get_ident
from typing import Any, Protocol, TypeVar

from .budgets import Budgets
from .clock import Clock, SystemClock
from .context import CURRENT, Context, SyncContext
from .errors import AgentFailed, AgentStopped, UsageError
from .eventlog import EventLog
from .events import PROGRESS_KINDS, Event, EventKind, brief_traceback, summarize
from .fanout import Call, child_ended, fan_out, parse_items
from .gates import Gates
from .loophost import LoopHost
from .requests import Requests
from .runs import AgentRecord, AgentSpec
from .stall import Stalls, StallState
from .states import AgentState, check_transition
from .steering import Steering
from .supervisors import Supervisors
from .tools import Tools
from .view import AgentView, Request, RequestKind, View

T = TypeVar("T")


class EventSink(Protocol):
    """Where events go besides the runtime itself: the seam the hub link plugs into.

    ``emit`` is called on the runtime's loop thread for every event, in ``seq`` order;
    it must not block (buffer and return).
    """

    def emit(self, event: Event) -> None: ...


def check_positive(what: str, value: object, unit: str) -> None:
    """Raise ``UsageError`` unless ``value`` is a positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UsageError(f"{what} must be a positive number of {unit}, not {value!r}")


class Runtime:
    def __init__(
        self,
        name: str | None,
        *,
        owner: object,
        budget_usd: float | None = None,
        stall_after: float = 120.0,
        repeat_limit: int = 3,
        clock: Clock | None = None,
        event_log_size: int = 100_000,
        max_threads: int = 32,
    ) -> None:
        if budget_usd is not None:
            check_positive("budget_usd", budget_usd, "USD")
        check_positive("stall_after", stall_after, "seconds")
        if not isinstance(repeat_limit, int) or repeat_limit < 2:
            raise UsageError(f"repeat_limit must be an integer of at least 2, not {repeat_limit!r}")
        check_positive("max_threads", max_threads, "threads")
        self.name = name or "conductor"
        self.tag = secrets.token_hex(3)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")[:120] or "conductor"
        #: this runtime's id on the wire; every event it emits carries it
        self.runtime = f"{slug}-{self.tag}"
        self.clock: Clock = clock or SystemClock()
        self.host = LoopHost()
        self.view = View()
        self.log = EventLog(event_log_size)
        self.records: dict[str, AgentRecord] = {}
        self.specs: dict[str, AgentSpec] = {}
        self.sinks: list[EventSink] = []
        self.closed = False
        self.gates = Gates(self)
        self.requests = Requests(self)
        self.budgets = Budgets(self, budget_usd)
        self.stalls = Stalls(self, stall_after, repeat_limit)
        self.tools = Tools(self)
        self.supervisors = Supervisors(self, owner)
        self.steering = Steering(self)
        self._seq = 0
        self._ids = itertools.count(1)
        self._max_threads = int(max_threads)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # -- events ------------------------------------------------------------------------

    def emit(self, agent_id: str | None, kind: EventKind, data: dict[str, Any]) -> Event:
        self._seq += 1
        event = Event(self._seq, self.clock.wall(), self.runtime, agent_id, kind, data)
        self.view.apply(event)
        log_full = self.log.append(event)
        for sink in self.sinks:
            sink.emit(event)
        if self.supervisors.active:
            self.supervisors.observe(event)
        # events this one causes are emitted after it has reached every sink (seq order)
        if agent_id is not None and kind in PROGRESS_KINDS:
            record = self.records.get(agent_id)
            if record is not None:
                self.stalls.progress(record, self.clock.now())
        if log_full:
            message = (
                f"the in-memory event log is full ({self.log.maxlen:,} events): "
                "the oldest are now dropped; agents, spend and requests stay exact"
            )
            self.emit(None, "log", {"level": "warning", "message": message})
        return event

    def emit_threadsafe(self, agent_id: str | None, kind: EventKind, data: dict[str, Any]) -> None:
        self.host.soon(self.emit, agent_id, kind, data)

    # -- states and lookups ------------------------------------------------------------

    def state_of(self, record: AgentRecord) -> AgentState:
        return self.view.agents[record.agent_id].state

    def set_state(self, record: AgentRecord, new: AgentState, **extra: Any) -> None:
        old = self.view.agents[record.agent_id].state
        if old is new:
            return
        check_transition(old, new)
        self.emit(record.agent_id, "agent.state", {"state": new.value, **extra})
        if new is AgentState.RUNNING:
            self.stalls.running(record, self.clock.now())

    def spec(self, agent: str | Callable[..., Any]) -> AgentSpec:
        if callable(agent) and not isinstance(agent, str):
            for spec in self.specs.values():
                if spec.fn is agent:
                    return spec
            raise UsageError(f"{agent!r} is not a registered agent: decorate it with @loop.agent")
        found = self.specs.get(agent) if isinstance(agent, str) else None
        if found is None:
            known = ", ".join(sorted(self.specs)) or "none yet: register one with @loop.agent"
            raise UsageError(f"no agent named {agent!r}; registered agents: {known}")
        return found

    def agent(self, agent_id: str) -> AgentView:
        view = self.view.agents.get(agent_id) if isinstance(agent_id, str) else None
        if view is None:
            raise UsageError(f"no agent {agent_id!r} in {self.runtime}; loop.agents() lists them")
        return view

    def live(self, agent_id: str, verb: str) -> AgentRecord:
        view = self.agent(agent_id)
        if view.state.final:
            raise UsageError(
                f"agent {agent_id} has already ended ({view.state.value}), so it cannot be "
                f"{verb}; start a new run with loop.start({view.name!r}, ...)"
            )
        return self.records[agent_id]

    # -- starting, running and ending agents -------------------------------------------

    def _record(self, spec: AgentSpec, parent: AgentRecord | None, subagent: bool) -> AgentRecord:
        loop = self.host.loop
        assert loop is not None
        agent_id = f"{spec.name}-{next(self._ids)}-{self.tag}"
        record = AgentRecord(
            agent_id,
            spec,
            parent,
            loop.create_future(),
            self.gates.state_for(parent),
            StallState(self.clock.now()),
            subagent=subagent,
        )
        record.budget = self.budgets.state_for(spec, parent, subagent)
        self.records[agent_id] = record
        if parent is not None:
            parent.children.add(record)
        return record

    def _announce(self, record: AgentRecord, input_text: str) -> None:
        spec, parent = record.spec, record.parent
        self.emit(
            record.agent_id,
            "agent.started",
            {
                "name": spec.name,
                "parent": parent.agent_id if parent else None,
                "model": spec.model,
                "budget_usd": spec.budget_usd,
                "input": input_text,
            },
        )

    def spawn(
        self,
        spec: AgentSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parent: AgentRecord | None = None,
    ) -> AgentRecord:
        loop = self.host.loop
        assert loop is not None
        record = self._record(spec, parent, subagent=False)
        self._announce(record, _describe_input(args, kwargs))
        if spec.is_async:
            record.task = loop.create_task(
                self._run_async(record, args, kwargs), name=record.agent_id
            )
        else:
            self._threads().submit(self._run_sync, record, args, kwargs)
        self.stalls.watch(loop)
        return record

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._max_threads, thread_name_prefix="conductloop-agent"
            )
        return self._executor

    async def _run_async(
        self, record: AgentRecord, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        ctx = Context(self, record)
        CURRENT.set(ctx)  # this task's context (and its child tasks') is this agent's
        try:
            record.started = True
            self.set_state(record, AgentState.RUNNING)
            await self.gates.gate(record)
            value = await record.spec.fn(ctx, *args, **kwargs)
        except asyncio.CancelledError:
            if self.gates.absorb(record):
                self.finish(record, AgentState.STOPPED, record.gate.stop)
                return
            self.finish(record, AgentState.STOPPED, AgentStopped("cancelled outside ConductLoop"))
            raise
        except Exception as error:
            self.finish(record, *self._ending(record, error))
        except BaseException as error:  # KeyboardInterrupt, SystemExit: record, then re-raise
            self.finish(record, AgentState.FAILED, error)
            raise
        else:
            self.finish(record, AgentState.DONE, value)

    def _ending(self, record: AgentRecord, error: Exception) -> tuple[AgentState, Any]:
        """How an agent that raised ends: ``stopped`` whenever a stop was asked for, even
        when a framework wrapped our ``AgentStopped`` in its own error; else ``failed``."""
        stop = record.gate.stop
        if isinstance(error, AgentStopped):
            self.gates.absorb(record)
            return AgentState.STOPPED, error
        if stop is not None:
            self.gates.absorb(record)
            return AgentState.STOPPED, stop
        return AgentState.FAILED, error

    def _run_sync(self, record: AgentRecord, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A plain ``def`` agent, on a worker thread."""
        state, value = AgentState.DONE, None
        ctx = SyncContext(self, record)
        token = CURRENT.set(ctx)
        try:
            self.host.wait(self._begin_sync(record))
            value = record.spec.fn(ctx, *args, **kwargs)
        except AgentStopped as stopped:
            state, value = AgentState.STOPPED, stopped
        except BaseException as error:  # handed to the loop thread, which records it
            stop = record.gate.stop
            state, value = (
                (AgentState.FAILED, error) if stop is None else (AgentState.STOPPED, stop)
            )
        finally:
            CURRENT.reset(token)
        loop = self.host.loop
        if loop is not None and not loop.is_closed():
            self.host.soon(self.finish, record, state, value)

    async def _begin_sync(self, record: AgentRecord) -> None:
        record.started = True
        self.set_state(record, AgentState.RUNNING)
        await self.gates.gate(record)

    def finish(
        self, record: AgentRecord, state: AgentState, value: Any, *, report: bool = True
    ) -> None:
        """End an agent: its result or error, its final state, its children stopped."""
        if record.outcome is not None:
            return
        agent_id = record.agent_id
        if state is AgentState.DONE and self.state_of(record) is not AgentState.RUNNING:
            # it caught the stop a gate raised while it waited or was paused, and returned:
            # it ran again before it ended (``done`` is reached from ``running`` only)
            self.set_state(record, AgentState.RUNNING)
        if state is AgentState.DONE and report:
            self.emit(agent_id, "agent.result", {"result": summarize(value, 2000)})
        elif state is AgentState.FAILED:
            self.emit(
                agent_id,
                "agent.error",
                {
                    "type": type(value).__name__,
                    "message": summarize(str(value), 2000),
                    "traceback": brief_traceback(value),
                },
            )
        extra = {} if state is AgentState.DONE else {"reason": summarize(str(value), 500)}
        self.set_state(record, state, **extra)
        record.outcome = (state, value)
        self.records.pop(agent_id, None)
        for child in list(record.children):
            self.gates.stop(child, AgentStopped(f"its parent {agent_id} ended"))
        if record.parent is not None:
            record.parent.children.discard(record)
        self.gates.release(record)
        record.task = None
        if not record.final.done():
            record.final.set_result(None)
        child_ended(self, record)

    # -- subagents: agents that run inside their parent's code ---------------------------

    def open_subagent(
        self, parent: AgentRecord, name: str, model: str | None, task: asyncio.Task[Any] | None
    ) -> AgentRecord:
        """A subagent of ``parent``, running in ``task`` (``None``: a worker thread)."""
        spec = AgentSpec.inner(name, model)
        return self.host.call(self._open_subagent, spec, parent, task)

    def _open_subagent(
        self, spec: AgentSpec, parent: AgentRecord, task: asyncio.Task[Any] | None
    ) -> AgentRecord:
        record = self._record(spec, parent, subagent=True)
        self._announce(record, "")
        record.task = task
        record.started = True
        self.set_state(record, AgentState.RUNNING)
        return record

    def close_subagent(
        self, record: AgentRecord, error: BaseException | None
    ) -> BaseException | None:
        """End a subagent as its block ended; return what the block should raise instead."""
        return self.host.call(self._close_subagent, record, error)

    def _close_subagent(
        self, record: AgentRecord, error: BaseException | None
    ) -> BaseException | None:
        stop = record.gate.stop
        if error is None and stop is None:
            self.finish(record, AgentState.DONE, None, report=False)
            return None
        if isinstance(error, asyncio.CancelledError) and not self.gates.absorb(record):
            self.finish(record, AgentState.STOPPED, AgentStopped("cancelled outside ConductLoop"))
            return None
        if stop is None:
            assert error is not None
            if isinstance(error, Exception):
                self.finish(record, *self._ending(record, error))
            else:
                self.finish(record, AgentState.FAILED, error)
            return None
        self.gates.absorb(record)
        self.finish(record, AgentState.STOPPED, stop)
        assert record.parent is not None
        parent_stop = record.parent.gate.stop
        if parent_stop is not None:
            return parent_stop
        failed = AgentFailed(record.agent_id, record.spec.name, "stopped", str(stop))
        failed.__cause__ = stop
        return failed

    # -- the port ``Context`` talks through (``context.AgentPort``) --------------------

    def emit_for(self, record: AgentRecord, kind: EventKind, data: dict[str, Any]) -> None:
        if get_ident() == self.host.thread_id:  # the hot path: no hop through the loop
            self.emit(record.agent_id, kind, data)
        else:
            self.emit_threadsafe(record.agent_id, kind, data)

    # the gates' own functions, without a call around them (``passing``: every checkpoint)
    clear = staticmethod(Gates.clear)
    passing = staticmethod(Gates.passing)
    take_instructions = staticmethod(Gates.take_instructions)

    async def gate(self, record: AgentRecord) -> None:
        await self.gates.gate(record)

    def stopped(self, record: AgentRecord) -> AgentStopped | None:
        return self.gates.stopped(record)

    def absorb(self, record: AgentRecord) -> AgentStopped | None:
        """The stop to raise when the cancellation that reached the agent was ours."""
        return self.gates.stopped(record) if self.gates.absorb(record) else None

    async def gate_and_take(self, record: AgentRecord) -> list[str]:
        await self.gates.gate(record)
        return self.gates.take_instructions(record)

    async def ask_human(
        self,
        record: AgentRecord,
        kind: RequestKind,
        prompt: str,
        choices: list[str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Request:
        """Open a request, wait for its decision; honour stop, budget and pause around it."""
        await self.gates.gate(record)
        request_id = self.requests.new(record, kind, prompt, choices, details)
        request = await self.requests.wait(record, request_id)
        await self.gates.gate(record)
        return request

    def parse_items(self, items: Sequence[Any]) -> list[Call]:
        return parse_items(self, items)

    async def fan_out(
        self, record: AgentRecord, calls: list[Call], limit: int | None, return_exceptions: bool
    ) -> list[Any]:
        return await fan_out(self, record, calls, limit, return_exceptions)

    async def handoff(
        self, parent: AgentRecord, spec: AgentSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        def announce(child: AgentRecord) -> None:
            self.emit(parent.agent_id, "handoff", {"to": child.agent_id, "name": spec.name})
            self.emit(parent.agent_id, "agent.status", {"text": f"handed off to {spec.name}"})

        results = await fan_out(self, parent, [(spec, args, kwargs)], None, False, announce)
        return results[0]

    def tool_started(
        self, record: AgentRecord, tool: str, args: dict[str, Any], call_id: str | None
    ) -> str:
        return self.host.call(self.tools.started, record, tool, args, call_id)

    def tool_finished(self, record: AgentRecord, call_id: str, error: object) -> None:
        self.host.call(self.tools.finished, record, call_id, error)

    def spent(self, record: AgentRecord, cost: float) -> None:
        if record.subagent:
            self.host.soon(self.budgets.spent, record, cost)

    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.host.wait(coro)

    def now(self) -> float:
        return self.clock.now()

    # -- closing -----------------------------------------------------------------------

    async def shutdown(self, timeout: float) -> None:
        """Stop every agent and wait (up to ``timeout`` s) for them to end."""
        self.steering.stop_all("close")
        finals = [r.final for r in self.records.values()]
        if finals:
            await asyncio.wait(finals, timeout=timeout)
        self.closed = True

    def release(self) -> list[asyncio.Task[None]]:
        """Cancel the helper tasks and let the worker threads go once idle."""
        self.closed = True
        helpers = [t for t in (self.stalls.release(), self.supervisors.release()) if t is not None]
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        return helpers


def _describe_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """What an agent was started with, short: ``"topic"``, ``"1, 2, mode='fast'"``, ``""``."""
    if len(args) == 1 and not kwargs:
        return summarize(args[0])
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return summarize(", ".join(parts))
