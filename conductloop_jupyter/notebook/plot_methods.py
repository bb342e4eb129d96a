"""``plot_spend`` and ``plot_timeline`` for anything with ``events()`` and ``agents()``:
a Conductor (its own agents) and a Hub client (every runtime's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import plotly.graph_objects as go

from .plots import LiveFigure, spend_figure, timeline_figure

if TYPE_CHECKING:
    import pandas as pd


class PlotMethods:
    if TYPE_CHECKING:

        def events(self) -> pd.DataFrame: ...
        def agents(self) -> pd.DataFrame: ...
        def _now(self) -> float: ...

    def plot_spend(
        self,
        by: Literal["agent", "model"] = "agent",
        cumulative: bool = True,
        *,
        live: bool = False,
        interval: float = 2.0,
    ) -> go.Figure | LiveFigure:
        """Spend over time, per agent (or model); ``live=True`` keeps refreshing itself.

        >>> loop.plot_spend(by="model")
        """

        def make() -> go.Figure:
            agents = self.agents()
            names = dict(zip(agents["agent_id"], agents["name"], strict=True))
            return spend_figure(self.events(), by=by, cumulative=cumulative, names=names)

        return LiveFigure(make, interval=interval) if live else make()

    def plot_timeline(self, *, live: bool = False, interval: float = 2.0) -> go.Figure | LiveFigure:
        """A Gantt of agent states and tool spans, with hand-offs and fan-out drawn in.

        >>> loop.plot_timeline()
        """

        def make() -> go.Figure:
            return timeline_figure(self.events(), self.agents(), now=self._now())

        return LiveFigure(make, interval=interval) if live else make()
