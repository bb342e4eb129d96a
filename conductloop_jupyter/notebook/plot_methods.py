"""``plot_spend`` and ``plot_timeline`` for anything with ``events()`` and ``agents()``:
a Conductor (its own agents) and a Hub client (every runtime's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

# plotly and pandas (through ``.plots``) load with the first plot, not with the classes
# that offer these methods: ``Conductor`` and ``Hub`` are imported by every script
if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from .plots import LiveFigure


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
        from .plots import LiveFigure, spend_figure

        def make() -> go.Figure:
            agents = self.agents()
            names = dict(zip(agents["agent_id"], agents["name"], strict=True))
            return spend_figure(self.events(), by=by, cumulative=cumulative, names=names)

        return LiveFigure(make, interval=interval) if live else make()

    def plot_timeline(self, *, live: bool = False, interval: float = 2.0) -> go.Figure | LiveFigure:
        """A Gantt of agent states and tool spans, with hand-offs and fan-out drawn in.

        >>> loop.plot_timeline()
        """
        from .plots import LiveFigure, timeline_figure

        def make() -> go.Figure:
            return timeline_figure(self.events(), self.agents(), now=self._now())

        return LiveFigure(make, interval=interval) if live else make()
