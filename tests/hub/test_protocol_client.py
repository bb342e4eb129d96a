"""The client channel's messages and commands: ``subscribe`` and ``command`` parse, or are refused.

Every command op with its fields is accepted, alone and wrapped in a ``command`` message;
a missing or mistyped field, an unknown op or a type the client channel does not take is
a ``ProtocolError`` whose code and message name what was wrong.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conductloop_jupyter.hub.protocol import COMMAND_FIELDS, parse_client_message, parse_command
from tests.hub._protocol_support import COMMAND, MISSING, SUBSCRIBE, refused, with_field


def test_valid_client_messages_parse() -> None:
    assert parse_client_message(json.dumps(SUBSCRIBE)) == SUBSCRIBE
    assert parse_client_message(json.dumps(COMMAND)) == COMMAND


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
