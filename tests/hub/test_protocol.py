"""The hub's wire messages: every input parses to a message or a typed ``ProtocolError``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conductloop_jupyter.core.events import KINDS, Event
from conductloop_jupyter.hub.protocol import (
    COMMAND_FIELDS,
    ERROR_CODES,
    MAX_BATCH,
    PROTOCOL_VERSION,
    ProtocolError,
    dumps,
    parse_client_message,
    parse_command,
    parse_runtime_message,
)

Parser = Callable[[Any], dict[str, Any]]
PARSERS: list[Parser] = [parse_runtime_message, parse_client_message, parse_command]
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MISSING = object()

HELLO = {"type": "hello", "v": 1, "runtime": "rt-a", "name": "research", "pid": 42, "host": "lap"}
EVENT = {
    "v": 1,
    "seq": 1,
    "ts": 1767225600.5,
    "runtime": "rt-a",
    "agent_id": "a-1",
    "kind": "agent.status",
    "data": {"text": "searching"},
}
EVENTS = {"type": "events", "events": [EVENT]}
REPLY = {"type": "reply", "id": "rt-a/1", "ok": True, "result": True}
SUBSCRIBE = {"type": "subscribe", "after": 0}
COMMAND = {"type": "command", "id": "c1", "command": {"op": "approve", "request_id": "r1"}}


def refused(parse: Parser, raw: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse(raw)
    return caught.value


def with_field(base: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    changed = dict(base)
    if value is MISSING:
        changed.pop(field, None)
    else:
        changed[field] = value
    return changed


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
            seq=st.integers(min_value=1, max_value=2**63),
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
    batch = parse_runtime_message(
        json.dumps({"type": "events", "events": [EVENT | {"seq": 2**80}]})
    )
    assert batch["events"][0].seq == 2**80


# -- valid messages ------------------------------------------------------------------------


def test_valid_runtime_messages_parse_and_events_become_event_objects() -> None:
    assert parse_runtime_message(json.dumps(HELLO)) == HELLO
    assert parse_runtime_message(json.dumps(REPLY)) == REPLY
    batch = parse_runtime_message(json.dumps(EVENTS).encode())
    assert batch["events"] == [
        Event(1, 1767225600.5, "rt-a", "a-1", "agent.status", {"text": "searching"})
    ]


def test_valid_client_messages_parse() -> None:
    assert parse_client_message(json.dumps(SUBSCRIBE)) == SUBSCRIBE
    assert parse_client_message(json.dumps(COMMAND)) == COMMAND


def test_a_hello_without_a_name_is_accepted() -> None:
    assert (
        parse_runtime_message(json.dumps(with_field(HELLO, "name", MISSING)))["runtime"] == "rt-a"
    )


def test_a_batch_of_exactly_max_batch_events_is_accepted() -> None:
    events = [EVENT | {"seq": i} for i in range(1, MAX_BATCH + 1)]
    batch = parse_runtime_message(json.dumps({"type": "events", "events": events}))
    assert [e.seq for e in batch["events"]] == list(range(1, MAX_BATCH + 1))


@pytest.mark.parametrize(
    "command",
    [
        {"op": "approve", "request_id": "r1"},
        {"op": "reject", "request_id": "r1", "note": "no", "by": "phone:pixel"},
        {"op": "answer", "request_id": "r1", "text": "b"},
        {"op": "pause", "agent_id": "a-1"},
        {"op": "resume", "agent_id": "a-1"},
        {"op": "stop", "agent_id": "a-1"},
        {"op": "stop_all"},
        {"op": "redirect", "agent_id": "a-1", "text": "focus on 2025", "note": None},
    ],
    ids=lambda c: c["op"],
)
def test_every_command_op_with_its_fields_is_accepted(command: dict[str, Any]) -> None:
    assert parse_command(command) == command
    wrapped = {"type": "command", "id": "c9", "command": command}
    assert parse_client_message(json.dumps(wrapped))["command"] == command


# -- refused messages, field by field ------------------------------------------------------

RUNTIME_BAD_FIELDS = [
    (HELLO, "runtime", MISSING),
    (HELLO, "runtime", 5),
    (HELLO, "runtime", ""),
    (HELLO, "runtime", None),
    (HELLO, "pid", MISSING),
    (HELLO, "pid", "42"),
    (HELLO, "pid", -1),
    (HELLO, "pid", True),
    (HELLO, "pid", 4.5),
    (HELLO, "name", 5),
    (HELLO, "name", ["research"]),
    (HELLO, "host", 5),
    (EVENTS, "events", MISSING),
    (EVENTS, "events", {"0": EVENT}),
    (EVENTS, "events", "events"),
    (EVENTS, "events", []),
    (EVENTS, "events", None),
    (REPLY, "id", MISSING),
    (REPLY, "id", 7),
    (REPLY, "id", ""),
    (REPLY, "ok", MISSING),
    (REPLY, "ok", "true"),
    (REPLY, "ok", 1),
    (REPLY, "ok", None),
]


@pytest.mark.parametrize(
    ("base", "field", "value"),
    RUNTIME_BAD_FIELDS,
    ids=[f"{b['type']}-{f}-{'missing' if v is MISSING else v!r}" for b, f, v in RUNTIME_BAD_FIELDS],
)
def test_a_runtime_message_with_a_missing_or_mistyped_field_is_refused_naming_it(
    base: dict[str, Any], field: str, value: Any
) -> None:
    error = refused(parse_runtime_message, json.dumps(with_field(base, field, value)))
    assert error.code == "bad_message"
    assert f"'{field}'" in error.message


CLIENT_BAD_FIELDS = [
    (SUBSCRIBE, "after", MISSING),
    (SUBSCRIBE, "after", -1),
    (SUBSCRIBE, "after", "0"),
    (SUBSCRIBE, "after", True),
    (SUBSCRIBE, "after", 1.5),
    (SUBSCRIBE, "after", None),
    (COMMAND, "id", MISSING),
    (COMMAND, "id", 1),
    (COMMAND, "id", ""),
]


@pytest.mark.parametrize(
    ("base", "field", "value"),
    CLIENT_BAD_FIELDS,
    ids=[f"{b['type']}-{f}-{'missing' if v is MISSING else v!r}" for b, f, v in CLIENT_BAD_FIELDS],
)
def test_a_client_message_with_a_missing_or_mistyped_field_is_refused_naming_it(
    base: dict[str, Any], field: str, value: Any
) -> None:
    error = refused(parse_client_message, json.dumps(with_field(base, field, value)))
    assert error.code == "bad_message"
    assert f"'{field}'" in error.message


@pytest.mark.parametrize("command", [MISSING, None, "approve", ["approve"], 5])
def test_a_client_command_message_without_a_command_object_is_refused(command: Any) -> None:
    error = refused(parse_client_message, json.dumps(with_field(COMMAND, "command", command)))
    assert error.code == "bad_message"
    assert "command" in error.message


@pytest.mark.parametrize("version", [MISSING, 2, 0, "1", None, True, [1]])
def test_a_hello_with_another_protocol_version_is_refused(version: Any) -> None:
    error = refused(parse_runtime_message, json.dumps(with_field(HELLO, "v", version)))
    assert error.code == "bad_message"
    assert str(PROTOCOL_VERSION) in error.message


def test_an_events_batch_over_max_batch_is_refused() -> None:
    events = [EVENT | {"seq": i} for i in range(1, MAX_BATCH + 2)]
    error = refused(parse_runtime_message, json.dumps({"type": "events", "events": events}))
    assert error.code == "bad_message"
    assert str(MAX_BATCH) in error.message


BAD_EVENT_FIELDS = [
    ("seq", MISSING),
    ("seq", 0),
    ("seq", -3),
    ("seq", True),
    ("seq", "1"),
    ("seq", 1.5),
    ("ts", MISSING),
    ("ts", "now"),
    ("ts", True),
    ("ts", math.nan),
    ("ts", math.inf),
    ("ts", 10**400),
    ("runtime", MISSING),
    ("runtime", ""),
    ("runtime", 5),
    ("agent_id", 5),
    ("agent_id", ["a-1"]),
    ("kind", MISSING),
    ("kind", "agent.renamed"),
    ("kind", 5),
    ("data", MISSING),
    ("data", ["text"]),
    ("data", "searching"),
]


@pytest.mark.parametrize(
    ("field", "value"),
    BAD_EVENT_FIELDS,
    ids=[f"{f}-{'missing' if v is MISSING else v!r}" for f, v in BAD_EVENT_FIELDS],
)
def test_an_events_batch_containing_a_bad_event_is_refused_naming_the_field(
    field: str, value: Any
) -> None:
    good_then_bad = [EVENT, with_field(EVENT | {"seq": 2}, field, value)]
    raw = json.dumps({"type": "events", "events": good_then_bad})
    error = refused(parse_runtime_message, raw)
    assert error.code == "bad_message"
    assert f"'{field}'" in error.message


@pytest.mark.parametrize("version", [2, 0, "1", True, None])
def test_an_event_of_another_schema_version_is_refused(version: Any) -> None:
    raw = json.dumps({"type": "events", "events": [EVENT | {"v": version}]})
    assert refused(parse_runtime_message, raw).code == "bad_message"


@pytest.mark.parametrize("event", [5, "event", None, [EVENT]])
def test_an_event_that_is_not_an_object_is_refused(event: Any) -> None:
    error = refused(parse_runtime_message, json.dumps({"type": "events", "events": [event]}))
    assert error.code == "bad_message"


@pytest.mark.parametrize(
    "kind", [MISSING, None, "", 5, ["hello"], "subscribe", "command", "welcome", "ack", "Hello"]
)
def test_a_runtime_message_of_a_type_the_runtime_channel_does_not_take_is_unknown_type(
    kind: Any,
) -> None:
    raw = json.dumps(with_field(HELLO, "type", kind))
    assert refused(parse_runtime_message, raw).code == "unknown_type"


@pytest.mark.parametrize(
    "kind", [MISSING, None, "", 5, {"t": 1}, "hello", "events", "reply", "snapshot", "Subscribe"]
)
def test_a_client_message_of_a_type_the_client_channel_does_not_take_is_unknown_type(
    kind: Any,
) -> None:
    raw = json.dumps(with_field(SUBSCRIBE, "type", kind))
    assert refused(parse_client_message, raw).code == "unknown_type"


COMMAND_BAD_FIELDS = [
    (op, field, value)
    for op, fields in COMMAND_FIELDS.items()
    for field in fields
    for value in (MISSING, None, "", 5, ["x"])
]


@pytest.mark.parametrize(
    ("op", "field", "value"),
    COMMAND_BAD_FIELDS,
    ids=[f"{o}-{f}-{'missing' if v is MISSING else v!r}" for o, f, v in COMMAND_BAD_FIELDS],
)
def test_a_command_without_a_required_field_is_refused_naming_it(
    op: str, field: str, value: Any
) -> None:
    command = {"op": op, **dict.fromkeys(COMMAND_FIELDS[op], "x")}
    error = refused(parse_command, with_field(command, field, value))
    assert error.code == "bad_message"
    assert f"'{field}'" in error.message
    wrapped = {"type": "command", "id": "c1", "command": with_field(command, field, value)}
    assert refused(parse_client_message, json.dumps(wrapped)).code == "bad_message"


@pytest.mark.parametrize("op", [MISSING, None, "", "delete", "APPROVE", 5, ["approve"]])
def test_a_command_with_a_missing_or_unknown_op_is_refused_naming_op(op: Any) -> None:
    error = refused(parse_command, with_field({"op": "stop_all"}, "op", op))
    assert error.code == "bad_message"
    assert "'op'" in error.message


@pytest.mark.parametrize(("field", "value"), [("note", 5), ("note", ["x"]), ("by", 7)])
def test_a_command_with_a_non_string_note_or_by_is_refused_naming_it(
    field: str, value: Any
) -> None:
    error = refused(parse_command, {"op": "approve", "request_id": "r1", field: value})
    assert error.code == "bad_message"
    assert f"'{field}'" in error.message


@pytest.mark.parametrize("command", [None, "stop_all", ["stop_all"], 1])
def test_a_command_that_is_not_an_object_is_refused(command: Any) -> None:
    assert refused(parse_command, command).code == "bad_message"


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
