"""The hub's client channel: subscribe and snapshot, live events, resubscribing after a last
id, commands routed to their runtime, bad and oversized messages.

Real WebSockets to a real tornado server in this process; runtimes are raw connections that
speak the wire protocol by hand. Every wait is on a message, bounded by 10 s.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import WebSocketClosedError

from conductloop_jupyter.hub.protocol import MAX_CLIENT_MESSAGE
from tests.hub._support import (
    bearer,
    client_peer,
    connected,
    get,
    opened,
    running_hub,
    runtime_peer,
    send_events,
    started,
    state,
    wire,
)


async def test_subscribe_after_zero_gives_a_snapshot_of_agents_pending_and_runtimes(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address) as runtime:
        await send_events(
            runtime,
            started(1, "w-1"),
            state(2, "w-1", "running"),
            opened(3, "w-1", "r1"),
            state(4, "w-1", "waiting", request_id="r1"),
        )
        async with connected(address.client_ws, bearer(address.secret)) as client:
            await client.send({"type": "subscribe", "after": 0})
            snapshot = await client.recv()
        assert snapshot["type"] == "snapshot"
        assert snapshot["last_id"] == 4
        assert snapshot["agents"] == (await get(address, "agents"))["agents"]
        assert [(a["agent_id"], a["state"]) for a in snapshot["agents"]] == [("w-1", "waiting")]
        assert snapshot["pending"] == (await get(address, "pending"))["pending"]
        assert [(r["id"], r["agent_id"], r["prompt"]) for r in snapshot["pending"]] == [
            ("r1", "w-1", "Deploy?")
        ]
        assert snapshot["runtimes"] == [
            {"runtime": "rt-a", "connected": True, "name": "test", "pid": 7, "host": "box"}
        ]


async def test_live_events_reach_a_subscribed_client_with_rising_ids(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        client_peer(address) as client,
        runtime_peer(address) as runtime,
    ):
        sent = [started(1, "w-1"), state(2, "w-1", "running")]
        await send_events(runtime, *sent)
        more = [
            wire(3, "agent.status", "w-1", text="a"),
            wire(4, "log", "w-1", level="info", message="m"),
        ]
        await send_events(runtime, *more)
        live = await client.events_until(lambda e: e["seq"] == 4)
        assert [e["id"] for e in live] == [1, 2, 3, 4]
        assert [{k: v for k, v in e.items() if k != "id"} for e in live] == sent + more


async def test_a_client_resubscribing_after_its_last_id_gets_exactly_the_missed_events(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address) as runtime:
        async with client_peer(address) as client:
            await send_events(runtime, started(1, "w-1"), state(2, "w-1", "running"))
            await send_events(runtime, wire(3, "agent.status", "w-1", text="one"))
            seen = await client.events_until(lambda e: e["seq"] == 3)
        last_id = seen[-1]["id"]
        # while the client is away
        await send_events(runtime, wire(4, "agent.status", "w-1", text="two"))
        await send_events(runtime, wire(5, "agent.status", "w-1", text="three"))
        async with connected(address.client_ws, bearer(address.secret)) as client:
            await client.send({"type": "subscribe", "after": last_id})
            missed = await client.events_until(lambda e: e["seq"] == 5)
            await send_events(runtime, wire(6, "agent.status", "w-1", text="live"))
            after = await client.events_until(lambda e: e["seq"] == 6)
        ids = [e["id"] for e in seen + missed + after]
        assert ids == list(range(1, 7))  # no gap, no duplicate
        assert [e["data"]["text"] for e in missed] == ["two", "three"]


async def test_a_client_command_is_routed_to_its_runtime_and_answered_with_the_same_id(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        runtime_peer(address) as runtime,
        client_peer(address, by="phone:pixel") as client,
    ):
        await send_events(runtime, started(1, "w-1"), state(2, "w-1", "running"))
        await client.send(
            {"type": "command", "id": "c1", "command": {"op": "pause", "agent_id": "w-1"}}
        )
        sent = await runtime.until(lambda m: m["type"] == "command")
        assert sent["command"] == {"op": "pause", "agent_id": "w-1", "by": "phone:pixel"}
        assert sent["id"].startswith("rt-a/")
        await runtime.send({"type": "reply", "id": sent["id"], "ok": True, "result": None})
        reply = await client.until(lambda m: m["type"] in ("reply", "error"))
        assert reply == {"type": "reply", "id": "c1", "ok": True, "result": None}

        await client.send(
            {"type": "command", "id": "c2", "command": {"op": "resume", "agent_id": "w-1"}}
        )
        sent = await runtime.until(lambda m: m["type"] == "command")
        refusal = {"code": "usage", "message": "agent w-1 has ended"}
        await runtime.send({"type": "reply", "id": sent["id"], "ok": False, "error": refusal})
        error = await client.until(lambda m: m["type"] in ("reply", "error"))
        assert (error["type"], error["id"], error["code"]) == ("error", "c2", "usage")
        assert "has ended" in error["message"]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"op": "pause", "agent_id": "nobody"}, "unknown_agent"),
        ({"op": "approve", "request_id": "r-none"}, "unknown_request"),
        ({"op": "approve"}, "bad_message"),
        ({"op": "explode"}, "bad_message"),
        ("stop_all", "bad_message"),
    ],
    ids=["unknown-agent", "unknown-request", "missing-field", "unknown-op", "not-an-object"],
)
async def test_a_refused_client_command_gets_an_error_carrying_its_id(
    tmp_path: Path, command: Any, code: str
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), client_peer(address) as client:
        await client.send({"type": "command", "id": "c7", "command": command})
        error = await client.until(lambda m: m["type"] in ("reply", "error"))
        assert (error["type"], error["code"]) == ("error", code)
        assert error.get("id") == "c7"


BAD_CLIENT_MESSAGES = [
    ("{", "bad_json"),
    ('"subscribe"', "bad_json"),
    ('{"type": "hello", "v": 1, "runtime": "x", "pid": 1}', "unknown_type"),
    ('{"after": 0}', "unknown_type"),
    ('{"type": "subscribe"}', "bad_message"),
    ('{"type": "subscribe", "after": -5}', "bad_message"),
    ('{"type": "command", "command": {"op": "stop_all"}}', "bad_message"),
]


@pytest.mark.parametrize(
    ("raw", "code"), BAD_CLIENT_MESSAGES, ids=[m[0] for m in BAD_CLIENT_MESSAGES]
)
async def test_a_bad_client_message_gets_an_error_and_the_connection_keeps_serving(
    tmp_path: Path, raw: str, code: str
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        connected(address.client_ws, bearer(address.secret)) as client,
    ):
        await client.send(raw)
        error = await client.recv()
        assert (error["type"], error["code"]) == ("error", code)
        await client.send({"type": "subscribe", "after": 0})
        assert (await client.recv())["type"] == "snapshot"
        await client.send({"type": "command", "id": "c1", "command": {"op": "stop_all"}})
        assert await client.recv() == {"type": "reply", "id": "c1", "ok": True, "result": 0}


async def test_an_oversized_client_message_closes_only_that_connection_with_1009(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        client_peer(address) as big,
        client_peer(address) as ok,
        runtime_peer(address) as runtime,
    ):
        with contextlib.suppress(WebSocketClosedError):
            await big.send("x" * (MAX_CLIENT_MESSAGE + 1))
        assert await big.closed() == 1009
        await send_events(runtime, started(1, "w-1"))
        assert [e["seq"] for e in await ok.events_until(lambda e: e["seq"] == 1)] == [1]
        await ok.send({"type": "command", "id": "c1", "command": {"op": "pause", "agent_id": "x"}})
        error = await ok.until(lambda m: m["type"] in ("reply", "error"))
        assert (error["type"], error["id"], error["code"]) == ("error", "c1", "unknown_agent")


async def test_a_client_message_at_exactly_the_size_limit_is_answered(tmp_path: Path) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), client_peer(address) as client:
        message = {"type": "command", "id": "c1", "command": {"op": "stop_all", "note": ""}}
        message["command"]["note"] = "n" * (MAX_CLIENT_MESSAGE - len(json.dumps(message)))
        text = json.dumps(message)
        assert len(text.encode()) == MAX_CLIENT_MESSAGE
        await client.send(text)
        assert await client.recv() == {"type": "reply", "id": "c1", "ok": True, "result": 0}
