"""Raw clients of a hub on a real tornado server in the test's own process.

Raw runtime connections speak the wire protocol by hand (so a test controls every byte and
every disconnect); the phone listener's tests use the same ``Peer`` for its WebSocket.
Every wait is on a message or an event, bounded by 10 s; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from conductloop_jupyter.core.clock import Clock
from conductloop_jupyter.hub.discovery import HubAddress
from conductloop_jupyter.hub.server import HubServer

TS = 1_767_225_600.0
Message = dict[str, Any]


# -- a hub, and raw connections to it ------------------------------------------------------


@asynccontextmanager
async def running_hub(
    home: Path, *, lost_after: float = 0.2, clock: Clock | None = None
) -> AsyncIterator[tuple[HubServer, HubAddress]]:
    server = HubServer(home, lost_after=lost_after, clock=clock)
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
    """One WebSocket to the hub or to its phone listener; every read is bounded."""

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
        assert raw is not None, f"the server closed the connection (code {self.ws.close_code})"
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

    async def closed(self, timeout: float = 10) -> int | None:
        """Wait for the server to close this connection; its close code."""

        async def drain() -> None:
            while not self.ended:
                await self._read()

        await asyncio.wait_for(drain(), timeout)
        return self.ws.close_code


def ws_request(url: str, headers: dict[str, str]) -> HTTPRequest:
    """A WebSocket handshake whose connect and answer are bounded."""
    return HTTPRequest(url, headers=headers, connect_timeout=10, request_timeout=10)


@asynccontextmanager
async def connected(url: str, headers: dict[str, str]) -> AsyncIterator[Peer]:
    ws = await websocket_connect(ws_request(url, headers))
    peer = Peer(ws)
    try:
        yield peer
    finally:
        ws.close()
        await peer.closed()


async def refused_handshake(url: str, headers: dict[str, str]) -> int:
    """The HTTP status of a WebSocket handshake the server refuses."""
    try:
        ws = await websocket_connect(ws_request(url, headers))
    except HTTPClientError as refused:
        return refused.code
    ws.close()
    pytest.fail("the WebSocket handshake was accepted")


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
