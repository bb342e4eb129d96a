"""``cl.Decision``: what ``ctx.approve`` returns (approved, note, by, edited args), how a
human's note and args reach the agent, and the decisions that cannot carry args."""

from __future__ import annotations

from typing import Any

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match
from tests.unit._steering_support import conductor, opened


async def test_approve_returns_a_truthy_decision_with_the_humans_note_who_and_edited_args() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def writer(ctx: cl.Context) -> tuple[cl.Decision, str]:
            decision = await ctx.approve("Write to a.txt?", details={"path": "a"})
            path = decision.args["path"] if decision and decision.args else "a"
            return decision, path

        run = loop.start("writer")
        request_id = await opened(recorder, run)
        assert loop.approve(request_id, note="x", args={"path": "b"}, by="notebook") is True
        decision, path = await run
        assert decision == cl.Decision(approved=True, note="x", by="notebook", args={"path": "b"})
        assert bool(decision) is True
        assert path == "b"
        [decided] = recorder.of(run.agent_id, "request.decided")
        assert decided.data == {
            "request_id": request_id,
            "decision": "approved",
            "by": "notebook",
            "note": "x",
            "args": {"path": "b"},
        }
        request = loop.request(request_id)
        assert (request.decision, request.note, request.args) == ("approved", "x", {"path": "b"})


async def test_a_rejected_approval_is_a_falsy_decision_that_carries_the_note() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def writer(ctx: cl.Context) -> tuple[str, cl.Decision]:
            decision = await ctx.approve("Delete 40 files?")
            if decision:  # `if await ctx.approve(...)` keeps working
                return "deleted", decision
            return "kept", decision

        run = loop.start("writer")
        request_id = await opened(recorder, run)
        assert loop.reject(request_id, note="y", by="phone") is True
        outcome, decision = await run
        assert outcome == "kept"
        assert decision == cl.Decision(approved=False, note="y", by="phone", args=None)
        assert not decision
        [decided] = recorder.of(run.agent_id, "request.decided")
        assert decided.data["note"] == "y"
        assert "args" not in decided.data
        assert loop.request(request_id).args is None


async def test_a_decision_without_note_or_args_has_none_for_both_and_says_who_decided() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def writer(ctx: cl.Context) -> cl.Decision:
            return await ctx.approve("Go?")

        run = loop.start("writer")
        request_id = await opened(recorder, run)
        assert loop.approve(request_id) is True
        decision = await run
        assert (decision.approved, decision.note, decision.args) == (True, None, None)
        assert decision.by is not None
        assert decision.by == loop.request(request_id).decided_by


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            {"op": "reject", "note": "n", "by": "phone"},
            cl.Decision(approved=False, note="n", by="phone"),
        ),
        (
            {"op": "approve", "note": "ok", "args": {"to": ["me"]}, "by": "lab"},
            cl.Decision(approved=True, note="ok", by="lab", args={"to": ["me"]}),
        ),
    ],
    ids=["reject", "approve"],
)
async def test_a_hub_commands_note_and_args_reach_the_agent(
    command: dict[str, Any], expected: cl.Decision
) -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def writer(ctx: cl.Context) -> cl.Decision:
            return await ctx.approve("Send?")

        run = loop.start("writer")
        request_id = await opened(recorder, run)
        assert loop.handle_command({**command, "request_id": request_id}) is True
        assert await run == expected


async def test_first_decision_wins_and_a_later_one_changes_neither_note_nor_args() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def writer(ctx: cl.Context) -> cl.Decision:
            return await ctx.approve("Send?")

        run = loop.start("writer")
        request_id = await opened(recorder, run)
        assert loop.approve(request_id, note="first", args={"n": 1}, by="phone") is True
        assert loop.approve(request_id, note="second", args={"n": 2}, by="lab") is False
        assert loop.reject(request_id, note="third") is False
        assert await run == cl.Decision(approved=True, note="first", by="phone", args={"n": 1})


BAD_ARGS: list[Any] = [{"path": object()}, {"ratio": float("nan")}, ["path", "b"], "path=b"]


@pytest.mark.parametrize("args", BAD_ARGS, ids=["object", "nan", "list", "str"])
async def test_approving_with_args_that_are_not_a_json_object_raises_and_leaves_it_open(
    args: Any,
) -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def writer(ctx: cl.Context) -> cl.Decision:
            return await ctx.approve("Write?")

        run = loop.start("writer")
        request_id = await opened(recorder, run)
        with pytest.raises(cl.UsageError, match="args"):
            loop.approve(request_id, args=args)
        assert [r.id for r in loop.pending()] == [request_id]
        assert recorder.of(run.agent_id, "request.decided") == []
        assert loop.approve(request_id, args={"path": "b"}) is True
        assert (await run).args == {"path": "b"}


async def test_args_on_a_question_or_a_budget_request_raise_usage_error() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent(budget_usd=0.01)
        async def spender(ctx: cl.Context) -> str | None:
            answer = await ctx.ask("Which dataset?", choices=["a", "b"])
            ctx.usage("gpt-4o-mini", 10, 1, cost_usd=0.02)
            await ctx.checkpoint()
            return answer

        run = loop.start("spender")
        question = await opened(recorder, run)
        with pytest.raises(cl.UsageError):
            loop.approve(question, args={"dataset": "a"})
        with pytest.raises(cl.UsageError, match="args"):
            loop.handle_command(
                {"op": "answer", "request_id": question, "text": "a", "args": {"x": 1}}
            )
        assert loop.request(question).open
        assert loop.answer(question, "a") is True
        budget = await recorder.wait_for(match("request.opened", kind="budget"))
        budget_id = str(budget.data["request_id"])
        with pytest.raises(cl.UsageError, match="edited args go with approving an approval"):
            loop.approve(budget_id, args={"budget_usd": 10})
        assert loop.request(budget_id).open
        assert loop.approve(budget_id) is True
        assert await run == "a"


async def test_args_on_a_reject_raise_usage_error_and_leave_the_request_open() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def writer(ctx: cl.Context) -> cl.Decision:
            return await ctx.approve("Write?")

        run = loop.start("writer")
        request_id = await opened(recorder, run)
        with pytest.raises(cl.UsageError, match="args"):
            loop.handle_command({"op": "reject", "request_id": request_id, "args": {"p": "b"}})
        assert loop.request(request_id).open
        with pytest.raises(cl.UsageError, match="a note is text"):
            loop.reject(request_id, note=5)  # type: ignore[arg-type]
        assert loop.reject(request_id, note="no") is True
        assert await run == cl.Decision(approved=False, note="no", by="python")


def test_a_plain_def_agents_approve_returns_the_decision_too() -> None:
    with cl.Conductor("sync-decision") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        def writer(ctx: cl.SyncContext) -> cl.Decision:
            return ctx.approve("Write?")

        run = loop.start("writer")
        request_id = recorder.wait_for_sync(match("request.opened")).data["request_id"]
        assert loop.approve(request_id, note="fine", args={"path": "c"}, by="phone") is True
        assert run.result(timeout=10) == cl.Decision(True, "fine", "phone", {"path": "c"})
