"""Events: the one immutable record of everything, and the wire schema it travels in."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import pickle
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import conductloop_jupyter as cl
from conductloop_jupyter.core import KINDS, SCHEMA_VERSION, Event
from conductloop_jupyter.core.events import clip, jsonable, summarize
from conductloop_jupyter.testing import EventRecorder, match

DESIGN_KINDS = (
    "agent.started",
    "agent.state",
    "agent.status",
    "log",
    "tool.started",
    "tool.finished",
    "usage",
    "request.opened",
    "request.decided",
    "instruction",
    "handoff",
    "agent.result",
    "agent.error",
)

VALID_WIRE: dict[str, Any] = {
    "v": SCHEMA_VERSION,
    "seq": 7,
    "ts": 1_767_225_600.5,
    "runtime": "research-abc123",
    "agent_id": "researcher-1-abc123",
    "kind": "agent.status",
    "data": {"text": "searching"},
}


def _event(**changes: Any) -> Event:
    fields = {k: v for k, v in VALID_WIRE.items() if k != "v"}
    fields.update(changes)
    return Event(**fields)


# -- the record itself --------------------------------------------------------------------


def test_event_is_frozen_so_assigning_a_field_raises() -> None:
    event = _event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.seq = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind = "log"  # type: ignore[misc]
    assert event.seq == 7
    assert event.kind == "agent.status"


def test_an_event_copied_or_pickled_is_an_equal_frozen_event() -> None:
    event = _event(data={"text": "searching", "n": [1, 2]})
    for again in (copy.copy(event), copy.deepcopy(event), pickle.loads(pickle.dumps(event))):
        assert type(again) is Event
        assert again == event
        with pytest.raises(dataclasses.FrozenInstanceError):
            again.seq = 8  # type: ignore[misc]
    assert dataclasses.replace(event, seq=9).seq == 9
    assert not hasattr(event, "__dict__")  # slots only, as many are kept in memory


def test_a_subclass_of_event_is_built_with_its_own_layout_and_stays_frozen() -> None:
    class Tagged(Event):
        pass

    event = Tagged(1, 2.0, "rt", None, "log", {"level": "info", "message": "hi"})
    assert type(event) is Tagged
    assert (event.seq, event.kind, event.data["message"]) == (1, "log", "hi")
    assert type(copy.copy(event)) is Tagged
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind = "agent.status"  # type: ignore[misc]


def test_to_wire_then_from_wire_gives_back_an_equal_event() -> None:
    event = _event(agent_id=None, kind="log", data={"level": "info", "message": "hi"})
    wire = event.to_wire()
    assert wire["v"] == SCHEMA_VERSION
    assert set(wire) == {"v", "seq", "ts", "runtime", "agent_id", "kind", "data"}
    assert Event.from_wire(wire) == event
    assert Event.from_wire(json.loads(json.dumps(wire))) == event


def test_from_wire_accepts_an_integer_timestamp_and_a_missing_version() -> None:
    raw = {k: v for k, v in VALID_WIRE.items() if k != "v"}
    raw["ts"] = 1_767_225_600
    event = Event.from_wire(raw)
    assert event.ts == 1_767_225_600.0
    assert isinstance(event.ts, float)


def test_kinds_start_with_the_design_kinds_in_their_contract_order() -> None:
    assert KINDS[: len(DESIGN_KINDS)] == DESIGN_KINDS
    assert {"agent.stalled", "command"} <= set(KINDS[len(DESIGN_KINDS) :])
    assert len(set(KINDS)) == len(KINDS)


# -- rejecting bad wire input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 0),
        ("seq", -3),
        ("seq", True),
        ("seq", "1"),
        ("seq", 1.0),
        ("seq", None),
        ("ts", math.nan),
        ("ts", math.inf),
        ("ts", -math.inf),
        ("ts", "1767225600"),
        ("ts", False),
        # JSON carries integers of any size: json.loads("1" + "0" * 400) is an int
        pytest.param("ts", 10**400, id="ts-int-too-large-for-a-float"),
        ("runtime", ""),
        ("runtime", None),
        ("runtime", 12),
        ("agent_id", 5),
        ("agent_id", ["a"]),
        ("kind", "Agent Exploded!"),  # a kind it does not know is kept: see test_payloads
        ("kind", None),
        ("kind", ["log"]),
        ("data", ["not", "an", "object"]),
        ("data", "text"),
        ("data", None),
    ],
)
def test_from_wire_rejects_a_bad_field_with_a_value_error_naming_it(
    field: str, value: object
) -> None:
    raw = {**VALID_WIRE, field: value}
    with pytest.raises(ValueError, match=f"'{field}'"):
        Event.from_wire(raw)


@pytest.mark.parametrize("version", [0, 2, "1", None, True])
def test_from_wire_rejects_another_schema_version(version: object) -> None:
    with pytest.raises(ValueError, match="version"):
        Event.from_wire({**VALID_WIRE, "v": version})


@pytest.mark.parametrize("raw", [[VALID_WIRE], "event", 7, None])
def test_from_wire_rejects_input_that_is_not_an_object(raw: Any) -> None:
    with pytest.raises(ValueError, match="object"):
        Event.from_wire(raw)


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
_field_names = st.sampled_from(["v", "seq", "ts", "runtime", "agent_id", "kind", "data"])
_near_valid = st.fixed_dictionaries(
    {
        "seq": st.integers() | _json_values,
        "ts": st.integers() | st.floats() | _json_values,
        "runtime": st.text(max_size=8) | _json_values,
        "agent_id": st.none() | st.text(max_size=8) | _json_values,
        "kind": st.sampled_from(KINDS) | _json_values,
        "data": st.dictionaries(st.text(max_size=6), _json_values, max_size=4) | _json_values,
    },
    optional={"v": st.just(SCHEMA_VERSION) | _json_values},
)
_wire_like = (
    _near_valid | st.dictionaries(_field_names | st.text(max_size=6), _json_values) | _json_values
)


@settings(database=None, max_examples=400)
@given(_wire_like)
@example({**VALID_WIRE, "ts": 10**400})
def test_from_wire_on_arbitrary_json_returns_an_event_or_raises_value_error(raw: Any) -> None:
    try:
        event = Event.from_wire(raw)
    except ValueError:
        return
    assert isinstance(event, Event)
    assert isinstance(event.seq, int)
    assert not isinstance(event.seq, bool)
    assert event.seq >= 1
    assert isinstance(event.ts, float)
    assert math.isfinite(event.ts)
    assert isinstance(event.runtime, str)
    assert event.runtime
    assert event.agent_id is None or isinstance(event.agent_id, str)
    assert event.kind in KINDS
    assert Event.from_wire(event.to_wire()) == event


# -- making values safe for the wire ------------------------------------------------------


def test_jsonable_keeps_json_types_as_they_are() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": False}, "n": -3}
    assert jsonable(value) == value
    assert jsonable("text") == "text"
    assert jsonable(None) is None
    assert jsonable(True) is True


def test_jsonable_turns_other_values_into_their_clipped_repr() -> None:
    class Huge:
        def __repr__(self) -> str:
            return "H" * 5000

    when = datetime.date(2025, 1, 2)
    converted = jsonable({"when": when, "raw": b"bytes", "tags": {"a"}, "huge": Huge()})
    assert converted["when"] == repr(when)
    assert converted["raw"] == repr(b"bytes")
    assert converted["tags"] == "{'a'}"
    assert converted["huge"].startswith("HHHH")
    assert len(converted["huge"]) <= 200
    assert "more]" in converted["huge"]
    assert jsonable((1, "two")) == [1, "two"]
    assert jsonable({1: "x", None: "y"}) == {"1": "x", "None": "y"}


def test_jsonable_replaces_nan_and_infinity_which_json_cannot_carry() -> None:
    converted = jsonable({"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "ok": 1.5})
    assert converted == {"nan": "nan", "inf": "inf", "ninf": "-inf", "ok": 1.5}
    json.dumps(converted, allow_nan=False)


def test_jsonable_bounds_deep_long_and_cyclic_values() -> None:
    deep: Any = "bottom"
    for _ in range(50):
        deep = [deep]
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    converted = jsonable({"deep": deep, "cyclic": cyclic, "long": list(range(500))})
    text = json.dumps(converted, allow_nan=False)
    assert len(converted["long"]) == 50
    assert len(text) < 5000
    assert jsonable("s" * 10_000) == clip("s" * 10_000)


_any_values = st.recursive(
    _json_scalars | st.binary(max_size=8) | st.complex_numbers() | st.dates(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=3)
        | st.dictionaries(st.integers() | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(database=None, max_examples=200)
@given(_any_values)
def test_jsonable_output_always_serialises_as_strict_json(value: Any) -> None:
    json.dumps(jsonable(value), allow_nan=False)


def test_clip_leaves_short_text_alone_and_cuts_long_text_saying_so() -> None:
    assert clip("short") == "short"
    assert clip("x" * 2000) == "x" * 2000
    cut = clip("y" * 3000)
    assert len(cut) <= 2000
    assert cut.startswith("y" * 1900)
    assert cut.endswith("... [1020 more]")  # 3000 characters, 1980 kept
    assert clip("z" * 500, 100).endswith("... [420 more]")
    assert len(clip("z" * 500, 100)) <= 100


@settings(database=None, max_examples=200)
@given(st.text(max_size=3000), st.integers(min_value=20, max_value=2500))
def test_clip_never_exceeds_its_limit_and_keeps_the_start(text: str, limit: int) -> None:
    cut = clip(text, limit)
    assert len(cut) <= limit
    if cut != text:
        assert len(text) > limit
        kept = cut[: cut.rindex("... [")]
        assert text.startswith(kept)
        assert cut.endswith(f"[{len(text) - len(kept)} more]")


def test_summarize_gives_short_text_for_any_value() -> None:
    assert summarize("topic") == "topic"
    assert summarize(["a", 1]) == "['a', 1]"
    long = summarize(list(range(1000)))
    assert long.startswith("[0, 1, 2")
    assert len(long) <= 200
    assert long.endswith("more]")
    assert len(summarize("q" * 1000, 50)) <= 50


# -- the events a real run emits ------------------------------------------------------------


async def test_events_of_a_real_run_are_numbered_from_one_typed_and_json_safe() -> None:
    async with cl.Conductor("wire", stall_after=60) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent(model="gpt-4o-mini")
        async def worker(ctx: cl.Context, topic: str) -> Any:
            ctx.status(f"working on {topic}")
            ctx.log("starting", "debug")
            when = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
            async with ctx.tool("search", query=topic, since=when, tags={"x"}):
                pass
            for _ in range(3):  # the same call three times: a repeat stall
                async with ctx.tool("fetch", url="https://example.org"):
                    pass
            try:
                async with ctx.tool("parse", page=1):
                    raise OSError("offline")
            except OSError:
                ctx.log("parse failed", "warning")
            ctx.usage(input_tokens=1200, output_tokens=300)
            ctx.usage(model="gpt-4o-mini", input_tokens=10, output_tokens=5, cost_usd=0.25)
            if await ctx.approve("Send it?", details={"to": ["team"], "obj": object()}):
                return await ctx.handoff("writer", topic)
            return "not sent"

        @loop.agent
        async def writer(ctx: cl.Context, topic: str) -> dict[str, float]:
            ctx.status("writing")
            return {topic: math.nan}  # a result that JSON cannot carry as it is

        @loop.agent
        async def broken(ctx: cl.Context) -> None:
            raise RuntimeError("no luck")

        run = loop.start("worker", "agents")
        failing = loop.start("broken")
        opened = await recorder.wait_for(match("request.opened", agent_id=run.agent_id))
        loop.redirect(run.agent_id, "be brief")
        loop.pause(run.agent_id)
        loop.resume(run.agent_id)
        assert loop.approve(opened.data["request_id"])
        result = await run
        assert list(result) == ["agents"]
        assert math.isnan(result["agents"])
        with pytest.raises(RuntimeError, match="no luck"):
            await failing

        events = list(recorder.events)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert {e.runtime for e in events} == {loop.runtime}
        assert all(e.kind in KINDS for e in events)
        assert {e.kind for e in events} >= {*DESIGN_KINDS, "agent.stalled", "command"}
        assert loop.events()["seq"].tolist() == [e.seq for e in events]
        for event in events:
            wire = json.dumps(event.to_wire(), allow_nan=False)
            assert Event.from_wire(json.loads(wire)) == event
