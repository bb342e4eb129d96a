"""What a client leaves unread is bounded, and a client that goes away mid-stream is quiet
(issue 12, point 7 and the "Task exception was never retrieved" tracebacks).

Real hub, real sockets. The stalled client is a raw TCP socket with a small receive
buffer that does the WebSocket handshake, subscribes, reads its snapshot, and then never
reads again, while a runtime sends ~25 MB of events and another client reads them all.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from conductloop_jupyter.hub.discovery import HubAddress
from conductloop_jupyter.hub.hub import Connection, Hub
from conductloop_jupyter.hub.sendqueue import SEND_LIMIT, TOO_SLOW
from tests.hub._phone_support import PhoneHub
from tests.hub._support import (
    Message,
    Peer,
    bearer,
    client_peer,
    connected,
    running_hub,
    runtime_peer,
    send_events,
    wire,
)

BATCHES, PER_BATCH, TEXT = 25, 1000, "x" * 1000  # ~25 MB of log events in all


class RawClient:
    """A WebSocket client by hand, on a socket that reads only when told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, message: Message) -> None:
        payload = json.dumps(message).encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        await self.writer.drain()

    async def frame(self) -> tuple[int, bytes]:
        """The next frame: its opcode and payload (the server sends them unfragmented)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 10)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(size), 10)

    async def recv(self) -> Message:
        opcode, payload = await self.frame()
        assert opcode == 0x1, opcode
        message: Message = json.loads(payload)
        return message

    def abort(self) -> None:
        """Gone without a close frame (a phone that lost its network)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()


@asynccontextmanager
async def raw_client(address: HubAddress) -> AsyncIterator[RawClient]:
    """Handshaken and subscribed (its snapshot read); reads nothing more unless told."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = address.url.removeprefix("http://").rsplit(":", 1)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {
        "Host": f"{host}:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        **bearer(address.secret),
    }
    request = "GET /conductloop/api/ws HTTP/1.1\r\n"
    request += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(request.encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    client = RawClient(reader, writer)
    await client.send({"type": "subscribe", "after": 0})
    assert (await client.recv())["type"] == "snapshot"
    try:
        yield client
    finally:
        writer.close()


def the_new_client(hub: Hub, before: set[Connection]) -> Any:
    (new,) = set(hub.connections) - before
    return new


async def ids_until(client: Peer, last: int) -> list[int]:
    ids: list[int] = []
    while not ids or ids[-1] < last:
        message = await client.recv()
        assert message["type"] == "events", message
        ids.extend(e["id"] for e in message["events"])
    return ids


async def stream(runtime: Peer, batches: int = BATCHES, *, after: int = 0) -> None:
    """``batches`` batches of log events, the first after batch number ``after``."""
    for b in range(after, after + batches):
        first = b * PER_BATCH + 1
        batch = [wire(s, "log", "a-1", message=TEXT) for s in range(first, first + PER_BATCH)]
        await send_events(runtime, *batch)  # acked: the agents are not held back


async def test_a_client_that_stops_reading_is_dropped_with_bounded_memory_and_others_keep_up(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as (server, address), runtime_peer(address) as runtime:
        hub = server.hub
        assert hub is not None
        assert hub.send_limit == SEND_LIMIT
        before = set(hub.connections)
        async with raw_client(address):
            stalled = the_new_client(hub, before)
            assert stalled in hub.clients
            async with client_peer(address) as reading:
                last = BATCHES * PER_BATCH
                reader = asyncio.create_task(asyncio.wait_for(ids_until(reading, last), 60))
                await stream(runtime)
                assert await reader == list(range(1, last + 1))  # the reading client has all
                queue = stalled.send_queue
                assert queue.dropped
                assert stalled not in hub.clients  # nothing more is queued for it
                # what the hub held for it: under the limit, plus the one message that crossed it
                largest = len(json.dumps({"type": "events", "events": []})) + PER_BATCH * 1200
                assert queue.peak <= SEND_LIMIT + largest
                # and the socket is closed (the close frame cannot reach it: tornado gives up)
                await asyncio.wait_for(asyncio.shield(hub.connections[stalled]), 10)
                assert stalled not in hub.connections


async def test_a_slow_client_that_reads_on_is_told_1013_and_catches_up_after_reconnecting(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as (server, address), runtime_peer(address) as runtime:
        hub = server.hub
        assert hub is not None
        hub.send_limit = 256 * 1024
        async with raw_client(address) as slow:
            await stream(runtime, 8)  # it reads nothing meanwhile
            got: list[int] = []
            while True:  # then it reads its backlog, up to the close frame
                opcode, payload = await slow.frame()
                if opcode == 0x8:
                    break
                got.extend(e["id"] for e in json.loads(payload)["events"])
            assert struct.unpack("!H", payload[:2]) == (TOO_SLOW,)
            assert b"too slowly" in payload
        assert 0 < len(got) < hub.last_id
        hub.send_limit = SEND_LIMIT
        async with connected(address.client_ws, bearer(address.secret)) as again:
            await again.send({"type": "subscribe", "after": got[-1]})
            rest = await asyncio.wait_for(ids_until(again, hub.last_id), 30)
        assert got + rest == list(range(1, hub.last_id + 1))


async def test_clients_that_vanish_mid_stream_leave_no_error_in_the_hubs_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_hub(tmp_path) as (server, address), runtime_peer(address) as runtime:
        hub = server.hub
        assert hub is not None
        async with raw_client(address) as a, raw_client(address) as b, raw_client(address) as c:
            await stream(runtime, 6)  # their sockets are full: writes are pending
            for gone in (a, b, c):
                gone.abort()
            await stream(runtime, 2, after=6)
            async with client_peer(address) as reading:
                await send_events(
                    runtime, wire(8 * PER_BATCH + 1, "agent.status", "a-1", text="ok")
                )
                assert (await reading.recv())["events"][0]["data"] == {"text": "ok"}
        gc.collect()  # a never-retrieved task exception is reported when it is collected
        await asyncio.sleep(0)
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged == []
    assert "never retrieved" not in caplog.text
    assert "WebSocketClosedError" not in caplog.text


async def test_a_phone_that_stops_reading_is_closed_with_1013_after_what_it_was_sent(
    phone: PhoneHub,
) -> None:
    hub = phone.embedded.server.hub
    assert hub is not None
    hub.send_limit = 64 * 1024  # read on the hub's thread only when it sends
    device = await asyncio.to_thread(phone.pair)
    async with phone.socket(device) as ws, runtime_peer(phone.address) as runtime:
        await ws.send({"type": "subscribe", "after": 0})
        assert (await ws.recv())["type"] == "snapshot"
        await stream(runtime)  # the phone reads nothing meanwhile (past its kernel buffers)
        got: list[int] = []
        while True:
            raw = await asyncio.wait_for(ws.ws.read_message(), 10)
            if raw is None:
                break
            got.extend(e["id"] for e in json.loads(raw)["events"])
        assert ws.ws.close_code == TOO_SLOW
        assert got == list(range(1, len(got) + 1))  # in order, then cut off
        assert len(got) < BATCHES * PER_BATCH
        ws.ended = True
