"""Shared pieces of the wire-protocol tests: well-formed messages and how to break them.

``HELLO``, ``EVENTS``, ``REPLY`` (runtime channel) and ``SUBSCRIBE``, ``COMMAND`` (client
channel) parse as they are; ``with_field`` changes or drops one field (``MISSING``), and
``refused`` returns the ``ProtocolError`` a parser raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conductloop_jupyter.hub.protocol import ProtocolError

Parser = Callable[[Any], dict[str, Any]]
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
