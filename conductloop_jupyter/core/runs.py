"""Registered agents (``AgentSpec``), their live control records, and ``AgentRun``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import AgentStopped, ConductLoopError, UsageError
from .states import AgentState

if TYPE_CHECKING:
    from .conductor import BaseConductor


@dataclass(frozen=True)
class AgentSpec:
    """An agent function registered with ``@loop.agent``."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    model: str | None
    budget_usd: float | None
    signature: inspect.Signature
    #: positional argument count -> "" if they bind, else why not (see ``check_args``)
    _binds: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls, fn: Callable[..., Any], name: str | None, model: str | None, budget: float | None
    ) -> AgentSpec:
        if not callable(fn):
            raise UsageError(f"@loop.agent decorates a function, not {fn!r}")
        signature = inspect.signature(fn)
        positional = [
            p
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        agent_name = name or getattr(fn, "__name__", "")
        if not positional:
            raise UsageError(
                f"agent {agent_name!r} must take the context as its first parameter: "
                f"def {agent_name}(ctx, ...)"
            )
        if not agent_name or not isinstance(agent_name, str):
            raise UsageError("give the agent a name: @loop.agent(name='...')")
        if inspect.isasyncgenfunction(fn):
            raise UsageError(f"agent {agent_name!r} is an async generator; make it `async def`")
        return cls(agent_name, fn, inspect.iscoroutinefunction(fn), model, budget, signature)

    def check_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Whether positional arguments alone bind depends only on how many there are, so
        # that answer is kept per count: ``parallel`` checks each of 100,000 items here, and
        # ``Signature.bind`` costs several microseconds a call.
        known = self._binds.get(len(args)) if not kwargs else None
        if known is None:
            try:
                self.signature.bind(None, *args, **kwargs)
                known = ""
            except TypeError as exc:
                known = str(exc)
            if not kwargs:
                self._binds[len(args)] = known
        if known:
            raise UsageError(f"agent {self.name!r} cannot take these arguments: {known}")


class AgentRecord:
    """Control plumbing of one live agent. Its *state* lives in the view, not here.

    Touched only on the conductor's loop thread.
    """

    __slots__ = (
        "agent_id",
        "budget_limit",
        "budget_step",
        "cancels",
        "children",
        "completions",
        "final",
        "instructions",
        "last_progress",
        "notify",
        "outcome",
        "parent",
        "pause",
        "repeats",
        "spans",
        "spec",
        "stall",
        "started",
        "stop",
        "task",
        "tool_key",
        "waker",
    )

    def __init__(
        self,
        agent_id: str,
        spec: AgentSpec,
        parent: AgentRecord | None,
        final: asyncio.Future[None],
        now: float,
    ) -> None:
        self.agent_id = agent_id
        self.spec = spec
        self.parent = parent
        self.children: set[AgentRecord] = set()
        self.notify: AgentRecord | None = None  # a parent waiting in parallel/handoff
        self.completions: deque[AgentRecord] = deque()  # children that ended, for fan-out
        self.task: asyncio.Task[None] | None = None
        self.started = False
        self.stop: AgentStopped | None = None  # set once a stop is requested
        self.pause = False
        self.cancels = 0  # task.cancel() calls made to deliver a stop
        self.waker: asyncio.Future[None] | None = None  # set while blocked in a gate
        self.instructions: deque[str] = deque()
        self.budget_limit = spec.budget_usd
        self.budget_step = spec.budget_usd
        self.final = final
        self.outcome: tuple[AgentState, Any] | None = None
        self.last_progress = now
        self.stall: str | None = None  # None, "idle" or "repeat"
        self.tool_key: tuple[str, str] | None = None
        self.repeats = 0
        self.spans = 0

    def descendants(self) -> list[AgentRecord]:
        found, todo = [], list(self.children)
        while todo:
            child = todo.pop()
            found.append(child)
            todo.extend(child.children)
        return found

    def result(self) -> Any:
        """The agent's return value, or its ending raised as an exception."""
        assert self.outcome is not None
        state, value = self.outcome
        if state is AgentState.DONE:
            return value
        if isinstance(value, BaseException):
            raise value
        raise ConductLoopError(f"agent {self.agent_id} ended {state.value}")


class AgentRun:
    """A started agent: await it (in a notebook) or call ``.result()`` (in a script).

    >>> run = loop.start("researcher", "agent orchestration")
    >>> run.state                      # AgentState.RUNNING
    >>> summary = await run            # in a notebook cell or any coroutine
    >>> summary = run.result(timeout=60)   # in a plain script
    """

    __slots__ = ("_conductor", "_record", "agent_id", "name")

    def __init__(self, conductor: BaseConductor, record: AgentRecord) -> None:
        self.agent_id = record.agent_id
        self.name = record.spec.name
        self._conductor = conductor
        self._record = record

    @property
    def state(self) -> AgentState:
        return self._conductor._view.agents[self.agent_id].state

    def done(self) -> bool:
        return self._record.outcome is not None

    def result(self, timeout: float | None = None) -> Any:
        """Block until the agent ends; return its result or raise how it ended.

        Raises ``TimeoutError`` after ``timeout`` seconds. On the thread of the loop the
        agent runs on (a notebook cell), this raises ``UsageError``: use ``await run``.
        """
        host = self._conductor._host
        if host.on_loop_thread():
            raise UsageError(
                f"run.result() would block the event loop that {self.agent_id} runs on "
                "(in a notebook: the kernel's) and never return. Use `await run` instead."
            )
        if self._record.outcome is None:
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            host.soon(_bridge, self._record.final, done)
            done.result(timeout)
        return self._record.result()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        if self._record.outcome is None:
            host = self._conductor._host
            if asyncio.get_running_loop() is host.loop:
                await asyncio.shield(self._record.final)
            else:
                done: concurrent.futures.Future[None] = concurrent.futures.Future()
                host.soon(_bridge, self._record.final, done)
                await asyncio.wrap_future(done)
        return self._record.result()

    def __repr__(self) -> str:
        return f"<AgentRun {self.agent_id} {self.state.value}>"


def _bridge(final: asyncio.Future[None], done: concurrent.futures.Future[None]) -> None:
    """Complete ``done`` (any thread can wait on it) when ``final`` completes."""
    if final.done():
        done.set_result(None)
    else:
        final.add_done_callback(lambda _: done.set_result(None))
