"""Steering: approve, reject, answer, pause, resume, stop, stop all, redirect."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match


@asynccontextmanager
async def conductor(**kwargs: Any) -> AsyncIterator[tuple[cl.Conductor, EventRecorder]]:
    async with cl.Conductor("steer", **kwargs) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        yield loop, recorder


async def opened(recorder: EventRecorder, run: cl.AgentRun) -> str:
    event = await recorder.wait_for(match("request.opened", agent_id=run.agent_id))
    return str(event.data["request_id"])


async def state(recorder: EventRecorder, run: cl.AgentRun, name: str) -> None:
    await recorder.wait_for(match("agent.state", agent_id=run.agent_id, state=name))


# -- requests ----------------------------------------------------------------------------


async def test_approve_resumes_the_agent_with_true_and_reject_with_false() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return await ctx.approve("Email 40 people?", details={"to": "list"})

        yes, no = loop.start("asks"), loop.start("asks")
        yes_id, no_id = await opened(recorder, yes), await opened(recorder, no)
        assert yes.state is cl.AgentState.WAITING
        pending = loop.pending()
        assert [r.id for r in pending] == [yes_id, no_id]  # oldest first
        assert pending[0].kind == "approval"
        assert pending[0].prompt == "Email 40 people?"
        assert pending[0].details == {"to": "list"}
        assert pending[0].agent_id == yes.agent_id
        assert loop.approve(yes_id, note="fine") is True
        assert loop.reject(no_id) is True
        assert await yes is True
        assert await no is False
        assert loop.pending() == []
        decided = loop.request(yes_id)
        assert (decided.decision, decided.decided_by, decided.note) == (
            "approved",
            "python",
            "fine",
        )


async def test_first_answer_wins_and_later_ones_learn_who_decided() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return await ctx.approve("Deploy?")

        run = loop.start("asks")
        request_id = await opened(recorder, run)
        assert loop.approve(request_id, by="phone") is True
        assert loop.reject(request_id, by="notebook") is False
        assert loop.approve(request_id, by="jupyterlab") is False
        assert loop.request(request_id).decided_by == "phone"
        assert await run is True
        decisions = recorder.of(kind="request.decided")
        assert len(decisions) == 1


def test_concurrent_decisions_from_many_threads_decide_exactly_once() -> None:
    with cl.Conductor("race") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return await ctx.approve("Go?")

        run = loop.start("asks")
        request_id = recorder.wait_for_sync(match("request.opened")).data["request_id"]
        start = threading.Barrier(16)
        wins: list[tuple[str, bool]] = []

        def decide(n: int) -> None:
            start.wait(10)
            verb = loop.approve if n % 2 else loop.reject
            wins.append((f"t{n}", verb(request_id, by=f"t{n}")))

        threads = [threading.Thread(target=decide, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        winners = [who for who, won in wins if won]
        assert len(winners) == 1
        assert loop.request(request_id).decided_by == winners[0]
        assert run.result(timeout=10) is (int(winners[0][1:]) % 2 == 1)


async def test_ask_returns_the_answer_or_none_when_declined() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def question(ctx: cl.Context) -> str | None:
            return await ctx.ask("Which dataset?", choices=["a", "b"])

        @loop.agent
        async def free_text(ctx: cl.Context) -> str | None:
            return await ctx.ask("Any notes?")

        choice, declined, text = (
            loop.start("question"),
            loop.start("question"),
            loop.start("free_text"),
        )
        choice_id = await opened(recorder, choice)
        assert loop.request(choice_id).choices == ("a", "b")
        with pytest.raises(cl.UsageError, match=r"one of \['a', 'b'\]"):
            loop.answer(choice_id, "c")
        assert loop.answer(choice_id, "b") is True
        assert loop.reject(await opened(recorder, declined)) is True
        assert loop.answer(await opened(recorder, text), "use 2025 data") is True
        assert await choice == "b"
        assert await declined is None
        assert await text == "use 2025 data"


async def test_misusing_requests_raises_usage_errors_that_say_what_to_do() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def both(ctx: cl.Context) -> None:
            await ctx.approve("Approve?")
            await ctx.ask("Question?")

        run = loop.start("both")
        approval = await opened(recorder, run)
        with pytest.raises(cl.UsageError, match="no request 'r999'"):
            loop.approve("r999")
        with pytest.raises(cl.UsageError, match=r"is an approval: use loop.approve\(id\)"):
            loop.answer(approval, "yes")
        loop.approve(approval)
        question = str(
            (await recorder.wait_for(match("request.opened", kind="question"))).data["request_id"]
        )
        with pytest.raises(cl.UsageError, match=r"is a question: answer it with loop.answer"):
            loop.approve(question)
        with pytest.raises(cl.UsageError, match="non-empty text"):
            loop.answer(question, "  ")
        loop.answer(question, "ok")
        await run


async def test_an_agent_that_ends_withdraws_its_open_request() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return await ctx.approve("Go?")

        run = loop.start("asks")
        request_id = await opened(recorder, run)
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        assert loop.request(request_id).decision == "withdrawn"
        assert loop.pending() == []
        assert loop.approve(request_id) is False  # decided already: nobody waits on it


# -- stop --------------------------------------------------------------------------------


async def test_stop_during_approve_ends_the_agent_stopped() -> None:
    async with conductor() as (loop, recorder):
        cleaned: list[str] = []

        @loop.agent
        async def asks(ctx: cl.Context) -> None:
            try:
                await ctx.approve("Go?")
            except cl.AgentStopped as stopped:
                cleaned.append(str(stopped))
                raise

        run = loop.start("asks")
        await opened(recorder, run)
        loop.stop(run.agent_id, by="phone")
        with pytest.raises(cl.AgentStopped, match="stopped by phone"):
            await run
        assert cleaned == ["stopped by phone"]
        assert run.state is cl.AgentState.STOPPED


async def test_stop_during_ask_ends_the_agent_stopped() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def asks(ctx: cl.Context) -> str | None:
            return await ctx.ask("Which?", choices=["x"])

        run = loop.start("asks")
        await opened(recorder, run)
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        states = [e.data["state"] for e in recorder.of(run.agent_id, "agent.state")]
        assert states == ["running", "waiting", "stopped"]


async def test_stop_inside_a_tool_cancels_it_and_records_the_span_as_failed() -> None:
    entered = asyncio.Event()
    async with conductor() as (loop, recorder):

        @loop.agent
        async def tool_user(ctx: cl.Context) -> None:
            async with ctx.tool("slow_api", query="x"):
                entered.set()
                await asyncio.Event().wait()  # an I/O call that never returns

        run = loop.start("tool_user")
        await entered.wait()
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        finished = recorder.of(run.agent_id, "tool.finished")
        assert len(finished) == 1
        assert finished[0].data["ok"] is False
        assert "CancelledError" in finished[0].data["error"]


async def test_stop_is_idempotent_and_stopping_an_ended_agent_does_nothing() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def waits(ctx: cl.Context) -> None:
            await ctx.approve("Go?")

        @loop.agent
        async def quick(ctx: cl.Context) -> str:
            return "ok"

        run = loop.start("waits")
        await opened(recorder, run)
        loop.stop(run.agent_id)
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        loop.stop(run.agent_id)
        done = loop.start("quick")
        assert await done == "ok"
        loop.stop(done.agent_id)
        assert done.state is cl.AgentState.DONE
        assert len(recorder.of(run.agent_id, "command")) == 1
        with pytest.raises(cl.UsageError, match="no agent 'ghost'"):
            loop.stop("ghost")


async def test_stop_all_stops_every_live_agent_and_says_how_many() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def waits(ctx: cl.Context) -> None:
            await ctx.approve("Go?")

        @loop.agent
        async def loops(ctx: cl.Context) -> None:
            while True:
                await ctx.checkpoint()

        runs = [loop.start("waits") for _ in range(3)] + [loop.start("loops") for _ in range(3)]
        for run in runs[:3]:
            await opened(recorder, run)
        assert loop.stop_all(by="phone") == 6
        for run in runs:
            with pytest.raises(cl.AgentStopped):
                await run
        assert set(loop.agents()["state"]) == {"stopped"}
        assert loop.stop_all() == 0


async def test_a_cancellation_from_outside_is_never_swallowed() -> None:
    entered = asyncio.Event()
    async with conductor() as (loop, recorder):

        @loop.agent
        async def victim(ctx: cl.Context) -> None:
            entered.set()
            await asyncio.Event().wait()

        run = loop.start("victim")
        await entered.wait()
        task = run._record.task
        assert task is not None
        task.cancel()  # not ConductLoop's doing: e.g. the kernel shutting down
        with pytest.raises(asyncio.CancelledError):
            await task
        assert run.state is cl.AgentState.STOPPED
        ended = recorder.of(run.agent_id, "agent.state")[-1]
        assert "outside ConductLoop" in ended.data["reason"]


# -- pause and resume --------------------------------------------------------------------


async def test_pause_holds_at_the_next_checkpoint_until_resume() -> None:
    steps: list[int] = []
    async with conductor() as (loop, recorder):

        @loop.agent
        async def stepper(ctx: cl.Context) -> list[int]:
            for n in range(3):
                await ctx.checkpoint()
                steps.append(n)
            return steps

        run = loop.start("stepper")
        loop.pause(run.agent_id)
        await state(recorder, run, "paused")
        assert steps == []
        assert run.state is cl.AgentState.PAUSED
        loop.pause(run.agent_id)  # pausing twice is harmless
        loop.resume(run.agent_id)
        assert await run == [0, 1, 2]


async def test_pause_during_a_tool_span_takes_effect_when_the_span_ends() -> None:
    in_tool, finish_tool = asyncio.Event(), asyncio.Event()
    after_tool: list[str] = []
    async with conductor() as (loop, recorder):

        @loop.agent
        async def tool_user(ctx: cl.Context) -> str:
            async with ctx.tool("fetch", url="https://example.org"):
                in_tool.set()
                await finish_tool.wait()
            after_tool.append("continued")
            return "done"

        run = loop.start("tool_user")
        await in_tool.wait()
        loop.pause(run.agent_id)
        assert run.state is cl.AgentState.RUNNING  # the tool call is not interrupted
        finish_tool.set()
        await state(recorder, run, "paused")
        finished = recorder.of(run.agent_id, "tool.finished")
        assert [e.data["ok"] for e in finished] == [True]  # recorded before the hold
        assert after_tool == []
        loop.resume(run.agent_id)
        assert await run == "done"
        assert after_tool == ["continued"]


async def test_pause_while_waiting_for_a_human_holds_after_the_decision() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return await ctx.approve("Go?")

        run = loop.start("asks")
        request_id = await opened(recorder, run)
        loop.pause(run.agent_id)
        loop.approve(request_id)
        await state(recorder, run, "paused")
        assert not run.done()
        loop.resume(run.agent_id)
        assert await run is True


async def test_stop_while_paused_ends_the_agent_stopped() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def stepper(ctx: cl.Context) -> None:
            while True:
                await ctx.checkpoint()

        run = loop.start("stepper")
        loop.pause(run.agent_id)
        await state(recorder, run, "paused")
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run


def test_an_agent_paused_while_queued_holds_before_running_any_code() -> None:
    release = threading.Event()
    ran: list[str] = []
    with cl.Conductor("queued", max_threads=1) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        def occupant(ctx: cl.SyncContext) -> None:
            release.wait(10)

        @loop.agent
        def eager(ctx: cl.SyncContext) -> None:
            ran.append("ran")

        first = loop.start("occupant")
        queued = loop.start("eager")  # the only worker thread is busy
        assert queued.state is cl.AgentState.QUEUED
        loop.pause(queued.agent_id)
        release.set()
        first.result(timeout=10)
        recorder.wait_for_sync(match("agent.state", agent_id=queued.agent_id, state="paused"))
        assert ran == []
        loop.resume(queued.agent_id)
        queued.result(timeout=10)
        assert ran == ["ran"]
        states = [e.data["state"] for e in recorder.of(queued.agent_id, "agent.state")]
        assert states == ["running", "paused", "running", "done"]


# -- redirect ----------------------------------------------------------------------------


async def test_redirect_is_delivered_exactly_once_in_order() -> None:
    proceed = asyncio.Event()
    async with conductor() as (loop, recorder):

        @loop.agent
        async def listener(ctx: cl.Context) -> list[list[str]]:
            seen = [await ctx.checkpoint()]
            await proceed.wait()
            seen.append(await ctx.checkpoint())
            seen.append(await ctx.checkpoint())
            return seen

        run = loop.start("listener")
        await recorder.wait_for(match("agent.state", agent_id=run.agent_id, state="running"))
        loop.redirect(run.agent_id, "focus on 2025 papers")
        loop.redirect(run.agent_id, "and cite them", by="phone")
        proceed.set()
        result = await run
        assert result[-2:] == [["focus on 2025 papers", "and cite them"], []]
        assert [e.data for e in recorder.of(run.agent_id, "instruction")] == [
            {"text": "focus on 2025 papers", "by": "python"},
            {"text": "and cite them", "by": "phone"},
        ]


async def test_steering_an_ended_agent_raises_usage_error_naming_it() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def quick(ctx: cl.Context) -> None:
            return None

        run = loop.start("quick")
        await run
        verbs: list[Callable[[], object]] = [
            lambda: loop.pause(run.agent_id),
            lambda: loop.resume(run.agent_id),
            lambda: loop.redirect(run.agent_id, "new plan"),
        ]
        for verb in verbs:
            with pytest.raises(cl.UsageError, match=f"{run.agent_id} has already ended"):
                verb()
        with pytest.raises(cl.UsageError, match="no agent"):
            loop.redirect("nobody-1", "x")
        with pytest.raises(cl.UsageError, match="non-empty text"):
            loop.redirect(run.agent_id, "")


# -- steering from any thread, and the hub's command seam --------------------------------


def test_every_steering_method_works_from_other_threads() -> None:
    with cl.Conductor("threads") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def worker(ctx: cl.Context) -> list[str]:
            texts: list[str] = []
            await ctx.approve("Go?")
            while not texts:
                texts = await ctx.checkpoint()
            return texts

        run = loop.start("worker")
        request_id = recorder.wait_for_sync(match("request.opened")).data["request_id"]
        outcome: list[object] = []

        def steer() -> None:
            loop.pause(run.agent_id)
            loop.redirect(run.agent_id, "from a thread")
            outcome.append(loop.approve(request_id))
            outcome.append(len(loop.pending()))
            loop.resume(run.agent_id)

        thread = threading.Thread(target=steer)
        thread.start()
        thread.join(10)
        assert outcome == [True, 0]
        assert run.result(timeout=10) == ["from a thread"]


async def test_handle_command_carries_out_hub_commands_and_refuses_bad_ones() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def asks(ctx: cl.Context) -> str | None:
            return await ctx.ask("Which?")

        run = loop.start("asks")
        request_id = await opened(recorder, run)
        bad: list[Any] = [
            "approve",
            {"op": "launch"},
            {"op": "answer", "request_id": request_id},
            {"op": "pause", "agent_id": 7},
        ]
        for command in bad:
            with pytest.raises(cl.UsageError):
                loop.handle_command(command)
        assert loop.handle_command(
            {"op": "answer", "request_id": request_id, "text": "b", "by": "phone:pixel"}
        )
        assert await run == "b"
        assert loop.request(request_id).decided_by == "phone:pixel"
        assert loop.handle_command({"op": "stop_all"}) == 0
