"""The hub's API on a real tornado server in this process: real WebSockets, real HTTP.

Raw runtime connections speak the wire protocol by hand (so a test controls every byte and
every disconnect); real ``cl.Conductor`` runtimes show that commands round-trip to agents.
Every wait is on a message or an event, bounded by 10 s; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

import conductloop_jupyter as cl
from conductloop_jupyter.hub.discovery import HubAddress
from conductloop_jupyter.hub.protocol import MAX_CLIENT_MESSAGE, MAX_RUNTIME_MESSAGE
from conductloop_jupyter.hub.server import EmbeddedHub, HubServer
from conductloop_jupyter.testing import EventRecorder, match

TS = 1_767_225_600.0
Message = dict[str, Any]


# -- a hub, and raw connections to it ------------------------------------------------------


@asynccontextmanager
async def running_hub(
    home: Path, *, lost_after: float = 0.2
) -> AsyncIterator[tuple[HubServer, HubAddress]]:
    server = HubServer(home, lost_after=lost_after)
    await asyncio.to_thread(server.bind)  # the home's lock and folder: file I/O, off the loop
    address = await server.start()
    try:
        yield server, address
    finally:
        await server.stop()


def bearer(secret: str, by: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {secret}"}
    if by is not None:
        headers["X-ConductLoop-By"] = by
    return headers


class Peer:
    """One WebSocket to the hub; every read is bounded."""

    def __init__(self, ws: WebSocketClientConnection) -> None:
        self.ws = ws
        self.ended = False  # tornado hands out the end of a connection (None) only once

    async def send(self, message: Message | str) -> None:
        await self.ws.write_message(message if isinstance(message, str) else json.dumps(message))

    async def _read(self) -> str | bytes | None:
        raw = await self.ws.read_message()
        self.ended = raw is None
        return raw

    async def recv(self) -> Message:
        raw = await asyncio.wait_for(self._read(), 10)
        assert raw is not None, f"the hub closed the connection (code {self.ws.close_code})"
        message: Message = json.loads(raw)
        return message

    async def until(self, predicate: Callable[[Message], bool]) -> Message:
        async def scan() -> Message:
            while True:
                message = await self.recv()
                if predicate(message):
                    return message

        return await asyncio.wait_for(scan(), 10)

    async def events_until(self, predicate: Callable[[Message], bool]) -> list[Message]:
        """Events from ``events`` messages, up to and including the first that matches."""
        seen: list[Message] = []

        async def scan() -> list[Message]:
            while True:
                message = await self.recv()
                assert message["type"] == "events", message
                for event in message["events"]:
                    seen.append(event)
                    if predicate(event):
                        return seen

        return await asyncio.wait_for(scan(), 10)

    async def closed(self) -> int | None:
        """Wait for the hub to close this connection; its close code."""

        async def drain() -> None:
            while not self.ended:
                await self._read()

        await asyncio.wait_for(drain(), 10)
        return self.ws.close_code


@asynccontextmanager
async def connected(url: str, headers: dict[str, str]) -> AsyncIterator[Peer]:
    ws = await websocket_connect(HTTPRequest(url, headers=headers))
    peer = Peer(ws)
    try:
        yield peer
    finally:
        ws.close()
        await peer.closed()


@asynccontextmanager
async def runtime_peer(
    address: HubAddress, runtime: str = "rt-a", *, acked: int = 0
) -> AsyncIterator[Peer]:
    """A runtime that has said hello and was welcomed with ``acked``."""
    async with connected(address.runtime_ws, bearer(address.secret)) as peer:
        await peer.send(hello(runtime))
        assert await peer.recv() == {"type": "welcome", "v": 1, "hub": "hub", "acked": acked}
        yield peer


@asynccontextmanager
async def client_peer(address: HubAddress, *, by: str | None = None) -> AsyncIterator[Peer]:
    """A client subscribed from the start (its snapshot already read)."""
    async with connected(address.client_ws, bearer(address.secret, by)) as peer:
        await peer.send({"type": "subscribe", "after": 0})
        assert (await peer.recv())["type"] == "snapshot"
        yield peer


def hello(runtime: str = "rt-a") -> Message:
    return {"type": "hello", "v": 1, "runtime": runtime, "name": "test", "pid": 7, "host": "box"}


def wire(
    seq: int, kind: str, agent_id: str | None, runtime: str = "rt-a", /, **data: Any
) -> Message:
    return {
        "v": 1,
        "seq": seq,
        "ts": TS + seq,
        "runtime": runtime,
        "agent_id": agent_id,
        "kind": kind,
        "data": data,
    }


def started(seq: int, agent_id: str, runtime: str = "rt-a") -> Message:
    return wire(
        seq,
        "agent.started",
        agent_id,
        runtime,
        name="worker",
        parent=None,
        model="gpt-4o-mini",
        budget_usd=None,
        input="task",
    )


def state(seq: int, agent_id: str, name: str, runtime: str = "rt-a", **extra: Any) -> Message:
    return wire(seq, "agent.state", agent_id, runtime, state=name, **extra)


def usage(seq: int, agent_id: str, cost: float, runtime: str = "rt-a") -> Message:
    return wire(
        seq,
        "usage",
        agent_id,
        runtime,
        model="gpt-4o-mini",
        input_tokens=100,
        output_tokens=10,
        cost_usd=cost,
        priced_by="caller",
    )


def opened(seq: int, agent_id: str, request_id: str, runtime: str = "rt-a") -> Message:
    return wire(
        seq,
        "request.opened",
        agent_id,
        runtime,
        request_id=request_id,
        kind="approval",
        prompt="Deploy?",
        choices=None,
        details={},
    )


async def send_events(peer: Peer, *events: Message) -> None:
    """Send a batch and wait for its ack (the hub has applied and committed it)."""
    await peer.send({"type": "events", "events": list(events)})
    ack = await peer.until(lambda m: m["type"] == "ack")
    assert ack == {"type": "ack", "seq": max(e["seq"] for e in events)}


async def api(
    address: HubAddress,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """``(status, JSON body)`` of one request to the hub's REST API."""
    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    response = await AsyncHTTPClient().fetch(
        address.url + "/conductloop/api/" + path,
        method="GET" if body is None else "POST",
        body=body,
        headers=bearer(address.secret) if headers is None else headers,
        raise_error=False,
    )
    return response.code, json.loads(response.body)


async def command(address: HubAddress, body: Any, by: str | None = None) -> tuple[int, Any]:
    return await api(address, "commands", body=body, headers=bearer(address.secret, by))


async def get(address: HubAddress, path: str) -> Any:
    status, body = await api(address, path)
    assert status == 200, body
    return body


def is_event(kind: str, agent_id: str | None = None, **data: Any) -> Callable[[Message], bool]:
    return lambda e: (
        e["kind"] == kind
        and (agent_id is None or e["agent_id"] == agent_id)
        and all(e["data"].get(k) == v for k, v in data.items())
    )


# -- authentication ------------------------------------------------------------------------

REST_ROUTES = [
    ("agents", None),
    ("pending", None),
    ("events?after=0", None),
    ("status", None),
    ("commands", {"op": "stop_all"}),
]
WRONG_CREDENTIALS: list[Callable[[str], dict[str, str]]] = [
    lambda secret: {},
    lambda secret: {"Authorization": "Bearer not-the-secret"},
    lambda secret: {"Authorization": f"Bearer {secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"},
    lambda secret: {"Authorization": f"Bearer {secret}x"},
    lambda secret: {"Authorization": f"Basic {secret}"},
    lambda secret: {"Authorization": secret},
    lambda secret: {"X-ConductLoop-Secret": secret},
]
CREDENTIAL_IDS = [
    "none",
    "wrong",
    "one-char-off",
    "longer",
    "basic-scheme",
    "no-scheme",
    "other-header",
]


@pytest.mark.parametrize("credentials", WRONG_CREDENTIALS, ids=CREDENTIAL_IDS)
async def test_every_rest_route_refuses_a_missing_or_wrong_secret_with_401(
    tmp_path: Path, credentials: Callable[[str], dict[str, str]]
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address):
        headers = credentials(address.secret)
        for path, body in REST_ROUTES:
            response = await AsyncHTTPClient().fetch(
                f"{address.url}/conductloop/api/{path}",
                method="GET" if body is None else "POST",
                body=None if body is None else json.dumps(body),
                headers=headers,
                raise_error=False,
            )
            assert response.code == 401, path
            assert json.loads(response.body)["error"]["code"] == "unauthorized"
            assert address.secret not in response.body.decode()
            assert address.secret[:-1] not in response.body.decode()


@pytest.mark.parametrize("credentials", WRONG_CREDENTIALS, ids=CREDENTIAL_IDS)
@pytest.mark.parametrize("channel", ["runtime", "client"])
async def test_both_websockets_refuse_a_missing_or_wrong_secret_with_http_401(
    tmp_path: Path, channel: str, credentials: Callable[[str], dict[str, str]]
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address):
        url = address.runtime_ws if channel == "runtime" else address.client_ws
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(HTTPRequest(url, headers=credentials(address.secret)))
        assert refused.value.code == 401
        assert refused.value.response is not None
        body = refused.value.response.body.decode()
        assert json.loads(body)["error"]["code"] == "unauthorized"
        assert address.secret[:-1] not in body


async def test_every_route_answers_the_right_secret(tmp_path: Path) -> None:
    async with running_hub(tmp_path / "hub") as (_, address):
        for path, body in REST_ROUTES:
            status, answer = await api(address, path, body=body)
            assert status == 200, (path, answer)
        assert (await get(address, "status"))["runtimes"] == []
        async with runtime_peer(address):  # welcomed
            pass
        async with client_peer(address):  # subscribed
            pass


# -- the runtime channel -------------------------------------------------------------------


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
    ('{"type": "events", "events": [{"seq": 1}]}', "bad_message", "ts"),
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


# -- the client channel --------------------------------------------------------------------


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
        more = [wire(3, "agent.status", "w-1", text="a"), wire(4, "log", "w-1", level="info")]
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


# -- REST ----------------------------------------------------------------------------------


async def test_events_are_paged_by_id_and_filtered_by_agent(tmp_path: Path) -> None:
    async with running_hub(tmp_path / "hub") as (_, address), runtime_peer(address) as runtime:
        await send_events(
            runtime,
            started(1, "w-1"),
            started(2, "w-2"),
            wire(3, "agent.status", "w-1", text="a"),
            wire(4, "agent.status", "w-2", text="b"),
            wire(5, "agent.status", "w-1", text="c"),
        )
        page = await get(address, "events?after=1&limit=2")
        assert ([e["id"] for e in page["events"]], page["last_id"]) == ([2, 3], 5)
        mine = await get(address, "events?after=0&agent_id=w-1")
        assert [e["id"] for e in mine["events"]] == [1, 3, 5]
        assert (await get(address, "events?after=5"))["events"] == []
        for bad in ("after=x", "after=-1", "limit=0", "limit=10001"):
            status, body = await api(address, "events?" + bad)
            assert (status, body["error"]["code"]) == (400, "bad_message"), bad


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"op": "pause", "agent_id": "nobody"}, 404, "unknown_agent"),
        ({"op": "approve", "request_id": "r-none"}, 404, "unknown_request"),
        ("{not json", 400, "bad_json"),
        ("[1]", 400, "bad_json"),
        ({"op": "approve"}, 400, "bad_message"),
        ({"op": "redirect", "agent_id": "w-1"}, 400, "bad_message"),
        ({"op": "reboot"}, 400, "bad_message"),
    ],
    ids=[
        "unknown-agent",
        "unknown-request",
        "malformed",
        "not-an-object",
        "missing-request-id",
        "missing-text",
        "unknown-op",
    ],
)
async def test_a_refused_rest_command_gets_its_http_status_and_error_code(
    tmp_path: Path, body: Any, status: int, code: str
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address):
        answer = await command(address, body)
        assert answer[0] == status
        assert answer[1]["error"]["code"] == code
        assert answer[1]["error"]["message"]


async def test_a_command_the_runtime_does_not_answer_in_time_is_504_timeout(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path / "hub") as (server, address), runtime_peer(address) as rt:
        await send_events(rt, started(1, "w-1"), state(2, "w-1", "running"))
        assert server.hub is not None
        server.hub.command_timeout = 0.2
        status, body = await command(address, {"op": "pause", "agent_id": "w-1"})
        assert (status, body["error"]["code"]) == (504, "timeout")
        assert (await rt.until(lambda m: m["type"] == "command"))["command"]["op"] == "pause"


async def test_a_command_in_flight_when_its_runtime_disconnects_is_503_runtime_gone(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path / "hub", lost_after=30) as (_, address):
        async with runtime_peer(address) as runtime:
            await send_events(runtime, started(1, "w-1"), state(2, "w-1", "running"))
            in_flight = asyncio.ensure_future(command(address, {"op": "stop", "agent_id": "w-1"}))
            sent = await runtime.until(lambda m: m["type"] == "command")
            assert sent["command"] == {"op": "stop", "agent_id": "w-1", "by": "client"}
        status, body = await asyncio.wait_for(in_flight, 10)
        assert (status, body["error"]["code"]) == (503, "runtime_gone")
        # and later commands for its agents, while it stays away
        status, body = await command(address, {"op": "pause", "agent_id": "w-1"})
        assert (status, body["error"]["code"]) == (503, "runtime_gone")


# -- commands to a real Conductor ----------------------------------------------------------


@asynccontextmanager
async def conductor(
    address: HubAddress, monkeypatch: pytest.MonkeyPatch, name: str = "steer"
) -> AsyncIterator[tuple[cl.Conductor, EventRecorder]]:
    monkeypatch.setenv("CONDUCTLOOP_HUB_SECRET", address.secret)
    async with cl.Conductor(name, hub=address.url) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        yield loop, recorder


async def request_of(recorder: EventRecorder, run: cl.AgentRun) -> str:
    event = await recorder.wait_for(match("request.opened", agent_id=run.agent_id))
    return str(event.data["request_id"])


async def synced(loop: cl.Conductor) -> None:
    """Wait until the hub has acknowledged every event the conductor emitted so far."""
    assert loop.link is not None
    assert await loop.link.drain(10)


async def test_approve_over_rest_decides_once_and_the_agent_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        conductor(address, monkeypatch) as (loop, recorder),
    ):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return await ctx.approve("Deploy?", details={"env": "prod"})

        run = loop.start("asks")
        request_id = await request_of(recorder, run)
        await synced(loop)
        [pending] = (await get(address, "pending"))["pending"]
        assert (pending["id"], pending["agent_id"], pending["kind"], pending["details"]) == (
            request_id,
            run.agent_id,
            "approval",
            {"env": "prod"},
        )
        approve = {"op": "approve", "request_id": request_id, "note": "ship it", "by": "forged"}
        assert await command(address, approve, by="tester") == (200, {"ok": True, "result": True})
        assert await command(address, approve) == (200, {"ok": True, "result": False})
        assert await asyncio.wait_for(run, 10) is True
        decided = loop.request(request_id)
        assert (decided.decision, decided.decided_by, decided.note) == (
            "approved",
            "tester",  # the hub sets `by` from the caller, not from the body
            "ship it",
        )
        await synced(loop)
        assert (await get(address, "pending"))["pending"] == []
        [agent] = (await get(address, "agents"))["agents"]
        assert (agent["agent_id"], agent["state"]) == (run.agent_id, "done")


async def test_steering_a_finished_agent_is_409_usage_and_stopping_it_is_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        conductor(address, monkeypatch) as (loop, _),
    ):

        @loop.agent
        async def quick(ctx: cl.Context) -> str:
            return "done"

        run = loop.start("quick")
        assert await asyncio.wait_for(run, 10) == "done"
        await synced(loop)
        for refused in (
            {"op": "pause", "agent_id": run.agent_id},
            {"op": "resume", "agent_id": run.agent_id},
            {"op": "redirect", "agent_id": run.agent_id, "text": "more"},
        ):
            status, body = await command(address, refused)
            assert (status, body["error"]["code"]) == (409, "usage"), refused
            assert run.agent_id in body["error"]["message"]
        stop = {"op": "stop", "agent_id": run.agent_id}
        assert await command(address, stop) == (200, {"ok": True, "result": None})
        assert run.state is cl.AgentState.DONE


async def test_stop_all_stops_every_agent_of_every_connected_runtime_and_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        conductor(address, monkeypatch, "one") as (one, one_events),
        conductor(address, monkeypatch, "two") as (two, two_events),
    ):
        runs: list[tuple[cl.Conductor, EventRecorder, cl.AgentRun]] = []
        for loop, recorder, count in ((one, one_events, 2), (two, two_events, 1)):

            @loop.agent
            async def waits(ctx: cl.Context) -> bool:
                return await ctx.approve("Go on?")

            for _ in range(count):
                run = loop.start("waits")
                await request_of(recorder, run)
                runs.append((loop, recorder, run))
        await synced(one)
        await synced(two)
        assert await command(address, {"op": "stop_all"}) == (200, {"ok": True, "result": 3})
        for _, recorder, run in runs:
            await recorder.wait_for(match("agent.state", agent_id=run.agent_id, state="stopped"))
            with pytest.raises(cl.AgentStopped):
                await asyncio.wait_for(run, 10)
        assert await command(address, {"op": "stop_all"}) == (200, {"ok": True, "result": 0})
        await synced(one)
        await synced(two)
        states = [a["state"] for a in (await get(address, "agents"))["agents"]]
        assert states == ["stopped"] * 3
        assert (await get(address, "pending"))["pending"] == []


async def test_a_command_for_an_agent_whose_runtime_disconnected_is_503_runtime_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub", lost_after=30) as (_, address),
        conductor(address, monkeypatch) as (loop, recorder),
    ):

        @loop.agent
        async def waits(ctx: cl.Context) -> bool:
            return await ctx.approve("Go on?")

        run = loop.start("waits")
        request_id = await request_of(recorder, run)
        await synced(loop)
        assert loop.link is not None
        await loop.link.aclose()  # the runtime's connection goes; its agent waits on

        async def disconnected() -> None:  # each look is a request to the hub: no sleeping
            while any(r["connected"] for r in (await get(address, "status"))["runtimes"]):
                pass

        await asyncio.wait_for(disconnected(), 10)
        for body in (
            {"op": "approve", "request_id": request_id},
            {"op": "pause", "agent_id": run.agent_id},
            {"op": "stop", "agent_id": run.agent_id},
        ):
            status, answer = await command(address, body)
            assert (status, answer["error"]["code"]) == (503, "runtime_gone"), body
        assert run.state is cl.AgentState.WAITING  # nothing reached it
        assert loop.request(request_id).open


# -- lost runtimes -------------------------------------------------------------------------


async def test_a_runtime_that_does_not_come_back_has_its_live_agents_lost_and_requests_withdrawn(
    tmp_path: Path,
) -> None:
    lost_after = 0.2
    async with (
        running_hub(tmp_path / "hub", lost_after=lost_after) as (_, address),
        client_peer(address) as client,
    ):
        async with runtime_peer(address) as runtime:
            await send_events(
                runtime,
                started(1, "w-1"),
                state(2, "w-1", "running"),
                opened(3, "w-1", "r1"),
                state(4, "w-1", "waiting", request_id="r1"),
                started(5, "w-2"),
                state(6, "w-2", "running"),
                state(7, "w-2", "done"),
            )
        gone = asyncio.get_running_loop().time()
        events = await client.events_until(is_event("agent.state", "w-1", state="lost"))
        elapsed = asyncio.get_running_loop().time() - gone
        assert lost_after * 0.5 <= elapsed < lost_after + 5
        hub_events = [e for e in events if e["runtime"] == "hub"]
        assert [(e["kind"], e["agent_id"]) for e in hub_events] == [
            ("request.decided", "w-1"),
            ("agent.state", "w-1"),
        ]
        assert hub_events[0]["data"] == {"request_id": "r1", "decision": "withdrawn", "by": "hub"}
        assert "rt-a" in hub_events[1]["data"]["reason"]
        agents = {a["agent_id"]: a["state"] for a in (await get(address, "agents"))["agents"]}
        assert agents == {"w-1": "lost", "w-2": "done"}  # a finished agent stays finished
        assert (await get(address, "pending"))["pending"] == []


async def test_a_runtime_that_reconnects_before_lost_after_is_not_marked_lost(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path / "hub", lost_after=1.0) as (_, address),
        client_peer(address) as client,
    ):
        async with runtime_peer(address, "rt-a") as runtime:
            await send_events(runtime, started(1, "a-1"), state(2, "a-1", "running"))
        async with runtime_peer(address, "rt-a", acked=2) as runtime:
            # rt-b disconnects after rt-a did: its agent is lost after rt-a's would have been
            async with runtime_peer(address, "rt-b") as other:
                await send_events(
                    other, started(1, "b-1", "rt-b"), state(2, "b-1", "running", "rt-b")
                )
            events = await client.events_until(is_event("agent.state", "b-1", state="lost"))
            assert not [e for e in events if e["agent_id"] == "a-1" and e["runtime"] == "hub"]
            agents = {a["agent_id"]: a["state"] for a in (await get(address, "agents"))["agents"]}
            assert agents == {"a-1": "running", "b-1": "lost"}
            await send_events(runtime, wire(3, "agent.status", "a-1", text="back"))


# -- restarting the hub --------------------------------------------------------------------


async def test_stopping_the_hub_closes_every_runtime_and_client_connection(
    tmp_path: Path,
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (server, address),
        runtime_peer(address) as runtime,
        client_peer(address) as client,
    ):
        await send_events(runtime, started(1, "w-1"))
        await server.stop()
        # the runtime learns at once that this hub is gone (and replays to the next one)
        await runtime.closed()
        await client.closed()
        assert runtime.ended
        assert client.ended


async def test_a_restarted_hub_has_every_event_with_the_same_ids_and_the_same_view(
    tmp_path: Path,
) -> None:
    home = tmp_path / "hub"
    async with running_hub(home, lost_after=30) as (_, address):
        async with runtime_peer(address) as runtime:
            await send_events(runtime, started(1, "w-1"), state(2, "w-1", "running"))
            await send_events(
                runtime,
                usage(3, "w-1", 0.125),
                opened(4, "w-1", "r1"),
                state(5, "w-1", "waiting", request_id="r1"),
                started(6, "w-2"),
                state(7, "w-2", "failed", reason="boom"),
            )
        before = {
            path: await get(address, path) for path in ("events?after=0", "agents", "pending")
        }
        status_before = await get(address, "status")
    async with running_hub(home, lost_after=30) as (_, address):
        after = {path: await get(address, path) for path in ("events?after=0", "agents", "pending")}
        assert after == before
        assert [e["id"] for e in after["events?after=0"]["events"]] == list(range(1, 8))
        status = await get(address, "status")
        assert (status["last_id"], status["spend_usd"], status["agents"], status["pending"]) == (
            status_before["last_id"],
            status_before["spend_usd"],
            {"waiting": 1, "failed": 1},
            1,
        )
        async with runtime_peer(address, acked=7) as runtime:  # welcome: its last seq
            await send_events(runtime, wire(8, "agent.status", "w-1", text="resumed"))
        [newest] = (await get(address, "events?after=7"))["events"]
        assert (newest["id"], newest["seq"]) == (8, 8)


# -- cl.connect(): the Python client of a hub ----------------------------------------------


class HubFeed:
    """A real client of the hub, subscribed on a thread (and event loop) of its own.

    It hands every message to the test thread through a ``SimpleQueue``, which takes no
    Python-level lock on the feed's loop thread.
    """

    def __init__(self, address: HubAddress) -> None:
        self._messages: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self.seen: list[Message] = []
        self._ws: WebSocketClientConnection | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-hub-feed")
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(address), self._loop)
        snapshot = self._messages.get(timeout=10)
        assert snapshot is not None
        assert snapshot["type"] == "snapshot"

    async def _listen(self, address: HubAddress) -> None:
        try:
            request = HTTPRequest(address.client_ws, headers=bearer(address.secret))
            self._ws = await websocket_connect(request)
            await self._ws.write_message(json.dumps({"type": "subscribe", "after": 0}))
            while (raw := await self._ws.read_message()) is not None:
                self._messages.put(json.loads(raw))
        finally:
            self._messages.put(None)

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 10) -> Message:
        """The first event the hub published that matches (waiting for it if need be)."""
        for event in self.seen:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
            assert message is not None, "the hub closed the feed"
            assert message["type"] == "events", message
            self.seen.extend(message["events"])
            for event in message["events"]:
                if predicate(event):
                    return event

    def close(self) -> None:
        if self._ws is not None:
            self._loop.call_soon_threadsafe(self._ws.close)
            while self._messages.get(timeout=10) is not None:
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextmanager
def embedded_hub(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[HubAddress, HubFeed]]:
    monkeypatch.setenv("CONDUCTLOOP_HOME", str(home))  # cl.connect() finds hub.json here
    embedded = EmbeddedHub(home)
    address = embedded.start()
    try:
        feed = HubFeed(address)
        try:
            yield address, feed
        finally:
            feed.close()
    finally:
        embedded.stop()


def test_the_hub_client_sees_agents_pending_and_every_event_of_a_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        embedded_hub(tmp_path / "hub", monkeypatch) as (address, feed),
        cl.Conductor("seen", hub=address.url) as loop,
    ):

        @loop.agent
        async def asks(ctx: cl.Context, what: str) -> bool:
            ctx.status(f"asking about {what}")
            return await ctx.approve(f"Deploy {what}?", details={"what": what})

        first, second = loop.start("asks", "api"), loop.start("asks", "web")
        for run in (first, second):
            feed.wait_for(is_event("request.opened", run.agent_id))
        hub = cl.connect()
        assert hub.address == address

        agents = hub.agents()
        assert list(agents["agent_id"]) == [first.agent_id, second.agent_id]
        assert list(agents["state"]) == ["waiting", "waiting"]
        assert list(agents["activity"]) == ["asking about api", "asking about web"]
        assert set(agents["runtime"]) == {loop.runtime}

        pending = hub.pending()
        assert [(r.agent_id, r.kind, r.prompt, r.details) for r in pending] == [
            (first.agent_id, "approval", "Deploy api?", {"what": "api"}),
            (second.agent_id, "approval", "Deploy web?", {"what": "web"}),
        ]
        assert [r.id for r in pending] == [r.id for r in loop.pending()]

        emitted = loop.events()
        feed.wait_for(lambda e: e["runtime"] == loop.runtime and e["seq"] == emitted["seq"].max())
        events = hub.events()
        assert list(events["id"]) == list(range(1, len(emitted) + 1))  # ascending, no gap
        assert list(zip(events["seq"], events["kind"], strict=True)) == list(
            zip(emitted["seq"], emitted["kind"], strict=True)
        )
        mine = hub.events(agent_id=first.agent_id)
        assert set(mine["agent_id"]) == {first.agent_id}
        assert len(mine) == (emitted["agent_id"] == first.agent_id).sum()
        assert list(hub.events(after=int(events["id"].iloc[-2]))["id"]) == [len(emitted)]


def test_the_hub_client_steers_a_runtime_and_each_command_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        embedded_hub(tmp_path / "hub", monkeypatch) as (address, feed),
        cl.Conductor("steered", hub=address.url) as loop,
    ):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return await ctx.approve("Deploy?")

        @loop.agent
        async def chooses(ctx: cl.Context) -> tuple[str | None, list[str]]:
            answer = await ctx.ask("Which dataset?", choices=["a", "b"])
            return answer, await ctx.checkpoint()

        def request_id(run: cl.AgentRun) -> str:
            return str(
                feed.wait_for(is_event("request.opened", run.agent_id))["data"]["request_id"]
            )

        hub = cl.connect(by="tester")
        yes, no, question = loop.start("asks"), loop.start("asks"), loop.start("chooses")
        yes_id, no_id, question_id = request_id(yes), request_id(no), request_id(question)

        assert hub.approve(yes_id, note="fine") is True
        assert hub.approve(yes_id) is False  # first answer wins
        assert hub.reject(yes_id) is False
        assert hub.reject(no_id, note="not now") is True
        assert yes.result(10) is True
        assert no.result(10) is False
        assert (loop.request(yes_id).decided_by, loop.request(no_id).note) == ("tester", "not now")

        hub.pause(question.agent_id)  # takes effect once its question is answered
        hub.redirect(question.agent_id, "use the 2025 data")
        assert hub.answer(question_id, "a") is True
        assert hub.answer(question_id, "b") is False
        feed.wait_for(is_event("agent.state", question.agent_id, state="paused"))
        assert question.state is cl.AgentState.PAUSED
        hub.resume(question.agent_id)
        assert question.result(10) == ("a", ["use the 2025 data"])
        commands = [
            (e.data["op"], e.data["by"]) for e in loop.events().itertuples() if e.kind == "command"
        ]
        assert commands == [("pause", "tester"), ("resume", "tester")]

        one, two, three = (loop.start("asks") for _ in range(3))
        for run in (one, two, three):
            request_id(run)
        hub.stop(one.agent_id)
        feed.wait_for(is_event("agent.state", one.agent_id, state="stopped"))
        hub.stop(one.agent_id)  # idempotent
        assert hub.stop_all() == 2
        for run in (one, two, three):
            with pytest.raises(cl.AgentStopped):
                run.result(10)
        assert hub.stop_all() == 0
        assert hub.pending() == []


def test_the_hub_client_raises_usage_error_for_unknown_ids_and_finished_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        embedded_hub(tmp_path / "hub", monkeypatch) as (address, feed),
        cl.Conductor("done", hub=address.url) as loop,
    ):

        @loop.agent
        async def quick(ctx: cl.Context) -> int:
            return 1

        @loop.agent
        async def chooses(ctx: cl.Context) -> str | None:
            return await ctx.ask("Which?", choices=["a", "b"])

        finished = loop.start("quick")
        assert finished.result(10) == 1
        feed.wait_for(is_event("agent.state", finished.agent_id, state="done"))
        asking = loop.start("chooses")
        question_id = feed.wait_for(is_event("request.opened", asking.agent_id))["data"][
            "request_id"
        ]
        hub = cl.connect()

        with pytest.raises(cl.UsageError, match="r-unknown"):
            hub.approve("r-unknown")
        with pytest.raises(cl.UsageError, match="r-unknown"):
            hub.answer("r-unknown", "a")
        with pytest.raises(cl.UsageError, match="nobody"):
            hub.pause("nobody")
        with pytest.raises(cl.UsageError, match="nobody"):
            hub.stop("nobody")
        for verb in (hub.pause, hub.resume):
            with pytest.raises(cl.UsageError, match=finished.agent_id):
                verb(finished.agent_id)
        with pytest.raises(cl.UsageError, match=finished.agent_id):
            hub.redirect(finished.agent_id, "more")
        hub.stop(finished.agent_id)  # stopping a finished agent is a no-op, not an error
        with pytest.raises(cl.UsageError):
            hub.answer(question_id, "c")  # not one of the choices
        with pytest.raises(cl.UsageError):
            hub.approve(question_id)  # a question is answered, not approved
        assert hub.answer(question_id, "b") is True
        assert asking.result(10) == "b"


def test_connect_without_a_running_hub_raises_usage_error_saying_how_to_start_one(
    tmp_path: Path,
) -> None:
    with pytest.raises(cl.UsageError, match="conductloop serve"):
        cl.connect()  # $CONDUCTLOOP_HOME is an empty folder
    with pytest.raises(cl.UsageError, match="conductloop serve"):
        cl.connect(home=tmp_path / "nowhere")


def test_connect_finds_the_hub_in_hub_json_and_not_after_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "hub"
    with embedded_hub(home, monkeypatch) as (address, _):
        hub = cl.connect()
        assert hub.address == address
        assert hub.status()["runtimes"] == []
    with pytest.raises(cl.UsageError, match="conductloop serve"):
        cl.connect(home=home)
