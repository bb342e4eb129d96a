"""Starting, running and ending agents: the Conductor's lifecycle contract."""

from __future__ import annotations

import asyncio
import threading

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match


async def test_start_returns_at_once_and_await_gives_the_result() -> None:
    release = asyncio.Event()
    async with cl.Conductor("lifecycle") as loop:

        @loop.agent
        async def slow(ctx: cl.Context, x: int) -> int:
            await release.wait()
            return x * 2

        run = loop.start("slow", 21)
        assert isinstance(run, cl.AgentRun)
        assert not run.done()
        assert run.name == "slow"
        assert run.agent_id.startswith("slow-")
        release.set()
        assert await run == 42
        assert run.done()
        assert run.state is cl.AgentState.DONE


def test_run_blocks_in_a_script_and_returns_the_result() -> None:
    with cl.Conductor("script") as loop:

        @loop.agent(model="gpt-4o-mini")
        async def double(ctx: cl.Context, x: int) -> int:
            ctx.status("doubling")
            return x * 2

        assert loop.run("double", 4) == 8
        run = loop.start(double, 5)
        assert run.result(timeout=10) == 10
        assert loop.agents()["state"].tolist() == ["done", "done"]


def test_result_timeout_raises_timeout_error_and_leaves_the_agent_running() -> None:
    release = threading.Event()
    with cl.Conductor("timeouts") as loop:

        @loop.agent
        def waits(ctx: cl.SyncContext) -> str:
            release.wait(10)
            return "late"

        run = loop.start("waits")
        with pytest.raises(TimeoutError):
            run.result(timeout=0.01)
        assert not run.done()
        release.set()
        assert run.result(timeout=10) == "late"


async def test_agent_decorator_forms_and_reregistering_replaces() -> None:
    async with cl.Conductor() as loop:

        @loop.agent
        async def bare(ctx: cl.Context) -> str:
            return "bare"

        @loop.agent()
        async def called(ctx: cl.Context) -> str:
            return "called"

        @loop.agent(name="renamed", model="gpt-4o-mini", budget_usd=1.0)
        async def original(ctx: cl.Context) -> str | None:
            return ctx.model

        assert bare.__name__ == "bare"  # the decorator returns the function itself
        assert await loop.start("bare") == "bare"
        assert await loop.start("called") == "called"
        assert await loop.start("renamed") == "gpt-4o-mini"

        @loop.agent(name="bare")
        async def bare_again(ctx: cl.Context) -> str:
            return "replaced"

        assert await loop.start("bare") == "replaced"


async def test_router_dispatches_a_task_to_the_agent_it_names() -> None:
    async with cl.Conductor() as loop:

        @loop.agent
        async def coder(ctx: cl.Context, task: dict[str, str]) -> str:
            return f"code for {task['text']}"

        @loop.agent
        async def researcher(ctx: cl.Context, task: dict[str, str]) -> str:
            return f"notes on {task['text']}"

        @loop.router
        def route(task: dict[str, str]) -> str:
            return "coder" if task["kind"] == "code" else "researcher"

        assert await loop.dispatch({"kind": "code", "text": "a parser"}) == "code for a parser"
        assert await loop.dispatch({"kind": "read", "text": "agents"}) == "notes on agents"


async def test_dispatch_without_a_router_or_to_an_unknown_agent_is_a_usage_error() -> None:
    async with cl.Conductor() as loop:
        with pytest.raises(cl.UsageError, match="no router"):
            loop.dispatch({"kind": "x"})

        @loop.router
        def route(task: object) -> str:
            return "nobody"

        with pytest.raises(cl.UsageError, match="no agent named 'nobody'"):
            loop.dispatch("task")


async def test_start_misuse_is_refused_before_anything_runs() -> None:
    async with cl.Conductor() as loop:

        @loop.agent
        async def needs_two(ctx: cl.Context, a: int, b: int) -> int:
            return a + b

        with pytest.raises(cl.UsageError, match="no agent named 'missing'"):
            loop.start("missing")
        with pytest.raises(cl.UsageError, match="cannot take these arguments"):
            loop.start("needs_two", 1)

        async def unregistered(ctx: cl.Context) -> None: ...

        with pytest.raises(cl.UsageError, match="not a registered agent"):
            loop.start(unregistered)
        assert loop.agents().empty


def test_registration_misuse_is_refused_with_what_to_do() -> None:
    loop = cl.Conductor()
    with pytest.raises(cl.UsageError, match="first parameter"):
        loop.agent(lambda: None)
    with pytest.raises(cl.UsageError, match="async generator"):

        @loop.agent
        async def gen(ctx: cl.Context):  # type: ignore[no-untyped-def]
            yield 1

    with pytest.raises(cl.UsageError, match="budget_usd"):
        loop.agent(budget_usd=-1)
    with pytest.raises(cl.UsageError, match="budget_usd"):
        cl.Conductor(budget_usd=0)
    with pytest.raises(cl.UsageError, match="stall_after"):
        cl.Conductor(stall_after=0)
    with pytest.raises(cl.UsageError, match="repeat_limit"):
        cl.Conductor(repeat_limit=1)
    with pytest.raises(cl.UsageError, match="hub"):
        cl.Conductor(hub="http://127.0.0.1:1")


async def test_an_exception_in_one_agent_leaves_the_others_running() -> None:
    release = asyncio.Event()
    async with cl.Conductor() as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def breaks(ctx: cl.Context) -> None:
            raise ValueError("bad input")

        @loop.agent
        async def steady(ctx: cl.Context, n: int) -> int:
            await release.wait()
            return n

        steady_runs = [loop.start("steady", n) for n in range(5)]
        broken = loop.start("breaks")
        with pytest.raises(ValueError, match="bad input"):
            await broken
        assert broken.state is cl.AgentState.FAILED
        error = await recorder.wait_for(match("agent.error", agent_id=broken.agent_id))
        assert error.data["type"] == "ValueError"
        assert "bad input" in error.data["message"]
        assert "in breaks" in error.data["traceback"]
        assert all(r.state is cl.AgentState.RUNNING for r in steady_runs)
        release.set()
        assert [await r for r in steady_runs] == [0, 1, 2, 3, 4]
        frame = loop.agents().set_index("agent_id")
        assert frame.loc[broken.agent_id, "error"] == "ValueError: bad input"


async def test_a_thousand_agents_run_at_once_and_all_finish() -> None:
    gate = asyncio.Event()
    async with cl.Conductor("crowd") as loop:

        @loop.agent(model="gpt-4o-mini")
        async def worker(ctx: cl.Context, n: int) -> int:
            ctx.status(f"item {n}")
            await gate.wait()
            ctx.usage(input_tokens=100, output_tokens=10, cost_usd=0.001)
            await ctx.checkpoint()
            return n

        runs = [loop.start("worker", n) for n in range(1000)]
        await asyncio.sleep(0)  # one turn: every agent reaches gate.wait()
        frame = loop.agents()
        assert len(frame) == 1000
        assert set(frame["state"]) == {"running"}
        gate.set()
        results = await asyncio.gather(*runs)
        assert results == list(range(1000))
        assert loop.spend()["cost_usd"].sum() == pytest.approx(1.0)
        assert set(loop.agents()["state"]) == {"done"}


async def test_agent_ids_are_unique_across_conductors() -> None:
    async with cl.Conductor("a") as first, cl.Conductor("a") as second:
        for loop in (first, second):

            @loop.agent
            async def same(ctx: cl.Context) -> str:
                return ctx.agent_id

        ids = {await first.start("same"), await second.start("same")}
        assert len(ids) == 2
        assert first.runtime != second.runtime


async def test_results_of_every_ending_are_what_await_gives() -> None:
    async with cl.Conductor() as loop:

        @loop.agent
        async def returns_none(ctx: cl.Context) -> None:
            return None

        @loop.agent
        async def stops_itself(ctx: cl.Context) -> None:
            loop.stop(ctx.agent_id)
            await ctx.checkpoint()

        assert await loop.start("returns_none") is None
        run = loop.start("stops_itself")
        with pytest.raises(cl.AgentStopped):
            await run
        assert run.state is cl.AgentState.STOPPED
        with pytest.raises(cl.AgentStopped):  # awaiting again gives the same ending
            await run


async def test_awaiting_a_run_from_another_loop_works() -> None:
    loop = cl.Conductor("other-loop")

    @loop.agent
    async def work(ctx: cl.Context) -> str:
        await ctx.checkpoint()
        return "from the other loop"

    # started from a thread with no running loop: the conductor runs its own loop thread
    run = await asyncio.to_thread(loop.start, "work")
    assert loop.core.host.owns_thread
    assert await run == "from the other loop"
    await loop.aclose()  # from this loop, without blocking it
    assert not loop.core.host.owns_thread


def test_closing_stops_running_agents_and_refuses_new_ones() -> None:
    loop = cl.Conductor("closing")
    recorder = EventRecorder()
    loop.attach(recorder)

    @loop.agent
    async def forever(ctx: cl.Context) -> None:
        while True:
            await ctx.checkpoint()
            await asyncio.Event().wait()

    run = loop.start("forever")
    recorder.wait_for_sync(match("agent.state", agent_id=run.agent_id, state="running"))
    loop.close()
    assert run.state is cl.AgentState.STOPPED
    with pytest.raises(cl.UsageError, match="closed"):
        loop.start("forever")
    loop.close()  # closing twice is fine
