"""The runtime channel's messages: ``hello``, ``events`` and ``reply`` parse, or are refused.

A valid message parses (its events become ``Event`` objects); a missing or mistyped field,
another protocol version, an oversized batch or a type the runtime channel does not take is
a ``ProtocolError`` whose code and message name what was wrong. One bad event of a batch is
refused alone (``bad_event``, naming its seq and field), and the rest of the batch is kept;
an event of a kind this version does not know is kept.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from conductloop_jupyter.core.events import Event
from conductloop_jupyter.hub.protocol import MAX_BATCH, PROTOCOL_VERSION, parse_runtime_message
from tests.hub._protocol_support import EVENT, EVENTS, HELLO, MISSING, REPLY, refused, with_field


def test_valid_runtime_messages_parse_and_events_become_event_objects() -> None:
    assert parse_runtime_message(json.dumps(HELLO)) == HELLO
    assert parse_runtime_message(json.dumps(REPLY)) == REPLY
    batch = parse_runtime_message(json.dumps(EVENTS).encode())
    assert batch["events"] == [
        Event(1, 1767225600.5, "rt-a", "a-1", "agent.status", {"text": "searching"})
    ]


def test_a_hello_without_a_name_is_accepted() -> None:
    assert (
        parse_runtime_message(json.dumps(with_field(HELLO, "name", MISSING)))["runtime"] == "rt-a"
    )


def test_a_batch_of_exactly_max_batch_events_is_accepted() -> None:
    events = [EVENT | {"seq": i} for i in range(1, MAX_BATCH + 1)]
    batch = parse_runtime_message(json.dumps({"type": "events", "events": events}))
    assert [e.seq for e in batch["events"]] == list(range(1, MAX_BATCH + 1))


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
    ("kind", "Renamed Agent!"),
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
def test_a_bad_event_is_refused_alone_naming_its_seq_and_field_and_the_rest_is_kept(
    field: str, value: Any
) -> None:
    good_then_bad = [EVENT, with_field(EVENT | {"seq": 2}, field, value)]
    batch = parse_runtime_message(json.dumps({"type": "events", "events": good_then_bad}))
    assert [e.seq for e in batch["events"]] == [1]
    [error] = batch["refused"]
    assert (error["type"], error["code"], error["field"]) == ("error", "bad_event", field)
    assert error["seq"] == (2 if field != "seq" else None)
    assert f"'{field}'" in error["message"]


@pytest.mark.parametrize("version", [2, 0, "1", True, None])
def test_an_event_of_another_schema_version_is_refused_alone(version: Any) -> None:
    raw = json.dumps({"type": "events", "events": [EVENT | {"v": version}, EVENT | {"seq": 2}]})
    batch = parse_runtime_message(raw)
    assert [e.seq for e in batch["events"]] == [2]
    assert [(r["code"], r["seq"]) for r in batch["refused"]] == [("bad_event", 1)]


@pytest.mark.parametrize("event", [5, "event", None, [EVENT]])
def test_an_event_that_is_not_an_object_is_refused_alone(event: Any) -> None:
    raw = json.dumps({"type": "events", "events": [event, EVENT]})
    batch = parse_runtime_message(raw)
    assert [e.seq for e in batch["events"]] == [1]
    assert [(r["code"], r["seq"]) for r in batch["refused"]] == [("bad_event", None)]


def test_an_event_of_a_kind_this_version_does_not_know_is_kept() -> None:
    raw = json.dumps({"type": "events", "events": [EVENT | {"kind": "agent.renamed"}]})
    batch = parse_runtime_message(raw)
    assert [(e.kind, e.seq) for e in batch["events"]] == [("agent.renamed", 1)]
    assert batch["refused"] == []


@pytest.mark.parametrize(
    "kind", [MISSING, None, "", 5, ["hello"], "subscribe", "command", "welcome", "ack", "Hello"]
)
def test_a_runtime_message_of_a_type_the_runtime_channel_does_not_take_is_unknown_type(
    kind: Any,
) -> None:
    raw = json.dumps(with_field(HELLO, "type", kind))
    assert refused(parse_runtime_message, raw).code == "unknown_type"
