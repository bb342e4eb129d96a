"""What an agent holds: ``Context`` (async agents) and ``SyncContext`` (plain ``def`` agents).

Both have the same methods. ``status``, ``log``, ``usage`` and the tool-span callbacks
only record and return at once; the others are gates (see ``gates``): on ``Context`` they
are awaited, on ``SyncContext`` they block the agent's worker thread. A ``Context`` may be
used from several tasks of one agent at once (a framework's parallel tool calls).

A context reaches its runtime only through ``port.AgentPort``: the narrow set of operations
an agent may ask for.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .errors import UsageError
from .events import EventKind, clip, jsonable
from .payloads import json_problem
from .pricing import price_usd
from .requests import Decision

if TYPE_CHECKING:
    from .port import AgentPort
    from .runs import AgentRecord
LogLevel = Literal["debug", "info", "warning", "error"]
_LEVELS = ("debug", "info", "warning", "error")
_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)

#: the context of the agent running in this task (or a task it started, or its thread)
CURRENT: contextvars.ContextVar[Context | SyncContext | None] = contextvars.ContextVar(
    "conductloop_context", default=None
)


def current_context() -> Context | SyncContext | None:
    """The ``Context`` of the agent running here, or ``None`` outside any agent.

    An instrumented client finds its agent this way:

    >>> ctx = cl.current_context()
    >>> if ctx is not None:
    ...     ctx.usage_from(response)
    """
    return CURRENT.get()


class _Handle:
    """What both contexts share: who the agent is, and what only records."""

    __slots__ = ("_port", "_record")

    def __init__(self, port: AgentPort, record: AgentRecord) -> None:
        self._port = port
        self._record = record

    @property
    def agent_id(self) -> str:
        return self._record.agent_id

    @property
    def name(self) -> str:
        return self._record.spec.name

    @property
    def parent(self) -> str | None:
        """The id of the agent that started this one (parallel, handoff, subagent), if any."""
        parent = self._record.parent
        return parent.agent_id if parent is not None else None

    @property
    def model(self) -> str | None:
        return self._record.spec.model

    def _emit(self, kind: EventKind, data: dict[str, Any]) -> None:
        self._port.emit_for(self._record, kind, data)

    def status(self, text: str) -> None:
        """Say what the agent is doing now, in one line (shown everywhere)."""
        self._emit("agent.status", {"text": clip(str(text), 200)})

    def log(self, message: str, /, level: LogLevel = "info", **fields: Any) -> None:
        """Add a line to the agent's history, with structured fields beside it.

        >>> ctx.log("fetched", url=url, n=3)   # data: {level, message, url, n}
        """
        if level not in _LEVELS:
            raise UsageError(f"log level must be one of {', '.join(_LEVELS)}, not {level!r}")
        text = message if type(message) is str else str(message)
        data: dict[str, Any] = {"level": level, "message": clip(text)}
        if fields:
            for reserved in ("message", "level"):
                if reserved in fields:
                    raise UsageError(f"a log field cannot be named {reserved!r}: rename it")
            problem = json_problem(fields)
            if problem is not None:
                raise UsageError(
                    f"log fields must be JSON data (str, numbers, bools, None, lists, dicts): "
                    f"{problem}"
                )
            data.update(fields)
        self._port.emit_for(self._record, "log", data)

    def usage(
        self,
        model: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        cost_usd: float | None = None,
        provider: str | None = None,
    ) -> float | None:
        """Record an LLM call's tokens; price it with genai-prices unless ``cost_usd`` is given.

        ``input_tokens`` counts every input token, cached ones included; cache reads and
        writes are priced at their own rates. Returns the cost in USD, or ``None`` for a
        model genai-prices does not know (the call is then recorded as unpriced, with a
        warning event; it never raises for that). Budgets are checked here and enforced at
        the agent's next gate.
        """
        model = model or self._record.spec.model
        if not model or not isinstance(model, str):
            raise UsageError("usage needs the model: ctx.usage(model='gpt-4o-mini', ...)")
        counts = (
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens,
        )
        for what, value in zip(_TOKEN_FIELDS, counts, strict=True):
            if type(value) is not int or value < 0:
                raise UsageError(f"{what} must be a non-negative integer, not {value!r}")
        if cache_read_tokens + cache_write_tokens > input_tokens:
            raise UsageError(
                "input_tokens counts every input token, cached ones included, so it must be at "
                f"least cache_read_tokens + cache_write_tokens ({input_tokens} < "
                f"{cache_read_tokens} + {cache_write_tokens})"
            )
        if provider is not None and not isinstance(provider, str):
            raise UsageError(f"provider is a provider id like 'openai', not {provider!r}")
        priced_by = "caller"
        if cost_usd is None:
            cost_usd = price_usd(
                model,
                input_tokens,
                output_tokens,
                provider,
                cache_read_tokens=cache_read_tokens,
                cache_write_tokens=cache_write_tokens,
            )
            priced_by = "unknown" if cost_usd is None else "genai-prices"
        elif (
            isinstance(cost_usd, bool)
            or not isinstance(cost_usd, (int, float))
            or not (0 <= cost_usd < float("inf"))
        ):
            raise UsageError(f"cost_usd must be a non-negative number, not {cost_usd!r}")
        if cost_usd is None:
            self.log(
                f"no price known for model {model!r}: this call's cost is recorded as "
                "unknown and does not count against budgets; pass cost_usd= to price it",
                "warning",
            )
        data: dict[str, Any] = {
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_tokens": cache_read_tokens,
            "cache_write_tokens": cache_write_tokens,
            "reasoning_tokens": reasoning_tokens,
            "cost_usd": None if cost_usd is None else float(cost_usd),
            "priced_by": priced_by,
        }
        if provider is not None:
            data["provider"] = provider
        self._emit("usage", data)
        if cost_usd:
            self._port.spent(self._record, float(cost_usd))
        return cost_usd

    def usage_from(self, response: object, provider: str | None = None) -> float | None:
        """Record a provider's response's model and tokens exactly, cache tokens included.

        Takes an OpenAI chat completion or response, an Anthropic message or a Google
        response (the SDK's object or its dict). Returns the cost, or ``None`` if unpriced.
        """
        from .provider_usage import usage_of

        found = usage_of(response, provider)
        return self.usage(
            found.model,
            found.input_tokens,
            found.output_tokens,
            cache_read_tokens=found.cache_read_tokens,
            cache_write_tokens=found.cache_write_tokens,
            reasoning_tokens=found.reasoning_tokens,
            provider=found.provider,
        )

    def tool(self, tool: str, **args: Any) -> ToolSpan:
        """A tool-call span on the timeline: ``async with ctx.tool("search", q=...)``."""
        if not isinstance(tool, str) or not tool:
            raise UsageError("a tool span needs the tool's name: ctx.tool('search', ...)")
        return ToolSpan(self, tool, args)

    def tool_started(self, name: str, call_id: str | None = None, **args: Any) -> str:
        """Open a tool span from a framework's callback; returns its ``call_id``."""
        return self._port.tool_started(self._record, name, jsonable(args), call_id)

    def tool_finished(self, call_id: str, error: BaseException | str | None = None) -> None:
        """Close the span ``tool_started`` opened; an ``error`` records it as failed."""
        self._port.tool_finished(self._record, call_id, error)


class Context(_Handle):
    """The handle an ``async def`` agent gets as its first argument.

    >>> @loop.agent(model="gpt-4o-mini")
    ... async def researcher(ctx: cl.Context, topic: str) -> str:
    ...     ctx.status("searching")
    ...     async with ctx.tool("search", query=topic):
    ...         hits = await search(topic)
    ...     for instruction in await ctx.checkpoint():   # honours pause/stop; redirects
    ...         ctx.log("new instruction", text=instruction)
    ...     if await ctx.approve("Send the summary?", details={"to": "team"}):
    ...         ...
    ...     return await ctx.handoff("writer", hits)
    """

    __slots__ = ()

    async def _gate(self) -> None:
        port, record = self._port, self._record
        if not port.clear(record):
            await port.gate(record)

    @types.coroutine
    def checkpoint(self) -> Generator[None, None, list[str]]:
        """Yield to other agents; honour pause/stop/budget; return new instructions (once)."""
        # One turn of the loop first, so that steering already queued runs before the
        # checks: a bare ``yield`` to the task is how ``asyncio.sleep(0)`` does it. Here as
        # a generator-based coroutine, because an agent may pass one at every step: the
        # ``async def`` around ``sleep(0)`` and its own coroutine cost 0.5 us of the
        # 5 us of a step that only logs and checks.
        yield
        port, record = self._port, self._record
        if port.passing(record):  # nothing to honour, nothing queued: the common case
            return []
        if not port.clear(record):
            yield from port.gate(record).__await__()
        return port.take_instructions(record)

    async def approve(self, prompt: str, details: Mapping[str, Any] | None = None) -> Decision:
        """Ask a human to approve; wait (``waiting``) and return their ``Decision``.

        The decision is truthy exactly when approved, and carries the human's ``note``,
        who decided (``by``) and edited ``args``.
        """
        request = await self._port.ask_human(self._record, "approval", prompt, details=details)
        return Decision.of(request)

    async def ask(self, prompt: str, choices: Sequence[str] | None = None) -> str | None:
        """Ask a human a question; return the answer (``None`` if they declined)."""
        listed = list(choices) if choices is not None else None
        request = await self._port.ask_human(self._record, "question", prompt, listed)
        return request.answer if request.decision == "answered" else None

    async def parallel(
        self, items: Sequence[Any], *, limit: int | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        """Run ``(agent_name, *args)`` items as child agents; results in item order.

        A child that does not finish stops its siblings and raises ``AgentFailed`` here,
        unless ``return_exceptions=True`` (then the error takes its place in the results).
        """
        await self._gate()
        port, record = self._port, self._record
        calls = port.parse_items(items)
        if not calls:
            return []
        self.status(f"waiting for {len(calls)} parallel agent{'s' * (len(calls) != 1)}")
        results = await port.fan_out(record, calls, limit, return_exceptions)
        await self._gate()
        return results

    async def handoff(self, agent: str, *args: Any, **kwargs: Any) -> Any:
        """Hand the work to another agent and return its result (``AgentFailed`` if it fails)."""
        await self._gate()
        port = self._port
        spec = port.spec(agent)
        spec.check_args(args, kwargs)
        result = await port.handoff(self._record, spec, args, kwargs)
        await self._gate()
        return result

    def subagent(self, name: str, model: str | None = None) -> Subagent:
        """A child agent row for an agent that runs inside a framework, in this code.

        >>> async with ctx.subagent("writer", model="gpt-4o") as sub:
        ...     sub.usage_from(response)        # its own spend, counted in this budget

        It ends ``done`` when the block exits normally, ``failed`` on an exception and
        ``stopped`` on a stop (a stop of the subagent alone raises ``AgentFailed`` here).
        """
        return Subagent(self, name, model)


class SyncContext(_Handle):
    """The handle a plain ``def`` agent gets: the same methods as ``Context``, blocking.

    The agent runs in a worker thread; each gate blocks that thread, never the event loop.
    """

    __slots__ = ()

    def _async(self) -> Context:
        return Context(self._port, self._record)

    def checkpoint(self) -> list[str]:
        return self._port.wait(self._port.gate_and_take(self._record))

    def approve(self, prompt: str, details: Mapping[str, Any] | None = None) -> Decision:
        return self._port.wait(self._async().approve(prompt, details))

    def ask(self, prompt: str, choices: Sequence[str] | None = None) -> str | None:
        return self._port.wait(self._async().ask(prompt, choices))

    def parallel(
        self, items: Sequence[Any], *, limit: int | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        coro = self._async().parallel(items, limit=limit, return_exceptions=return_exceptions)
        return self._port.wait(coro)

    def handoff(self, agent: str, *args: Any, **kwargs: Any) -> Any:
        return self._port.wait(self._async().handoff(agent, *args, **kwargs))

    def subagent(self, name: str, model: str | None = None) -> Subagent:
        """``with ctx.subagent(name) as sub:`` (see ``Context.subagent``)."""
        return Subagent(self, name, model)


class ToolSpan:
    """``async with ctx.tool(...)`` (or ``with`` in a plain ``def`` agent).

    Entering and leaving are gates: a pause requested during the span holds the agent when
    the span ends, after ``tool.finished`` is recorded. In an ``async def`` agent the plain
    ``with`` form records the span and honours stop, but cannot hold for a pause (that
    needs an ``await``): the pause then takes effect at the next gate.
    """

    __slots__ = ("_call_id", "_handle", "args", "tool")

    def __init__(self, handle: _Handle, tool: str, args: dict[str, Any]) -> None:
        self._handle = handle
        self.tool = tool
        self.args = jsonable(args)
        self._call_id = ""

    def _begin(self) -> None:
        handle = self._handle
        self._call_id = handle._port.tool_started(handle._record, self.tool, self.args, None)

    async def __aenter__(self) -> ToolSpan:
        handle = self._handle
        if not isinstance(handle, Context):
            raise UsageError("in a plain `def` agent use `with ctx.tool(...)`, not `async with`")
        await handle._gate()
        self._begin()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        handle = self._handle
        port, record = handle._port, handle._record
        port.tool_finished(record, self._call_id, error)
        if isinstance(error, asyncio.CancelledError):
            stop = port.absorb(record)
            if stop is not None:
                raise stop from None
        if error is None and isinstance(handle, Context):
            await handle._gate()

    def __enter__(self) -> ToolSpan:
        port, record = self._handle._port, self._handle._record
        if isinstance(self._handle, SyncContext):
            port.wait(port.gate(record))
        else:
            stop = port.stopped(record)
            if stop is not None:
                raise stop
        self._begin()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        port, record = self._handle._port, self._handle._record
        port.tool_finished(record, self._call_id, error)
        if error is None and isinstance(self._handle, SyncContext):
            port.wait(port.gate(record))


class Subagent:
    """``async with ctx.subagent(name) as sub`` (``with`` in a plain ``def`` agent)."""

    __slots__ = ("_handle", "_model", "_name", "_record", "_token")

    def __init__(self, handle: Context | SyncContext, name: str, model: str | None) -> None:
        self._handle = handle
        self._name = name
        self._model = model
        self._record: AgentRecord | None = None
        self._token: contextvars.Token[Context | SyncContext | None] | None = None

    def _open(self, task: asyncio.Task[Any] | None) -> AgentRecord:
        if self._record is not None:
            raise UsageError("a subagent block can be entered once; call ctx.subagent() again")
        handle = self._handle
        self._record = handle._port.open_subagent(handle._record, self._name, self._model, task)
        return self._record

    def _enter(self, sub: Context | SyncContext) -> None:
        self._token = CURRENT.set(sub)

    def _close(self, error: BaseException | None) -> None:
        assert self._record is not None
        if self._token is not None:
            CURRENT.reset(self._token)
            self._token = None
        instead = self._handle._port.close_subagent(self._record, error)
        if instead is not None:
            raise instead from error

    async def __aenter__(self) -> Context:
        handle = self._handle
        if not isinstance(handle, Context):
            raise UsageError("in a plain `def` agent use `with ctx.subagent(...)`")
        await handle._gate()
        sub = Context(handle._port, self._open(asyncio.current_task()))
        self._enter(sub)
        return sub

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._close(error)

    def __enter__(self) -> SyncContext:
        handle = self._handle
        if not isinstance(handle, SyncContext):
            raise UsageError("in an `async def` agent use `async with ctx.subagent(...)`")
        handle._port.wait(handle._port.gate(handle._record))
        sub = SyncContext(handle._port, self._open(None))
        self._enter(sub)
        return sub

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._close(error)
