"""Agent states: the DESIGN's names and the one table of allowed transitions."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.core import TRANSITIONS, AgentState, TransitionError
from conductloop_jupyter.core.states import check_transition
from conductloop_jupyter.testing import EventRecorder, match

S = AgentState
FINAL = {S.DONE, S.FAILED, S.STOPPED, S.LOST}


def test_agent_state_values_are_the_design_names_in_order() -> None:
    assert [s.value for s in AgentState] == [
        "queued",
        "running",
        "waiting",
        "paused",
        "done",
        "failed",
        "stopped",
        "lost",
    ]
    assert AgentState("waiting") is S.WAITING
    assert S.RUNNING == "running"  # a str enum: it compares and serialises as its name


def test_the_table_has_a_row_for_every_state() -> None:
    assert set(TRANSITIONS) == set(AgentState)


@pytest.mark.parametrize(
    ("old", "new"),
    list(itertools.product(AgentState, AgentState)),
    ids=lambda s: s.value,
)
def test_check_transition_passes_exactly_when_the_table_allows_it(
    old: AgentState, new: AgentState
) -> None:
    if new in TRANSITIONS[old]:
        check_transition(old, new)
    else:
        with pytest.raises(TransitionError, match=f"from {old.value} to {new.value}"):
            check_transition(old, new)


@pytest.mark.parametrize("state", sorted(FINAL), ids=lambda s: s.value)
def test_a_final_state_has_no_way_out(state: AgentState) -> None:
    assert state.final
    assert TRANSITIONS[state] == frozenset()
    for new in AgentState:
        with pytest.raises(TransitionError):
            check_transition(state, new)


@pytest.mark.parametrize("state", sorted(set(AgentState) - FINAL), ids=lambda s: s.value)
def test_a_live_state_can_always_end_failed_stopped_or_lost(state: AgentState) -> None:
    assert not state.final
    assert {S.FAILED, S.STOPPED, S.LOST} <= TRANSITIONS[state]
    assert state not in TRANSITIONS[state]  # staying put is not a transition


def test_transition_error_is_a_conductloop_error() -> None:
    assert issubclass(TransitionError, cl.ConductLoopError)


async def test_replaying_a_varied_run_finds_only_allowed_transitions_from_queued() -> None:
    go_on = asyncio.Event()
    async with cl.Conductor("states") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def finisher(ctx: cl.Context) -> str:
            ctx.status("finishing")
            return "ok"

        @loop.agent
        async def failer(ctx: cl.Context) -> None:
            raise RuntimeError("broken on purpose")

        @loop.agent
        async def approver(ctx: cl.Context) -> bool:
            return (await ctx.approve("Delete the drafts?")).approved

        @loop.agent
        async def asker(ctx: cl.Context) -> str | None:
            return await ctx.ask("Which dataset?", choices=["a", "b"])

        @loop.agent
        async def holder(ctx: cl.Context) -> str:
            ctx.status("ready")
            await go_on.wait()
            await ctx.checkpoint()
            return "held and went on"

        @loop.agent(model="gpt-4o-mini", budget_usd=0.25)
        async def spender(ctx: cl.Context) -> str:
            ctx.usage(input_tokens=1, output_tokens=1, cost_usd=0.5)
            await ctx.checkpoint()
            return "spent"

        @loop.agent
        def plain(ctx: cl.SyncContext) -> str:
            ctx.checkpoint()
            return "plain"

        assert await loop.start("finisher") == "ok"
        with pytest.raises(RuntimeError, match="broken on purpose"):
            await loop.start("failer")

        stopped_waiting = loop.start("approver")
        await recorder.wait_for(match("request.opened", agent_id=stopped_waiting.agent_id))
        loop.stop(stopped_waiting.agent_id)
        with pytest.raises(cl.AgentStopped):
            await stopped_waiting

        asked = loop.start("asker")
        question = await recorder.wait_for(match("request.opened", agent_id=asked.agent_id))
        assert loop.answer(question.data["request_id"], "b")
        assert await asked == "b"

        resumed = loop.start("holder")
        stopped_paused = loop.start("holder")
        for run in (resumed, stopped_paused):
            await recorder.wait_for(match("agent.status", agent_id=run.agent_id, text="ready"))
            loop.pause(run.agent_id)
        go_on.set()
        for run in (resumed, stopped_paused):
            await recorder.wait_for(match("agent.state", agent_id=run.agent_id, state="paused"))
        loop.resume(resumed.agent_id)
        loop.stop(stopped_paused.agent_id)
        assert await resumed == "held and went on"
        with pytest.raises(cl.AgentStopped):
            await stopped_paused

        budgeted = loop.start("spender")
        budget = await recorder.wait_for(
            match("request.opened", agent_id=budgeted.agent_id, kind="budget")
        )
        assert loop.approve(budget.data["request_id"])
        assert await budgeted == "spent"

        assert await loop.start("plain") == "plain"

    state: dict[str, AgentState] = defaultdict(lambda: S.QUEUED)
    seen: set[tuple[AgentState, AgentState]] = set()
    for event in recorder.of(kind="agent.state"):
        assert event.agent_id is not None
        old, new = state[event.agent_id], AgentState(event.data["state"])
        check_transition(old, new)
        seen.add((old, new))
        state[event.agent_id] = new

    assert seen >= {
        (S.QUEUED, S.RUNNING),
        (S.RUNNING, S.DONE),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.WAITING),
        (S.WAITING, S.RUNNING),
        (S.WAITING, S.STOPPED),
        (S.RUNNING, S.PAUSED),
        (S.PAUSED, S.RUNNING),
        (S.PAUSED, S.STOPPED),
    }
    started = [e.agent_id for e in recorder.of(kind="agent.started")]
    assert len(started) == 8
    assert set(state) == set(started)
    assert all(s.final for s in state.values())
    assert state[stopped_waiting.agent_id] is S.STOPPED
    assert state[stopped_paused.agent_id] is S.STOPPED
    assert state[resumed.agent_id] is S.DONE
    assert state[budgeted.agent_id] is S.DONE
