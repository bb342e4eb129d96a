"""Steering from any thread (decisions race to exactly one winner), and the hub's command seam."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match
from tests.unit._steering_support import conductor, opened

# -- steering from any thread, and the hub's command seam --------------------------------


def test_concurrent_decisions_from_many_threads_decide_exactly_once() -> None:
    with cl.Conductor("race") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return (await ctx.approve("Go?")).approved

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
        assert len(wins) == 16  # every thread decided: none hung at the barrier
        winners = [who for who, won in wins if won]
        assert len(winners) == 1
        assert loop.request(request_id).decided_by == winners[0]
        assert run.result(timeout=10) is (int(winners[0][1:]) % 2 == 1)


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
