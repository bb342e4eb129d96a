"""plotly figures of a run: spend over time, a timeline of agents, and a live variant.

Both figures are drawn from the event frame (``loop.events()``, or a Hub client's), so a
conductor and a hub plot the same way. They keep the number of traces small and fixed,
whatever the number of agents: the timeline has one trace per agent state, one for tool
calls, one for hand-offs, one for fan-outs and one for abnormal ends. Bars are horizontal
``go.Bar`` traces on a date axis (``base`` = start, ``x`` = duration, both in epoch ms), built
column-wise with pandas and numpy: plotly never sees one Python object per span.

Times are UTC. An agent (or tool call) still going ends at "now": the latest event's time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..core.errors import UsageError

#: the agent states drawn as segments, and their colours; final states end a segment
STATE_COLORS = {
    "queued": "#c7c7c7",
    "running": "#2ca02c",
    "waiting": "#ff7f0e",  # needs a human
    "paused": "#9467bd",
}
#: final states that are drawn as a marker at the agent's end (``done`` is not)
END_COLORS = {"failed": "#d62728", "stopped": "#7f7f7f", "lost": "#8c564b"}
_FINAL = ("done", "failed", "stopped", "lost")
# Colours by numeric code on a colorscale: plotly validates one colour string per point
# (slow), but a numeric array at once. Tool calls: failed, ok, open ("ok" is the middle
# colour, which the legend shows); ends: failed, stopped, lost.
_TOOL_SCALE = [(0.0, "#d62728"), (0.5, "#1f77b4"), (1.0, "#9ecae1")]
_END_SCALE = [(i / 2, color) for i, color in enumerate(END_COLORS.values())]
MAX_SPEND_TRACES = 12
_UIREVISION = "conductloop"  # keeps zoom and legend clicks across live refreshes
_INDENT = "\u00a0" * 4  # plotly would collapse plain spaces


# -- shared helpers -----------------------------------------------------------------------


def _ms(ts: pd.Series) -> np.ndarray[Any, np.dtype[np.float64]]:
    """UTC datetimes (or epoch seconds) as float epoch milliseconds."""
    if pd.api.types.is_numeric_dtype(ts):
        return ts.to_numpy(dtype="float64") * 1000.0
    naive = pd.to_datetime(ts, utc=True).dt.tz_localize(None)
    return naive.to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e6


def _table(events: pd.DataFrame, *kinds: str, fields: tuple[str, ...] = ()) -> pd.DataFrame:
    """Events of ``kinds`` as columns: ``kind, agent_id, t`` (epoch ms) and data ``fields``."""
    of = events[events["kind"].isin(kinds)]
    table = pd.DataFrame({"kind": of["kind"], "agent_id": of["agent_id"], "t": _ms(of["ts"])})
    for key in fields:  # ``data`` holds dicts: one list comprehension per field
        table[key] = [d.get(key) if isinstance(d, Mapping) else None for d in of["data"]]
    return table


def _label(agent_id: str, name: str | None) -> str:
    """How an agent is named in figures: its id, which starts with its name, or both."""
    if not name or agent_id.startswith(f"{name}-"):
        return agent_id
    return f"{name} ({agent_id})"


def _trace(kind: str, **props: Any) -> dict[str, Any]:
    """A trace as a dict: plotly validates it once, in ``go.Figure``, and copies it once."""
    return {"type": kind, **props}


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(
        text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font_size=14
    )
    return fig.update_xaxes(visible=False).update_yaxes(visible=False)


def _names_from(events: pd.DataFrame) -> dict[str, str]:
    started = _table(events, "agent.started", fields=("name",))
    return dict(zip(started["agent_id"], started["name"], strict=True))


# -- spend ----------------------------------------------------------------------------------


def spend_figure(
    events: pd.DataFrame,
    *,
    by: Literal["agent", "model"] = "agent",
    cumulative: bool = True,
    names: Mapping[str, str] | None = None,
) -> go.Figure:
    """Spend in USD over time, one step line per agent (or model), from ``usage`` events.

    Unpriced calls (``cost_usd`` null) are left out, and the title says how many. Above
    ``MAX_SPEND_TRACES`` agents the cheapest are summed into one "others" line. ``names``
    maps agent ids to names (``dict(zip(agents.agent_id, agents.name))``); without it the
    names come from the ``agent.started`` events.

    >>> spend_figure(loop.events(), by="model", cumulative=False)
    """
    if by not in ("agent", "model"):
        raise UsageError(f"plot_spend(by=...) takes 'agent' or 'model', not {by!r}")
    usage = _table(events, "usage", fields=("model", "cost_usd"))
    cost = usage["cost_usd"].astype("float64")
    unpriced = int(cost.isna().sum())
    key = usage["agent_id"] if by == "agent" else usage["model"]
    calls = pd.DataFrame({"t": usage["t"], "key": key, "cost": cost}).dropna()
    shown = "cumulative" if cumulative else "per call"
    title = f"Spend by {by} ({shown}, USD)"
    fig = go.Figure(
        layout={
            "title": {"text": title},
            "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
            "yaxis": {"title": {"text": "USD"}, "tickprefix": "$", "rangemode": "tozero"},
            "hovermode": "closest",
            "uirevision": _UIREVISION,
        }
    )
    if unpriced:
        title += f" · {unpriced} unpriced call{'s' * (unpriced != 1)} not shown"
    if calls.empty:
        fig.update_layout(title_text=title)
        return _empty(fig, "no priced usage yet")
    fig.update_layout(title_text=f"{title} · total ${calls['cost'].sum():,.4f}")

    totals = calls.groupby("key", sort=False)["cost"].sum().sort_values(ascending=False)
    order = list(totals.index)
    if len(order) > MAX_SPEND_TRACES:
        rest = order[MAX_SPEND_TRACES - 1 :]
        others = f"others ({len(rest)} {by}s)"
        calls["key"] = calls["key"].where(~calls["key"].isin(rest), others)
        order = [*order[: MAX_SPEND_TRACES - 1], others]
    if by == "agent":
        known = {**_names_from(events), **(names or {})}
        shown_as = {key: _label(key, known.get(key)) for key in order}
    else:
        shown_as = {key: key for key in order}
    now = float(_ms(events["ts"]).max())
    groups = dict(tuple(calls.sort_values("t", kind="stable").groupby("key", sort=False)))
    for key in order:  # most expensive first, "others" last
        t: np.ndarray[Any, Any] = groups[key]["t"].to_numpy()
        each: np.ndarray[Any, Any] = groups[key]["cost"].to_numpy()
        y = each.cumsum() if cumulative else each
        if cumulative:  # from 0 at the first call, held flat until now
            t = np.concatenate([t[:1], t, [max(now, t[-1])]])
            y = np.concatenate([[0.0], y, y[-1:]])
        fig.add_trace(
            go.Scatter(
                x=pd.to_datetime(t, unit="ms").to_numpy(),
                y=y,
                name=shown_as[key],
                mode="lines" if cumulative else "markers",  # per call: one dot each
                line_shape="hv",
                hovertemplate="%{fullData.name}<br>%{x}<br>$%{y:.4f}<extra></extra>",
            )
        )
    return fig


# -- timeline -------------------------------------------------------------------------------


def _agent_rows(events: pd.DataFrame, agents: pd.DataFrame | None) -> pd.DataFrame:
    """``agent_id, name, parent``, one row per agent, in the order they started."""
    started = _table(events, "agent.started", fields=("name", "parent"))
    parts = [started[["agent_id", "name", "parent"]]]
    if agents is not None and not agents.empty:  # it knows agents the bounded log dropped
        parts.insert(0, agents.reindex(columns=["agent_id", "name", "parent"]))
    if len(events):  # agents whose agent.started is gone: named by their id
        parts.append(pd.DataFrame({"agent_id": events["agent_id"].dropna().unique()}))
    rows = pd.concat(parts, ignore_index=True).drop_duplicates("agent_id")
    return rows.astype(object).where(rows.notna(), None).reset_index(drop=True)


def _tree(rows: pd.DataFrame) -> dict[str, str]:
    """Agent id -> row label, in tree order: each agent's children just under it, indented."""
    ids = rows["agent_id"].tolist()
    known = set(ids)
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for agent_id, parent in zip(ids, rows["parent"], strict=True):
        if parent in known and parent != agent_id:
            children.setdefault(parent, []).append(agent_id)
        else:
            roots.append(agent_id)
    names = dict(zip(ids, rows["name"], strict=True))
    labels: dict[str, str] = {}
    depths: dict[str, int] = {}
    stack = [(agent_id, 0) for agent_id in reversed(roots)]
    while stack:  # iterative: a chain of 10,000 hand-offs is no recursion problem
        agent_id, depth = stack.pop()
        if agent_id in labels:
            continue  # a parent cycle in broken data: draw each agent once
        labels[agent_id] = ("└ " if depth else "") + _label(agent_id, names[agent_id])
        depths[agent_id] = min(depth, 8)
        stack.extend((child, depth + 1) for child in reversed(children.get(agent_id, [])))
    for agent_id in ids:  # only in a cycle: never reached from a root
        labels.setdefault(agent_id, _label(agent_id, names[agent_id]))
    # Tick labels are right-aligned, so a child is indented by padding the rows above it
    # on the right: each level sits one step further right than its parent.
    deepest = max(depths.values(), default=0)
    return {a: text + _INDENT * (deepest - depths.get(a, 0)) for a, text in labels.items()}


def _seconds(ms: pd.Series) -> pd.Series:
    return (ms / 1000).round(2).astype(str) + " s"


def _state_bars(events: pd.DataFrame, labels: pd.Series, now: float) -> list[dict[str, Any]]:
    seg = _table(events, "agent.started", "agent.state", fields=("state", "reason"))
    seg["state"] = seg["state"].where(seg["kind"] != "agent.started", "queued")
    seg = seg.sort_values(["agent_id", "t"], kind="stable")
    seg["end"] = seg.groupby("agent_id", sort=False)["t"].shift(-1)
    still = seg["end"].isna() & ~seg["state"].isin(_FINAL)
    seg.loc[still, "end"] = now
    seg["label"] = seg["agent_id"].map(labels)
    bars = []
    drawn = seg[seg["state"].isin(list(STATE_COLORS)) & (seg["end"] > seg["t"])]
    parts = dict(tuple(drawn.groupby("state", sort=False)))
    for state in (s for s in STATE_COLORS if s in parts):  # legend in STATE_COLORS order
        part = parts[state]
        bars.append(
            _trace(
                "bar",
                name=state,
                orientation="h",
                base=part["t"].to_numpy(),
                x=(part["end"] - part["t"]).to_numpy(),
                y=part["label"].to_numpy(),
                width=0.8,
                marker={"color": STATE_COLORS[state]},
                hovertext=(f"{state} · " + _seconds(part["end"] - part["t"])).to_numpy(),
                hovertemplate="%{y}<br>%{hovertext}<extra></extra>",
            )
        )
    ends = seg[seg["state"].isin(list(END_COLORS))]
    if not ends.empty:
        codes = ends["state"].map({s: i for i, s in enumerate(END_COLORS)}).to_numpy()
        bars.append(
            _trace(
                "scatter",
                name="ended",
                mode="markers",
                x=ends["t"].to_numpy(),
                y=ends["label"].to_numpy(),
                marker={
                    "symbol": "x",
                    "size": 10,
                    "color": codes,
                    "cmin": 0,
                    "cmax": 2,
                    "colorscale": _END_SCALE,
                },
                hovertext=(ends["state"] + ": " + ends["reason"].fillna("").astype(str)).to_numpy(),
                hovertemplate="%{y}<br>%{hovertext}<extra></extra>",
            )
        )
    return bars


def _tool_bars(events: pd.DataFrame, labels: pd.Series, now: float) -> dict[str, Any] | None:
    began = _table(events, "tool.started", fields=("span", "tool"))
    ended = _table(events, "tool.finished", fields=("span", "tool", "ok", "duration_s"))
    if began.empty and ended.empty:
        return None
    spans = pd.merge(
        began.drop(columns="kind"),
        ended.drop(columns="kind"),
        on=["agent_id", "span"],
        how="outer",
        suffixes=("", "_end"),
        sort=False,
    )
    spans["duration"] = spans["duration_s"].astype("float64") * 1000.0
    open_ = spans["duration"].isna()
    start = spans["t"].fillna(spans["t_end"] - spans["duration"])
    width = spans["duration"].where(~open_, now - start).clip(lower=0.0)
    code = np.where(open_, 2, np.where(spans["ok"].eq(False), 0, 1))
    tool = spans["tool"].fillna(spans["tool_end"]).fillna("tool").astype(str)
    how = np.where(open_, " (running)", np.where(code == 0, " (failed)", ""))
    return _trace(
        "bar",
        name="tool call",
        orientation="h",
        base=start.to_numpy(),
        x=width.to_numpy(),
        y=spans["agent_id"].map(labels).to_numpy(),
        width=0.4,
        marker={"color": code, "cmin": 0, "cmax": 2, "colorscale": _TOOL_SCALE},
        hovertext=(tool + " · " + _seconds(width) + how).to_numpy(),
        hovertemplate="%{y}<br>%{hovertext}<extra></extra>",
    )


def _connectors(
    t: pd.Series, parent: pd.Series, child: pd.Series
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Vertical lines from each parent row to its child row, ``None``-separated."""
    x = np.full(3 * len(t), None, dtype=object)
    y = np.full(3 * len(t), None, dtype=object)
    x[0::3] = x[1::3] = t.to_numpy()
    y[0::3], y[1::3] = parent.to_numpy(), child.to_numpy()
    return x, y


def _links(
    events: pd.DataFrame, rows: pd.DataFrame, labels: pd.Series, agents: pd.DataFrame | None
) -> list[dict[str, Any]]:
    handoffs = _table(events, "handoff", fields=("to",))
    handed = pd.DataFrame(
        {
            "t": handoffs["t"],
            "parent": handoffs["agent_id"].map(labels),
            "child": handoffs["to"].map(labels),
        }
    ).dropna()
    traces = []
    if not handed.empty:
        x, y = _connectors(handed["t"], handed["parent"], handed["child"])
        traces.append(
            _trace(
                "scatter",
                name="hand-off",
                mode="lines+markers",
                x=x,
                y=y,
                line={"color": "#17becf", "width": 2},
                marker={"symbol": "triangle-down", "size": np.tile([0, 11, 0], len(handed))},
                hoverinfo="skip",
            )
        )
    kids = _table(events, "agent.started")[["agent_id", "t"]]
    if agents is not None and not agents.empty and "started" in agents:
        kids = pd.concat(
            [kids, pd.DataFrame({"agent_id": agents["agent_id"], "t": _ms(agents["started"])})]
        ).drop_duplicates("agent_id")
    kids = kids.merge(rows[["agent_id", "parent"]], on="agent_id")
    kids = kids[kids["parent"].notna() & ~kids["agent_id"].isin(handoffs["to"])]
    kids = kids.assign(parent=kids["parent"].map(labels), child=kids["agent_id"].map(labels))
    kids = kids.dropna(subset=["parent", "child", "t"])
    if not kids.empty:  # parallel children: a diamond on the parent's row, a dotted line down
        x, y = _connectors(kids["t"], kids["parent"], kids["child"])
        traces.append(
            _trace(
                "scatter",
                name="fan-out",
                mode="lines+markers",
                x=x,
                y=y,
                line={"color": "#555555", "width": 1, "dash": "dot"},
                marker={"symbol": "diamond", "size": np.tile([9, 0, 0], len(kids))},
                hoverinfo="skip",
            )
        )
    return traces


def timeline_figure(
    events: pd.DataFrame, agents: pd.DataFrame | None = None, *, now: Any = None
) -> go.Figure:
    """A Gantt chart: one row per agent, children under their parent, coloured by state.

    Thin bars on top are tool calls (red: failed, pale: still running). A line with an
    arrow marks a hand-off, a dotted line with a diamond on the parent's row a child of a
    fan-out. An ``x`` marks an agent that failed, was stopped or was lost. ``agents``
    (``loop.agents()``) adds agents whose events the bounded log no longer holds. What is
    still going ends at ``now`` (a UTC time or epoch seconds; default: the latest event).

    >>> timeline_figure(loop.events(), loop.agents())
    """
    rows = _agent_rows(events, agents)
    layout = {
        "title": {"text": f"Timeline of {len(rows)} agent{'s' * (len(rows) != 1)}"},
        "barmode": "overlay",
        "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        "hovermode": "closest",
        "uirevision": _UIREVISION,
        "height": int(min(max(300, 140 + 24 * len(rows)), 1400)),
    }
    if rows.empty:
        return _empty(go.Figure(layout=layout), "no agents yet")
    labels = pd.Series(_tree(rows))
    last = float(_ms(events["ts"]).max()) if len(events) else 0.0
    end = last if now is None else max(last, float(_ms(pd.Series([now]))[0]))
    tools = _tool_bars(events, labels, end)
    traces = [
        *_state_bars(events, labels, end),
        *([tools] if tools is not None else []),
        *_links(events, rows, labels, agents),
    ]
    layout["yaxis"] = {
        "type": "category",
        "categoryorder": "array",
        "categoryarray": labels.to_numpy(),
        "range": [len(labels) - 0.5, -0.5],  # first agent on top
        "automargin": True,
    }
    return go.Figure(data=traces, layout=layout)


# -- live -----------------------------------------------------------------------------------

_KEEP = frozenset({"type", "uid", "visible"})  # set by the widget, or by legend clicks


class LiveFigure:
    """A figure widget that redraws itself every ``interval`` seconds, in a notebook.

    ``make`` returns a fresh ``go.Figure``; it runs on a worker thread (so a Hub client's
    HTTP call never blocks the kernel), and the widget is updated on the kernel's loop in
    one ``batch_update``. Zoom and legend clicks survive refreshes. It stops when
    ``stop()`` is called, when the widget is closed, or when ``make`` raises (the error is
    kept in ``.error``).

    >>> live = LiveFigure(lambda: timeline_figure(loop.events(), loop.agents()))
    >>> live            # in a cell: the figure, kept up to date
    >>> live.stop()
    """

    def __init__(self, make: Callable[[], go.Figure], *, interval: float = 2.0) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise UsageError(
                "a live figure refreshes itself on the running event loop, so it needs a "
                "notebook (or async code); in a script, draw a snapshot instead: "
                "loop.plot_timeline() or loop.plot_spend()"
            ) from None
        if not interval > 0:
            raise UsageError(f"interval must be a positive number of seconds, not {interval!r}")
        self.interval = float(interval)
        self.error: BaseException | None = None
        self._make = make
        self._closed = False
        self.widget = go.FigureWidget(make())
        self.widget.observe(self._on_comm, names="comm")
        self._task = loop.create_task(self._refresh_forever(), name="conductloop-live-figure")

    @property
    def running(self) -> bool:
        """Whether it still refreshes itself."""
        return not self._closed and not self._task.done()

    def refresh(self, figure: go.Figure | None = None) -> None:
        """Redraw now (with ``figure``, or a fresh one from ``make``), in one batch update."""
        fig = self._make() if figure is None else figure
        widget = self.widget
        same = [(t.type, t.name) for t in widget.data] == [(t.type, t.name) for t in fig.data]
        with widget.batch_update():
            if same:  # update in place: keeps legend clicks, sends only a restyle
                for old, new in zip(widget.data, fig.data, strict=True):
                    fresh = new.to_plotly_json()
                    stale = {k: None for k in old.to_plotly_json() if k not in {*fresh, *_KEEP}}
                    old.update({**stale, **fresh}, overwrite=True)
            else:
                widget.data = ()
                widget.add_traces(list(fig.data))
            # merged, not replaced, so a zoom the widget synced back stays; but what an
            # empty figure set ("no agents yet", hidden axes) must go
            layout = fig.layout.to_plotly_json()
            widget.layout.annotations = layout.pop("annotations", ())
            for axis in ("xaxis", "yaxis"):
                layout.setdefault(axis, {}).setdefault("visible", True)
            widget.layout.update(layout)

    def stop(self) -> None:
        """Stop refreshing (idempotent); the widget keeps showing the last figure."""
        self._closed = True
        self._task.cancel()

    async def aclose(self) -> None:
        """Stop refreshing and wait until the refresh task has ended."""
        self.stop()
        await asyncio.wait([self._task])  # an outside cancellation of aclose still raises

    async def _refresh_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.interval)
            try:
                fig = await asyncio.to_thread(self._make)
            except Exception as error:  # a closed conductor, an unreachable hub, ...
                self.error = error
                return
            self.refresh(fig)

    def _on_comm(self, change: Mapping[str, Any]) -> None:
        if change["new"] is None:  # the widget was closed
            self.stop()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
