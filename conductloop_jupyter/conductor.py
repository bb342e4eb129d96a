"""``cl.Conductor``: the runtime from ``core`` plus what a notebook user reads it with."""

from __future__ import annotations

from typing import Literal

import pandas as pd

from .core.clock import Clock
from .core.conductor import BaseConductor
from .core.view import AgentView
from .hub.discovery import HubAddress, find, resolve_home
from .link import HubLink
from .notebook.frames import agents_frame, events_frame, spend_frame


class Conductor(BaseConductor):
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
        self._target = target
        self._link: HubLink | None = None

    def _on_bind(self) -> None:
        if self._target is False:
            return  # hub=False (or $CONDUCTLOOP_HUB=off): nothing leaves this process
        target = self._target if isinstance(self._target, HubAddress) else None
        self._link = HubLink(self, target, self.home)
        self._sinks.append(self._link)
        self._link.start()

    async def _on_close(self) -> None:
        if self._link is not None:
            await self._link.aclose()

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

    def events(self) -> pd.DataFrame:
        """Every event still in the log: ``seq, ts, runtime, agent_id, kind, data``."""
        events, dropped = self._read(lambda: (self._log.snapshot(), self._log.dropped))
        return events_frame(events, dropped)

    def spend(self, by: Literal["agent", "model"] = "agent") -> pd.DataFrame:
        """Cost in USD and tokens, one row per agent (or per model)."""
        return spend_frame(self._agent_views(), by)
