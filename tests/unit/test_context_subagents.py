"""``ctx.subagent``: a child row for an agent that runs inside its parent's code, with its
own state, spend and events; how it ends (done, failed, stopped) and whose budget it spends."""

from __future__ import annotations

import asyncio

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match
from tests.unit._steering_support import conductor, opened

SONNET = "claude-sonnet-4-5"


async def started(recorder: EventRecorder, name: str) -> str:
    """The id of the (sub)agent named ``name``, once it has started."""
    return str((await recorder.wait_for(match("agent.started", name=name))).agent_id)


async def test_a_subagent_is_a_child_row_with_its_own_state_spend_and_events() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(model="gpt-4o-mini")
        async def parent(ctx: cl.Context) -> str:
            ctx.usage(input_tokens=1_000, output_tokens=100)
            async with ctx.subagent("writer", model=SONNET) as sub:
                assert isinstance(sub, cl.Context)
                assert (sub.parent, sub.name, sub.model) == (ctx.agent_id, "writer", SONNET)
                sub.status("drafting")
                sub.log("drafted", words=120)
                sub.usage(input_tokens=2_000, output_tokens=300, provider="anthropic")
            return sub.agent_id

        run = loop.start("parent")
        sub_id = await run
        [parent_usage] = recorder.of(run.agent_id, "usage")
        [sub_usage] = recorder.of(sub_id, "usage")
        assert sub_usage.data["model"] == SONNET
        rows = loop.agents().set_index("agent_id")
        assert rows.loc[sub_id, "parent"] == run.agent_id
        assert (rows.loc[sub_id, "name"], rows.loc[sub_id, "state"]) == ("writer", "done")
        assert rows.loc[sub_id, "activity"] == "drafting"
        assert rows.loc[sub_id, "cost_usd"] == pytest.approx(sub_usage.data["cost_usd"])
        assert rows.loc[run.agent_id, "cost_usd"] == pytest.approx(parent_usage.data["cost_usd"])
        assert (rows.loc[sub_id, "input_tokens"], rows.loc[sub_id, "output_tokens"]) == (2_000, 300)
        kinds = [e.kind for e in recorder.of(sub_id)]
        assert kinds == [
            "agent.started",
            "agent.state",
            "agent.status",
            "log",
            "usage",
            "agent.state",
        ]
        assert [e.data["state"] for e in recorder.of(sub_id, "agent.state")] == ["running", "done"]
        assert recorder.of(run.agent_id, "log") == []  # the sub's events are its own


async def test_a_subagent_whose_block_raises_ends_failed_and_the_exception_propagates() -> None:
    async with conductor() as (loop, recorder):
        raised = ValueError("draft lost")

        @loop.agent
        async def parent(ctx: cl.Context) -> tuple[str, bool]:
            try:
                async with ctx.subagent("writer") as sub:
                    raise raised
            except ValueError as error:
                return sub.agent_id, error is raised

        run = loop.start("parent")
        sub_id, same = await run
        assert same
        rows = loop.agents().set_index("agent_id")
        assert rows.loc[sub_id, "state"] == "failed"
        assert rows.loc[sub_id, "error"] == "ValueError: draft lost"
        assert rows.loc[run.agent_id, "state"] == "done"
        [error] = recorder.of(sub_id, "agent.error")
        assert error.data["type"] == "ValueError"


@pytest.mark.parametrize("where", ["approve", "io"])
async def test_stopping_the_subagent_alone_raises_agent_failed_stopped_and_the_parent_goes_on(
    where: str,
) -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def parent(ctx: cl.Context) -> tuple[str, str, int]:
            try:
                async with ctx.subagent("writer") as sub:
                    if where == "approve":
                        await sub.approve("Publish?")
                    else:
                        sub.status("working")
                        await asyncio.Event().wait()  # its own I/O, cancelled by the stop
            except cl.AgentFailed as failed:
                await ctx.checkpoint()  # the parent is not stopped: it goes on
                task = asyncio.current_task()
                assert task is not None
                return failed.state, failed.agent_id, task.cancelling()
            raise AssertionError("the block did not raise")

        run = loop.start("parent")
        sub_id = await started(recorder, "writer")
        if where == "approve":
            await recorder.wait_for(match("request.opened", agent_id=sub_id))
        else:
            await recorder.wait_for(match("agent.status", agent_id=sub_id, text="working"))
        loop.stop(sub_id)
        assert await run == ("stopped", sub_id, 0)  # no cancellation of ours is left over
        rows = loop.agents().set_index("agent_id")
        assert rows.loc[sub_id, "state"] == "stopped"
        assert rows.loc[run.agent_id, "state"] == "done"


@pytest.mark.parametrize("where", ["approve", "io"])
async def test_stopping_the_parent_ends_it_stopped_and_its_subagent_stopped(where: str) -> None:
    async with conductor() as (loop, recorder):
        seen: list[type[BaseException]] = []

        @loop.agent
        async def parent(ctx: cl.Context) -> None:
            try:
                async with ctx.subagent("writer") as sub:
                    if where == "approve":
                        await sub.approve("Publish?")
                    else:
                        sub.status("working")
                        await asyncio.Event().wait()
            except BaseException as error:
                seen.append(type(error))
                raise

        run = loop.start("parent")
        sub_id = await started(recorder, "writer")
        if where == "approve":
            await recorder.wait_for(match("request.opened", agent_id=sub_id))
        else:
            await recorder.wait_for(match("agent.status", agent_id=sub_id, text="working"))
        loop.stop(run.agent_id, by="phone")
        with pytest.raises(cl.AgentStopped, match="stopped by phone"):
            await run
        assert seen == [cl.AgentStopped]  # the parent's stop, not a failed child
        rows = loop.agents().set_index("agent_id")
        assert (rows.loc[run.agent_id, "state"], rows.loc[sub_id, "state"]) == (
            "stopped",
            "stopped",
        )
        assert loop.pending() == []


async def test_a_parents_budget_counts_its_subagents_spend_and_approving_lets_it_go_on() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(budget_usd=0.01)
        async def parent(ctx: cl.Context) -> str:
            async with ctx.subagent("writer", model=SONNET) as sub:
                sub.usage(input_tokens=100, output_tokens=10, cost_usd=0.02)
                await sub.checkpoint()  # over its parent's budget: waits for a human
                sub.status("going on")
            return "done"

        run = loop.start("parent")
        sub_id = await started(recorder, "writer")
        request_id = str(
            (await recorder.wait_for(match("request.opened", kind="budget"))).data["request_id"]
        )
        request = loop.request(request_id)
        assert request.kind == "budget"
        assert request.details["scope"] == "agent"
        assert request.details["budget_usd"] == 0.01
        assert request.details["spent_usd"] == pytest.approx(0.02)
        assert "its subagents included" in request.prompt
        assert loop.approve(request_id) is True
        assert await run == "done"
        rows = loop.agents().set_index("agent_id")
        assert rows.loc[sub_id, "state"] == "done"
        assert rows.loc[sub_id, "cost_usd"] == pytest.approx(0.02)
        assert rows.loc[run.agent_id, "cost_usd"] == 0.0  # each row is its own spend
        assert recorder.of(sub_id, "agent.status")[-1].data["text"] == "going on"


async def test_a_subagents_spend_holds_its_parent_at_the_parents_next_gate_after_the_block() -> (
    None
):
    async with conductor() as (loop, recorder):

        @loop.agent(budget_usd=0.01)
        async def parent(ctx: cl.Context) -> None:
            async with ctx.subagent("writer") as sub:
                sub.usage("gpt-4o-mini", 100, 10, cost_usd=0.02)
            await ctx.checkpoint()

        run = loop.start("parent")
        request_id = await opened(recorder, run)
        assert loop.request(request_id).kind == "budget"
        assert loop.reject(request_id) is True
        with pytest.raises(cl.BudgetExceeded):
            await run
        assert run.state is cl.AgentState.STOPPED


async def test_current_context_inside_the_block_is_the_subagents_and_after_it_the_parents() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def parent(ctx: cl.Context) -> list[bool]:
            async with ctx.subagent("writer") as sub:
                inside = cl.current_context() is sub
                async with sub.subagent("editor") as inner:
                    nested = cl.current_context() is inner and inner.parent == sub.agent_id
                back_to_sub = cl.current_context() is sub
            return [inside, nested, back_to_sub, cl.current_context() is ctx]

        assert await loop.start("parent") == [True, True, True, True]


def test_a_plain_def_agents_subagent_is_a_child_row_that_ends_done() -> None:
    with cl.Conductor("sync-sub") as loop:

        @loop.agent
        def parent(ctx: cl.SyncContext) -> tuple[str, bool, bool]:
            with ctx.subagent("writer", model="gpt-4o-mini") as sub:
                assert isinstance(sub, cl.SyncContext)
                sub.usage(input_tokens=1_000, output_tokens=100)
                sub.checkpoint()
                inside = cl.current_context() is sub
            return sub.agent_id, inside, cl.current_context() is ctx

        run = loop.start("parent")
        sub_id, inside, restored = run.result(timeout=10)
        assert inside
        assert restored
        rows = loop.agents().set_index("agent_id")
        assert rows.loc[sub_id, "parent"] == run.agent_id
        assert rows.loc[sub_id, "state"] == "done"
        assert rows.loc[sub_id, "cost_usd"] > 0
        assert rows.loc[run.agent_id, "cost_usd"] == 0.0


def test_stopping_a_plain_def_agents_subagent_raises_agent_failed_stopped_in_the_block() -> None:
    with cl.Conductor("sync-sub-stop") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        def parent(ctx: cl.SyncContext) -> str:
            try:
                with ctx.subagent("writer") as sub:
                    sub.approve("Publish?")
            except cl.AgentFailed as failed:
                return failed.state
            return "not raised"

        run = loop.start("parent")
        sub_id = recorder.wait_for_sync(match("agent.started", name="writer")).agent_id
        assert sub_id is not None
        recorder.wait_for_sync(match("request.opened", agent_id=sub_id))
        loop.stop(sub_id)
        assert run.result(timeout=10) == "stopped"
        assert loop.agents().set_index("agent_id").loc[sub_id, "state"] == "stopped"


async def test_misused_subagent_blocks_raise_usage_error() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def parent(ctx: cl.Context) -> list[str]:
            complaints = []
            with pytest.raises(cl.UsageError) as plain_with, ctx.subagent("writer"):
                pass
            complaints.append(str(plain_with.value))
            block = ctx.subagent("writer")
            async with block:
                pass
            with pytest.raises(cl.UsageError) as twice:
                async with block:
                    pass
            complaints.append(str(twice.value))
            with pytest.raises(cl.UsageError) as nameless:
                async with ctx.subagent(" "):
                    pass
            complaints.append(str(nameless.value))
            return complaints

        plain_with, twice, nameless = await loop.start("parent")
        assert "async with ctx.subagent" in plain_with
        assert "entered once" in twice
        assert "needs a name" in nameless
