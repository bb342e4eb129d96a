"""``BaseConductor``: registers agents, starts them, runs them, and ends them.

It is the whole runtime without pandas or plotting; ``conductloop_jupyter.Conductor`` adds
those. Semantics of steering are in ``steering``; of parallel/handoff in ``fanout``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar, overload

from .clock import Clock
from .context import Context, SyncContext
from .errors import AgentFailed, AgentStopped, UsageError
from .events import Event, brief_traceback, canonical, summarize
from .fanout import fan_out
from .runs import AgentRecord, AgentRun, AgentSpec
from .runtime import EventSink, check_positive
from .states import AgentState
from .steering import ACTOR, SteeringMixin

F = TypeVar("F", bound=Callable[..., Any])
Supervisor = Callable[[Event, Any], "Awaitable[None] | None"]

_SUPERVISOR_QUEUE = 100_000


class BaseConductor(SteeringMixin):
    def __init__(
        self,
        name: str | None = None,
        *,
        budget_usd: float | None = None,
        stall_after: float = 120.0,
        clock: Clock | None = None,
        event_log_size: int = 100_000,
        repeat_limit: int = 3,
        max_threads: int = 32,
    ) -> None:
        super().__init__(
            name,
            budget_usd=budget_usd,
            stall_after=stall_after,
            repeat_limit=repeat_limit,
            clock=clock,
            event_log_size=event_log_size,
        )
        check_positive("max_threads", max_threads, "threads")
        self._specs: dict[str, AgentSpec] = {}
        self._ids = itertools.count(1)
        self._router: Callable[[Any], Any] | None = None
        self._supervisors: list[Supervisor] = []
        self._inbox: deque[Event] = deque(maxlen=_SUPERVISOR_QUEUE)
        self._inbox_dropped = 0
        self._helpers: dict[str, asyncio.Task[None]] = {}  # "stalls", "supervisor"
        self._helper_wakers: dict[str, asyncio.Future[None]] = {}
        self._max_threads = int(max_threads)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self._bound_to: asyncio.AbstractEventLoop | None = None

    def _on_bind(self) -> None:
        """Called on the loop thread when the conductor first binds to a loop."""

    async def _on_close(self) -> None:
        """Called on the loop thread after the agents have ended, before release."""

    # -- registering -------------------------------------------------------------------

    @overload
    def agent(self, fn: F, /) -> F: ...
    @overload
    def agent(
        self, *, name: str | None = None, model: str | None = None, budget_usd: float | None = None
    ) -> Callable[[F], F]: ...
    def agent(  # type: ignore[misc]  # the overloads are the precise contract
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        model: str | None = None,
        budget_usd: float | None = None,
    ) -> F | Callable[[F], F]:
        """Register an agent: ``@loop.agent`` or ``@loop.agent(model=..., budget_usd=...)``.

        The function's first parameter is its ``Context``. ``async def`` agents run on the
        conductor's loop; plain ``def`` agents in a worker thread. Registering a name
        again replaces the earlier agent (re-running a notebook cell just works).
        """
        if budget_usd is not None:
            check_positive("budget_usd", budget_usd, "USD")

        def register(fn: F) -> F:
            spec = AgentSpec.of(fn, name, model, budget_usd)
            self._specs[spec.name] = spec
            return fn

        return register(fn) if fn is not None else register

    def router(self, fn: F) -> F:
        """Register the router ``dispatch`` uses: a function ``task -> agent name``."""
        if not callable(fn):
            raise UsageError("@loop.router decorates a function task -> agent name")
        self._router = fn
        return fn

    def supervisor(self, fn: F) -> F:
        """Register a supervisor: ``async def watch(event, loop)`` sees every event, in order.

        It runs on the conductor's loop and may steer (``loop.stop(...)`` etc.). An
        exception in it is recorded as an error event; it keeps receiving events.
        """
        if not callable(fn):
            raise UsageError("@loop.supervisor decorates a function (event, loop) -> None")
        self._supervisors.append(fn)
        if self._host.loop is not None:
            self._host.soon(self._ensure_helper, "supervisor")
        return fn

    def attach(self, sink: EventSink) -> None:
        """Send every event from now on to ``sink`` too (how a hub link plugs in)."""
        self._host.call(self._sinks.append, sink)

    def detach(self, sink: EventSink) -> None:
        self._host.call(self._sinks.remove, sink)

    def _spec(self, agent: str | Callable[..., Any]) -> AgentSpec:
        if callable(agent) and not isinstance(agent, str):
            for spec in self._specs.values():
                if spec.fn is agent:
                    return spec
            raise UsageError(f"{agent!r} is not a registered agent: decorate it with @loop.agent")
        found = self._specs.get(agent) if isinstance(agent, str) else None
        if found is None:
            known = ", ".join(sorted(self._specs)) or "none yet: register one with @loop.agent"
            raise UsageError(f"no agent named {agent!r}; registered agents: {known}")
        return found

    # -- starting ----------------------------------------------------------------------

    def start(self, agent: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> AgentRun:
        """Start an agent and return its ``AgentRun`` at once; it runs in the background.

        >>> run = loop.start("researcher", "agent orchestration")
        >>> result = await run            # in a notebook; run.result() in a script
        """
        if self._closed:
            raise UsageError("this conductor is closed; create a new Conductor")
        spec = self._spec(agent)
        spec.check_args(args, kwargs)
        loop = self._host.ensure(can_rebind=not self._records)
        if self._bound_to is not loop:
            self._bound_to = loop
            self._host.call(self._on_bind)
        record = self._host.call(self._spawn, spec, args, kwargs, None)
        return AgentRun(self, record)

    def run(self, agent: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Start an agent and block until it ends (for scripts); return its result."""
        if self._host.on_loop_thread() or _loop_running_here():
            raise UsageError(
                "loop.run() blocks, and this thread runs an event loop (a notebook cell?): "
                "use `await loop.start(...)` instead"
            )
        return self.start(agent, *args, **kwargs).result()

    def dispatch(self, task: Any) -> AgentRun:
        """Route ``task`` with the ``@loop.router`` function and start that agent with it."""
        if self._router is None:
            raise UsageError("no router: decorate a function task -> agent name with @loop.router")
        return self.start(self._router(task), task)

    def _spawn(
        self,
        spec: AgentSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parent: AgentRecord | None,
    ) -> AgentRecord:
        loop = self._host.loop
        assert loop is not None
        agent_id = f"{spec.name}-{next(self._ids)}-{self._tag}"
        record = AgentRecord(agent_id, spec, parent, loop.create_future(), self._clock.now())
        self._records[agent_id] = record
        if parent is not None:
            parent.children.add(record)
            record.pause = parent.pause
        budget = spec.budget_usd
        self._emit(
            agent_id,
            "agent.started",
            {
                "name": spec.name,
                "parent": parent.agent_id if parent else None,
                "model": spec.model,
                "budget_usd": budget,
                "input": _describe_input(args, kwargs),
            },
        )
        if spec.is_async:
            record.task = loop.create_task(self._run_async(record, args, kwargs), name=agent_id)
        else:
            self._threads().submit(self._run_sync, record, args, kwargs)
        self._ensure_helper("stalls")
        return record

    async def _handoff(
        self, parent: AgentRecord, spec: AgentSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        def announce(child: AgentRecord) -> None:
            self._emit(parent.agent_id, "handoff", {"to": child.agent_id, "name": spec.name})
            self._emit(parent.agent_id, "agent.status", {"text": f"handed off to {spec.name}"})

        results = await fan_out(self, parent, [(spec, args, kwargs)], None, False, announce)
        return results[0]

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._max_threads, thread_name_prefix="conductloop-agent"
            )
        return self._executor

    # -- running -----------------------------------------------------------------------

    async def _run_async(
        self, record: AgentRecord, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            record.started = True
            self._set_state(record, AgentState.RUNNING)
            await self._gate(record)
            value = await record.spec.fn(Context(self, record), *args, **kwargs)
        except AgentStopped as stopped:
            self._absorb_stop(record)
            self._finish(record, AgentState.STOPPED, stopped)
        except asyncio.CancelledError:
            if self._absorb_stop(record):
                assert record.stop is not None
                self._finish(record, AgentState.STOPPED, record.stop)
                return
            self._finish(record, AgentState.STOPPED, AgentStopped("cancelled outside ConductLoop"))
            raise
        except Exception as error:
            self._finish(record, AgentState.FAILED, error)
        except BaseException as error:  # KeyboardInterrupt, SystemExit: record, then re-raise
            self._finish(record, AgentState.FAILED, error)
            raise
        else:
            self._finish(record, AgentState.DONE, value)

    def _run_sync(self, record: AgentRecord, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A plain ``def`` agent, on a worker thread."""
        state, value = AgentState.DONE, None
        try:
            self._host.wait(self._begin_sync(record))
            value = record.spec.fn(SyncContext(self, record), *args, **kwargs)
        except AgentStopped as stopped:
            state, value = AgentState.STOPPED, stopped
        except BaseException as error:  # handed to the loop thread, which records it
            state, value = AgentState.FAILED, error
        loop = self._host.loop
        if loop is not None and not loop.is_closed():
            self._host.soon(self._finish, record, state, value)

    async def _begin_sync(self, record: AgentRecord) -> None:
        record.started = True
        self._set_state(record, AgentState.RUNNING)
        await self._gate(record)

    async def _gate_and_take(self, record: AgentRecord) -> list[str]:
        await self._gate(record)
        return self._take_instructions(record)

    def _absorb_stop(self, record: AgentRecord) -> bool:
        """Undo the cancellations we made to deliver a stop; ``False`` if one came from outside."""
        task = record.task
        if record.stop is None or task is None or task.cancelling() > record.cancels:
            return False
        while task.cancelling():
            task.uncancel()
        record.cancels = 0
        return True

    def _finish(self, record: AgentRecord, state: AgentState, value: Any) -> None:
        if record.outcome is not None:
            return
        agent_id = record.agent_id
        if state is AgentState.DONE:
            self._emit(agent_id, "agent.result", {"result": summarize(value, 2000)})
        elif state is AgentState.FAILED:
            self._emit(
                agent_id,
                "agent.error",
                {
                    "type": type(value).__name__,
                    "message": summarize(str(value), 2000),
                    "traceback": brief_traceback(value),
                },
            )
        extra = {} if state is AgentState.DONE else {"reason": summarize(str(value), 500)}
        self._set_state(record, state, **extra)
        record.outcome = (state, value)
        self._records.pop(agent_id, None)
        for child in list(record.children):
            self._stop_record(child, AgentStopped(f"its parent {agent_id} ended"))
        if record.parent is not None:
            record.parent.children.discard(record)
        record.task = None
        if not record.final.done():
            record.final.set_result(None)
        if record.notify is not None:
            record.notify.completions.append(record)
            self._poke(record.notify)

    def _stop_sibling(self, sibling: AgentRecord, failure: AgentFailed) -> None:
        self._stop_record(
            sibling, AgentStopped(f"sibling {failure.agent_id} ended {failure.state}")
        )

    def _tool_started(self, record: AgentRecord, span: int, tool: str, args: Any) -> None:
        self._emit(record.agent_id, "tool.started", {"span": span, "tool": tool, "args": args})
        change = self._stalls.tool(record, (tool, canonical(args)))
        if change is not None and record.outcome is None:
            reason = f"called {tool} {record.repeats} times in a row with the same arguments"
            stalled = change == "stalled"
            self._emit(
                record.agent_id,
                "agent.stalled",
                {"stalled": stalled, "reason": reason if stalled else ""},
            )

    # -- helpers: stall watch and supervisors ------------------------------------------

    def _ensure_helper(self, name: str) -> None:
        task = self._helpers.get(name)
        if task is None or task.done():
            loop = self._host.loop
            assert loop is not None
            body = self._watch_stalls() if name == "stalls" else self._supervise()
            self._helpers[name] = loop.create_task(body, name=f"conductloop:{name}")

    async def _watch_stalls(self) -> None:
        while self._records and not self._closed:
            await self._clock.sleep(self._stalls.interval)
            running = (
                r
                for r in self._records.values()
                if self._view.agents[r.agent_id].state is AgentState.RUNNING
            )
            for record in self._stalls.idle(running, self._clock.now()):
                seconds = self._stalls.stall_after
                self._emit(
                    record.agent_id,
                    "agent.stalled",
                    {"stalled": True, "reason": f"no progress for {seconds:g} s"},
                )

    def _observe(self, event: Event) -> None:
        if not self._supervisors or event.data.get("source") == "supervisor":
            return
        if len(self._inbox) == self._inbox.maxlen:
            self._inbox_dropped += 1
        self._inbox.append(event)
        waker = self._helper_wakers.get("supervisor")
        if waker is not None and not waker.done():
            waker.set_result(None)
        elif "supervisor" not in self._helpers:
            self._ensure_helper("supervisor")

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            while self._inbox:
                event = self._inbox.popleft()
                for fn in list(self._supervisors):
                    await self._call_supervisor(fn, event)
            waker = self._helper_wakers["supervisor"] = loop.create_future()
            await waker

    async def _call_supervisor(self, fn: Supervisor, event: Event) -> None:
        name = getattr(fn, "__name__", repr(fn))
        acting = ACTOR.set(f"supervisor:{name}")  # its steering says who did it
        try:
            outcome = fn(event, self)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as error:
            self._emit(
                None,
                "log",
                {
                    "level": "error",
                    "source": "supervisor",
                    "message": f"supervisor {name} raised {type(error).__name__}: {error}",
                },
            )
        finally:
            ACTOR.reset(acting)

    # -- reading (thread-safe) ---------------------------------------------------------

    def _read(self, fn: Callable[[], Any]) -> Any:
        return self._host.call(fn)

    # -- closing -----------------------------------------------------------------------

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop every agent, wait (up to ``timeout`` s) for them to end, release threads.

        Works from any event loop: from another loop it waits without blocking that loop.
        """
        host = self._host
        if host.loop is None or host.loop.is_closed():
            self._closed = True
            return
        if asyncio.get_running_loop() is host.loop:
            await self._shutdown(timeout)
            return
        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._shutdown(timeout), host.loop)
        )
        await asyncio.to_thread(host.close)

    async def _shutdown(self, timeout: float) -> None:
        self._stop_all("close")
        finals = [r.final for r in self._records.values()]
        if finals:
            await asyncio.wait(finals, timeout=timeout)
        self._closed = True
        await self._on_close()
        helpers = self._release()
        await asyncio.gather(*helpers, return_exceptions=True)

    def _release(self) -> list[asyncio.Task[None]]:
        """Cancel the helper tasks and let the worker threads go once idle."""
        helpers = list(self._helpers.values())
        for task in helpers:
            task.cancel()
        self._helpers.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        return helpers

    def close(self, timeout: float = 10.0) -> None:
        """Stop every agent and release the conductor's thread and loop.

        In a notebook cell (on the loop's own thread) it cannot wait: it stops everything
        and returns; ``await loop.aclose()`` waits for the agents to end.
        """
        if self._host.loop is None or self._host.loop.is_closed():
            self._closed = True
            return
        if self._host.on_loop_thread() or not self._host.loop.is_running():
            self._stop_all("close")
            self._closed = True
            self._release()
            return
        self._host.wait(self._shutdown(timeout))
        self._host.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.runtime}: {len(self._records)} live agents>"


def _describe_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """What an agent was started with, short: ``"topic"``, ``"1, 2, mode='fast'"``, ``""``."""
    if len(args) == 1 and not kwargs:
        return summarize(args[0])
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return summarize(", ".join(parts))


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
