"""The hub's wire, byte by byte: every input parses to a message or a typed ``ProtocolError``.

Hypothesis fuzzes all three parsers with any text, bytes, JSON value and deep nesting;
text that is not a JSON object is ``bad_json``; events and errors ``dumps`` for the wire
read back as they were.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conductloop_jupyter.core.events import KINDS, Event
from conductloop_jupyter.hub.protocol import (
    COMMAND_FIELDS,
    ERROR_CODES,
    ProtocolError,
    dumps,
    parse_client_message,
    parse_command,
    parse_runtime_message,
)
from tests.hub._protocol_support import EVENT, Parser, refused

PARSERS: list[Parser] = [parse_runtime_message, parse_client_message, parse_command]
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check_outcome(parse: Parser, raw: Any) -> None:
    """The one property every parser has: a dict, or a ProtocolError with a known code."""
    try:
        result = parse(raw)
    except ProtocolError as caught:
        error = caught
    else:
        assert isinstance(result, dict)
        return
    assert error.code in ERROR_CODES
    assert isinstance(error.message, str)
    assert error.message
    wire = json.loads(dumps(error.to_wire("x")))  # the reply can always be sent
    assert (wire["type"], wire["code"], wire["id"]) == ("error", error.code, "x")


# -- fuzzing -------------------------------------------------------------------------------

HUGE_INTS = st.sampled_from([2**64, 10**100, -(10**300), 10**4000, 2**1024])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_INTS
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
WORDS = st.sampled_from(
    [
        "hello",
        "events",
        "reply",
        "subscribe",
        "command",
        "welcome",
        "ack",
        *COMMAND_FIELDS,
        *KINDS,
        "rt-a",
        "r1",
        "a-1",
    ]
)
EVENT_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "v": st.just(1) | JSON_VALUES,
        "seq": st.integers(min_value=-2, max_value=10) | JSON_VALUES,
        "ts": st.floats(allow_nan=True) | HUGE_INTS | JSON_VALUES,
        "runtime": st.just("rt-a") | JSON_VALUES,
        "agent_id": st.none() | st.just("a-1") | JSON_VALUES,
        "kind": st.sampled_from(KINDS) | JSON_VALUES,
        "data": st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3) | JSON_VALUES,
    },
)
COMMAND_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "op": st.sampled_from(list(COMMAND_FIELDS)) | JSON_VALUES,
        "request_id": st.just("r1") | JSON_VALUES,
        "agent_id": st.just("a-1") | JSON_VALUES,
        "text": st.text(max_size=5) | JSON_VALUES,
        "note": st.none() | st.text(max_size=5) | JSON_VALUES,
        "by": st.none() | st.text(max_size=5) | JSON_VALUES,
    },
)
FIELD_VALUES = (
    JSON_VALUES
    | WORDS
    | EVENT_LIKE
    | COMMAND_LIKE
    | st.lists(EVENT_LIKE, max_size=4)
    | st.integers(min_value=-1, max_value=3)
)
MESSAGE_LIKE = st.fixed_dictionaries(
    {"type": WORDS | JSON_VALUES},
    optional=dict.fromkeys(
        ("v", "runtime", "name", "pid", "host", "events", "id", "ok", "after"), FIELD_VALUES
    )
    | {"command": COMMAND_LIKE | JSON_VALUES},
)
NESTING = st.integers(min_value=1, max_value=3000).map(lambda depth: "[" * depth + "]" * depth)
NESTED_TEXT = st.tuples(
    st.sampled_from(
        [
            "{}",
            '{{"type": {}}}',
            '{{"type": "hello", "v": {}, "runtime": "r", "pid": 1}}',
            '{{"type": "command", "id": "c", "command": {{"op": {}}}}}',
            '{{"type": "events", "events": [{{"seq": 1, "ts": 1, "runtime": "r", "kind": '
            '"log", "data": {{}}, "v": {}}}]}}',
        ]
    ),
    NESTING,
).map(lambda parts: parts[0].format(parts[1]))


@FUZZ
@given(raw=st.text() | st.binary())
def test_any_text_or_bytes_parses_to_a_message_or_a_typed_protocol_error(raw: str | bytes) -> None:
    for parse in PARSERS:
        check_outcome(parse, raw)


@FUZZ
@given(value=JSON_VALUES | MESSAGE_LIKE)
def test_any_json_value_parses_to_a_message_or_a_typed_protocol_error(value: Any) -> None:
    text = json.dumps(value)  # NaN and Infinity become the tokens json.loads reads back
    check_outcome(parse_runtime_message, text)
    check_outcome(parse_client_message, text)
    check_outcome(parse_runtime_message, text.encode())
    check_outcome(parse_command, json.loads(text))


@FUZZ
@given(text=NESTED_TEXT)
def test_deeply_nested_json_parses_to_a_message_or_a_typed_protocol_error(text: str) -> None:
    for parse in (parse_runtime_message, parse_client_message):
        check_outcome(parse, text)


@FUZZ
@given(
    events=st.lists(
        st.builds(
            Event,
            seq=st.integers(min_value=1, max_value=2**63 - 1),  # what SQLite stores
            ts=st.floats(allow_nan=False, allow_infinity=False),
            runtime=st.text(min_size=1, max_size=10),
            agent_id=st.none() | st.text(max_size=10),
            kind=st.sampled_from(KINDS),
            data=st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_events_dumped_for_the_wire_parse_back_to_equal_events(events: list[Event]) -> None:
    parsed = parse_runtime_message(dumps({"type": "events", "events": events}))
    assert [e.to_wire() for e in parsed["events"]] == [
        json.loads(json.dumps(e.to_wire())) for e in events
    ]


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,  # deeper than the interpreter recurses: RecursionError
        '{"type": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"after": ' + "9" * 5000 + ', "type": "subscribe"}',  # beyond int digit limit
        b"\xff\xfe\xfa",
        b'{"type": "subscribe", "after": 0, "x": "\xc3\x28"}',  # invalid UTF-8 inside
        "",
        "{",
        "{'type': 'hello'}",
        '{"type": "hello",}',
    ],
    ids=[
        "deep-array",
        "deep-field",
        "huge-int-text",
        "non-utf8",
        "bad-utf8-inside",
        "empty",
        "truncated",
        "single-quotes",
        "trailing-comma",
    ],
)
@pytest.mark.parametrize("parse", [parse_runtime_message, parse_client_message])
def test_text_that_is_not_json_is_refused_as_bad_json(parse: Parser, raw: str | bytes) -> None:
    assert refused(parse, raw).code == "bad_json"


@pytest.mark.parametrize("raw", ["[]", "[1]", "1", '"hello"', "null", "true", "3.5", "NaN"])
@pytest.mark.parametrize("parse", [parse_runtime_message, parse_client_message])
def test_json_that_is_not_an_object_is_refused_as_bad_json(parse: Parser, raw: str) -> None:
    error = refused(parse, raw)
    assert error.code == "bad_json"
    assert "object" in error.message


def test_huge_integers_within_the_digit_limit_are_accepted_where_an_integer_is_due() -> None:
    message = parse_client_message(json.dumps({"type": "subscribe", "after": 10**4000}))
    assert message["after"] == 10**4000


@pytest.mark.parametrize("seq", [2**63, 2**80])
def test_a_seq_beyond_64_bits_is_refused_alone_as_a_bad_event(seq: int) -> None:
    # such a seq once stopped the store for every runtime (SQLite stores 64-bit integers)
    events = [EVENT | {"seq": seq}, EVENT | {"seq": 2**63 - 1}]
    batch = parse_runtime_message(json.dumps({"type": "events", "events": events}))
    assert [e.seq for e in batch["events"]] == [2**63 - 1]
    assert [(r["code"], r["field"]) for r in batch["refused"]] == [("bad_event", "seq")]


# -- encoding ------------------------------------------------------------------------------


def test_dumps_turns_events_into_their_wire_dicts() -> None:
    event = Event(7, 1767225600.25, "rt-a", None, "log", {"level": "info", "message": "hi"})
    text = dumps({"type": "events", "events": [event], "n": 1})
    assert json.loads(text) == {"type": "events", "events": [event.to_wire()], "n": 1}
    assert json.loads(text)["events"][0] == {
        "v": 1,
        "seq": 7,
        "ts": 1767225600.25,
        "runtime": "rt-a",
        "agent_id": None,
        "kind": "log",
        "data": {"level": "info", "message": "hi"},
    }
    assert ", " not in text
    assert ": " not in text  # compact


def test_dumps_refuses_values_that_are_not_json_naming_their_type() -> None:
    with pytest.raises(TypeError, match="set"):
        dumps({"type": "events", "events": {1, 2}})


def test_a_protocol_error_on_the_wire_carries_the_id_of_what_it_answers() -> None:
    error = ProtocolError("unknown_agent", "no agent 'x' on this hub")
    assert error.to_wire() == {
        "type": "error",
        "code": "unknown_agent",
        "message": "no agent 'x' on this hub",
    }
    assert error.to_wire("c3")["id"] == "c3"
    assert {"bad_json", "bad_message", "unknown_type", "runtime_gone", "usage"} <= ERROR_CODES
