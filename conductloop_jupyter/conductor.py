"""``cl.Conductor``: the runtime from ``core`` plus what a notebook user reads it with."""

from __future__ import annotations

import atexit
import weakref
from typing import TYPE_CHECKING, Literal

import pandas as pd

from .client import Hub
from .core.clock import Clock
from .core.conductor import BaseConductor
from .core.errors import ConductLoopError, UsageError
from .core.view import AgentView
from .hub.discovery import HubAddress, find, read_hub_file, resolve_home
from .hub.server import start_embedded
from .link import HubLink
from .local import register
from .notebook.frames import agents_frame, events_frame, spend_frame
from .notebook.phone import PhoneLink
from .notebook.plot_methods import PlotMethods

if TYPE_CHECKING:
    from .notebook.dashboard import Dashboard


def _close_at_exit(ref: weakref.ref[Conductor]) -> None:
    conductor = ref()
    if conductor is not None and not conductor._closed:
        conductor.close(timeout=5.0)


class Conductor(BaseConductor, PlotMethods):
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
        target = find(hub, resolve_home(home))  # checks hub before anything starts
        super().__init__(
            name,
            budget_usd=budget_usd,
            stall_after=stall_after,
            clock=clock,
            event_log_size=event_log_size,
            repeat_limit=repeat_limit,
            max_threads=max_threads,
        )
        self.home = resolve_home(home)
        register(self)  # so that cl.connect() steers this process's agents directly
        self._target = target
        self._link: HubLink | None = None

    def _on_bind(self) -> None:
        if self._host.owns_thread:  # a script: at exit, stop agents and flush to the hub
            atexit.register(_close_at_exit, weakref.ref(self))
        if self._target is False:
            return  # hub=False (or $CONDUCTLOOP_HUB=off): nothing leaves this process
        target = self._target if isinstance(self._target, HubAddress) else None
        self._link = HubLink(self, target, self.home)
        self._sinks.append(self._link)
        self._link.start()

    async def _on_close(self) -> None:
        if self._link is not None:
            await self._link.aclose()

    def dashboard(self) -> Dashboard:
        """A live widget: what needs you (with its buttons), every agent, spend; steer here.

        >>> loop.dashboard()       # in a notebook cell
        """
        # imported here: ipywidgets is only needed in a notebook, and costs every import
        from .notebook.dashboard import Dashboard

        return Dashboard(self)

    # -- the phone ----------------------------------------------------------------------

    def _hub(self) -> Hub:
        """A client of this conductor's hub (starting the embedded one if there is none)."""
        if self._target is False:
            raise UsageError(
                "this Conductor has no hub (hub=False or $CONDUCTLOOP_HUB=off); "
                "the phone talks to a hub"
            )
        if isinstance(self._target, HubAddress):
            return Hub(self._target, by="notebook")
        if self._link is not None and self._link.address is not None:
            return Hub(self._link.address, by="notebook")
        found = read_hub_file(self.home)
        address = found[0] if found is not None else start_embedded(self.home)
        if address is None:  # another process is starting a hub for this home right now
            found = read_hub_file(self.home)
            if found is None:
                raise ConductLoopError(f"the hub for {self.home} is starting; try again")
            address = found[0]
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

    @property
    def link(self) -> HubLink | None:
        """The connection to the hub (``None`` with ``hub=False``)."""
        return self._link

    def _agent_views(self) -> list[AgentView]:
        def copy() -> list[AgentView]:
            views = []
            for agent in self._view.agents.values():
                clone = AgentView(**{f: getattr(agent, f) for f in AgentView.__slots__})
                clone.by_model = {m: list(v) for m, v in agent.by_model.items()}
                views.append(clone)
            return views

        views: list[AgentView] = self._read(copy)
        return views

    def agents(self) -> pd.DataFrame:
        """One row per agent: ``agent_id, name, state, activity, stalled, cost_usd, ...``."""
        rows = self._read(lambda: [a.row() for a in self._view.agents.values()])
        return agents_frame(rows, self._clock.wall())

    def _now(self) -> float:
        return self._clock.wall()

    def events(self) -> pd.DataFrame:
        """Every event still in the log: ``seq, ts, runtime, agent_id, kind, data``."""
        events, dropped = self._read(lambda: (self._log.snapshot(), self._log.dropped))
        return events_frame(events, dropped)

    def spend(self, by: Literal["agent", "model"] = "agent") -> pd.DataFrame:
        """Cost in USD and tokens, one row per agent (or per model)."""
        return spend_frame(self._agent_views(), by)
