"""What an agent holds: ``Context`` (async agents) and ``SyncContext`` (plain ``def`` agents).

Both have the same methods. ``status``, ``log`` and ``usage`` only record and return at
once; the others are gates (see ``steering``): on ``Context`` they are awaited, on
``SyncContext`` they block the agent's worker thread.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Mapping, Sequence
from threading import get_ident
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .errors import UsageError
from .events import clip, jsonable
from .fanout import fan_out, parse_items
from .pricing import price_usd

if TYPE_CHECKING:
    from .conductor import BaseConductor
    from .runs import AgentRecord

T = TypeVar("T")
LogLevel = Literal["debug", "info", "warning", "error"]
_LEVELS = ("debug", "info", "warning", "error")


class _ContextBase:
    __slots__ = ("_conductor", "_record")

    def __init__(self, conductor: BaseConductor, record: AgentRecord) -> None:
        self._conductor = conductor
        self._record = record

    @property
    def agent_id(self) -> str:
        return self._record.agent_id

    @property
    def name(self) -> str:
        return self._record.spec.name

    @property
    def parent(self) -> str | None:
        """The id of the agent that started this one with parallel/handoff, if any."""
        parent = self._record.parent
        return parent.agent_id if parent is not None else None

    @property
    def model(self) -> str | None:
        return self._record.spec.model

    def _emit(self, kind: Any, data: dict[str, Any]) -> None:
        conductor = self._conductor
        if get_ident() == conductor._host.thread_id:  # the hot path: no hop through the loop
            conductor._emit(self._record.agent_id, kind, data)
        else:
            conductor._emit_threadsafe(self._record.agent_id, kind, data)

    def status(self, text: str) -> None:
        """Say what the agent is doing now, in one line (shown everywhere)."""
        self._emit("agent.status", {"text": clip(str(text), 200)})

    def log(self, message: str, level: LogLevel = "info") -> None:
        """Add a line to the agent's event history."""
        if level not in _LEVELS:
            raise UsageError(f"log level must be one of {', '.join(_LEVELS)}, not {level!r}")
        self._emit("log", {"level": level, "message": clip(str(message))})

    def usage(
        self,
        model: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        *,
        cost_usd: float | None = None,
        provider: str | None = None,
    ) -> float | None:
        """Record an LLM call's tokens; price it with genai-prices unless ``cost_usd`` is given.

        Returns the cost in USD, or ``None`` for a model genai-prices does not know (the
        call is then recorded as unpriced, with a warning event; it never raises for that).
        Budgets are checked here and enforced at the agent's next gate.
        """
        model = model or self._record.spec.model
        if not model:
            raise UsageError("usage needs the model: ctx.usage(model='gpt-4o-mini', ...)")
        for what, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"{what} must be a non-negative integer, not {value!r}")
        priced_by = "caller"
        if cost_usd is None:
            cost_usd = price_usd(model, input_tokens, output_tokens, provider)
            priced_by = "unknown" if cost_usd is None else "genai-prices"
        elif isinstance(cost_usd, bool) or not isinstance(cost_usd, (int, float)) or cost_usd < 0:
            raise UsageError(f"cost_usd must be a non-negative number, not {cost_usd!r}")
        if cost_usd is None:
            self.log(
                f"no price known for model {model!r}: this call's cost is recorded as "
                "unknown and does not count against budgets; pass cost_usd= to price it",
                "warning",
            )
        self._emit(
            "usage",
            {
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cost_usd": None if cost_usd is None else float(cost_usd),
                "priced_by": priced_by,
            },
        )
        return cost_usd

    def tool(self, tool: str, **args: Any) -> ToolSpan:
        """A tool-call span on the timeline: ``async with ctx.tool("search", q=...)``."""
        if not isinstance(tool, str) or not tool:
            raise UsageError("a tool span needs the tool's name: ctx.tool('search', ...)")
        return ToolSpan(self, tool, args)


class Context(_ContextBase):
    """The handle an ``async def`` agent gets as its first argument.

    >>> @loop.agent(model="gpt-4o-mini")
    ... async def researcher(ctx: cl.Context, topic: str) -> str:
    ...     ctx.status("searching")
    ...     async with ctx.tool("search", query=topic):
    ...         hits = await search(topic)
    ...     for instruction in await ctx.checkpoint():   # honours pause/stop; redirects
    ...         ctx.log(f"new instruction: {instruction}")
    ...     if await ctx.approve("Send the summary?", details={"to": "team"}):
    ...         ...
    ...     return await ctx.handoff("writer", hits)
    """

    __slots__ = ()

    async def _gate(self) -> None:
        conductor, record = self._conductor, self._record
        if not conductor._clear(record):
            await conductor._gate(record)

    async def checkpoint(self) -> list[str]:
        """Yield to other agents; honour pause/stop/budget; return new instructions (once)."""
        await asyncio.sleep(0)  # lets steering that is already queued run first
        conductor, record = self._conductor, self._record
        if not conductor._clear(record):  # inlined ``_gate``: agents call this in hot loops
            await conductor._gate(record)
        if record.instructions:
            return conductor._take_instructions(record)
        return []

    async def approve(self, prompt: str, details: Mapping[str, Any] | None = None) -> bool:
        """Ask a human to approve; wait (``waiting``) and return their decision."""
        await self._gate()
        conductor, record = self._conductor, self._record
        request_id = conductor._open_request(record, "approval", prompt, details=details)
        request = await conductor._await_request(record, request_id)
        await self._gate()
        return request.decision == "approved"

    async def ask(self, prompt: str, choices: Sequence[str] | None = None) -> str | None:
        """Ask a human a question; return the answer (``None`` if they declined)."""
        await self._gate()
        conductor, record = self._conductor, self._record
        request_id = conductor._open_request(
            record, "question", prompt, list(choices) if choices is not None else None
        )
        request = await conductor._await_request(record, request_id)
        await self._gate()
        return request.answer if request.decision == "answered" else None

    async def parallel(
        self, items: Sequence[Any], *, limit: int | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        """Run ``(agent_name, *args)`` items as child agents; results in item order.

        A child that does not finish stops its siblings and raises ``AgentFailed`` here,
        unless ``return_exceptions=True`` (then the error takes its place in the results).
        """
        await self._gate()
        conductor, record = self._conductor, self._record
        calls = parse_items(conductor, items)
        if not calls:
            return []
        self.status(f"waiting for {len(calls)} parallel agent{'s' * (len(calls) != 1)}")
        results = await fan_out(conductor, record, calls, limit, return_exceptions)
        await self._gate()
        return results

    async def handoff(self, agent: str, *args: Any, **kwargs: Any) -> Any:
        """Hand the work to another agent and return its result (``AgentFailed`` if it fails)."""
        await self._gate()
        conductor, record = self._conductor, self._record
        spec = conductor._spec(agent)
        spec.check_args(args, kwargs)
        child = await conductor._handoff(record, spec, args, kwargs)
        await self._gate()
        return child


class SyncContext(_ContextBase):
    """The handle a plain ``def`` agent gets: the same methods as ``Context``, blocking.

    The agent runs in a worker thread; each gate blocks that thread, never the event loop.
    """

    __slots__ = ()

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._conductor._host.wait(coro)

    def checkpoint(self) -> list[str]:
        return self._wait(self._conductor._gate_and_take(self._record))

    def approve(self, prompt: str, details: Mapping[str, Any] | None = None) -> bool:
        return self._wait(Context(self._conductor, self._record).approve(prompt, details))

    def ask(self, prompt: str, choices: Sequence[str] | None = None) -> str | None:
        return self._wait(Context(self._conductor, self._record).ask(prompt, choices))

    def parallel(
        self, items: Sequence[Any], *, limit: int | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        async_ctx = Context(self._conductor, self._record)
        return self._wait(
            async_ctx.parallel(items, limit=limit, return_exceptions=return_exceptions)
        )

    def handoff(self, agent: str, *args: Any, **kwargs: Any) -> Any:
        return self._wait(Context(self._conductor, self._record).handoff(agent, *args, **kwargs))


class ToolSpan:
    """``async with ctx.tool(...)`` (or ``with`` in a plain ``def`` agent).

    Entering and leaving are gates: a pause requested during the span holds the agent when
    the span ends, after ``tool.finished`` is recorded. In an ``async def`` agent the plain
    ``with`` form records the span and honours stop, but cannot hold for a pause (that
    needs an ``await``): the pause then takes effect at the next gate.
    """

    __slots__ = ("_ctx", "_span", "_started", "args", "tool")

    def __init__(self, ctx: _ContextBase, tool: str, args: dict[str, Any]) -> None:
        self._ctx = ctx
        self.tool = tool
        self.args = jsonable(args)
        self._span = 0
        self._started = 0.0

    def _begin(self) -> None:
        conductor, record = self._ctx._conductor, self._ctx._record
        self._started = conductor._clock.now()
        record.spans += 1
        self._span = record.spans
        conductor._host.soon(conductor._tool_started, record, self._span, self.tool, self.args)

    def _end(self, error: BaseException | None) -> None:
        data: dict[str, Any] = {
            "span": self._span,
            "tool": self.tool,
            "ok": error is None,
            "duration_s": self._ctx._conductor._clock.now() - self._started,
        }
        if error is not None:
            data["error"] = clip(f"{type(error).__name__}: {error}", 500)
        self._ctx._emit("tool.finished", data)

    async def __aenter__(self) -> ToolSpan:
        if isinstance(self._ctx, SyncContext):
            raise UsageError("in a plain `def` agent use `with ctx.tool(...)`, not `async with`")
        await self._ctx._gate()  # type: ignore[attr-defined]
        self._begin()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._end(error)
        conductor, record = self._ctx._conductor, self._ctx._record
        if isinstance(error, asyncio.CancelledError) and conductor._absorb_stop(record):
            assert record.stop is not None
            raise record.stop from None
        if error is None:
            await self._ctx._gate()  # type: ignore[attr-defined]

    def __enter__(self) -> ToolSpan:
        conductor, record = self._ctx._conductor, self._ctx._record
        if isinstance(self._ctx, SyncContext):
            conductor._host.wait(conductor._gate(record))
        elif record.stop is not None:
            raise record.stop
        self._begin()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._end(error)
        if error is None and isinstance(self._ctx, SyncContext):
            conductor = self._ctx._conductor
            conductor._host.wait(conductor._gate(self._ctx._record))
