"""Budgets, per agent and per conductor: usage is priced, spend over budget pauses and asks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from genai_prices import Usage, calc_price

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match

# Binary-exact amounts keep the budget arithmetic exact.
BUDGET = 1.0


@asynccontextmanager
async def conductor(**kwargs: Any) -> AsyncIterator[tuple[cl.Conductor, EventRecorder]]:
    async with cl.Conductor("budgets", **kwargs) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        yield loop, recorder


async def budget_request(loop: cl.Conductor, recorder: EventRecorder, since: int = 0) -> cl.Request:
    event = await recorder.wait_for(match("request.opened", kind="budget"), since=since)
    return loop.request(event.data["request_id"])


def row(loop: cl.Conductor, agent_id: str) -> dict[str, Any]:
    frame = loop.agents()
    found = frame[frame["agent_id"] == agent_id]
    assert len(found) == 1
    return dict(found.iloc[0])


async def wait_state(recorder: EventRecorder, run: cl.AgentRun, state: str) -> cl.Event:
    return await recorder.wait_for(match("agent.state", agent_id=run.agent_id, state=state))


def expected_price(model: str, input_tokens: int, output_tokens: int) -> float:
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return float(calc_price(usage, model_ref=model).total_price)


# -- per-agent budget ---------------------------------------------------------------------


@pytest.mark.parametrize("gate", ["checkpoint", "tool", "approve", "ask"])
async def test_usage_over_agent_budget_makes_the_agent_wait_at_its_next_gate(gate: str) -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini", budget_usd=BUDGET)
        async def spender(ctx: cl.Context) -> str:
            ctx.usage(cost_usd=1.5)
            ctx.status("recorded usage, not at a gate yet")
            if gate == "checkpoint":
                await ctx.checkpoint()
            elif gate == "tool":
                async with ctx.tool("search", query="x"):
                    ctx.status("inside the tool")
            elif gate == "approve":
                assert await ctx.approve("Send the mail?")
            else:
                assert await ctx.ask("Which dataset?", choices=["a", "b"]) == "a"
            return "went on"

        run = loop.start("spender")
        request = await budget_request(loop, recorder)
        opened = recorder.of(run.agent_id, "request.opened")
        status = recorder.of(run.agent_id, "agent.status")
        # recording usage did not block: the agent ran on until its gate
        assert [e.data["text"] for e in status] == ["recorded usage, not at a gate yet"]
        assert status[0].seq < opened[0].seq
        # the gate itself has not run: no tool span, no approval or question yet
        assert recorder.of(run.agent_id, "tool.started") == []
        assert [e.data["kind"] for e in opened] == ["budget"]
        assert request.kind == "budget"
        assert request.agent_id == run.agent_id
        assert run.state is cl.AgentState.WAITING
        assert row(loop, run.agent_id)["state"] == "waiting"
        assert row(loop, run.agent_id)["request_id"] == request.id

        since = len(recorder.events)
        assert loop.approve(request.id) is True
        if gate == "approve":
            event = await recorder.wait_for(match("request.opened", kind="approval"), since=since)
            assert loop.approve(event.data["request_id"]) is True
        elif gate == "ask":
            event = await recorder.wait_for(match("request.opened", kind="question"), since=since)
            assert loop.answer(event.data["request_id"], "a") is True
        assert await run == "went on"
        assert run.state is cl.AgentState.DONE


async def test_agent_budget_request_says_what_was_spent_and_what_approving_allows() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini", budget_usd=BUDGET)
        async def spender(ctx: cl.Context) -> None:
            ctx.usage(cost_usd=1.5)
            await ctx.checkpoint()

        run = loop.start("spender")
        request = await budget_request(loop, recorder)
        assert "spent" in request.prompt
        assert "$1.50" in request.prompt
        assert "$1.00" in request.prompt
        assert request.details == {
            "scope": "agent",
            "spent_usd": 1.5,
            "budget_usd": 1.0,
            "new_budget_usd": 2.5,
        }
        assert [r.id for r in loop.pending()] == [request.id]
        assert loop.reject(request.id) is True
        with pytest.raises(cl.BudgetExceeded):
            await run


async def test_usage_under_agent_budget_passes_every_gate_without_a_request() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini", budget_usd=BUDGET)
        async def frugal(ctx: cl.Context) -> str:
            ctx.usage(cost_usd=0.5)
            await ctx.checkpoint()
            async with ctx.tool("search", query="x"):
                ctx.usage(cost_usd=0.25)
            await ctx.checkpoint()
            return "done"

        run = loop.start("frugal")
        assert await run == "done"
        assert recorder.of(run.agent_id, "request.opened") == []
        assert row(loop, run.agent_id)["cost_usd"] == 0.75
        assert loop.pending() == []


async def test_approving_agent_budget_raises_it_by_its_original_amount_above_the_spend() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini", budget_usd=BUDGET)
        async def spender(ctx: cl.Context) -> str:
            ctx.usage(cost_usd=1.5)  # over 1.00: approving allows up to 2.50
            await ctx.checkpoint()
            ctx.usage(cost_usd=0.75)  # 2.25: still under the raised budget
            await ctx.checkpoint()
            ctx.status("passed the raised budget's gate")
            ctx.usage(cost_usd=0.5)  # 2.75: over 2.50 again
            await ctx.checkpoint()
            return "finished"

        run = loop.start("spender")
        first = await budget_request(loop, recorder)
        assert first.details["new_budget_usd"] == 2.5
        since = len(recorder.events)
        assert loop.approve(first.id) is True

        second = await budget_request(loop, recorder, since=since)
        assert second.id != first.id
        assert second.details == {
            "scope": "agent",
            "spent_usd": 2.75,
            "budget_usd": 2.5,
            "new_budget_usd": 3.75,
        }
        passed = recorder.of(run.agent_id, "agent.status")
        assert [e.data["text"] for e in passed] == ["passed the raised budget's gate"]
        budget_events = recorder.of(run.agent_id, "request.opened")
        assert len(budget_events) == 2  # no request between the two spends over budget
        assert passed[0].seq < budget_events[1].seq
        assert run.state is cl.AgentState.WAITING
        assert loop.approve(second.id) is True
        assert await run == "finished"
        assert row(loop, run.agent_id)["cost_usd"] == 2.75


async def test_rejecting_agent_budget_stops_it_with_budget_exceeded() -> None:
    async with conductor() as (loop, recorder):
        after_gate: list[str] = []

        @loop.agent(model="gpt-4o-mini", budget_usd=BUDGET)
        async def spender(ctx: cl.Context) -> str:
            ctx.usage(cost_usd=1.25)
            await ctx.checkpoint()
            after_gate.append("ran past the gate")
            return "finished"

        run = loop.start("spender")
        request = await budget_request(loop, recorder)
        assert loop.reject(request.id, note="too expensive") is True
        with pytest.raises(cl.BudgetExceeded) as stopped:
            await run
        assert isinstance(stopped.value, cl.AgentStopped)
        assert run.state is cl.AgentState.STOPPED
        assert row(loop, run.agent_id)["state"] == "stopped"
        assert after_gate == []
        assert loop.request(request.id).decision == "rejected"
        assert loop.pending() == []


async def test_agent_budget_holds_only_the_agent_that_spent_it() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini", budget_usd=BUDGET)
        async def spender(ctx: cl.Context) -> str:
            ctx.usage(cost_usd=2.0)
            await ctx.checkpoint()
            return "spender done"

        @loop.agent(model="gpt-4o-mini", budget_usd=BUDGET)
        async def frugal(ctx: cl.Context) -> str:
            ctx.usage(cost_usd=0.5)
            await ctx.checkpoint()
            return "frugal done"

        held = loop.start("spender")
        request = await budget_request(loop, recorder)
        free = loop.start("frugal")
        assert await free == "frugal done"  # another agent's budget is its own
        assert held.state is cl.AgentState.WAITING
        assert request.agent_id == held.agent_id
        assert loop.approve(request.id) is True
        assert await held == "spender done"


def test_plain_def_agent_over_budget_waits_and_goes_on_when_approved() -> None:
    with cl.Conductor("sync-budget") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent(model="gpt-4o-mini", budget_usd=BUDGET)
        def spender(ctx: cl.SyncContext) -> str:
            ctx.usage(cost_usd=1.5)
            ctx.checkpoint()
            return "went on"

        run = loop.start("spender")
        event = recorder.wait_for_sync(match("request.opened", kind="budget"))
        recorder.wait_for_sync(match("agent.state", agent_id=run.agent_id, state="waiting"))
        assert event.data["details"]["scope"] == "agent"
        assert run.state is cl.AgentState.WAITING
        assert loop.approve(event.data["request_id"]) is True
        assert run.result(timeout=10) == "went on"


# -- per-conductor budget -----------------------------------------------------------------


async def start_three_spenders(
    loop: cl.Conductor, recorder: EventRecorder, go: asyncio.Event
) -> list[cl.AgentRun]:
    """Three agents spend 1.25 together (over the conductor's 1.00), then reach a gate.

    Each one passes its starting gate before it spends, so no single agent's spend may
    reach the budget before the last one has started.
    """

    @loop.agent(model="gpt-4o-mini")
    async def worker(ctx: cl.Context, cost: float) -> str:
        ctx.usage(cost_usd=cost)
        await go.wait()
        await ctx.checkpoint()
        return ctx.agent_id

    runs = [loop.start("worker", cost) for cost in (0.25, 0.25, 0.75)]
    for run in runs:
        await recorder.wait_for(match("usage", agent_id=run.agent_id))
    go.set()
    for run in runs:
        await wait_state(recorder, run, "waiting")
    return runs


async def test_conductor_budget_holds_all_agents_on_one_request_and_approving_releases_them() -> (
    None
):
    async with conductor(budget_usd=BUDGET) as (loop, recorder):
        runs = await start_three_spenders(loop, recorder, asyncio.Event())

        pending = loop.pending()
        assert len(pending) == 1
        request = pending[0]
        assert request.kind == "budget"
        assert "spent" in request.prompt
        assert "$1.25" in request.prompt
        assert request.details == {
            "scope": "conductor",
            "spent_usd": 1.25,
            "budget_usd": 1.0,
            "new_budget_usd": 2.25,
        }
        for run in runs:
            waiting = recorder.of(run.agent_id, "agent.state")[-1]
            assert waiting.data == {"state": "waiting", "request_id": request.id}
            assert row(loop, run.agent_id)["state"] == "waiting"
        assert len(recorder.of(kind="request.opened")) == 1

        assert loop.approve(request.id) is True
        assert [await run for run in runs] == [run.agent_id for run in runs]
        assert loop.pending() == []


async def test_rejecting_conductor_budget_stops_every_agent_with_budget_exceeded() -> None:
    async with conductor(budget_usd=BUDGET) as (loop, recorder):
        never = asyncio.Event()

        @loop.agent
        async def bystander(ctx: cl.Context) -> str:
            ctx.status("busy with its own I/O")
            await never.wait()
            return "unreachable"

        other = loop.start("bystander")
        await recorder.wait_for(match("agent.status", agent_id=other.agent_id))
        runs = await start_three_spenders(loop, recorder, asyncio.Event())
        (request,) = loop.pending()

        assert loop.reject(request.id) is True
        for run in [*runs, other]:
            with pytest.raises(cl.BudgetExceeded):
                await run
            assert run.state is cl.AgentState.STOPPED
        assert set(loop.agents()["state"]) == {"stopped"}


async def test_conductor_budget_counts_only_priced_spend_of_all_agents() -> None:
    async with conductor(budget_usd=BUDGET) as (loop, recorder):

        @loop.agent
        async def mixed(ctx: cl.Context, cost: float) -> str:
            ctx.usage("no-such-model-xyz", input_tokens=50_000_000, output_tokens=50_000_000)
            ctx.usage("gpt-4o-mini", cost_usd=cost)
            await ctx.checkpoint()
            return "under budget"

        first, second = loop.start("mixed", 0.25), loop.start("mixed", 0.5)
        assert await first == "under budget"
        assert await second == "under budget"
        assert recorder.of(kind="request.opened") == []
        assert loop.spend()["cost_usd"].sum() == 0.75


# -- recording usage ----------------------------------------------------------------------


async def test_usage_is_priced_with_genai_prices_for_a_known_model() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini")
        async def caller(ctx: cl.Context) -> tuple[float | None, float | None]:
            by_default = ctx.usage(input_tokens=1200, output_tokens=300)  # the agent's model
            named = ctx.usage(model="gpt-4o-mini", input_tokens=1000, output_tokens=1000)
            return by_default, named

        run = loop.start("caller")
        by_default, named = await run
        assert by_default == pytest.approx(expected_price("gpt-4o-mini", 1200, 300))
        assert named == pytest.approx(expected_price("gpt-4o-mini", 1000, 1000))
        assert by_default is not None
        assert by_default > 0
        usage = recorder.of(run.agent_id, "usage")
        assert [e.data["model"] for e in usage] == ["gpt-4o-mini", "gpt-4o-mini"]
        assert [e.data["priced_by"] for e in usage] == ["genai-prices", "genai-prices"]
        assert usage[0].data["cost_usd"] == by_default
        agent = row(loop, run.agent_id)
        assert agent["cost_usd"] == pytest.approx(by_default + named)
        assert (agent["input_tokens"], agent["output_tokens"]) == (2200, 1300)
        by_model = loop.spend(by="model")
        assert list(by_model["model"]) == ["gpt-4o-mini"]
        assert by_model.loc[0, "calls"] == 2
        assert by_model.loc[0, "unpriced_calls"] == 0


async def test_usage_with_cost_usd_records_that_exact_cost() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini")
        async def caller(ctx: cl.Context) -> float | None:
            return ctx.usage(input_tokens=10, output_tokens=10, cost_usd=0.125)

        run = loop.start("caller")
        assert await run == 0.125
        (usage,) = recorder.of(run.agent_id, "usage")
        assert usage.data["cost_usd"] == 0.125
        assert usage.data["priced_by"] == "caller"
        assert row(loop, run.agent_id)["cost_usd"] == 0.125
        assert loop.spend().loc[0, "cost_usd"] == 0.125


async def test_usage_of_an_unknown_model_is_unpriced_warned_counted_and_never_against_budget() -> (
    None
):
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini", budget_usd=0.01)
        async def caller(ctx: cl.Context) -> float | None:
            cost = ctx.usage("no-such-model-xyz", input_tokens=10_000_000, output_tokens=10_000)
            await ctx.checkpoint()  # an unpriced call does not use up the budget
            async with ctx.tool("search", query="x"):
                pass
            return cost

        run = loop.start("caller")
        assert await run is None
        assert run.state is cl.AgentState.DONE
        assert recorder.of(run.agent_id, "request.opened") == []
        (usage,) = recorder.of(run.agent_id, "usage")
        assert usage.data["cost_usd"] is None
        assert usage.data["priced_by"] == "unknown"
        assert usage.data["input_tokens"] == 10_000_000
        warnings = [e for e in recorder.of(run.agent_id, "log") if e.data["level"] == "warning"]
        assert len(warnings) == 1
        assert "no-such-model-xyz" in warnings[0].data["message"]
        spend = loop.spend()
        assert spend.loc[0, "unpriced_calls"] == 1
        assert spend.loc[0, "cost_usd"] == 0
        assert spend.loc[0, "calls"] == 1
        by_model = loop.spend(by="model")
        assert by_model.loc[0, "model"] == "no-such-model-xyz"
        assert by_model.loc[0, "unpriced_calls"] == 1
        assert row(loop, run.agent_id)["unpriced_calls"] == 1


async def test_bad_usage_arguments_raise_usage_error_and_record_nothing() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent  # no model: usage must name one
        async def careless(ctx: cl.Context) -> list[str]:
            refused = []
            calls: list[dict[str, Any]] = [
                {"model": "gpt-4o-mini", "input_tokens": -1},
                {"model": "gpt-4o-mini", "output_tokens": -5},
                {"model": "gpt-4o-mini", "input_tokens": 1.5},
                {"input_tokens": 10, "output_tokens": 10},
                {"model": "gpt-4o-mini", "cost_usd": -0.01},
            ]
            for kwargs in calls:
                try:
                    ctx.usage(**kwargs)
                except cl.UsageError as error:
                    refused.append(str(error))
            return refused

        run = loop.start("careless")
        refused = await run
        assert len(refused) == 5
        assert "input_tokens" in refused[0]
        assert "output_tokens" in refused[1]
        assert "model" in refused[3]
        assert "cost_usd" in refused[4]
        assert run.state is cl.AgentState.DONE
        assert recorder.of(run.agent_id, "usage") == []
        assert row(loop, run.agent_id)["cost_usd"] == 0
