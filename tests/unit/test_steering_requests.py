"""Steering requests: approve, reject, answer, and what misuse or an ending agent does."""

from __future__ import annotations

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import match
from tests.unit._steering_support import conductor, opened

# -- requests ----------------------------------------------------------------------------


async def test_approve_resumes_the_agent_with_true_and_reject_with_false() -> None:
    async with conductor() as (loop, recorder):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return (await ctx.approve("Email 40 people?", details={"to": "list"})).approved

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
            return (await ctx.approve("Deploy?")).approved

        run = loop.start("asks")
        request_id = await opened(recorder, run)
        assert loop.approve(request_id, by="phone") is True
        assert loop.reject(request_id, by="notebook") is False
        assert loop.approve(request_id, by="jupyterlab") is False
        assert loop.request(request_id).decided_by == "phone"
        assert await run is True
        decisions = recorder.of(kind="request.decided")
        assert len(decisions) == 1


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
            return (await ctx.approve("Go?")).approved

        run = loop.start("asks")
        request_id = await opened(recorder, run)
        loop.stop(run.agent_id)
        with pytest.raises(cl.AgentStopped):
            await run
        assert loop.request(request_id).decision == "withdrawn"
        assert loop.pending() == []
        assert loop.approve(request_id) is False  # decided already: nobody waits on it
