"""The payload schema of each event kind, checked where events enter a hub.

``problem(kind, data)`` names the first field of ``data`` that does not fit ``kind``'s
schema (``"usage.input_tokens: a non-negative integer"``), or returns ``None``. A kind that
is not in the table passes: readers store and ignore kinds they do not know, so a newer
runtime works with an older hub. Fields not named in a schema pass too (``log`` carries
an agent's structured fields beside ``level`` and ``message``). Integers are bounded to
what SQLite stores (64 bits), numbers must be finite, and text must be valid Unicode.
The schemas restate the ``*Data`` types of ``events``; ``docs/protocol.md`` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .states import AgentState

Check = Callable[[Any], bool]

INT_MAX = 2**63 - 1


def is_text(value: Any) -> bool:
    """A ``str`` that is valid Unicode (no lone surrogate: no store or browser takes one)."""
    if type(value) is not str:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no store or browser can take it
        return False
    return True


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= INT_MAX


def _number(value: Any) -> bool:
    if type(value) is int:
        return -INT_MAX <= value <= INT_MAX
    return type(value) is float and math.isfinite(value)


def _amount(value: Any) -> bool:
    return _number(value) and value >= 0


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


_CHOICES: dict[Check, frozenset[str]] = {}  # each ``_one_of`` check: the texts it allows


def _one_of(*values: str) -> Check:
    allowed = frozenset(values)

    def check(value: Any) -> bool:
        return type(value) is str and value in allowed

    _CHOICES[check] = allowed  # ``problem`` tests these without the call
    return check


def _texts(value: Any) -> bool:
    return type(value) is list and all(map(is_text, value))


def _object(value: Any) -> bool:
    return type(value) is dict


def _bool(value: Any) -> bool:
    return type(value) is bool


_STATES = _one_of(*(state.value for state in AgentState))

#: kind -> (required fields, optional fields): each field with its check and what it must be
SCHEMAS: dict[str, tuple[dict[str, tuple[Check, str]], dict[str, tuple[Check, str]]]] = {}


def _schema(kind: str, required: str, optional: str = "") -> None:
    def fields(spec: str) -> dict[str, tuple[Check, str]]:
        found = {}
        for part in filter(None, spec.split()):
            name, what = part.split(":")
            found[name] = _CHECKS[what]
        return found

    SCHEMAS[kind] = (fields(required), fields(optional))


_CHECKS: dict[str, tuple[Check, str]] = {
    "text": (is_text, "text"),
    "text?": (_optional(is_text), "text or null"),
    "count": (_count, "a non-negative integer"),
    "amount?": (_optional(_amount), "a non-negative number or null"),
    "number": (_number, "a finite number"),
    "bool": (_bool, "true or false"),
    "object": (_object, "an object"),
    "texts?": (_optional(_texts), "a list of texts or null"),
    "state": (_STATES, "an agent state"),
    "level": (_one_of("debug", "info", "warning", "error"), "debug, info, warning or error"),
    "request_kind": (_one_of("approval", "question", "budget"), "approval, question or budget"),
    "decision": (
        _one_of("approved", "rejected", "answered", "withdrawn"),
        "approved, rejected, answered or withdrawn",
    ),
    "priced_by": (_one_of("caller", "genai-prices", "unknown"), "caller, genai-prices or unknown"),
}

_schema("agent.started", "name:text", "parent:text? model:text? budget_usd:amount? input:text")
_schema("agent.state", "state:state", "reason:text request_id:text")
_schema("agent.status", "text:text")
_schema("log", "message:text", "level:level")
_schema("tool.started", "span:count tool:text", "call_id:text args:object")
_schema(
    "tool.finished", "span:count tool:text ok:bool", "call_id:text duration_s:number error:text"
)
_schema(
    "usage",
    "model:text input_tokens:count output_tokens:count cost_usd:amount?",
    "cache_read_tokens:count cache_write_tokens:count reasoning_tokens:count "
    "priced_by:priced_by provider:text",
)
_schema(
    "request.opened",
    "request_id:text kind:request_kind prompt:text",
    "choices:texts? details:object",
)
_schema(
    "request.decided",
    "request_id:text decision:decision by:text",
    "note:text text:text args:object",
)
_schema("instruction", "text:text by:text")
_schema("handoff", "to:text", "name:text")
_schema("agent.result", "result:text")
_schema("agent.error", "type:text message:text", "traceback:text")
_schema("agent.stalled", "stalled:bool", "reason:text")
_schema("command", "op:text by:text")
_schema("gap", "first_seq:count last_seq:count dropped:count")


def problem(kind: str, data: Mapping[str, Any]) -> str | None:
    """The first field of ``data`` that does not fit ``kind``'s schema, said plainly as
    ``"<kind>.<field>: <what is wrong>"`` (``field_of`` takes the field back out).

    Every value, named in the schema or not, nested or not, must be JSON that a store and
    a browser take: text without lone surrogates, finite numbers, 64-bit integers. One
    pass over ``data``: the hub checks every event of every runtime, so the checks of
    text and of a choice of texts (most fields) are made here, without a call.
    """
    schema = _COMPILED.get(kind)  # None: a kind this version does not know, stored and ignored
    if schema is None:
        fields = _NO_FIELDS
    else:
        fields, required = schema
        for name in required:
            if name not in data:
                return f"{kind}.{name}: missing ({fields[name][2]})"
    for key, item in data.items():
        spec = fields.get(key)
        if spec is None or type(key) is not str:  # (a field's name is ASCII text)
            if type(key) is not str or not (key.isascii() or is_text(key)):
                return f"{kind}.{_short(key)}: a key must be text"
            bad = _unfit_item(item, 0)
            if bad is not None:
                return f"{kind}.{key}{bad}"
            continue
        how, check, what = spec
        if how is _TEXT:
            if type(item) is str and (item.isascii() or is_text(item)):
                continue
        elif how is _CHOICE:
            if type(item) is str and item in check:
                continue
        elif check(item):
            if type(item) in _PLAIN:
                continue  # its check has seen all there is to it
            bad = _unfit_item(item, 0)
            if bad is not None:
                return f"{kind}.{key}{bad}"
            continue
        return f"{kind}.{key}: must be {what}, not {_short(item)}"
    return None


def field_of(problem: str) -> str:
    """The field a ``problem`` names (``"usage.input_tokens"``)."""
    return problem.split(": ", 1)[0]


_PLAIN = frozenset({str, int, float, bool, type(None)})
_TEXT, _CHOICE, _CALL = "text", "choice", "call"  # how ``problem`` tests a field
_Field = tuple[str, Any, str]  # how, the check (the allowed texts of a choice), what it must be
_NO_FIELDS: dict[str, _Field] = {}


def _field(check: Check, what: str) -> _Field:
    if check is is_text:
        return (_TEXT, check, what)
    if check in _CHOICES:
        return (_CHOICE, _CHOICES[check], what)
    return (_CALL, check, what)


#: kind -> (its fields, required and optional together; the required names, in order)
_COMPILED = {
    kind: (
        {name: _field(*spec) for name, spec in {**required, **optional}.items()},
        tuple(required),
    )
    for kind, (required, optional) in SCHEMAS.items()
}


_MAX_DEPTH = 32


def _unfit(value: Any, depth: int) -> str | None:
    """Where in ``value`` (a dict from JSON) something is not plain, storable JSON."""
    for key, item in value.items():
        if type(key) is not str or not (key.isascii() or is_text(key)):
            return f"{_short(key)}: a key must be text"
        bad = _unfit_item(item, depth)
        if bad is not None:
            return f"{key}{bad}"
    return None


def json_problem(value: Any) -> str | None:
    """Where ``value`` is not plain JSON a store and a browser take (``None``: it is)."""
    bad = _unfit_item(value, 0)
    return None if bad is None else bad.removeprefix(": ").removeprefix(".")


def _unfit_item(item: Any, depth: int) -> str | None:
    kind = type(item)
    if kind is str:
        return None if item.isascii() or is_text(item) else ": text with a lone surrogate"
    if kind is int or kind is float:
        return None if _number(item) else f": must be a finite number within 64 bits, not {item!r}"
    if item is None or kind is bool:
        return None
    if depth >= _MAX_DEPTH:
        return f": nested more than {_MAX_DEPTH} deep"
    if kind is dict:
        inner = _unfit(item, depth + 1)
        return None if inner is None else f".{inner}"
    if kind is list:
        for index, element in enumerate(item):
            bad = _unfit_item(element, depth + 1)
            if bad is not None:
                return f"[{index}]{bad}"
        return None
    return f": must be JSON data, not {kind.__name__}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
