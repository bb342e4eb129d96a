"""What a notebook user reads: ``loop.agents()``, ``loop.events()``, ``loop.spend()``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.core.events import Event
from conductloop_jupyter.hub.store import EventStore
from conductloop_jupyter.notebook.frames import events_frame, events_frame_from_store
from conductloop_jupyter.testing import EventRecorder, ManualClock, match

AGENT_COLUMNS = {
    "agent_id",
    "name",
    "state",
    "activity",
    "stalled",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "parent",
    "started",
    "ended",
    "elapsed_s",
}
EVENT_COLUMNS = ["seq", "ts", "runtime", "agent_id", "kind", "data"]
WALL_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _is_utc(column: pd.Series) -> bool:
    return isinstance(column.dtype, pd.DatetimeTZDtype) and str(column.dt.tz) == "UTC"


def _at(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(seconds, unit="s", tz="UTC")


# -- agents() ---------------------------------------------------------------------------------


async def test_agents_frame_has_one_exact_row_per_agent_after_a_run_with_usage() -> None:
    clock = ManualClock(wall_start=WALL_START)
    async with cl.Conductor("frames", clock=clock) as loop:

        @loop.agent(model="gpt-4o-mini")
        async def lead(ctx: cl.Context, topic: str) -> str:
            ctx.status("planning")
            ctx.usage(input_tokens=1000, output_tokens=200, cost_usd=0.5)
            clock.advance(3)
            result: str = await ctx.handoff("helper", topic)
            return result

        @loop.agent(model="gpt-4o")
        async def helper(ctx: cl.Context, topic: str) -> str:
            ctx.usage(input_tokens=10, output_tokens=5, cost_usd=0.125)
            ctx.usage(input_tokens=20, output_tokens=6, cost_usd=0.125)
            ctx.status("helped")
            return topic.upper()

        run = loop.start("lead", "agents")
        assert await run == "AGENTS"
        frame = loop.agents()

    assert set(frame.columns) >= AGENT_COLUMNS
    assert frame["name"].tolist() == ["lead", "helper"]  # in the order they started
    lead_row, helper_row = frame.iloc[0], frame.iloc[1]
    assert lead_row["agent_id"] == run.agent_id
    assert helper_row["parent"] == run.agent_id
    assert lead_row["parent"] is None or pd.isna(lead_row["parent"])
    assert frame["state"].tolist() == ["done", "done"]
    assert lead_row["activity"] == "handed off to helper"
    assert helper_row["activity"] == "helped"
    assert frame["stalled"].tolist() == [False, False]
    assert frame["cost_usd"].tolist() == [0.5, 0.25]
    assert frame["input_tokens"].tolist() == [1000, 30]
    assert frame["output_tokens"].tolist() == [200, 11]
    assert _is_utc(frame["started"])
    assert _is_utc(frame["ended"])
    assert lead_row["started"] == _at(WALL_START)
    assert lead_row["ended"] == _at(WALL_START + 3)
    assert helper_row["started"] == _at(WALL_START + 3)
    assert frame["elapsed_s"].tolist() == [3.0, 0.0]


async def test_a_live_agent_has_no_end_and_its_elapsed_time_follows_the_clock() -> None:
    clock = ManualClock(wall_start=WALL_START)
    async with cl.Conductor("live", clock=clock) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return (await ctx.approve("May I?")).approved

        run = loop.start("asks")
        opened = await recorder.wait_for(match("request.opened"))
        clock.advance(2)
        frame = loop.agents()
        assert frame.loc[0, "state"] == "waiting"
        assert pd.isna(frame.loc[0, "ended"])
        assert frame.loc[0, "elapsed_s"] == 2.0
        clock.advance(1)
        assert loop.agents().loc[0, "elapsed_s"] == 3.0
        assert loop.approve(opened.data["request_id"])
        assert await run is True
        assert loop.agents().loc[0, "elapsed_s"] == 3.0
        assert loop.agents()["elapsed_s"].ge(0).all()


# -- events() ---------------------------------------------------------------------------------


async def test_events_frame_has_every_event_with_utc_timestamps() -> None:
    async with cl.Conductor("log") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent(model="gpt-4o-mini")
        async def noisy(ctx: cl.Context) -> int:
            ctx.status("busy")
            ctx.log("a line")
            async with ctx.tool("search", q="x"):
                pass
            ctx.usage(input_tokens=5, output_tokens=5, cost_usd=0.25)
            return 1

        assert await loop.start("noisy") == 1
        frame = loop.events()

    assert list(frame.columns[: len(EVENT_COLUMNS)]) == EVENT_COLUMNS
    assert _is_utc(frame["ts"])
    assert frame.attrs["dropped"] == 0
    events = recorder.events
    assert frame["seq"].tolist() == [e.seq for e in events] == list(range(1, len(events) + 1))
    assert frame["kind"].tolist() == [e.kind for e in events]
    assert frame["agent_id"].tolist() == [e.agent_id for e in events]
    assert frame["data"].tolist() == [e.data for e in events]
    assert set(frame["runtime"]) == {loop.runtime}
    assert frame["ts"].tolist() == [_at(e.ts) for e in events]
    assert frame["ts"].is_monotonic_increasing


def test_events_frame_from_a_store_equals_events_frame_with_the_store_ids(tmp_path: Path) -> None:
    events = [
        Event(seq, WALL_START + seq / 7, "rt", None if seq % 5 == 0 else f"a{seq % 3}",
              "agent.status", {"text": f"step {seq}", "n": [seq]})
        for seq in range(1, 51)
    ]  # fmt: skip
    with EventStore(tmp_path / "events.sqlite3") as store:
        assert list(events_frame_from_store(store).columns) == ["id", *EVENT_COLUMNS]
        store.append([(100 + i, e) for i, e in enumerate(events)])
        store.flush()
        frame = events_frame_from_store(store)
        later = events_frame_from_store(store, after=139)

    pd.testing.assert_frame_equal(frame.drop(columns="id"), events_frame(events))
    assert frame["id"].tolist() == list(range(100, 150))
    assert _is_utc(frame["ts"])
    assert later["id"].tolist() == list(range(140, 150))
    assert later["data"].tolist() == [e.data for e in events[40:]]


# -- spend() ----------------------------------------------------------------------------------


async def test_spend_by_agent_sums_each_agents_usage_most_expensive_first() -> None:
    async with cl.Conductor("money") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def buyer(ctx: cl.Context, costs: list[tuple[str, float]]) -> int:
            for model, cost in costs:
                ctx.usage(model=model, input_tokens=100, output_tokens=10, cost_usd=cost)
            return len(costs)

        runs = [
            loop.start("buyer", [("gpt-4o-mini", 0.125)]),
            loop.start("buyer", [("gpt-4o", 1.0), ("gpt-4o-mini", 0.5), ("gpt-4o", 0.25)]),
            loop.start("buyer", [("gpt-4o-mini", 0.25), ("gpt-4o-mini", 0.25)]),
            loop.start("buyer", []),
        ]
        for run in runs:
            await run
        by_agent = loop.spend(by="agent")
        by_model = loop.spend(by="model")
        assert loop.spend().equals(by_agent)  # "agent" is the default

    expected: dict[str, float] = defaultdict(float)
    per_model: dict[str, float] = defaultdict(float)
    for event in recorder.of(kind="usage"):
        assert event.agent_id is not None
        expected[event.agent_id] += event.data["cost_usd"]
        per_model[event.data["model"]] += event.data["cost_usd"]

    assert sorted(by_agent["agent_id"]) == sorted(r.agent_id for r in runs)
    assert by_agent["agent_id"].tolist() == [
        runs[1].agent_id,
        runs[2].agent_id,
        runs[0].agent_id,
        runs[3].agent_id,
    ]
    assert by_agent["cost_usd"].tolist() == [1.75, 0.5, 0.125, 0.0]
    for row in by_agent.itertuples():
        assert row.cost_usd == expected.get(str(row.agent_id), 0.0)
    assert by_agent["cost_usd"].is_monotonic_decreasing
    assert by_agent["calls"].tolist() == [3, 2, 1, 0]
    assert by_agent["input_tokens"].tolist() == [300, 200, 100, 0]

    assert sorted(by_model["model"]) == ["gpt-4o", "gpt-4o-mini"]
    assert by_model["model"].tolist() == ["gpt-4o", "gpt-4o-mini"]  # 1.25 before 1.125
    assert dict(zip(by_model["model"], by_model["cost_usd"], strict=True)) == per_model
    assert by_model["calls"].tolist() == [2, 4]
    assert by_model["output_tokens"].tolist() == [20, 40]


async def test_spend_by_anything_else_is_a_usage_error() -> None:
    async with cl.Conductor() as loop:
        with pytest.raises(cl.UsageError, match="'agent' or 'model'"):
            loop.spend(by="x")  # type: ignore[arg-type]


def test_a_conductor_with_no_agents_gives_empty_frames_with_their_columns() -> None:
    with cl.Conductor("empty") as loop:
        agents, events = loop.agents(), loop.events()
        by_agent, by_model = loop.spend(by="agent"), loop.spend(by="model")

    assert agents.empty
    assert set(agents.columns) >= AGENT_COLUMNS
    assert events.empty
    assert set(EVENT_COLUMNS) <= set(events.columns)
    assert events.attrs["dropped"] == 0
    assert by_agent.empty
    assert {"agent_id", "name", "cost_usd"} <= set(by_agent.columns)
    assert by_model.empty
    assert {"model", "cost_usd"} <= set(by_model.columns)


# -- the bounded event log --------------------------------------------------------------------


async def test_a_full_event_log_keeps_the_newest_says_so_once_and_counts_stay_exact() -> None:
    async with cl.Conductor("bounded", event_log_size=10) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent(model="gpt-4o-mini")
        async def chatty(ctx: cl.Context, n: int) -> int:
            for i in range(n):
                ctx.log(f"line {i}")
                ctx.usage(input_tokens=3, output_tokens=2, cost_usd=0.125)
            return n

        runs = [loop.start("chatty", 20), loop.start("chatty", 4)]
        for run in runs:
            await run
        events = loop.events()
        agents = loop.agents().set_index("agent_id")
        spend = loop.spend().set_index("agent_id")

    total = len(recorder.events)
    assert total > 10
    assert len(events) == 10
    newest = sorted(e.seq for e in recorder.events)[-10:]
    assert events["seq"].tolist() == newest
    assert events.attrs["dropped"] == total - 10
    warnings = [
        e
        for e in recorder.of(kind="log")
        if e.agent_id is None and e.data["level"] == "warning" and "full" in e.data["message"]
    ]
    assert len(warnings) == 1
    assert "10" in warnings[0].data["message"]
    first, second = runs
    assert agents.loc[first.agent_id, "cost_usd"] == 2.5
    assert agents.loc[second.agent_id, "cost_usd"] == 0.5
    assert agents.loc[first.agent_id, "input_tokens"] == 60
    assert agents.loc[first.agent_id, "state"] == "done"
    assert spend.loc[first.agent_id, "calls"] == 20
    assert spend["cost_usd"].sum() == 3.0


async def test_the_log_full_warning_reaches_sinks_after_the_event_that_filled_the_log() -> None:
    # EventSink contract: emit is called for every event, in seq order.
    async with cl.Conductor("order", event_log_size=3) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def chatty(ctx: cl.Context) -> None:
            for i in range(5):
                ctx.log(f"line {i}")

        await loop.start("chatty")

    seqs = [e.seq for e in recorder.events]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("size", [0, -1])
def test_an_event_log_that_holds_no_events_is_a_usage_error(size: int) -> None:
    with pytest.raises(cl.UsageError, match="at least one event"):
        cl.Conductor(event_log_size=size)


# -- hub choices ------------------------------------------------------------------------------


def test_hub_false_runs_agents_entirely_in_process() -> None:
    with cl.Conductor("offline", hub=False) as loop:

        @loop.agent
        async def local(ctx: cl.Context) -> str:
            ctx.status("local only")
            return "done here"

        assert loop.run("local") == "done here"
        frame = loop.agents()
        assert frame["state"].tolist() == ["done"]
        assert frame["activity"].tolist() == ["local only"]
        assert not loop.events().empty


def test_a_hub_address_is_refused_with_a_usage_error_in_this_version() -> None:
    with pytest.raises(cl.UsageError, match="hub"):
        cl.Conductor(hub="http://x")
