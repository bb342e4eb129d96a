"""The wire contract, enforced where events enter a real hub: a bad event is refused alone
(``bad_event``, naming its seq and field) before the view or the store see it, the rest of
its batch is kept, the connection stays and the runtime is acked past it; an event of a
kind the hub does not know is stored and ignored. Every wait is on a message."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest

from conductloop_jupyter.core.payloads import SCHEMAS
from tests.hub._support import get, running_hub, runtime_peer, send_events, started, wire

#: one valid payload of every kind the contract names
VALID: dict[str, dict[str, Any]] = {
    "agent.started": {"name": "w", "parent": None, "model": None, "budget_usd": 1.0, "input": ""},
    "agent.state": {"state": "running"},
    "agent.status": {"text": "searching"},
    "log": {"level": "info", "message": "hi", "url": "u"},
    "tool.started": {"span": 1, "call_id": "c1", "tool": "search", "args": {}},
    "tool.finished": {"span": 1, "call_id": "c1", "tool": "search", "ok": True, "duration_s": 0.1},
    "usage": {
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        "output_tokens": 2,
        "cost_usd": 0.001,
        "priced_by": "caller",
    },
    "request.opened": {
        "request_id": "r1",
        "kind": "approval",
        "prompt": "Go?",
        "choices": None,
        "details": {},
    },
    "request.decided": {"request_id": "r1", "decision": "approved", "by": "phone"},
    "instruction": {"text": "focus", "by": "phone"},
    "handoff": {"to": "w-2", "name": "writer"},
    "agent.result": {"result": "ok"},
    "agent.error": {"type": "ValueError", "message": "bad", "traceback": ""},
    "agent.stalled": {"stalled": True, "reason": "idle"},
    "command": {"op": "stop", "by": "phone"},
    "gap": {"first_seq": 1, "last_seq": 2, "dropped": 2},
}

#: for each kind, its first required field: missing, then of a type it cannot be
BROKEN = [
    (kind, field, value)
    for kind, (required, _) in SCHEMAS.items()
    for field in list(required)[:1]
    for value in ("missing", ["not", "this"])
]


def test_every_kind_of_the_contract_has_a_valid_example() -> None:
    assert set(VALID) == set(SCHEMAS)


def _event(seq: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return wire(seq, kind, "w-1") | {"data": data}


async def _refused_then_kept(tmp_path: Path, bad: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Send started(1), ``bad`` (seq 2), a status (seq 3): the error, and the hub's agents."""
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address) as peer:
        status = _event(3, "agent.status", {"text": "still here"})
        await peer.send({"type": "events", "events": [started(1, "w-1"), bad, status]})
        error = await peer.until(lambda m: m["type"] == "error")
        ack = await peer.until(lambda m: m["type"] == "ack")
        assert ack["seq"] == 3  # past the refused event: the runtime never sends it again
        await send_events(peer, _event(4, "agent.status", {"text": "same connection"}))
        agents = (await get(address, "agents"))["agents"]
        stored = (await get(address, "events?after=0&limit=100"))["events"]
        assert [e["seq"] for e in stored] == [1, 3, 4]  # the bad one is not in the store
        return error, agents


@pytest.mark.parametrize(("kind", "field", "value"), BROKEN, ids=lambda v: str(v)[:20])
async def test_a_malformed_payload_of_every_kind_is_refused_alone_naming_seq_and_field(
    tmp_path: Path, kind: str, field: str, value: Any
) -> None:
    data = dict(VALID[kind])
    if value == "missing":
        del data[field]
    else:
        data[field] = value
    error, agents = await _refused_then_kept(tmp_path, _event(2, kind, data))
    assert (error["code"], error["seq"], error["field"]) == ("bad_event", 2, f"{kind}.{field}")
    assert [a["activity"] for a in agents] == ["same connection"]


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        ("agent.state", {"state": "bogus"}, "agent.state.state"),
        ("usage", VALID["usage"] | {"cost_usd": math.nan}, "usage.cost_usd"),
        ("usage", VALID["usage"] | {"input_tokens": "5"}, "usage.input_tokens"),
        ("log", VALID["log"] | {"n": 2**63}, "log.n"),
        ("request.decided", VALID["request.decided"] | {"note": "\ud800"}, "request.decided.note"),
        ("log", VALID["log"] | {"deep": {"x": [1, "\udfff"]}}, "log.deep.x[1]"),
    ],
    ids=["bogus-state", "nan-cost", "string-tokens", "int-past-64-bits", "surrogate", "nested"],
)
async def test_values_no_store_or_browser_can_take_are_refused_at_the_door(
    tmp_path: Path, kind: str, data: dict[str, Any], field: str
) -> None:
    error, agents = await _refused_then_kept(tmp_path, _event(2, kind, data))
    assert (error["code"], error["field"]) == ("bad_event", field)
    assert agents[0]["state"] == "queued"  # the view never saw it
    assert agents[0]["cost_usd"] == 0.0


async def test_an_event_of_a_kind_the_hub_does_not_know_is_stored_and_ignored(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address) as peer:
        newer = _event(2, "agent.mood", {"mood": "cheerful"})
        await send_events(peer, started(1, "w-1"), newer)
        stored = (await get(address, "events?after=0&limit=100"))["events"]
        assert [e["kind"] for e in stored] == ["agent.started", "agent.mood"]
        [agent] = (await get(address, "agents"))["agents"]
        assert agent["state"] == "queued"


async def test_an_event_with_a_bad_envelope_is_acked_past_too_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address) as peer:
        await send_events(peer, started(1, "w-1"))
        with caplog.at_level(logging.WARNING, logger="conductloop.hub"):
            for seq in (2, 3, 4):  # each the last of its batch: only the ack can cover it
                bad = _event(seq, "agent.status", {"text": "x"}) | {"ts": "now"}
                await peer.send({"type": "events", "events": [bad]})
                answers = {}
                while len(answers) < 2:  # its error and the ack, in whichever order
                    answer = await peer.recv()
                    answers[answer["type"]] = answer
                error = answers["error"]
                assert (error["code"], error["seq"], error["field"]) == ("bad_event", seq, "ts")
                assert answers["ack"]["seq"] == seq  # the runtime may forget it: never resent
        assert caplog.text.count("refused so far") == 1  # not one line per bad batch
