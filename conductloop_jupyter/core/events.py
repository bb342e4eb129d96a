"""Events: the one record of everything that happens. State is derived from them.

An event is ``{seq, ts, runtime, agent_id, kind, data}``: ``seq`` counts up from 1 in each
runtime (one runtime = one ``Conductor``), ``ts`` is seconds since the epoch, ``agent_id`` is
``None`` for events about the conductor itself. The same shape is used on the wire, in the
hub's store and in ``loop.events()``; ``SCHEMA_VERSION`` is bumped when a field changes
meaning. Kind names are a wire contract: add new ones, never rename.

The payload of each kind is typed once below (``*Data``) and documented in
``docs/protocol.md``. ``data`` must be treated as read-only.
"""

from __future__ import annotations

import json
import math
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast, get_args

from .payloads import is_text

SCHEMA_VERSION = 1

EventKind = Literal[
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
    # added after the first contract (never renamed):
    "agent.stalled",
    "command",
    "gap",
]

KINDS: tuple[str, ...] = get_args(EventKind)
_KIND_SET = frozenset(KINDS)
#: what a kind of a newer version may look like
_NEW_KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,3}")
SEQ_MAX = 2**63 - 1  # what SQLite stores
ID_MAX = 200  # the longest runtime or agent id a hub takes

#: events that are the agent's own progress (they reset stall detection)
PROGRESS_KINDS = frozenset(
    {"agent.status", "log", "tool.started", "tool.finished", "usage", "handoff", "agent.result"}
)


class FieldError(ValueError):
    """A wire event whose ``field`` is missing or wrong (``None``: the event as a whole)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Fields:
    """An event's slots; ``Event`` adds nothing to them but its frozen-ness."""

    __slots__ = ("agent_id", "data", "kind", "runtime", "seq", "ts")
    seq: int
    ts: float
    runtime: str
    agent_id: str | None
    kind: EventKind
    data: Mapping[str, Any]


class _Building(_Fields):
    """The same layout, with plain attribute stores: an ``Event`` while it is built."""

    __slots__ = ()


_new = object.__new__
_FIELDS = ("seq", "ts", "runtime", "agent_id", "kind", "data")


@dataclass(frozen=True, init=False)
class Event(_Fields):
    """One thing that happened. ``loop.events()`` and supervisors see these."""

    __slots__ = ()
    seq: int
    ts: float
    runtime: str
    agent_id: str | None
    kind: EventKind
    data: Mapping[str, Any]

    def __new__(
        cls,
        seq: int,
        ts: float,
        runtime: str,
        agent_id: str | None,
        kind: EventKind,
        data: Mapping[str, Any],
    ) -> Event:
        # Every event is built here, on the agents' loop (and in a hub from the wire). A
        # frozen dataclass's __init__ sets each field through object.__setattr__ (0.65 us
        # an event), the slots' own setters take 0.44 us: built as a ``_Building`` (plain
        # stores), then made an ``Event`` (the same layout), 0.28 us. Still frozen.
        if cls is not Event:  # a subclass may add to the layout: field by field
            made = _new(cls)
            for name, value in zip(_FIELDS, (seq, ts, runtime, agent_id, kind, data), strict=True):
                object.__setattr__(made, name, value)
            return made
        event = _new(_Building)
        event.seq = seq
        event.ts = ts
        event.runtime = runtime
        event.agent_id = agent_id
        event.kind = kind
        event.data = data
        event.__class__ = cls  # type: ignore[assignment]
        return event  # type: ignore[return-value]

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle build it as above
        fields = (self.seq, self.ts, self.runtime, self.agent_id, self.kind, self.data)
        return (type(self), fields)

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "seq": self.seq,
            "ts": self.ts,
            "runtime": self.runtime,
            "agent_id": self.agent_id,
            "kind": self.kind,
            "data": self.data,
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Event:
        """Parse a wire event; raises ``FieldError`` (a ``ValueError``) naming the first
        bad field."""
        # the hub parses every event of every runtime: exact-type tests first (a dict, an
        # int, a float), because an ABC ``isinstance`` costs several times as much
        if type(raw) is not dict and not isinstance(raw, Mapping):
            raise FieldError(None, "an event must be a JSON object")
        version = raw.get("v", SCHEMA_VERSION)
        if type(version) is not int or version != SCHEMA_VERSION:
            raise FieldError("v", f"event schema version {version!r} is not {SCHEMA_VERSION}")
        seq, ts, runtime = raw.get("seq"), raw.get("ts"), raw.get("runtime")
        agent_id, kind, data = raw.get("agent_id"), raw.get("kind"), raw.get("data")
        if type(seq) is not int and (not isinstance(seq, int) or isinstance(seq, bool)):
            raise FieldError("seq", "event field 'seq' must be a positive integer")
        if not 1 <= seq <= SEQ_MAX:
            raise FieldError("seq", "event field 'seq' must be a positive 64-bit integer")
        if type(ts) is not float:
            if not isinstance(ts, (int, float)) or isinstance(ts, bool):
                raise FieldError("ts", "event field 'ts' must be a finite number")
            try:
                ts = float(ts)
            except OverflowError:  # an integer too large for a float
                ts = math.inf
        if not math.isfinite(ts):
            raise FieldError("ts", "event field 'ts' must be a finite number")
        if type(runtime) is not str or not 0 < len(runtime) <= ID_MAX:
            raise FieldError(
                "runtime", f"event field 'runtime' must be a string of 1..{ID_MAX} characters"
            )
        if agent_id is not None and (type(agent_id) is not str or len(agent_id) > ID_MAX):
            raise FieldError(
                "agent_id", f"event field 'agent_id' must be null or at most {ID_MAX} characters"
            )
        if type(kind) is not str or (kind not in _KIND_SET and not _NEW_KIND.fullmatch(kind)):
            # a kind this version does not know is kept (stored, and ignored by the view):
            # a newer runtime may send it; but it must look like a kind
            raise FieldError("kind", "event field 'kind' must be a kind name like 'tool.started'")
        if type(data) is not dict and not isinstance(data, Mapping):
            raise FieldError("data", "event field 'data' must be an object")
        return cls(seq, ts, runtime, agent_id, cast(EventKind, kind), data)


# -- payloads, one per kind -------------------------------------------------------------


class AgentStartedData(TypedDict):
    name: str
    parent: str | None
    model: str | None
    budget_usd: float | None
    input: str


class AgentStateData(TypedDict, total=False):
    state: str  # required
    reason: str


class StatusData(TypedDict):
    text: str


class LogData(TypedDict):
    """``level`` and ``message``; ``ctx.log``'s structured fields sit beside them."""

    level: Literal["debug", "info", "warning", "error"]
    message: str


class ToolStartedData(TypedDict):
    span: int
    call_id: str
    tool: str
    args: dict[str, Any]


class ToolFinishedData(TypedDict, total=False):
    span: int  # required
    call_id: str  # required
    tool: str  # required
    ok: bool  # required
    duration_s: float  # required
    error: str


class UsageData(TypedDict, total=False):
    model: str  # required
    input_tokens: int  # required: every input token, cached ones included
    output_tokens: int  # required
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: float | None  # required; None: the price is unknown (a warning beside it)
    priced_by: Literal["caller", "genai-prices", "unknown"]  # required
    provider: str


class RequestOpenedData(TypedDict):
    request_id: str
    kind: Literal["approval", "question", "budget"]
    prompt: str
    choices: list[str] | None
    details: dict[str, Any]


class RequestDecidedData(TypedDict, total=False):
    request_id: str  # required
    decision: Literal["approved", "rejected", "answered", "withdrawn"]  # required
    by: str  # required
    note: str
    text: str
    args: dict[str, Any]  # an approval's edited arguments


class InstructionData(TypedDict):
    text: str
    by: str


class HandoffData(TypedDict):
    to: str
    name: str


class ResultData(TypedDict):
    result: str


class ErrorData(TypedDict):
    type: str
    message: str
    traceback: str


class StalledData(TypedDict):
    stalled: bool
    reason: str


class CommandData(TypedDict):
    op: str
    by: str


class GapData(TypedDict):
    """Events a runtime had to drop while the hub was away (its buffer was full)."""

    first_seq: int
    last_seq: int
    dropped: int


# -- making values safe for the wire ----------------------------------------------------

_MAX_TEXT = 2000


def clip(text: str, limit: int = _MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, saying so when it was cut; a lone surrogate
    (which no store or browser takes) becomes U+FFFD."""
    if not text.isascii() and not is_text(text):  # (ASCII first: the common case, cheaper)
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if len(text) <= limit:
        return text
    if limit < 20:  # too short to say how much was cut
        return text[:limit]
    return text[: limit - 20] + f"... [{len(text) - limit + 20} more]"


def summarize(value: object, limit: int = 200) -> str:
    """A short, safe one-line description of an agent's input or result."""
    text = value if isinstance(value, str) else repr(value)
    return clip(text, limit)


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON types; anything else becomes a clipped ``repr``."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clip(value)
    if depth < 4 and isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in list(value.items())[:50]}
    if depth < 4 and isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value[:50]]
    return summarize(value)


def brief_traceback(error: BaseException) -> str:
    """The traceback's frames, without reading source files (no I/O on the event loop)."""
    frames = traceback.StackSummary.extract(
        traceback.walk_tb(error.__traceback__), lookup_lines=False
    )
    lines = [f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in frames]
    return clip("\n".join([*lines, f"{type(error).__name__}: {error}"]), 8000)


def canonical(value: Any) -> str:
    """A stable text form of a JSON-able value (for comparing tool arguments)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
