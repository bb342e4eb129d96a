"""``cl.current_context()``: how an instrumented client finds the agent it runs for."""

from __future__ import annotations

import asyncio
import threading

import conductloop_jupyter as cl
from tests.unit._steering_support import conductor


def test_current_context_is_none_outside_any_agent() -> None:
    assert cl.current_context() is None


async def test_current_context_is_none_in_a_task_of_the_loop_that_no_agent_started() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def quick(ctx: cl.Context) -> bool:
            return cl.current_context() is ctx

        assert await loop.start("quick") is True
        assert cl.current_context() is None  # the test's own task is not the agent's

        async def read() -> cl.Context | cl.SyncContext | None:
            return cl.current_context()

        assert await asyncio.create_task(read()) is None


async def test_current_context_is_the_agents_in_its_task_and_in_tasks_it_starts() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def framework(ctx: cl.Context) -> dict[str, bool]:
            async def found() -> cl.Context | cl.SyncContext | None:
                await asyncio.sleep(0)
                return cl.current_context()

            created = await asyncio.create_task(found())
            gathered = await asyncio.gather(found(), found())
            async with asyncio.TaskGroup() as group:
                grouped = group.create_task(found())
            return {
                "task": cl.current_context() is ctx,
                "create_task": created is ctx,
                "gather": all(c is ctx for c in gathered),
                "task_group": grouped.result() is ctx,
            }

        assert await loop.start("framework") == dict.fromkeys(
            ("task", "create_task", "gather", "task_group"), True
        )


async def test_concurrent_agents_each_find_their_own_context() -> None:
    async with conductor() as (loop, _):
        release = asyncio.Event()

        @loop.agent
        async def worker(ctx: cl.Context, n: int) -> tuple[int, bool]:
            await release.wait()  # all of them are running at once
            await asyncio.sleep(0)
            return n, cl.current_context() is ctx

        runs = [loop.start("worker", n) for n in range(5)]
        release.set()
        assert [await run for run in runs] == [(n, True) for n in range(5)]


def test_current_context_in_a_plain_def_agents_thread_is_its_sync_context() -> None:
    with cl.Conductor("sync-current") as loop:
        threads: list[int] = []

        @loop.agent
        def worker(ctx: cl.SyncContext) -> bool:
            threads.append(threading.get_ident())
            found = cl.current_context()
            ctx.checkpoint()  # a gate runs on the loop thread and does not change it
            return isinstance(found, cl.SyncContext) and found is ctx is cl.current_context()

        first = loop.start("worker")
        assert first.result(timeout=10) is True
        second = loop.start("worker")  # a worker thread used again finds the new agent's
        assert second.result(timeout=10) is True
        assert threading.get_ident() not in threads
        assert cl.current_context() is None


async def test_current_context_is_restored_after_a_subagent_block_even_one_that_raised() -> None:
    async with conductor() as (loop, _):

        @loop.agent
        async def parent(ctx: cl.Context) -> list[bool]:
            seen = []
            async with ctx.subagent("writer") as sub:
                seen.append(cl.current_context() is sub)
            seen.append(cl.current_context() is ctx)
            try:
                async with ctx.subagent("editor") as sub:
                    seen.append(cl.current_context() is sub)
                    raise KeyError("lost")
            except KeyError:
                seen.append(cl.current_context() is ctx)
            return seen

        assert await loop.start("parent") == [True, True, True, True]


async def test_an_instrumented_client_records_usage_on_the_agent_it_runs_for() -> None:
    async with conductor() as (loop, recorder):

        async def instrumented_llm_call(prompt: str) -> str:
            """What an instrumented SDK client does: find its agent, record its usage."""
            ctx = cl.current_context()
            if ctx is not None:
                ctx.usage("gpt-4o-mini", input_tokens=len(prompt), output_tokens=2)
            return "ok"

        @loop.agent
        async def researcher(ctx: cl.Context) -> str:
            async with ctx.subagent("writer"):
                await instrumented_llm_call("in the subagent")
            return await instrumented_llm_call("in the agent")

        run = loop.start("researcher")
        assert await run == "ok"
        assert await instrumented_llm_call("outside") == "ok"  # no agent: nothing recorded
        by_agent = {
            e.agent_id: e.data["input_tokens"] for e in recorder.events if e.kind == "usage"
        }
        sub_id = next(
            e.agent_id for e in recorder.of(kind="agent.started") if e.data["name"] == "writer"
        )
        assert by_agent == {sub_id: len("in the subagent"), run.agent_id: len("in the agent")}
