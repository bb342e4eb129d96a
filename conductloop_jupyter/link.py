"""A runtime's link to its hub: buffered, batched, replayed after a dropped connection.

The link is the Conductor's ``EventSink``. ``emit`` only appends to a buffer: agents never
wait for the network. A task on the conductor's loop connects (with back-off), says
``hello``, drops what the hub's ``welcome`` says it already has, sends the rest in batches,
and drops events once the hub ``ack``s them (after they are committed). Commands from the
hub are carried out by the Conductor and answered with a ``reply``.

While the hub is away the buffer holds up to ``buffer_size`` events; past that the oldest
are dropped and a ``gap`` event says which: memory stays bounded, agents keep running.

With no hub named (``hub=None`` and no ``$CONDUCTLOOP_HUB``), the link reads ``hub.json``
in the home folder, and if no hub answers there it starts an embedded one in this process.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import socket
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketError, websocket_connect

from .core.errors import UsageError
from .core.events import Event
from .hub.discovery import HubAddress, read_hub_file
from .hub.protocol import MAX_RUNTIME_MESSAGE, PROTOCOL_VERSION, dumps
from .hub.server import start_embedded

if TYPE_CHECKING:
    from .core.conductor import BaseConductor

BATCH_BYTES = MAX_RUNTIME_MESSAGE // 2
EVENT_BYTES = 256 * 1024  # one event larger than this is sent with its data cut


class LinkState(enum.StrEnum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class HubLink:
    def __init__(
        self,
        conductor: BaseConductor,
        target: HubAddress | None,
        home: Path,
        *,
        buffer_size: int = 100_000,
        backoff_max: float = 5.0,
    ) -> None:
        self._conductor = conductor
        self._target = target
        self._home = home
        self.buffer_size = buffer_size
        self._backoff_max = backoff_max
        self._inflight: deque[Event] = deque()  # sent on this connection, not yet acked
        self._unsent: deque[Event] = deque()
        self.acked = 0
        self.dropped = 0
        self._gap: list[int] = []  # seqs dropped since the last gap event
        self.state = LinkState.IDLE
        self.address: HubAddress | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._ws: WebSocketClientConnection | None = None
        self._drained: asyncio.Event | None = None

    # -- the sink ----------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self._unsent.append(event)
        if len(self._inflight) + len(self._unsent) > self.buffer_size:
            self._drop_oldest()
        if self._wake is not None:
            self._wake.set()

    def _drop_oldest(self) -> None:
        oldest = (self._inflight or self._unsent).popleft()
        self.dropped += 1
        if not self._gap:  # one gap event per loop turn, however many are dropped
            asyncio.get_running_loop().call_soon(self._announce_gap)
        self._gap.append(oldest.seq)

    def _announce_gap(self) -> None:
        dropped, self._gap = self._gap, []
        self._conductor._emit(None, "gap", {
            "first_seq": dropped[0], "last_seq": dropped[-1], "dropped": len(dropped),
        })  # fmt: skip

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting, on the conductor's (running) loop."""
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="conductloop:link")

    async def _run(self) -> None:
        delay = 0.05
        while True:
            self.state = LinkState.CONNECTING
            address = await self._find()
            if address is not None:
                try:
                    await self._session(address)
                    delay = 0.05
                except (OSError, HTTPClientError, WebSocketError, ConnectionError, ValueError):
                    pass
            self.state = LinkState.CONNECTING
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def _find(self) -> HubAddress | None:
        if self._target is not None:
            return self._target
        found = await asyncio.to_thread(read_hub_file, self._home)
        if found is not None and await _answers(found[0]):
            return found[0]
        return await asyncio.to_thread(start_embedded, self._home)

    async def _session(self, address: HubAddress) -> None:
        request = HTTPRequest(
            address.runtime_ws,
            headers={"Authorization": f"Bearer {address.secret}"},
            connect_timeout=5,
            request_timeout=5,
        )
        ws = await websocket_connect(
            request, max_message_size=MAX_RUNTIME_MESSAGE, ping_interval=10, ping_timeout=10
        )
        self._ws = ws
        try:
            ws.write_message(dumps(self._hello()))
            welcome = json.loads(await _read(ws))
            if welcome.get("type") != "welcome":
                raise ValueError(f"the hub did not welcome this runtime: {welcome}")
            self.address = address
            self.state = LinkState.CONNECTED
            self._unsent.extendleft(reversed(self._inflight))  # resend what was not acked
            self._inflight.clear()
            self._acknowledge(int(welcome["acked"]))
            reader = asyncio.ensure_future(self._read_loop(ws))
            try:
                await self._write_loop(ws, reader)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        finally:
            self._ws = None
            ws.close()

    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "v": PROTOCOL_VERSION,
            "runtime": self._conductor.runtime,
            "name": self._conductor.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    async def _write_loop(self, ws: WebSocketClientConnection, reader: asyncio.Future[Any]) -> None:
        assert self._wake is not None
        while not reader.done():
            batch = self._next_batch()
            if batch:
                await ws.write_message(batch)
                continue
            self._wake.clear()
            waker: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait((waker, reader), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
        reader.result()  # re-raise why the connection ended

    def _next_batch(self) -> str | None:
        parts: list[str] = []
        size = 0
        while self._unsent and size < BATCH_BYTES:
            event = self._unsent.popleft()
            self._inflight.append(event)
            if event.seq <= self.acked:
                continue
            text = _encode(event)
            parts.append(text)
            size += len(text) + 1
        if not parts:
            return None
        return '{"type":"events","events":[' + ",".join(parts) + "]}"

    async def _read_loop(self, ws: WebSocketClientConnection) -> None:
        while True:
            message = json.loads(await _read(ws))
            kind = message.get("type")
            if kind == "ack":
                self._acknowledge(int(message["seq"]))
            elif kind == "command":
                ws.write_message(dumps(self._carry_out(message)))

    def _carry_out(self, message: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = {"type": "reply", "id": message.get("id")}
        try:
            reply["result"] = self._conductor.handle_command(message.get("command") or {})
            reply["ok"] = True
        except UsageError as error:
            reply["ok"] = False
            reply["error"] = {"code": "usage", "message": str(error)}
        return reply

    def _acknowledge(self, seq: int) -> None:
        self.acked = max(self.acked, seq)
        for queue in (self._inflight, self._unsent):
            while queue and queue[0].seq <= self.acked:
                queue.popleft()
        if not self.unacked and self._drained is not None:
            self._drained.set()

    @property
    def unacked(self) -> int:
        return len(self._inflight) + len(self._unsent)

    async def drain(self, timeout: float) -> bool:
        """Wait until every event is acknowledged (or ``timeout``); ``True`` if so."""
        if not self.unacked or self._drained is None:
            return True
        self._drained.clear()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Send what is left (up to ``timeout`` s), then disconnect."""
        if self._task is None:
            return
        await self.drain(timeout)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self.state = LinkState.CLOSED


async def _read(ws: WebSocketClientConnection) -> str:
    message = await ws.read_message()
    if message is None:
        raise ConnectionError("the hub closed the connection")
    return message if isinstance(message, str) else message.decode()


async def _answers(address: HubAddress) -> bool:
    """Whether something listens at the hub's address (a stale hub.json does not)."""
    host, _, port = address.url.rpartition("//")[2].partition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


def _encode(event: Event) -> str:
    text = json.dumps(event.to_wire(), separators=(",", ":"))
    if len(text) > EVENT_BYTES:
        cut = Event(event.seq, event.ts, event.runtime, event.agent_id, event.kind,
                    {"truncated": True, "bytes": len(text)})  # fmt: skip
        text = json.dumps(cut.to_wire(), separators=(",", ":"))
    return text
