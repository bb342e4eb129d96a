"""Plain `def` agents: they run in a worker thread and get a SyncContext whose gates block."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match


def recorded(loop: cl.Conductor) -> EventRecorder:
    recorder = EventRecorder()
    loop.attach(recorder)
    return recorder


def wait_for_many_sync(
    recorder: EventRecorder, predicate: Callable[[cl.Event], bool], count: int
) -> list[cl.Event]:
    """The first ``count`` recorded events that match ``predicate``, blocking for them."""
    found: list[cl.Event] = []
    since = 0
    while len(found) < count:
        event = recorder.wait_for_sync(predicate, since=since)
        found.append(event)
        since = next(i for i, e in enumerate(recorder.events) if e is event) + 1
    return found


class CustomError(Exception):
    pass


# -- running and results -----------------------------------------------------------------


def test_sync_agent_runs_in_a_worker_thread_with_a_sync_context_and_result_returns() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        seen: list[tuple[str, bool]] = []

        @loop.agent
        def counter(ctx: cl.SyncContext, text: str) -> int:
            seen.append((threading.current_thread().name, isinstance(ctx, cl.SyncContext)))
            ctx.status("counting")
            return len(text)

        run = loop.start("counter", "hello")
        assert run.result(timeout=10) == 5
        assert run.done()
        assert run.state is cl.AgentState.DONE
        [(thread_name, is_sync_context)] = seen
        assert thread_name.startswith("conductloop-agent")
        assert is_sync_context


def test_result_with_a_timeout_raises_timeout_error_while_the_agent_still_runs() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        release = threading.Event()

        @loop.agent
        def slow(ctx: cl.SyncContext) -> str:
            release.wait(timeout=10)
            return "finally"

        run = loop.start("slow")
        try:
            with pytest.raises(TimeoutError):
                run.result(timeout=0.01)
            assert not run.done()
        finally:
            release.set()
        assert run.result(timeout=10) == "finally"


def test_loop_run_blocks_until_the_agent_ends_and_returns_its_result() -> None:
    with cl.Conductor("script", hub=False) as loop:

        @loop.agent
        def shout(ctx: cl.SyncContext, text: str) -> str:
            with ctx.tool("upper", text=text):
                return text.upper()

        assert loop.run("shout", "done at once") == "DONE AT ONCE"
        assert loop.agents()["state"].tolist() == ["done"]


def test_sync_agent_that_raises_ends_failed_and_result_reraises_the_same_exception() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        recorder = recorded(loop)

        @loop.agent
        def broken(ctx: cl.SyncContext) -> None:
            raise CustomError("the tool returned garbage")

        run = loop.start("broken")
        with pytest.raises(CustomError, match="the tool returned garbage"):
            run.result(timeout=10)
        assert run.state is cl.AgentState.FAILED
        [error] = recorder.of(run.agent_id, "agent.error")
        assert error.data["type"] == "CustomError"
        assert loop.agents()["state"].tolist() == ["failed"]


# -- gates block the worker thread -------------------------------------------------------


def test_approve_blocks_the_worker_thread_until_decided_from_the_test_thread() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        recorder = recorded(loop)
        after: list[bool] = []

        @loop.agent
        def mailer(ctx: cl.SyncContext) -> str:
            ok = ctx.approve("Email 40 people?", details={"to": "list"}).approved
            after.append(ok)
            return "sent" if ok else "held"

        run = loop.start("mailer")
        opened = recorder.wait_for_sync(match("request.opened", agent_id=run.agent_id))
        assert after == []  # the agent is still inside approve
        assert run.state is cl.AgentState.WAITING
        [request] = loop.pending()
        assert (request.id, request.kind, request.details) == (
            opened.data["request_id"],
            "approval",
            {"to": "list"},
        )

        assert loop.approve(request.id) is True
        assert run.result(timeout=10) == "sent"
        assert after == [True]


def test_ask_blocks_the_worker_thread_until_answered_and_returns_the_answer() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        recorder = recorded(loop)

        @loop.agent
        def chooser(ctx: cl.SyncContext) -> str | None:
            return ctx.ask("Which dataset?", choices=["a", "b"])

        run = loop.start("chooser")
        opened = recorder.wait_for_sync(match("request.opened", agent_id=run.agent_id))
        assert opened.data["choices"] == ["a", "b"]
        assert not run.done()
        assert loop.answer(opened.data["request_id"], "b") is True
        assert run.result(timeout=10) == "b"


def test_with_tool_in_a_sync_agent_records_tool_started_and_finished() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        recorder = recorded(loop)

        @loop.agent
        def searcher(ctx: cl.SyncContext, query: str) -> str:
            with ctx.tool("search", query=query):
                hits = f"hits for {query}"
            return hits

        run = loop.start("searcher", "agents")
        assert run.result(timeout=10) == "hits for agents"
        [started] = recorder.of(run.agent_id, "tool.started")
        [finished] = recorder.of(run.agent_id, "tool.finished")
        assert started.data["tool"] == "search"
        assert started.data["args"] == {"query": "agents"}
        assert finished.data["tool"] == "search"
        assert finished.data["ok"] is True
        assert finished.data["span"] == started.data["span"]
        assert started.seq < finished.seq


def test_async_with_tool_in_a_sync_agent_raises_usage_error() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        recorder = recorded(loop)

        @loop.agent
        def confused(ctx: cl.SyncContext) -> None:
            async def use_tool() -> None:
                async with ctx.tool("search"):
                    pass

            asyncio.run(use_tool())

        run = loop.start("confused")
        with pytest.raises(cl.UsageError, match="not `async with`"):
            run.result(timeout=10)
        assert run.state is cl.AgentState.FAILED
        assert recorder.of(run.agent_id, "tool.started") == []


def test_checkpoint_in_a_sync_agent_returns_redirect_texts_exactly_once_in_order() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        redirected = threading.Event()

        @loop.agent
        def worker(ctx: cl.SyncContext) -> tuple[list[str], list[str]]:
            redirected.wait(timeout=10)
            return ctx.checkpoint(), ctx.checkpoint()

        run = loop.start("worker")
        try:
            loop.redirect(run.agent_id, "focus on 2025 papers")
            loop.redirect(run.agent_id, "be brief")
        finally:
            redirected.set()
        assert run.result(timeout=10) == (["focus on 2025 papers", "be brief"], [])


# -- stopping ----------------------------------------------------------------------------


def test_stopping_a_sync_agent_blocked_in_approve_ends_it_stopped_and_withdraws_the_request() -> (
    None
):
    with cl.Conductor("sync", hub=False) as loop:
        recorder = recorded(loop)
        after: list[bool] = []

        @loop.agent
        def mailer(ctx: cl.SyncContext) -> None:
            after.append(ctx.approve("Deploy?"))

        run = loop.start("mailer")
        opened = recorder.wait_for_sync(match("request.opened", agent_id=run.agent_id))
        loop.stop(run.agent_id)

        with pytest.raises(cl.AgentStopped):
            run.result(timeout=10)
        assert run.state is cl.AgentState.STOPPED
        assert after == []  # approve never returned
        assert loop.pending() == []
        assert loop.request(opened.data["request_id"]).decision == "withdrawn"


def test_stop_of_a_sync_agent_busy_in_its_own_code_is_delivered_at_its_next_checkpoint() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        entered = threading.Event()
        release = threading.Event()
        progress: list[str] = []

        @loop.agent
        def busy(ctx: cl.SyncContext) -> str:
            entered.set()
            release.wait(timeout=10)  # its own work: ConductLoop cannot interrupt a thread
            progress.append("own work finished")
            ctx.checkpoint()
            progress.append("past the checkpoint")
            return "not stopped"

        run = loop.start("busy")
        try:
            assert entered.wait(timeout=10)
            loop.stop(run.agent_id)
            assert not run.done()  # the stop waits for the agent's next gate
            assert run.state is cl.AgentState.RUNNING
        finally:
            release.set()

        with pytest.raises(cl.AgentStopped):
            run.result(timeout=10)
        assert run.state is cl.AgentState.STOPPED
        assert progress == ["own work finished"]


# -- fan-out and mixing with async agents ------------------------------------------------


def test_sync_agent_fans_out_to_async_children_and_hands_off_to_an_async_agent() -> None:
    with cl.Conductor("sync", hub=False) as loop:
        recorder = recorded(loop)

        @loop.agent
        async def double(ctx: cl.Context, x: int) -> int:
            await ctx.checkpoint()
            return x * 2

        @loop.agent
        async def writer(ctx: cl.Context, parts: list[int], *, sep: str) -> str:
            return sep.join(str(p) for p in parts)

        @loop.agent
        def boss(ctx: cl.SyncContext, xs: list[int]) -> str:
            parts = ctx.parallel([("double", x) for x in xs], limit=2)
            return ctx.handoff("writer", parts, sep="+")

        run = loop.start("boss", [3, 1, 2])
        assert run.result(timeout=10) == "6+2+4"
        frame = loop.agents()
        children = frame[frame["name"] != "boss"]
        assert sorted(children["name"]) == ["double", "double", "double", "writer"]
        assert set(children["parent"]) == {run.agent_id}
        assert set(children["state"]) == {"done"}
        [handoff] = recorder.of(run.agent_id, "handoff")
        assert handoff.data["name"] == "writer"


def test_twenty_sync_and_twenty_async_agents_at_once_all_complete() -> None:
    with cl.Conductor("mixed", hub=False) as loop:
        recorder = recorded(loop)
        go = threading.Event()

        @loop.agent
        def sync_worker(ctx: cl.SyncContext, i: int) -> tuple[str, int]:
            with ctx.tool("step", i=i):
                go.wait(timeout=10)
            ctx.checkpoint()
            return "sync", i

        @loop.agent
        async def async_worker(ctx: cl.Context, i: int) -> tuple[str, int]:
            async with ctx.tool("step", i=i):
                await asyncio.sleep(0)
            await ctx.checkpoint()
            return "async", i

        runs = [loop.start("sync_worker", i) for i in range(20)]
        runs += [loop.start("async_worker", i) for i in range(20)]
        try:
            # every agent got going while the sync ones all held a worker thread at once
            wait_for_many_sync(recorder, match("agent.state", state="running"), 40)
        finally:
            go.set()

        results = [run.result(timeout=10) for run in runs]
        assert results == [("sync", i) for i in range(20)] + [("async", i) for i in range(20)]
        assert loop.agents()["state"].tolist() == ["done"] * 40


# -- blocking calls from the loop's own thread -------------------------------------------


async def test_run_result_on_the_loop_thread_raises_usage_error_telling_to_await_run() -> None:
    async with cl.Conductor("nb", hub=False) as loop:

        @loop.agent
        async def quick(ctx: cl.Context) -> str:
            await ctx.checkpoint()
            return "ok"

        run = loop.start("quick")
        with pytest.raises(cl.UsageError, match="await run"):
            run.result(timeout=1)
        assert await run == "ok"


async def test_loop_run_inside_a_running_event_loop_raises_usage_error_and_starts_nothing() -> None:
    async with cl.Conductor("nb", hub=False) as loop:

        @loop.agent
        async def quick(ctx: cl.Context) -> str:
            return "ok"

        with pytest.raises(cl.UsageError, match=r"await loop\.start"):
            loop.run("quick")
        assert len(loop.agents()) == 0
        assert await loop.start("quick") == "ok"
