"""The shipped test doubles: ScriptedLLM, ManualClock, EventRecorder. Loud on misuse, no sleep."""

from __future__ import annotations

import asyncio

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.core import Event
from conductloop_jupyter.testing import (
    EventRecorder,
    ManualClock,
    Reply,
    ScriptedLLM,
    ScriptError,
    match,
)


async def _yield(times: int = 5) -> None:
    """Let callbacks already scheduled on this loop run (never waits on time)."""
    for _ in range(times):
        await asyncio.sleep(0)


def _event(seq: int, kind: str = "log", agent_id: str | None = "a-1", /, **data: object) -> Event:
    return Event(seq, 1_767_225_600.0 + seq, "rt-1", agent_id, kind, data)  # type: ignore[arg-type]


# -- ScriptedLLM --------------------------------------------------------------------------------


async def test_scripted_llm_replies_in_order_and_its_usage_shows_in_spend() -> None:
    llm = ScriptedLLM(["Paris", Reply("42", input_tokens=900, output_tokens=50, model="gpt-4o")])
    async with cl.Conductor("script") as loop:

        @loop.agent
        async def quiz(ctx: cl.Context) -> list[str]:
            first = await llm.complete("Capital of France?", ctx)
            second = await llm.complete("The answer?", ctx)
            return [first.text, second.text]

        assert await loop.start("quiz") == ["Paris", "42"]
        by_agent = loop.spend()
        by_model = loop.spend(by="model").set_index("model")

    llm.verify()
    assert llm.remaining == 0
    assert llm.prompts == ["Capital of France?", "The answer?"]
    assert by_agent.loc[0, "input_tokens"] == 1000  # 100 (the default) + 900
    assert by_agent.loc[0, "output_tokens"] == 70
    assert by_agent.loc[0, "calls"] == 2
    assert by_agent.loc[0, "unpriced_calls"] == 0
    assert by_agent.loc[0, "cost_usd"] > 0
    assert by_model.loc["gpt-4o-mini", "input_tokens"] == 100  # the LLM's default model
    assert by_model.loc["gpt-4o", "input_tokens"] == 900


async def test_a_scripted_reply_without_a_context_records_nothing() -> None:
    llm = ScriptedLLM(["plain"])
    reply = await llm.complete("no agent here")
    assert reply == Reply("plain")
    llm.verify()


async def test_asking_past_the_script_raises_a_script_error_naming_the_prompt() -> None:
    llm = ScriptedLLM(["only one"])
    assert (await llm.complete("first")).text == "only one"
    with pytest.raises(ScriptError, match="no reply left for prompt 2: 'one too many'"):
        await llm.complete("one too many")
    assert issubclass(ScriptError, AssertionError)
    with pytest.raises(ScriptError, match="one too many"):
        llm.verify()  # the misuse is remembered


def test_verify_lists_the_replies_that_were_never_used() -> None:
    llm = ScriptedLLM(["used", "spare", Reply("also spare")])
    llm.complete_sync("hello")
    assert llm.remaining == 2
    with pytest.raises(ScriptError, match=r"2 scripted replies were never used: \['spare', 'also"):
        llm.verify()


def test_leaving_a_scripted_block_with_replies_left_raises() -> None:
    with pytest.raises(ScriptError, match="never used"), ScriptedLLM(["used", "left over"]) as llm:
        llm.complete_sync("hi")


def test_leaving_a_scripted_block_by_an_error_keeps_that_error() -> None:
    with pytest.raises(KeyError, match="the real problem"), ScriptedLLM(["never used"]):
        raise KeyError("the real problem")


def test_leaving_a_fully_used_scripted_block_passes() -> None:
    with ScriptedLLM(["a", "b"]) as llm:
        assert llm.complete_sync("1").text == "a"
        assert llm.complete_sync("2").text == "b"
    assert llm.prompts == ["1", "2"]


def test_an_ordered_script_refuses_a_prompt_its_next_reply_does_not_expect() -> None:
    llm = ScriptedLLM([Reply("yes", expect="approve"), "next"])
    with pytest.raises(ScriptError, match="reply 1 expects a prompt containing 'approve'"):
        llm.complete_sync("reject this")
    with pytest.raises(ScriptError, match="reject this"):
        llm.verify()


@pytest.mark.parametrize("ordered", [False, True])
async def test_an_unordered_script_matches_parallel_agents_by_expect_in_any_order(
    ordered: bool,
) -> None:
    # "pears" always asks first although the script lists "apples" first.
    pears_asked = asyncio.Event()
    llm = ScriptedLLM(
        [Reply("red", expect="apples"), Reply("green", expect="pears")], ordered=ordered
    )
    async with cl.Conductor("fruit") as loop:

        @loop.agent
        async def fruit(ctx: cl.Context, kind: str) -> str:
            if kind == "apples":
                await pears_asked.wait()
            reply = await llm.complete(f"What colour are {kind}?", ctx)
            if kind == "pears":
                pears_asked.set()
            return reply.text

        @loop.agent
        async def basket(ctx: cl.Context) -> list[str]:
            return await ctx.parallel([("fruit", "apples"), ("fruit", "pears")])

        run = loop.start("basket")
        if ordered:
            with pytest.raises(cl.AgentFailed):
                await run
        else:
            assert await run == ["red", "green"]

    if ordered:
        with pytest.raises(ScriptError, match="expects a prompt containing 'apples'"):
            llm.verify()
    else:
        llm.verify()
        assert llm.prompts == ["What colour are pears?", "What colour are apples?"]


def test_an_unordered_script_refuses_a_prompt_no_reply_expects() -> None:
    llm = ScriptedLLM([Reply("x", expect="apples")], ordered=False)
    with pytest.raises(ScriptError, match="'bananas'"):
        llm.complete_sync("bananas")
    assert llm.remaining == 1


def test_complete_sync_serves_a_plain_def_agent_and_records_its_usage() -> None:
    llm = ScriptedLLM([Reply("short", input_tokens=30, output_tokens=7)])
    with cl.Conductor("sync") as loop:

        @loop.agent
        def summarize(ctx: cl.SyncContext, text: str) -> str:
            return llm.complete_sync(f"Summarize: {text}", ctx).text

        assert loop.run("summarize", "a long text") == "short"
        spend = loop.spend()
    llm.verify()
    assert llm.prompts == ["Summarize: a long text"]
    assert spend.loc[0, "input_tokens"] == 30
    assert spend.loc[0, "output_tokens"] == 7
    assert spend.loc[0, "calls"] == 1


async def test_verify_reraises_a_script_failure_the_agent_swallowed() -> None:
    llm = ScriptedLLM([Reply("ok", expect="hello")])
    async with cl.Conductor("swallow") as loop:

        @loop.agent
        async def careless(ctx: cl.Context) -> str:
            try:
                await llm.complete("goodbye", ctx)
            except Exception:  # the agent hides the failure...
                return "swallowed"
            return "answered"

        assert await loop.start("careless") == "swallowed"
    with pytest.raises(ScriptError, match="'goodbye'"):  # ...the test still sees it
        llm.verify()


# -- ManualClock --------------------------------------------------------------------------------


def test_manual_clock_now_and_wall_move_together_and_only_when_advanced() -> None:
    clock = ManualClock(start=50.0, wall_start=1_767_225_600.0)
    assert clock.now() == 50.0
    assert clock.wall() == 1_767_225_600.0
    assert clock.now() == 50.0  # reading it does not move it
    clock.advance(2.5)
    assert clock.now() == 52.5
    assert clock.wall() == 1_767_225_602.5
    clock.advance(0)
    assert clock.wall() - clock.now() == 1_767_225_550.0


async def test_manual_clock_sleep_ends_only_once_advanced_past_its_deadline() -> None:
    clock = ManualClock()
    sleeper = asyncio.create_task(clock.sleep(10))
    await _yield()
    assert not sleeper.done()
    clock.advance(9.5)
    await _yield()
    assert not sleeper.done()
    clock.advance(0.5)
    await _yield()
    assert sleeper.done()
    assert sleeper.result() is None


async def test_manual_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = ManualClock()
    woke: list[float] = []

    async def nap(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(seconds)

    naps = [asyncio.create_task(nap(s)) for s in (3, 1, 2)]
    await _yield()
    clock.advance(2)
    await _yield()
    assert woke == [1, 2]
    clock.advance(1)
    await asyncio.gather(*naps)
    assert woke == [1, 2, 3]


async def test_manual_clock_can_be_advanced_from_another_thread() -> None:
    clock = ManualClock()
    sleeper = asyncio.create_task(clock.sleep(5))
    await _yield()
    await asyncio.to_thread(clock.advance, 5)
    await asyncio.wait_for(sleeper, timeout=10)
    assert clock.now() == 1_005.0


async def test_manual_clock_sleepers_returns_once_that_many_sleeps_wait() -> None:
    clock = ManualClock()
    two = asyncio.create_task(clock.sleepers(2))
    first = asyncio.create_task(clock.sleep(1))
    await _yield()
    assert not two.done()  # one sleep is waiting, not two
    second = asyncio.create_task(clock.sleep(1))
    await asyncio.wait_for(two, timeout=10)
    await asyncio.wait_for(clock.sleepers(2), timeout=10)  # already true: at once
    clock.advance(1)
    await asyncio.gather(first, second)


async def test_a_conductor_on_a_manual_clock_stamps_events_with_its_time() -> None:
    clock = ManualClock(wall_start=1_767_225_600.0)
    async with cl.Conductor(clock=clock) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def ticking(ctx: cl.Context) -> None:
            ctx.status("before")
            clock.advance(7)
            ctx.status("after")

        await loop.start("ticking")
    before = recorder.of(kind="agent.status")[0]
    after = recorder.of(kind="agent.status")[1]
    assert before.ts == 1_767_225_600.0
    assert after.ts == 1_767_225_607.0


# -- EventRecorder and match --------------------------------------------------------------------


async def test_wait_for_returns_an_event_already_recorded_at_once() -> None:
    recorder = EventRecorder()
    past = _event(1, "agent.status", text="busy")
    recorder.emit(past)
    assert await recorder.wait_for(match("agent.status")) is past
    assert recorder.wait_for_sync(match("agent.status")) is past


async def test_wait_for_returns_a_future_event_when_it_arrives() -> None:
    recorder = EventRecorder()
    waiting = asyncio.create_task(recorder.wait_for(match("agent.result")))
    await _yield()
    recorder.emit(_event(1, "log", level="info", message="not yet"))
    await _yield()
    assert not waiting.done()
    wanted = _event(2, "agent.result", result="42")
    recorder.emit(wanted)
    assert await waiting is wanted


async def test_wait_for_since_skips_events_recorded_before_that_index() -> None:
    recorder = EventRecorder()
    recorder.emit(_event(1, "agent.status", text="old"))
    waiting = asyncio.create_task(
        recorder.wait_for(match("agent.status"), since=len(recorder.events))
    )
    await _yield()
    assert not waiting.done()
    newer = _event(2, "agent.status", text="new")
    recorder.emit(newer)
    assert await waiting is newer


async def test_wait_for_raises_timeout_error_when_nothing_matches() -> None:
    recorder = EventRecorder()
    recorder.emit(_event(1, "log", level="info", message="unrelated"))
    with pytest.raises(TimeoutError, match="no matching event"):
        await recorder.wait_for(match("agent.error"), timeout=0.05)
    late = _event(2, "agent.error", type="E", message="m", traceback="")
    recorder.emit(late)  # a waiter that gave up is gone: emitting still works
    assert await recorder.wait_for(match("agent.error")) is late


def test_wait_for_sync_raises_timeout_error_when_nothing_matches() -> None:
    recorder = EventRecorder()
    with pytest.raises(TimeoutError, match="no matching event"):
        recorder.wait_for_sync(match("agent.error"), timeout=0.05)


def test_wait_for_sync_sees_events_a_conductor_emits_on_its_own_thread() -> None:
    with cl.Conductor("threads") as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def asks(ctx: cl.Context) -> str | None:
            return await ctx.ask("Which one?", choices=["left", "right"])

        run = loop.start("asks")
        opened = recorder.wait_for_sync(match("request.opened", kind="question"))
        assert opened.agent_id == run.agent_id
        assert loop.answer(opened.data["request_id"], "right")
        assert run.result(timeout=10) == "right"
        decided = recorder.wait_for_sync(match("request.decided", decision="answered"))
        assert decided.data["text"] == "right"


def test_match_checks_kind_agent_and_every_data_field_given() -> None:
    event = _event(3, "request.opened", "a-1", kind="question", prompt="Which?")
    assert match()(event)
    assert match("request.opened")(event)
    assert not match("request.decided")(event)
    assert match(agent_id="a-1")(event)
    assert not match(agent_id="a-2")(event)
    # after the positional kind, kind= is a data field (a request's own kind)
    assert match("request.opened", kind="question")(event)
    assert not match("request.opened", kind="approval")(event)
    assert match("request.opened", "a-1", kind="question", prompt="Which?")(event)
    assert not match("request.opened", kind="question", prompt="Other?")(event)
    assert not match(missing="x")(event)


def test_recorder_of_filters_by_agent_and_kind() -> None:
    recorder = EventRecorder()
    events = [
        _event(1, "log", "a-1", level="info", message="m"),
        _event(2, "agent.status", "a-1", text="t"),
        _event(3, "log", "a-2", level="info", message="m"),
        _event(4, "log", None, level="warning", message="conductor"),
    ]
    for event in events:
        recorder.emit(event)
    assert recorder.of() == events
    assert recorder.of(agent_id="a-1") == events[:2]
    assert recorder.of(kind="log") == [events[0], events[2], events[3]]
    assert recorder.of(agent_id="a-2", kind="log") == [events[2]]
