"""``cl.Conductor``: the one public class, built on the core's ``Runtime``.

It registers agents, starts and steers them, and reads them as frames and figures. The
runtime (``loop.core``) does the work; the hub link, pandas and the notebook parts are
imported when first used, so a plain script with ``hub=False`` starts fast.
"""

from __future__ import annotations

import asyncio
import atexit
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar, overload

from .core.clock import Clock
from .core.errors import ConductLoopError, UsageError
from .core.pricing import preload
from .core.runs import AgentRun, AgentSpec
from .core.runtime import EventSink, Runtime, check_positive
from .core.steering import COMMAND_FIELDS
from .core.supervisors import ACTOR, Supervisor
from .core.view import AgentView, Request
from .hub.discovery import HubAddress, resolve_home
from .hub.locator import Locator
from .local import register
from .notebook.plot_methods import PlotMethods

if TYPE_CHECKING:
    import pandas as pd

    from .client import Hub
    from .link import HubLink
    from .notebook.dashboard import Dashboard
    from .notebook.phone import PhoneLink

F = TypeVar("F", bound=Callable[..., Any])


def _close_at_exit(ref: weakref.ref[Conductor]) -> None:
    conductor = ref()
    if conductor is not None and not conductor.core.closed:
        conductor.close(timeout=5.0)


class Conductor(PlotMethods):
    """Orchestrates agents and lets a human see and steer them.

    >>> import conductloop_jupyter as cl
    >>> loop = cl.Conductor(name="research", budget_usd=5.0)
    >>> @loop.agent(model="gpt-4o-mini")
    ... async def researcher(ctx: cl.Context, topic: str) -> str:
    ...     ctx.status("searching")
    ...     return f"notes on {topic}"
    >>> run = loop.start("researcher", "agents")   # returns at once
    >>> await run                                  # 'notes on agents'
    >>> loop.agents()                              # a DataFrame, one row per agent

    ``hub=None`` (the default): the hub named by ``$CONDUCTLOOP_HUB`` (the Jupyter extension
    sets it), else the one in ``<home>/hub.json``, else an embedded hub started in this
    process. ``hub=False``: no hub; nothing leaves the process. ``hub="http://host:port"``:
    that hub. In a notebook agents run on the kernel's loop, so a cell returns at once; in
    a script on a background thread. Every steering method is thread-safe.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        budget_usd: float | None = None,
        stall_after: float = 120.0,
        hub: str | Literal[False] | None = None,
        home: str | None = None,
        clock: Clock | None = None,
        event_log_size: int = 100_000,
        repeat_limit: int = 3,
        max_threads: int = 32,
    ) -> None:
        self.home = resolve_home(home)
        self._locator = Locator(hub, self.home)  # checks hub before anything starts
        #: the runtime that owns the agents (for surfaces built on a conductor)
        self.core = Runtime(
            name,
            owner=self,
            budget_usd=budget_usd,
            stall_after=stall_after,
            repeat_limit=repeat_limit,
            clock=clock,
            event_log_size=event_log_size,
            max_threads=max_threads,
        )
        self.name = self.core.name
        #: this conductor's id on the wire; every event it emits carries it
        self.runtime = self.core.runtime
        self._target = self._locator.target
        self._link: HubLink | None = None
        self._router: Callable[[Any], Any] | None = None
        self._bound_to: asyncio.AbstractEventLoop | None = None
        register(self)  # so that cl.connect() steers this process's agents directly

    @property
    def tag(self) -> str:
        """The suffix of this conductor's agent and request ids (``researcher-3-<tag>``)."""
        return self.core.tag

    @property
    def budget_usd(self) -> float | None:
        """The conductor's budget now (raised by each approved budget request)."""
        return self.core.budgets.limit

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

        def register_fn(fn: F) -> F:
            spec = AgentSpec.of(fn, name, model, budget_usd)
            self.core.specs[spec.name] = spec
            if spec.model is not None:
                preload()  # it will price its usage: load the price data off the loop
            return fn

        return register_fn(fn) if fn is not None else register_fn

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
        supervisor: Supervisor = fn
        self.core.host.call(self.core.supervisors.add, supervisor)
        return fn

    def attach(self, sink: EventSink) -> None:
        """Send every event from now on to ``sink`` too (how a hub link plugs in)."""
        self.core.host.call(self.core.sinks.append, sink)

    def detach(self, sink: EventSink) -> None:
        self.core.host.call(self.core.sinks.remove, sink)

    # -- starting ----------------------------------------------------------------------

    def start(self, agent: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> AgentRun:
        """Start an agent and return its ``AgentRun`` at once; it runs in the background.

        >>> run = loop.start("researcher", "agent orchestration")
        >>> result = await run            # in a notebook; run.result() in a script
        """
        core = self.core
        if core.closed:
            raise UsageError("this conductor is closed; create a new Conductor")
        spec = core.spec(agent)
        spec.check_args(args, kwargs)
        loop = core.host.ensure(can_rebind=not core.records)
        if self._bound_to is not loop:
            self._bound_to = loop
            core.host.call(self._on_bind)
        record = core.host.call(core.spawn, spec, args, kwargs, None)
        return AgentRun(core, record)

    def run(self, agent: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Start an agent and block until it ends (for scripts); return its result."""
        if self.core.host.on_loop_thread() or _loop_running_here():
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

    def _on_bind(self) -> None:
        """On the loop thread, when the conductor first binds to a loop: link to the hub."""
        if self.core.host.owns_thread:  # a script: at exit, stop agents and flush to the hub
            atexit.register(_close_at_exit, weakref.ref(self))
        if self._target is False:
            return  # hub=False (or $CONDUCTLOOP_HUB=off): nothing leaves this process
        from .link import HubLink

        self._link = HubLink(self, self._locator)
        self.core.sinks.append(self._link)
        self._link.start()

    @property
    def link(self) -> HubLink | None:
        """The connection to the hub (``None`` with ``hub=False``)."""
        return self._link

    # -- steering (thread-safe) --------------------------------------------------------

    def pending(self) -> list[Request]:
        """Open requests (approvals, questions, budgets), oldest first."""
        return self.core.host.call(self.core.view.pending)

    def request(self, request_id: str) -> Request:
        """One request, open or decided (``decision``, ``decided_by``, ``answer``, ``note``)."""
        found = self.core.host.call(self.core.view.requests.get, request_id)
        if found is None:
            raise UsageError(f"no request {request_id!r}; loop.pending() lists the open ones")
        return found

    def approve(
        self,
        request_id: str,
        note: str | None = None,
        args: Mapping[str, Any] | None = None,
        *,
        by: str | None = None,
    ) -> bool:
        """Approve a request. ``True`` if this call decided it, ``False`` if already decided.

        ``note`` reaches the agent (``Decision.note``); ``args`` are edited arguments of an
        approval (``Decision.args``: a framework runs its tool with them).
        """
        decide = self.core.requests.decide
        return self.core.host.call(
            decide, request_id, "approved", by or ACTOR.get(), None, note, args
        )

    def reject(self, request_id: str, note: str | None = None, *, by: str | None = None) -> bool:
        """Reject a request (a question: decline to answer; ``ctx.ask`` returns ``None``).

        ``note`` reaches the agent: a framework gets it as its rejection message.
        """
        decide = self.core.requests.decide
        return self.core.host.call(decide, request_id, "rejected", by or ACTOR.get(), None, note)

    def answer(self, request_id: str, text: str, *, by: str | None = None) -> bool:
        """Answer a question; with choices, ``text`` must be one of them."""
        decide = self.core.requests.decide
        return self.core.host.call(decide, request_id, "answered", by or ACTOR.get(), text)

    def pause(self, agent_id: str, *, by: str | None = None) -> None:
        """Hold the agent (and its children) at its next gate until ``resume``."""
        self.core.host.call(self.core.steering.pause, agent_id, by or ACTOR.get(), True)

    def resume(self, agent_id: str, *, by: str | None = None) -> None:
        """Let a paused agent (and its children) go on."""
        self.core.host.call(self.core.steering.pause, agent_id, by or ACTOR.get(), False)

    def stop(self, agent_id: str, *, by: str | None = None) -> None:
        """Stop the agent and its children. Idempotent; an ended agent is left as it is."""
        self.core.host.call(self.core.steering.stop, agent_id, by or ACTOR.get())

    def stop_all(self, *, by: str | None = None) -> int:
        """Stop every agent of this conductor; return how many were running."""
        return self.core.host.call(self.core.steering.stop_all, by or ACTOR.get())

    def redirect(self, agent_id: str, text: str, *, by: str | None = None) -> None:
        """Queue a new instruction; the agent's next ``checkpoint()`` returns it, once."""
        self.core.host.call(self.core.steering.redirect, agent_id, text, by or ACTOR.get())

    def handle_command(self, command: Mapping[str, Any]) -> Any:
        """Carry out a steering command as the hub sends it (``{"op": ..., ...}``).

        The seam a hub link plugs into; raises ``UsageError`` on a malformed command.
        """
        if not isinstance(command, Mapping):
            raise UsageError("a command must be an object with an 'op' field")
        op, by = command.get("op"), str(command.get("by", "hub"))
        if not isinstance(op, str) or op not in COMMAND_FIELDS:
            raise UsageError(f"unknown command op {op!r}; one of {', '.join(COMMAND_FIELDS)}")
        fields = COMMAND_FIELDS[op]
        missing = [f for f in fields if not isinstance(command.get(f), str)]
        if missing:
            raise UsageError(f"command {op!r} needs string field(s): {', '.join(missing)}")
        values = [command[f] for f in fields]
        if op != "approve" and command.get("args") is not None:  # never dropped unseen
            raise UsageError(f"edited args go with approving an approval, not with {op!r}")
        if op == "approve":
            return self.approve(values[0], command.get("note"), command.get("args"), by=by)
        if op == "reject":
            return self.reject(values[0], command.get("note"), by=by)
        return getattr(self, op)(*values, by=by)

    # -- seeing ------------------------------------------------------------------------

    def agents(self) -> pd.DataFrame:
        """One row per agent: ``agent_id, name, state, activity, stalled, cost_usd, ...``."""
        from .notebook.frames import agents_frame

        view = self.core.view
        rows = self.core.host.call(lambda: [a.row() for a in view.agents.values()])
        return agents_frame(rows, self.core.clock.wall())

    def events(self) -> pd.DataFrame:
        """Every event still in the log: ``seq, ts, runtime, agent_id, kind, data``."""
        from .notebook.frames import events_frame

        log = self.core.log
        events, dropped = self.core.host.call(lambda: (log.snapshot(), log.dropped))
        return events_frame(events, dropped)

    def spend(self, by: Literal["agent", "model"] = "agent") -> pd.DataFrame:
        """Cost in USD and tokens, one row per agent (or per model)."""
        from .notebook.frames import spend_frame

        return spend_frame(self.core.host.call(self._agent_views), by)

    def _agent_views(self) -> list[AgentView]:
        views = []
        for agent in self.core.view.agents.values():
            clone = AgentView(**{f: getattr(agent, f) for f in AgentView.__slots__})
            clone.by_model = {m: list(v) for m, v in agent.by_model.items()}
            views.append(clone)
        return views

    def _now(self) -> float:
        return self.core.clock.wall()

    def dashboard(self) -> Dashboard:
        """A live widget: what needs you (with its buttons), every agent, spend; steer here.

        >>> loop.dashboard()       # in a notebook cell
        """
        from .notebook.dashboard import Dashboard

        return Dashboard(self)

    # -- the phone ----------------------------------------------------------------------

    def _hub(self) -> Hub:
        """A client of this conductor's hub (starting the embedded one if there is none)."""
        from .client import Hub

        if self._target is False:
            raise UsageError(
                "this Conductor has no hub (hub=False or $CONDUCTLOOP_HUB=off); "
                "the phone talks to a hub"
            )
        if isinstance(self._target, HubAddress):
            return Hub(self._target, by="notebook")
        if self._link is not None and self._link.address is not None:
            return Hub(self._link.address, by="notebook")
        address = self._locator.locate(embed=True)
        if address is None:  # another process is starting a hub for this home right now
            raise ConductLoopError(f"the hub for {self.home} is starting; try again")
        return Hub(address, by="notebook")

    def phone(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        tls: bool = False,
        ttl: float | None = None,
    ) -> PhoneLink:
        """A one-time pairing QR code and URL for your phone; shows itself in a notebook.

        The hub opens its phone listener on this machine's LAN address (or ``host``: for
        example a Tailscale ``100.x`` address). ``tls=True`` uses a self-signed certificate
        whose fingerprint is shown beside the QR code. The link works once, for ``ttl``
        seconds (default 5 minutes). Once a phone uses it, or it expires, the QR code in the
        cell's output is replaced by who paired (or "expired"), so a saved notebook keeps
        no live pairing secret.

        >>> loop.phone()            # in a notebook cell: the QR code
        >>> loop.phone().wait()     # in a script: until the phone pairs, or the code expires
        """
        return self._hub().phone(host, port, tls=tls, ttl=ttl)

    def devices(self) -> pd.DataFrame:
        """The phones paired with the hub."""
        return self._hub().devices()

    def revoke(self, device_id: str) -> None:
        """Sign a phone out at once: its page shows it is signed out."""
        self._hub().revoke(device_id)

    # -- closing -----------------------------------------------------------------------

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop every agent, wait (up to ``timeout`` s) for them to end, release threads.

        Works from any event loop: from another loop it waits without blocking that loop.
        """
        host = self.core.host
        if host.loop is None or host.loop.is_closed():
            self.core.closed = True
            return
        if asyncio.get_running_loop() is host.loop:
            await self._shutdown(timeout)
            return
        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._shutdown(timeout), host.loop)
        )
        await asyncio.to_thread(host.close)

    async def _shutdown(self, timeout: float) -> None:
        await self.core.shutdown(timeout)
        if self._link is not None:
            await self._link.aclose()
        await asyncio.gather(*self.core.release(), return_exceptions=True)

    def close(self, timeout: float = 10.0) -> None:
        """Stop every agent and release the conductor's thread and loop.

        In a notebook cell (on the loop's own thread) it cannot wait: it stops everything
        and returns; ``await loop.aclose()`` waits for the agents to end.
        """
        host = self.core.host
        if host.loop is None or host.loop.is_closed():
            self.core.closed = True
            return
        if host.on_loop_thread() or not host.loop.is_running():
            self.core.steering.stop_all("close")
            self.core.release()
            return
        host.wait(self._shutdown(timeout))
        host.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Conductor {self.runtime}: {len(self.core.records)} live agents>"


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
