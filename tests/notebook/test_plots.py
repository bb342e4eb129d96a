"""The figures a notebook user draws: ``plot_spend``, ``plot_timeline`` and the live variant.

Frames come from real conductor runs (a ``ManualClock`` makes their times exact) and, for
edge cases, from events written by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest
from blockbuster import blockbuster_ctx

import conductloop_jupyter as cl
from conductloop_jupyter.core.events import Event
from conductloop_jupyter.notebook.frames import events_frame
from conductloop_jupyter.notebook.plots import (
    MAX_SPEND_TRACES,
    LiveFigure,
    spend_figure,
    timeline_figure,
)
from conductloop_jupyter.testing import EventRecorder, ManualClock, match
from tests._guard import allow_first_imports

# Imported here, off any event loop: importing ipywidgets reads many files (a notebook
# does that in the cell that shows its first widget), and blockbuster fails such imports.
assert go.FigureWidget.__module__ == "plotly.graph_objs._figurewidget"


@pytest.fixture(autouse=True)
def _no_blocking_on_event_loops() -> Iterator[None]:
    """blockbuster, as everywhere, but for reads our dependencies make by design.

    The first figure a process builds makes plotly load its validator table from disk
    and narwhals look up its plugins (once each: in a notebook, in the cell that draws the
    first figure, like an import); anywidget reads a widget's JavaScript from its file
    each time it creates one (in the cell that shows it).
    """
    with blockbuster_ctx() as blockbuster:
        allow_first_imports(blockbuster)
        for function in blockbuster.functions.values():
            function.can_block_in("plotly/validator_cache.py", "get_validator")
            function.can_block_in("narwhals/plugins.py", "_discover_entrypoints")
            function.can_block_in("anywidget/_file_contents.py", "__str__")
        yield


T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: ManualClock's wall start
MS = 1000.0


@dataclass
class Team:
    events: pd.DataFrame
    agents: pd.DataFrame
    spend: pd.DataFrame
    spend_by_model: pd.DataFrame
    lead: str


async def _run_team() -> Team:
    """A lead that uses a tool, spends, asks approval, fans out to 3 workers, hands off."""
    clock = ManualClock()
    async with cl.Conductor("team", hub=False, clock=clock) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent(model="gpt-4o")
        async def lead(ctx: cl.Context, n: int) -> str:
            async with ctx.tool("search", query="agents"):
                clock.advance(2)
            ctx.usage(input_tokens=100, output_tokens=10, cost_usd=0.5)
            assert await ctx.approve("Fan out?")
            parts = await ctx.parallel([("worker", i) for i in range(n)])
            result: str = await ctx.handoff("writer", parts)
            return result

        @loop.agent(model="gpt-4o-mini")
        async def worker(ctx: cl.Context, i: int) -> int:
            async with ctx.tool("fetch", page=i):
                clock.advance(i + 1)
            ctx.usage(input_tokens=10, output_tokens=5, cost_usd=0.125)
            ctx.usage(input_tokens=10, output_tokens=5, cost_usd=0.25 * i)
            return i

        @loop.agent(model="gpt-4o")
        async def writer(ctx: cl.Context, parts: list[int]) -> str:
            ctx.usage("house-model", input_tokens=10, output_tokens=5)  # unpriced
            ctx.usage(input_tokens=10, output_tokens=5, cost_usd=0.0625)
            return str(parts)

        run = loop.start("lead", 3)
        opened = await recorder.wait_for(match("request.opened"))
        clock.advance(1)
        assert loop.approve(opened.data["request_id"])
        assert await run == "[0, 1, 2]"
        return Team(
            loop.events(), loop.agents(), loop.spend(), loop.spend(by="model"), run.agent_id
        )


class _Log:
    """Events written by hand, for edge cases: ``log.add(ts, agent, kind, **data)``."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, ts: float, agent_id: str | None, kind: Any, **data: Any) -> _Log:
        self.events.append(Event(len(self.events) + 1, T0 + ts, "r-1", agent_id, kind, data))
        return self

    def start(self, ts: float, agent_id: str, parent: str | None = None) -> _Log:
        name = agent_id.split("-")[0]
        self.add(ts, agent_id, "agent.started", name=name, parent=parent, model="m", input="")
        return self.add(ts, agent_id, "agent.state", state="running")

    def frame(self) -> pd.DataFrame:
        return events_frame(self.events)


def _by_name(fig: go.Figure) -> dict[str, Any]:
    return {trace.name: trace for trace in fig.data}


def _pairs(trace: Any) -> list[tuple[Any, Any, Any]]:
    """A connector trace's ``(x, parent row, child row)`` triples."""
    xs, ys = list(trace.x), list(trace.y)
    return [(xs[i], ys[i], ys[i + 1]) for i in range(0, len(xs), 3)]


def _rows(fig: go.Figure) -> list[str]:
    return [str(row).strip("\u00a0") for row in fig.layout.yaxis.categoryarray]


def _row_of(fig: go.Figure, agent_id: str) -> str:
    (row,) = [r for r in fig.layout.yaxis.categoryarray if str(r).strip("\u00a0└ ") == agent_id]
    return str(row)


# -- spend --------------------------------------------------------------------------------------


async def test_cumulative_spend_ends_each_agent_at_its_total_and_counts_unpriced_calls() -> None:
    team = await _run_team()
    fig = spend_figure(
        team.events, names=dict(zip(team.agents.agent_id, team.agents.name, strict=True))
    )

    totals = dict(zip(team.spend["agent_id"], team.spend["cost_usd"], strict=True))
    lines = _by_name(fig)
    assert set(lines) == set(team.spend["agent_id"])  # agent ids start with the name
    for agent_id, line in lines.items():
        assert line.y[-1] == pytest.approx(totals[agent_id])
        assert line.y[0] == 0.0
        assert list(line.y) == sorted(line.y)  # cumulative never goes down
        assert line.line.shape == "hv"  # a step line
    assert [t.name for t in fig.data] == team.spend["agent_id"].tolist()  # costliest first
    assert "1 unpriced call not shown" in fig.layout.title.text
    assert f"total ${team.spend['cost_usd'].sum():,.4f}" in fig.layout.title.text


async def test_spend_by_model_per_call_shows_each_priced_call_at_its_time() -> None:
    team = await _run_team()
    usage = team.events[team.events["kind"] == "usage"]
    per_call = _by_name(spend_figure(team.events, by="model", cumulative=False))

    assert set(per_call) == {"gpt-4o", "gpt-4o-mini"}  # "house-model" is unpriced
    mini = usage[[d["model"] == "gpt-4o-mini" for d in usage["data"]]]
    assert list(per_call["gpt-4o-mini"].y) == [d["cost_usd"] for d in mini["data"]]
    assert list(per_call["gpt-4o-mini"].x) == list(mini["ts"].dt.tz_localize(None))

    cumulative = _by_name(spend_figure(team.events, by="model"))
    by_model = team.spend_by_model
    model_totals = dict(zip(by_model["model"], by_model["cost_usd"], strict=True))
    for model, line in cumulative.items():
        assert line.y[-1] == pytest.approx(model_totals[model])


def test_agents_beyond_twelve_are_summed_into_one_others_line() -> None:
    log = _Log()
    for i in range(30):
        log.start(i, f"a{i}-1-r")
        log.add(i + 0.5, f"a{i}-1-r", "usage", model="m", cost_usd=float(i + 1))
    fig = spend_figure(log.frame(), names={"a29-1-r": "biggest"})

    assert len(fig.data) == MAX_SPEND_TRACES
    assert fig.data[0].name == "biggest (a29-1-r)"  # a name the id does not start with
    others = fig.data[-1]
    assert others.name == "others (19 agents)"
    assert others.y[-1] == sum(range(1, 20))
    assert [t.y[-1] for t in fig.data[:-1]] == list(range(30, 19, -1))


def test_spend_of_no_usage_is_an_empty_figure_that_says_so() -> None:
    empty = spend_figure(events_frame([]))
    assert len(empty.data) == 0
    assert empty.layout.annotations[0].text == "no priced usage yet"

    log = _Log().start(0, "a-1-r")
    log.add(1, "a-1-r", "usage", model="secret", cost_usd=None)
    log.add(2, "a-1-r", "usage", model="secret", cost_usd=None)
    unpriced = spend_figure(log.frame(), by="model")
    assert len(unpriced.data) == 0
    assert "2 unpriced calls not shown" in unpriced.layout.title.text


def test_spend_by_anything_else_is_a_usage_error() -> None:
    with pytest.raises(cl.UsageError, match="'agent' or 'model'"):
        spend_figure(events_frame([]), by="tool")  # type: ignore[arg-type]


# -- timeline -----------------------------------------------------------------------------------


async def test_timeline_of_a_real_run_has_children_under_the_lead_and_a_handoff_arrow() -> None:
    team = await _run_team()
    fig = timeline_figure(team.events, team.agents)

    ids = team.agents["agent_id"].tolist()  # lead, 3 workers, writer: in start order
    writer = ids[-1]
    assert _rows(fig) == [ids[0]] + [f"└ {agent_id}" for agent_id in ids[1:]]
    traces = _by_name(fig)
    # queued: two workers wait for their first turn while a sibling's tool moves the clock
    assert set(traces) == {"queued", "running", "waiting", "tool call", "hand-off", "fan-out"}

    handoff = team.events[team.events["kind"] == "handoff"].iloc[0]
    assert handoff["data"]["to"] == writer
    ts_ms = handoff["ts"].timestamp() * MS
    assert _pairs(traces["hand-off"]) == [(ts_ms, _row_of(fig, team.lead), _row_of(fig, writer))]
    fanned = {(parent, child) for _, parent, child in _pairs(traces["fan-out"])}
    assert fanned == {(_row_of(fig, team.lead), _row_of(fig, w)) for w in ids[1:4]}

    waiting = traces["waiting"]  # the approval: 1 s on the lead's row
    assert list(waiting.y) == [_row_of(fig, team.lead)]
    assert list(waiting.x) == [1 * MS]


async def test_tool_spans_last_as_long_as_tool_finished_says() -> None:
    team = await _run_team()
    fig = timeline_figure(team.events)
    tools = _by_name(fig)["tool call"]

    finished = team.events[team.events["kind"] == "tool.finished"]
    expected = sorted(
        (_row_of(fig, a), d["duration_s"] * MS)
        for a, d in zip(finished["agent_id"], finished["data"], strict=True)
    )
    assert sorted(zip(tools.y, tools.x, strict=True)) == expected
    assert sorted(x for _, x in expected) == [1 * MS, 2 * MS, 2 * MS, 3 * MS]  # exact


def test_children_sit_under_their_own_parent_when_starts_interleave() -> None:
    log = _Log()
    log.start(0, "a-1-r").start(1, "b-2-r")
    log.start(2, "kid-3-r", parent="a-1-r").start(3, "kid-4-r", parent="b-2-r")
    log.start(4, "grandkid-5-r", parent="kid-3-r")
    fig = timeline_figure(log.frame())
    assert [r.lstrip("└ ") for r in _rows(fig)] == [
        "a-1-r",
        "kid-3-r",
        "grandkid-5-r",
        "b-2-r",
        "kid-4-r",
    ]
    # labels are right-aligned: deeper rows are padded less, so they sit further right
    padding = [len(r) - len(r.rstrip("\u00a0")) for r in fig.layout.yaxis.categoryarray]
    assert padding[0] > padding[1] > padding[2] == 0
    assert padding[3:] == padding[:2]


def test_the_number_of_timeline_traces_does_not_grow_with_agents() -> None:
    log = _Log().start(0, "lead-0-r")
    for i in range(1, 301):
        agent = f"worker-{i}-r"
        log.start(i / 100, agent, parent="lead-0-r")
        log.add(i / 100, agent, "tool.started", span=1, tool="fetch", args={})
        log.add(i / 100 + 1, agent, "tool.finished", span=1, tool="fetch", ok=True, duration_s=1)
        log.add(i / 100 + 2, agent, "agent.state", state="done" if i % 10 else "failed")
    log.add(5, "lead-0-r", "agent.state", state="done")
    fig = timeline_figure(log.frame())
    assert len(fig.layout.yaxis.categoryarray) == 301
    assert len(fig.data) <= 6
    assert {t.name for t in fig.data} == {"running", "tool call", "fan-out", "ended"}
    assert len(_by_name(fig)["ended"].x) == 30  # the failed ones


def test_what_is_still_going_ends_at_the_latest_event_or_at_now() -> None:
    log = _Log().start(0, "slow-1-r").start(0, "other-2-r")
    log.add(1, "slow-1-r", "tool.started", span=1, tool="crawl", args={})
    log.add(2, "slow-1-r", "agent.state", state="paused")
    log.add(10, "other-2-r", "agent.state", state="done")
    fig = timeline_figure(log.frame())
    traces = _by_name(fig)
    slow = _row_of(fig, "slow-1-r")
    assert list(traces["paused"].y) == [slow]
    assert list(traces["paused"].base) == [(T0 + 2) * MS]
    assert list(traces["paused"].x) == [8 * MS]  # until the latest event, at 10 s
    assert list(traces["tool call"].x) == [9 * MS]
    assert "(running)" in traces["tool call"].hovertext[0]

    later = _by_name(timeline_figure(log.frame(), now=pd.Timestamp(T0 + 30, unit="s", tz="UTC")))
    assert list(later["paused"].x) == [28 * MS]
    assert list(later["tool call"].x) == [29 * MS]


def test_agents_the_log_dropped_still_get_a_row_from_the_agents_frame() -> None:
    log = _Log().start(5, "kid-2-r", parent="gone-1-r")
    agents = pd.DataFrame({"agent_id": ["gone-1-r"], "name": ["gone"], "parent": [None]})
    fig = timeline_figure(log.frame(), agents)
    assert _rows(fig) == ["gone-1-r", "└ kid-2-r"]


def test_timeline_of_nothing_is_an_empty_figure_that_says_so() -> None:
    fig = timeline_figure(events_frame([]))
    assert len(fig.data) == 0
    assert fig.layout.annotations[0].text == "no agents yet"


# -- live ---------------------------------------------------------------------------------------


def _figure(y: Iterable[float], name: str = "a") -> go.Figure:
    return go.Figure([go.Scatter(x=[1, 2, 3], y=list(y), name=name)])


async def test_refresh_updates_the_widget_in_place_and_aclose_leaves_no_task() -> None:
    figures = iter([_figure([1, 2, 3]), _figure([4, 5, 6]), _figure([7], name="b")])
    live = LiveFigure(lambda: next(figures), interval=3600)
    uid = live.widget.data[0].uid

    live.refresh()
    assert list(live.widget.data[0].y) == [4, 5, 6]
    assert live.widget.data[0].uid == uid  # updated in place, not re-added
    live.refresh()  # a different trace: replaced
    assert [t.name for t in live.widget.data] == ["b"]

    assert live.running
    await live.aclose()
    assert not live.running
    assert all(t.done() for t in asyncio.all_tasks() if t is not asyncio.current_task())


async def test_a_refresh_after_an_empty_figure_drops_its_note_and_shows_the_axes() -> None:
    log = _Log().start(0, "a-1-r").add(1, "a-1-r", "agent.state", state="done")
    figures = iter([timeline_figure(events_frame([])), timeline_figure(log.frame())])
    live = LiveFigure(lambda: next(figures), interval=3600)
    assert live.widget.layout.annotations[0].text == "no agents yet"

    live.refresh()
    assert live.widget.layout.annotations == ()
    assert live.widget.layout.xaxis.visible is True
    assert list(live.widget.data[0].x) == [1 * MS]
    await live.aclose()


async def test_live_figure_refreshes_itself_until_its_widget_is_closed() -> None:
    loop = asyncio.get_running_loop()
    made = 0
    third = asyncio.Event()

    def make() -> go.Figure:
        nonlocal made
        made += 1
        if made == 3:  # the second refresh is under way, so the first one is applied
            loop.call_soon_threadsafe(third.set)
        return _figure([made, made, made])

    live = LiveFigure(make, interval=0.001)
    await asyncio.wait_for(third.wait(), timeout=10)
    assert live.widget.data[0].y[0] >= 2
    assert live.error is None

    live.widget.close()
    assert not live.running
    await live.aclose()


def test_a_live_figure_outside_a_running_loop_says_to_use_a_notebook() -> None:
    with pytest.raises(cl.UsageError, match="notebook"):
        LiveFigure(lambda: _figure([1]))
