"""Registered agents (``AgentSpec``), their live control records, and ``AgentRun``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConductLoopError, UsageError
from .states import AgentState

if TYPE_CHECKING:
    from .budgets import BudgetState
    from .fanout import FanState
    from .gates import GateState
    from .runtime import Runtime
    from .stall import StallState
    from .tools import ToolCalls


#: the longest agent name: its ids (``name-3-a1b2c3``) must fit what a hub takes
MAX_NAME = 120


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
        if len(agent_name) > MAX_NAME:
            raise UsageError(f"an agent's name is at most {MAX_NAME} characters: {agent_name!r}")
        if inspect.isasyncgenfunction(fn):
            raise UsageError(f"agent {agent_name!r} is an async generator; make it `async def`")
        return cls(agent_name, fn, inspect.iscoroutinefunction(fn), model, budget, signature)

    @classmethod
    def inner(cls, name: str, model: str | None) -> AgentSpec:
        """The spec of a subagent (``ctx.subagent``): it runs inside its parent's code."""
        if not isinstance(name, str) or not name.strip():
            raise UsageError("a subagent needs a name: ctx.subagent('writer')")
        if len(name) > MAX_NAME:
            raise UsageError(f"a subagent's name is at most {MAX_NAME} characters: {name!r}")
        if model is not None and not isinstance(model, str):
            raise UsageError(f"a subagent's model is a model name, not {model!r}")
        return cls(name, _inner, True, model, None, _INNER)

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


async def _inner(ctx: object) -> None:
    """A subagent has no function of its own: its parent's code runs it."""


_INNER = inspect.signature(_inner)


class AgentRecord:
    """Identity and lifetime of one live agent. Its *state* lives in the view, not here.

    Each collaborator of the runtime keeps its own slice of per-agent state on the record
    and is the only one to write it: ``gate`` (``gates``: stop, pause, waiters,
    instructions), ``budget`` (``budgets``), ``stall`` (``stall``), ``reports_to``
    (``fanout``: the parent's fan-out that waits for it) and ``tools`` (``tools``: its open
    tool calls). Touched only on the runtime's loop thread.
    """

    __slots__ = (
        "agent_id",
        "budget",
        "children",
        "final",
        "gate",
        "outcome",
        "parent",
        "reports_to",
        "spec",
        "stall",
        "started",
        "subagent",
        "task",
        "tools",
    )

    def __init__(
        self,
        agent_id: str,
        spec: AgentSpec,
        parent: AgentRecord | None,
        final: asyncio.Future[None],
        gate: GateState,
        stall: StallState,
        *,
        subagent: bool = False,
    ) -> None:
        self.agent_id = agent_id
        self.spec = spec
        self.parent = parent
        self.subagent = subagent  # runs inside its parent's code (``ctx.subagent``)
        self.children: set[AgentRecord] = set()
        self.task: asyncio.Task[Any] | None = None  # the task it runs in, once started
        self.started = False
        self.final = final
        self.outcome: tuple[AgentState, Any] | None = None
        self.gate = gate
        self.stall = stall
        self.budget: BudgetState | None = None  # ``budgets``: None when nothing limits it
        self.reports_to: FanState | None = None  # ``fanout``: the parent waiting for it
        self.tools: ToolCalls | None = None

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

    __slots__ = ("_record", "_runtime", "agent_id", "name")

    def __init__(self, runtime: Runtime, record: AgentRecord) -> None:
        self.agent_id = record.agent_id
        self.name = record.spec.name
        self._runtime = runtime
        self._record = record

    @property
    def state(self) -> AgentState:
        return self._runtime.view.agents[self.agent_id].state

    def done(self) -> bool:
        return self._record.outcome is not None

    def result(self, timeout: float | None = None) -> Any:
        """Block until the agent ends; return its result or raise how it ended.

        Raises ``TimeoutError`` after ``timeout`` seconds. On the thread of the loop the
        agent runs on (a notebook cell), this raises ``UsageError``: use ``await run``.
        """
        host = self._runtime.host
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
            host = self._runtime.host
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
