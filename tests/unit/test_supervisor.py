"""Supervisors: functions that see every event, in order, and may steer."""

from __future__ import annotations

import asyncio

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match


def ended(event: cl.Event, agent_ids: set[str]) -> bool:
    return (
        event.kind == "agent.state"
        and event.agent_id in agent_ids
        and event.data["state"] in ("done", "failed", "stopped")
    )


async def test_async_supervisor_sees_every_event_in_seq_order() -> None:
    async with cl.Conductor("sup") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        seen: list[cl.Event] = []
        handed: list[object] = []
        finished: set[str] = set()
        all_ended = asyncio.Event()
        watched: set[str] = set()

        @loop.supervisor
        async def watch(event: cl.Event, conductor: cl.Conductor) -> None:
            await asyncio.sleep(0)  # an async supervisor may yield; order still holds
            seen.append(event)
            handed.append(conductor)
            if ended(event, watched):
                finished.add(str(event.agent_id))
                if finished == watched:
                    all_ended.set()

        @loop.agent(model="gpt-4o-mini")
        async def worker(ctx: cl.Context, n: int) -> int:
            ctx.status(f"worker {n} starting")
            async with ctx.tool("search", query=str(n)):
                ctx.usage(input_tokens=100, output_tokens=10)
            ctx.log(f"worker {n} logged")
            await ctx.checkpoint()
            return n

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return (await ctx.approve("Go ahead?")).approved

        runs = [loop.start("worker", n) for n in range(3)]
        asking = loop.start("asks")
        watched.update(run.agent_id for run in [*runs, asking])
        opened = await recorder.wait_for(match("request.opened"))
        assert loop.approve(opened.data["request_id"]) is True
        assert [await run for run in runs] == [0, 1, 2]
        assert await asking is True
        await asyncio.wait_for(all_ended.wait(), 10)

        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert seen == recorder.events[: len(seen)]
        assert len(seen) == len(recorder.events)  # nothing follows the last agent's end
        assert {e.kind for e in seen} >= {
            "agent.started",
            "agent.state",
            "agent.status",
            "tool.started",
            "usage",
            "tool.finished",
            "log",
            "request.opened",
            "request.decided",
            "agent.result",
        }
        assert all(e.runtime == loop.runtime for e in seen)
        assert all(conductor is loop for conductor in handed)


async def test_plain_def_supervisor_sees_every_event_in_seq_order() -> None:
    async with cl.Conductor("sup-def") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        seqs: list[int] = []
        run_ended = asyncio.Event()
        watched: set[str] = set()

        @loop.supervisor
        def watch(event: cl.Event, conductor: cl.Conductor) -> None:
            seqs.append(event.seq)
            if ended(event, watched):
                run_ended.set()

        @loop.agent
        async def worker(ctx: cl.Context) -> str:
            for step in range(3):
                ctx.status(f"step {step}")
                await ctx.checkpoint()
            return "done"

        run = loop.start("worker")
        watched.add(run.agent_id)
        assert await run == "done"
        await asyncio.wait_for(run_ended.wait(), 10)
        assert seqs == [e.seq for e in recorder.events]
        assert seqs == list(range(1, len(seqs) + 1))


def test_plain_def_supervisor_approves_requests_for_a_script() -> None:
    with cl.Conductor("auto-approve") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.supervisor
        def approve_everything(event: cl.Event, conductor: cl.Conductor) -> None:
            if event.kind == "request.opened" and event.data["kind"] == "approval":
                conductor.approve(event.data["request_id"], by="supervisor")

        @loop.agent
        def deployer(ctx: cl.SyncContext) -> tuple[bool, bool]:
            staging = ctx.approve("Deploy to staging?").approved
            return staging, ctx.approve("Deploy to production?").approved

        run = loop.start("deployer")
        assert run.result(timeout=10) == (True, True)
        decided = recorder.of(run.agent_id, "request.decided")
        assert [(e.data["decision"], e.data["by"]) for e in decided] == [
            ("approved", "supervisor"),
            ("approved", "supervisor"),
        ]
        assert loop.pending() == []


async def test_async_supervisor_approves_budget_requests_and_the_agent_goes_on() -> None:
    async with cl.Conductor("auto-budget") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.supervisor
        async def raise_budgets(event: cl.Event, conductor: cl.Conductor) -> None:
            if event.kind == "request.opened" and event.data["kind"] == "budget":
                conductor.approve(event.data["request_id"], note="within plan", by="supervisor")

        @loop.agent(model="gpt-4o-mini", budget_usd=1.0)
        async def spender(ctx: cl.Context) -> str:
            ctx.usage(cost_usd=1.5)
            await ctx.checkpoint()
            return "went on"

        run = loop.start("spender")
        assert await run == "went on"
        (opened,) = recorder.of(run.agent_id, "request.opened")
        request = loop.request(opened.data["request_id"])
        assert request.kind == "budget"
        assert (request.decision, request.decided_by, request.note) == (
            "approved",
            "supervisor",
            "within plan",
        )


async def test_supervisor_stops_an_agent_when_it_sees_a_given_status() -> None:
    async with cl.Conductor("guard") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        never, finish = asyncio.Event(), asyncio.Event()
        reached_past_danger: list[bool] = []

        @loop.supervisor
        async def guard(event: cl.Event, conductor: cl.Conductor) -> None:
            if event.kind == "agent.status" and "delete" in event.data["text"]:
                conductor.stop(str(event.agent_id), by="supervisor")

        @loop.agent
        async def reckless(ctx: cl.Context) -> str:
            ctx.status("about to delete every file")
            await never.wait()
            reached_past_danger.append(True)
            return "deleted"

        @loop.agent
        async def careful(ctx: cl.Context) -> str:
            ctx.status("reading files")
            await finish.wait()
            await ctx.checkpoint()
            return "read"

        bad, good = loop.start("reckless"), loop.start("careful")
        with pytest.raises(cl.AgentStopped) as stopped:
            await bad
        assert stopped.value.by == "supervisor"
        assert not isinstance(stopped.value, cl.BudgetExceeded)
        assert bad.state is cl.AgentState.STOPPED
        assert reached_past_danger == []
        command = await recorder.wait_for(match("command", agent_id=bad.agent_id, op="stop"))
        assert command.data["by"] == "supervisor"

        assert good.state is cl.AgentState.RUNNING  # the other agent is left alone
        finish.set()
        assert await good == "read"


async def test_exception_in_supervisor_is_logged_and_it_keeps_receiving_events() -> None:
    async with cl.Conductor("faulty") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        proceed = asyncio.Event()
        texts: list[str] = []
        run_ended = asyncio.Event()
        watched: set[str] = set()

        @loop.supervisor
        async def fragile(event: cl.Event, conductor: cl.Conductor) -> None:
            if event.kind == "agent.status":
                texts.append(event.data["text"])
                if event.data["text"] == "boom":
                    raise ValueError("cannot handle boom")
            if ended(event, watched):
                run_ended.set()

        @loop.agent
        async def worker(ctx: cl.Context) -> str:
            ctx.status("boom")
            await proceed.wait()
            ctx.status("after the boom")
            await ctx.checkpoint()
            return "finished"

        run = loop.start("worker")
        watched.add(run.agent_id)
        error = await recorder.wait_for(match("log", source="supervisor"))
        assert error.data["level"] == "error"
        assert "fragile" in error.data["message"]
        assert "ValueError" in error.data["message"]
        assert "cannot handle boom" in error.data["message"]
        assert run.state is cl.AgentState.RUNNING  # the agent is untouched

        proceed.set()
        assert await run == "finished"
        await asyncio.wait_for(run_ended.wait(), 10)
        assert texts == ["boom", "after the boom"]
        assert len(recorder.of(kind="log")) == 1


async def test_supervisor_that_always_raises_leaves_agents_running_to_the_end() -> None:
    async with cl.Conductor("always-faulty") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        calls: list[int] = []
        finished: set[str] = set()
        all_ended = asyncio.Event()
        watched: set[str] = set()

        @loop.supervisor
        def broken(event: cl.Event, conductor: cl.Conductor) -> None:
            calls.append(event.seq)
            if ended(event, watched):
                finished.add(str(event.agent_id))
                if finished == watched:
                    all_ended.set()
            raise RuntimeError(f"broken on {event.kind}")

        @loop.agent
        async def worker(ctx: cl.Context, n: int) -> int:
            async with ctx.tool("compute", n=n):
                ctx.status(f"computing {n}")
            await ctx.checkpoint()
            return n * n

        runs = [loop.start("worker", n) for n in range(3)]
        watched.update(run.agent_id for run in runs)
        assert [await run for run in runs] == [0, 1, 4]
        await asyncio.wait_for(all_ended.wait(), 10)

        errors = recorder.of(kind="log")
        others = [e for e in recorder.events if e.kind != "log"]
        assert calls == [e.seq for e in others]  # every event but its own error logs
        assert len(errors) == len(calls)  # one error log per failed call
        assert all(e.data["source"] == "supervisor" for e in errors)
        assert all(e.data["level"] == "error" for e in errors)
        assert all("RuntimeError" in e.data["message"] for e in errors)


async def test_steering_by_a_supervisor_is_recorded_as_that_supervisor() -> None:
    async with cl.Conductor("who") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def looper(ctx: cl.Context) -> None:
            ctx.status("spinning")
            while True:
                await ctx.checkpoint()

        @loop.supervisor
        async def guard(event: cl.Event, conductor: cl.Conductor) -> None:
            if event.kind == "agent.status" and event.data["text"] == "spinning":
                conductor.stop(event.agent_id)

        run = loop.start("looper")
        with pytest.raises(cl.AgentStopped, match="stopped by supervisor:guard"):
            await run
        command = await recorder.wait_for(match("command", agent_id=run.agent_id, op="stop"))
        assert command.data["by"] == "supervisor:guard"
        loop.stop_all()  # outside a supervisor the default stays "python"
        assert recorder.of(kind="command")[-1:] == [command]
