"""The hub's wire messages, typed once and parsed in one place.

Two channels, both JSON text over WebSocket (plus a small REST API for clients):

- the **runtime channel** (``/conductloop/runtime``): a Conductor's link sends ``hello``,
  then batches of ``events`` and ``reply``s to commands; the hub answers ``welcome`` (with
  the highest seq it already stored for that runtime, so the link replays only the rest),
  ``ack`` (after the batch is committed), ``command`` and ``error``;
- the **client channel** (``/conductloop/api/ws``): a client (JupyterLab, ``cl.connect``,
  the phone) sends ``subscribe`` (with the last store id it saw, to catch up) and
  ``command``; the hub sends ``snapshot``, ``events`` (each with its store ``id``),
  ``reply`` and ``error``.

Every parse error is a ``ProtocolError`` with a ``code`` from ``ERROR_CODES``; it is sent
back as an ``error`` message and the connection keeps serving. ``docs/protocol.md`` is the
reference for people.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, TypedDict

from ..core.errors import ConductLoopError, PairingError, UsageError
from ..core.events import SEQ_MAX, Event, FieldError
from ..core.payloads import is_text, json_problem
from ..core.steering import COMMAND_FIELDS

PROTOCOL_VERSION = 1

#: largest message a runtime may send (a batch of events); larger closes with 1009
MAX_RUNTIME_MESSAGE = 4 * 1024 * 1024
#: largest message a client may send (commands are small); larger closes with 1009
MAX_CLIENT_MESSAGE = 64 * 1024
#: most events in one batch
MAX_BATCH = 5000
#: the longest a client may wait on a pairing code's status, in seconds
MAX_CODE_WAIT = 60.0

ErrorCode = Literal[
    "bad_json",
    "bad_message",
    "too_large",
    "unknown_type",
    "unauthorized",
    "forbidden",
    "not_found",
    "bad_method",
    "unknown_agent",
    "unknown_request",
    "unknown_code",
    "pairing",
    "pairing_locked",
    "usage",
    "rate_limited",
    "runtime_gone",
    "timeout",
    "bad_event",
]


class ErrorSpec(NamedTuple):
    """How one error code travels: its HTTP status, and what a Python client raises."""

    status: int
    raises: type[ConductLoopError]
    meaning: str


#: The one error table: code -> HTTP status -> Python exception (hub, REST, every client).
ERRORS: dict[ErrorCode, ErrorSpec] = {
    "bad_json": ErrorSpec(400, UsageError, "not JSON, or not a JSON object"),
    "bad_message": ErrorSpec(400, UsageError, "a field is missing or of the wrong type"),
    "too_large": ErrorSpec(413, UsageError, "a request body over the limit (64 KiB)"),
    "unknown_type": ErrorSpec(400, UsageError, "not a message type this channel accepts"),
    "unauthorized": ErrorSpec(401, ConductLoopError, "no or wrong credentials"),
    "forbidden": ErrorSpec(403, ConductLoopError, "cross-origin, or a missing CSRF token"),
    "not_found": ErrorSpec(404, UsageError, "no such path, or not on this listener"),
    "bad_method": ErrorSpec(405, UsageError, "this path takes another HTTP method"),
    "unknown_agent": ErrorSpec(404, UsageError, "no agent with that id on this hub"),
    "unknown_request": ErrorSpec(404, UsageError, "no request with that id on this hub"),
    "unknown_code": ErrorSpec(404, UsageError, "no pairing code with that id on this hub"),
    "pairing": ErrorSpec(403, PairingError, "a pairing code that is wrong, used or expired"),
    "pairing_locked": ErrorSpec(429, PairingError, "too many wrong pairing codes: wait"),
    "usage": ErrorSpec(409, UsageError, "the runtime refused the command"),
    "rate_limited": ErrorSpec(429, ConductLoopError, "too many commands"),
    "runtime_gone": ErrorSpec(503, ConductLoopError, "the owning runtime is not connected"),
    "timeout": ErrorSpec(504, ConductLoopError, "the runtime did not answer in time"),
    "bad_event": ErrorSpec(400, UsageError, "one event of a batch broke its kind's schema"),
}
ERROR_CODES: frozenset[str] = frozenset(ERRORS)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A REST error's body: ``{"error": {"code", "message", ...}}``."""
    return {"error": {"code": code, "message": message, **extra}}


def exception_for(code: str, message: str) -> ConductLoopError:
    """What the table says a Python client raises for ``code`` (else ``ConductLoopError``)."""
    spec = ERRORS.get(code)  # type: ignore[call-overload]
    return (spec.raises if spec is not None else ConductLoopError)(message)


class ProtocolError(ConductLoopError):
    """A message that breaks the protocol; ``code`` says how."""

    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra  # more fields of the REST error body (``retry_after``)

    @property
    def status(self) -> int:
        """Its HTTP status, from ``ERRORS``."""
        return ERRORS[self.code].status

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, **self.extra)

    def to_wire(self, reply_to: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if reply_to is not None:
            error["id"] = reply_to
        return error


# -- runtime channel ---------------------------------------------------------------------


class Hello(TypedDict):
    type: Literal["hello"]
    v: int
    runtime: str
    name: str
    pid: int
    host: str


class EventsBatch(TypedDict):
    type: Literal["events"]
    events: list[Event]  # parsed from wire dicts


class Reply(TypedDict, total=False):
    type: Literal["reply"]  # required
    id: str  # required
    ok: bool  # required
    result: Any
    error: dict[str, str]  # {"code", "message"}


class Welcome(TypedDict):
    type: Literal["welcome"]
    v: int
    hub: str
    acked: int


class Ack(TypedDict):
    type: Literal["ack"]
    seq: int


class CommandMessage(TypedDict):
    type: Literal["command"]
    id: str
    command: dict[str, Any]  # {"op": ..., ...}: see Conductor.handle_command


# -- client channel ----------------------------------------------------------------------


class Subscribe(TypedDict):
    type: Literal["subscribe"]
    after: int


# -- parsing -----------------------------------------------------------------------------


def load(raw: str | bytes) -> dict[str, Any]:
    """A JSON object, or ``ProtocolError("bad_json")``."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ProtocolError("bad_json", f"not valid JSON: {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_json", "a message must be a JSON object")
    return message


def _text(message: Mapping[str, Any], field: str, *, optional: bool = False) -> str:
    value = message.get(field)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_message", f"field {field!r} must be a non-empty string")
    if not is_text(value):
        raise ProtocolError("bad_message", f"field {field!r} has a lone surrogate: not text")
    return value


def _int(message: Mapping[str, Any], field: str, minimum: int = 0) -> int:
    value = message.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ProtocolError("bad_message", f"field {field!r} must be an integer >= {minimum}")
    return value


def bad_event(seq: int | None, field: str | None, problem: str) -> dict[str, Any]:
    """The ``error`` reply that refuses one event: ``bad_event``, its seq and its field."""
    message = f"event {seq} refused: {problem}" if seq is not None else f"event refused: {problem}"
    return {"type": "error", "code": "bad_event", "seq": seq, "field": field, "message": message}


def _seq_of(raw: Any) -> int | None:
    seq = raw.get("seq") if isinstance(raw, Mapping) else None
    return seq if type(seq) is int and 1 <= seq <= SEQ_MAX else None


def parse_command(command: Any) -> dict[str, Any]:
    """A steering command ``{"op": ..., ...}``: checked before it is routed.

    Returns the command with only the fields its op takes, so that nothing it does not
    check reaches the routing or the runtime."""
    if not isinstance(command, dict):
        raise ProtocolError("bad_message", "a command must be an object with an 'op' field")
    op = command.get("op")
    if not isinstance(op, str) or op not in COMMAND_FIELDS:
        raise ProtocolError(
            "bad_message", f"command 'op' must be one of {', '.join(COMMAND_FIELDS)}"
        )
    clean: dict[str, Any] = {"op": op}
    for field in COMMAND_FIELDS[op]:
        clean[field] = _text(command, field)
    for field in ("note", "by"):
        if field in command:
            value = command[field]
            if value is not None and not is_text(value):
                raise ProtocolError("bad_message", f"field {field!r} must be text")
            clean[field] = value
    args = command.get("args")
    if args is not None:
        if op != "approve" or type(args) is not dict:
            raise ProtocolError(
                "bad_message", "field 'args' (edited arguments) is an object of 'approve'"
            )
        problem = json_problem(args)
        if problem is not None:
            raise ProtocolError("bad_message", f"field 'args': {problem}")
        clean["args"] = args
    if op == "stop_all" and "skip" in command:
        clean["skip"] = command["skip"]
    return clean


def parse_runtime_message(raw: str | bytes) -> dict[str, Any]:
    """One message from a runtime's link."""
    message = load(raw)
    kind = message.get("type")
    if kind == "hello":
        if type(message.get("v")) is not int or message["v"] != PROTOCOL_VERSION:
            raise ProtocolError(
                "bad_message", f"protocol version {message.get('v')!r} is not {PROTOCOL_VERSION}"
            )
        _text(message, "runtime")
        _text(message, "name", optional=True)
        _text(message, "host", optional=True)
        _int(message, "pid")
        return message
    if kind == "events":
        raw_events = message.get("events")
        if not isinstance(raw_events, list) or not raw_events:
            raise ProtocolError("bad_message", "field 'events' must be a non-empty list")
        if len(raw_events) > MAX_BATCH:
            raise ProtocolError("bad_message", f"at most {MAX_BATCH} events per batch")
        events, refused = [], []
        for raw_event in raw_events:
            try:
                events.append(Event.from_wire(raw_event))
            except FieldError as error:  # refused alone: the rest of the batch is kept
                refused.append(bad_event(_seq_of(raw_event), error.field, str(error)))
        message["events"], message["refused"] = events, refused
        return message
    if kind == "reply":
        _text(message, "id")
        if not isinstance(message.get("ok"), bool):
            raise ProtocolError("bad_message", "field 'ok' must be true or false")
        return message
    raise ProtocolError("unknown_type", f"a runtime cannot send messages of type {kind!r}")


def client_message_id(message: dict[str, Any]) -> str | None:
    """The ``id`` a reply (or an error) to this message must carry, if it has a usable one."""
    given = message.get("id")
    return given if isinstance(given, str) and 0 < len(given) <= 100 else None


def parse_client_message(raw: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """One message from a client (JupyterLab, ``cl.connect``, the phone page)."""
    message = raw if isinstance(raw, dict) else load(raw)
    kind = message.get("type")
    if kind == "subscribe":
        _int(message, "after")
        return message
    if kind == "command":
        _text(message, "id")
        message["command"] = parse_command(message.get("command"))
        return message
    raise ProtocolError("unknown_type", f"a client cannot send messages of type {kind!r}")


def dumps(message: Mapping[str, Any]) -> str:
    """Compact JSON for the wire (events are turned into their wire form)."""
    return json.dumps(message, separators=(",", ":"), default=_wire_default)


def _wire_default(value: Any) -> Any:
    if isinstance(value, Event):
        return value.to_wire()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
