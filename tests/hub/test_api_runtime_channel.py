"""The hub's runtime channel: hello and welcome, acked events, replays, replaced connections,
bad and oversized messages, on a real tornado server in this process.

Raw runtime connections speak the wire protocol by hand, so a test controls every byte and
every disconnect; every wait is on a message, bounded by 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest
from tornado.websocket import WebSocketClosedError

from conductloop_jupyter.hub.protocol import MAX_RUNTIME_MESSAGE
from tests.hub._support import (
    bearer,
    client_peer,
    command,
    connected,
    get,
    hello,
    running_hub,
    runtime_peer,
    send_events,
    started,
    state,
    usage,
    wire,
)


async def test_a_new_runtime_is_welcomed_with_nothing_acked_and_listed_as_connected(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address, "rt-a"):
        runtimes = (await get(address, "status"))["runtimes"]
        assert runtimes == [
            {"runtime": "rt-a", "connected": True, "name": "test", "pid": 7, "host": "box"}
        ]


async def test_events_are_acked_with_their_highest_seq_only_once_committed(
    tmp_path: Path,
) -> None:
    home = tmp_path / "hub"

    def stored() -> list[tuple[str, int, str]]:
        conn = sqlite3.connect(f"file:{home / 'events.sqlite3'}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT runtime, seq, kind FROM events ORDER BY id").fetchall()
        finally:
            conn.close()

    async with running_hub(home) as (_, address), runtime_peer(address) as runtime:
        await send_events(runtime, started(1, "w-1"), state(2, "w-1", "running"))
        # the ack came after the commit: another connection to the file sees both rows now
        assert await asyncio.to_thread(stored) == [
            ("rt-a", 1, "agent.started"),
            ("rt-a", 2, "agent.state"),
        ]
        await send_events(runtime, wire(3, "agent.status", "w-1", text="searching"))
        assert [row[1] for row in await asyncio.to_thread(stored)] == [1, 2, 3]
        agents = (await get(address, "agents"))["agents"]
        assert [(a["agent_id"], a["state"], a["activity"]) for a in agents] == [
            ("w-1", "running", "searching")
        ]


async def test_replayed_events_are_stored_once_and_counted_once(tmp_path: Path) -> None:
    first = [started(1, "w-1"), usage(2, "w-1", 0.25)]
    async with running_hub(tmp_path / "hub") as (_, address), client_peer(address) as client:
        async with runtime_peer(address) as runtime:
            await send_events(runtime, *first)
            await send_events(runtime, *first)  # the same batch again: acked, not re-applied
        # the runtime reconnects: the welcome says what the hub has, and it replays anyway
        async with runtime_peer(address, acked=2) as runtime:
            await send_events(runtime, *first, usage(3, "w-1", 0.5))
        status = await get(address, "status")
        assert status["spend_usd"] == pytest.approx(0.75)
        assert status["last_id"] == 3
        [agent] = (await get(address, "agents"))["agents"]
        assert (agent["cost_usd"], agent["input_tokens"]) == (pytest.approx(0.75), 200)
        events = (await get(address, "events?after=0"))["events"]
        assert [(e["id"], e["seq"]) for e in events] == [(1, 1), (2, 2), (3, 3)]
        live = await client.events_until(lambda e: e["seq"] == 3)
        assert [e["id"] for e in live] == [1, 2, 3]  # each event reached the client once


async def test_a_second_connection_of_the_same_runtime_replaces_the_first_closing_it_4000(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        runtime_peer(address, "rt-a") as old,
    ):
        await send_events(old, started(1, "w-1"), state(2, "w-1", "running"))
        async with runtime_peer(address, "rt-a", acked=2) as new:
            assert await old.closed() == 4000
            await send_events(new, wire(3, "agent.status", "w-1", text="still here"))
            # commands now go to the new connection
            pending = asyncio.ensure_future(command(address, {"op": "pause", "agent_id": "w-1"}))
            sent = await new.until(lambda m: m["type"] == "command")
            await new.send({"type": "reply", "id": sent["id"], "ok": True, "result": None})
            assert await pending == (200, {"ok": True, "result": None})
            runtimes = (await get(address, "status"))["runtimes"]
            assert [(r["runtime"], r["connected"]) for r in runtimes] == [("rt-a", True)]


async def test_events_before_hello_get_bad_message_and_the_connection_keeps_serving(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        connected(address.runtime_ws, bearer(address.secret)) as runtime,
    ):
        await runtime.send({"type": "events", "events": [started(1, "w-1")]})
        error = await runtime.recv()
        assert (error["type"], error["code"]) == ("error", "bad_message")
        assert "hello" in error["message"]
        await runtime.send(hello())
        assert (await runtime.recv())["acked"] == 0  # nothing was stored before the hello
        await send_events(runtime, started(1, "w-1"))
        assert (await get(address, "status"))["last_id"] == 1


BAD_RUNTIME_MESSAGES: list[tuple[str, str, str | None]] = [
    ("{", "bad_json", None),
    ("[1, 2]", "bad_json", None),
    ('{"type": "subscribe", "after": 0}', "unknown_type", None),
    ('{"type": "welcome", "v": 1}', "unknown_type", None),
    ('{"type": "hello", "v": 1, "pid": 1}', "bad_message", "runtime"),
    ('{"type": "hello", "v": 2, "runtime": "rt-a", "pid": 1}', "bad_message", None),
    ('{"type": "hello", "v": 1, "runtime": "hub", "pid": 1}', "bad_message", "hub"),
    ('{"type": "events", "events": []}', "bad_message", "events"),
    ('{"type": "reply", "ok": true}', "bad_message", "id"),
]


@pytest.mark.parametrize(
    ("raw", "code", "names"), BAD_RUNTIME_MESSAGES, ids=[m[0] for m in BAD_RUNTIME_MESSAGES]
)
async def test_a_bad_runtime_message_gets_a_typed_error_and_the_same_connection_keeps_serving(
    tmp_path: Path, raw: str, code: str, names: str | None
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        connected(address.runtime_ws, bearer(address.secret)) as runtime,
    ):
        for attempt in ("before hello", "after hello"):
            await runtime.send(raw)
            error = await runtime.recv()
            assert (error["type"], error["code"]) == ("error", code), attempt
            if names is not None:
                assert names in error["message"]
            if attempt == "before hello":
                await runtime.send(hello())
                assert (await runtime.recv())["type"] == "welcome"
        await send_events(runtime, started(1, "w-1"))
        assert [a["agent_id"] for a in (await get(address, "agents"))["agents"]] == ["w-1"]


async def test_events_claiming_another_runtime_are_refused_and_not_stored(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address) as runtime:
        await runtime.send(
            {"type": "events", "events": [started(1, "w-1"), started(2, "x-1", "rt-b")]}
        )
        error = await runtime.recv()
        assert (error["type"], error["code"]) == ("error", "bad_message")
        assert "rt-b" in error["message"]
        assert (await get(address, "events?after=0"))["events"] == []
        assert (await get(address, "agents"))["agents"] == []
        await send_events(runtime, started(1, "w-1"))  # still serving, seq 1 still free
        assert (await get(address, "status"))["last_id"] == 1


async def test_an_oversized_runtime_message_closes_only_that_connection_with_1009(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        runtime_peer(address, "rt-big") as big,
        runtime_peer(address, "rt-ok") as ok,
    ):
        with contextlib.suppress(WebSocketClosedError):
            await big.send("x" * (MAX_RUNTIME_MESSAGE + 1))
        assert await big.closed() == 1009
        await send_events(ok, started(1, "w-1", "rt-ok"))
        runtimes = {
            r["runtime"]: r["connected"] for r in (await get(address, "status"))["runtimes"]
        }
        assert runtimes == {"rt-big": False, "rt-ok": True}


async def test_a_runtime_message_at_exactly_the_size_limit_is_accepted(tmp_path: Path) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address) as runtime:
        event = wire(1, "log", None, level="info", message="")
        frame = json.dumps({"type": "events", "events": [event]})
        event["data"]["message"] = "m" * (MAX_RUNTIME_MESSAGE - len(frame))
        batch = json.dumps({"type": "events", "events": [event]})
        assert len(batch.encode()) == MAX_RUNTIME_MESSAGE
        await runtime.send(batch)
        assert await runtime.recv() == {"type": "ack", "seq": 1}
