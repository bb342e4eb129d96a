"""A runtime's link to its hub: buffered, batched, replayed after a dropped connection.

The link is the Conductor's ``EventSink``. ``emit`` only appends to a buffer: agents never
wait for the network. A task on the conductor's loop connects (with back-off), says
``hello``, drops what the hub's ``welcome`` says it already has, sends the rest in batches,
and drops events once the hub ``ack``s them (after they are committed). An agent's own
chatter (logs, status, tool spans, usage) goes at once to a hub in another process while the
link sends fewer than ``messages_per_s`` (1,000) messages a second, and past that waits its
turn; to a hub in this process it waits up to ``linger`` (5 ms). Either way a busy agent
sends one batch per burst; anything else (a state, a request, a result) is sent at
once, with whatever waits before it. Commands from the
hub are carried out by the Conductor and answered with a ``reply``.

While the hub is away the buffer holds up to ``buffer_size`` events; past that the oldest
are dropped and a ``gap`` event says which: memory stays bounded, agents keep running.

With no hub named (``hub=None`` and no ``$CONDUCTLOOP_HUB``), the link reads ``hub.json``
in the home folder, and if no hub answers there it starts an embedded one in this process.
An embedded hub gets the events themselves, handed to its loop, instead of JSON over the
socket (the rest of the protocol is the same): encoding each event and parsing it again in
the same process cost more than the agent's whole step.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import operator
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketError, websocket_connect

from .core.errors import UsageError
from .core.events import Event
from .hub.discovery import HubAddress
from .hub.locator import Locator
from .hub.protocol import MAX_BATCH, MAX_RUNTIME_MESSAGE, PROTOCOL_VERSION, dumps
from .hub.server import Replies, in_process

if TYPE_CHECKING:
    from .conductor import Conductor

_log = logging.getLogger("conductloop.link")

BATCH_BYTES = MAX_RUNTIME_MESSAGE // 2
EVENT_BYTES = 256 * 1024  # one event larger than this is sent with its data cut
#: events encoded in one ``json`` call: a call costs about as much as encoding an event
CHUNK = 256
#: kinds an agent emits at its own pace, often many per millisecond: they wait up to
#: ``linger`` for more, so that a busy agent sends one message per burst, not per event.
#: Every other kind (states, requests, results) is sent at once, with what waits before it.
CHATTER = frozenset({"log", "agent.status", "tool.started", "tool.finished", "usage"})
LINGER_EVENTS = 1000  # this many waiting already make a good batch: no lingering
#: kinds whose data the core keeps small (clipped text, no free-form structure): handed to
#: an in-process hub without the size check that the others get (it costs an encoding)
SMALL_KINDS = frozenset({
    "log", "agent.status", "agent.state", "tool.finished", "usage", "agent.stalled",
    "command", "gap", "instruction", "handoff",
})  # fmt: skip
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps makes one a call
Deliver = Callable[[list[Event]], None]
_kind = operator.attrgetter("kind")


class LinkState(enum.StrEnum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class HubLink:
    def __init__(
        self,
        conductor: Conductor,
        locator: Locator,
        *,
        buffer_size: int = 100_000,
        backoff_max: float = 5.0,
        linger: float = 0.005,
        messages_per_s: float = 1000.0,
        burst: int = 10,
    ) -> None:
        self._conductor = conductor
        self.linger = linger
        self.messages_per_s = messages_per_s
        self.burst = burst
        self._tokens = float(burst)  # messages of chatter that may go at once (a socket)
        self._filled_at = 0.0  # loop time of the last refill
        self._locator = locator
        self.buffer_size = buffer_size
        self._backoff_max = backoff_max
        self._inflight: deque[Event] = deque()  # sent on this connection, not yet acked
        self._unsent: deque[Event] = deque()
        self.acked = 0
        self.dropped = 0
        self._gap: list[int] = []  # seqs dropped since the last gap event
        self.state = LinkState.IDLE
        self.address: HubAddress | None = None
        # the write loop waits on ``_waker``: any event resolves it when ``_idle`` (nothing
        # to send), only a non-chatter one while it lingers
        self._waker: asyncio.Future[None] | None = None
        self._idle = True
        self._urgent = False
        self._shared = False  # connected to an in-process hub (see ``_held``)
        #: how events went to the hub on the latest connection: ``in-process`` (this
        #: process's embedded hub, as objects) or ``socket`` (JSON); ``None`` before any
        self.transport: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._ws: WebSocketClientConnection | None = None
        self._drained: asyncio.Event | None = None
        self.refused = 0  # events the hub refused (``bad_event``): see ``_hub_error``
        self._told: set[str] = set()  # error codes already logged

    # -- the sink ----------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        unsent = self._unsent
        unsent.append(event)
        if len(unsent) + len(self._inflight) > self.buffer_size:  # (at least ``_held()``)
            while self._held() > self.buffer_size:
                self._drop_oldest()
        if event.kind not in CHATTER:
            self._urgent = True
        elif not self._idle:
            return
        waker = self._waker
        if waker is not None and not waker.done():
            waker.set_result(None)

    def _held(self) -> int:
        """Events only this link holds: with an in-process hub, those it has taken are in
        its memory as well (the very objects), so dropping them would free nothing."""
        return len(self._unsent) if self._shared else len(self._inflight) + len(self._unsent)

    def _drop_oldest(self) -> None:
        oldest = (self._unsent if self._shared else self._inflight or self._unsent).popleft()
        self.dropped += 1
        if not self._gap:  # one gap event per loop turn, however many are dropped
            asyncio.get_running_loop().call_soon(self._announce_gap)
        self._gap.append(oldest.seq)

    def _announce_gap(self) -> None:
        dropped, self._gap = self._gap, []
        self._conductor.core.emit(None, "gap", {
            "first_seq": dropped[0], "last_seq": dropped[-1], "dropped": len(dropped),
        })  # fmt: skip

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting, on the conductor's (running) loop."""
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
        return await asyncio.to_thread(self._locator.locate, embed=True)

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
        if ws.protocol is not None:
            # without it, a batch written while the last is unacknowledged waits for the
            # hub's delayed ACK (40 ms): measured p50 event-to-phone 17.5 ms -> 3.9 ms
            ws.protocol.set_nodelay(True)
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
            deliver = self._in_process(address, ws)
            self.transport = "socket" if deliver is None else "in-process"
            try:
                await self._write_loop(ws, reader, deliver)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        finally:
            self._ws = None
            self._shared = False
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

    async def _write_loop(
        self, ws: WebSocketClientConnection, reader: asyncio.Future[Any], deliver: Deliver | None
    ) -> None:
        loop = asyncio.get_running_loop()
        while not reader.done():
            if not self._urgent and 0 < len(self._unsent) < LINGER_EVENTS:
                # Only chatter waits, so that an agent that logs every few microseconds
                # costs one message per burst, not one per event (each a WebSocket frame
                # and a pass through the hub: sent as they came, that made it 3x slower).
                # To a hub in another process (the Jupyter server, ``serve``) chatter goes
                # at once while the link sends fewer than ``messages_per_s`` messages a
                # second: a phone sees it within a millisecond. To a hub in this process
                # it waits ``linger``: that hub's thread takes the GIL from the agents each
                # time it is handed a batch, which made a busy agent's step a third dearer.
                wait = self.linger if deliver is not None else self.take_token(loop.time())
                if wait > 0:
                    await self._sleep(reader, idle=False, timeout=wait)
            if deliver is not None:
                events = self._next_events()
                if events:
                    deliver(events)
                    continue
            else:
                batch = self._next_batch()
                if batch:
                    await ws.write_message(batch)
                    continue
            if not self._unsent:
                await self._sleep(reader, idle=True, timeout=None)
        reader.result()  # re-raise why the connection ended

    def _in_process(self, address: HubAddress, ws: WebSocketClientConnection) -> Deliver | None:
        """How to hand events to the hub at ``address`` if it runs in this process (else
        ``None``: send them over ``ws``). Acks come back as from the socket: once committed.

        A hand-over does not wait for the hub's thread: when the agents keep the GIL busy
        that thread can lag by seconds, and events must not pile up here meanwhile (the
        buffer would drop them); they wait in the hub's queue, which is this process's
        memory all the same.
        """
        embedded = in_process(address)
        if embedded is None:
            return None
        self._shared = True
        loop = asyncio.get_running_loop()
        runtime = self._conductor.runtime

        def back(fn: Callable[..., Any], *args: Any) -> None:  # from the hub's loop
            with contextlib.suppress(RuntimeError):  # this conductor's loop has closed
                loop.call_soon_threadsafe(fn, *args)

        replies = Replies(
            ack=lambda seq: back(self._acknowledge, seq),
            error=lambda error: back(self._hub_error, error),
            failed=lambda: back(ws.close),
        )
        return lambda events: embedded.deliver(runtime, events, replies)

    async def _sleep(self, reader: asyncio.Future[Any], idle: bool, timeout: float | None) -> None:
        """Wait for an event (``idle``) or a non-chatter one, the reader's end, or ``timeout``."""
        self._idle = idle
        self._waker = waker = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait(
                (waker, reader), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._waker = None
            self._idle = True

    def _next_batch(self) -> str | None:
        """Up to ``MAX_BATCH`` events and about ``BATCH_BYTES`` as one message (or ``None``)."""
        parts: list[str] = []
        size = count = 0
        chunk = CHUNK
        unsent, inflight = self._unsent, self._inflight
        while unsent and size < BATCH_BYTES and count < MAX_BATCH:
            take = min(chunk, len(unsent), MAX_BATCH - count)
            events = [unsent.popleft() for _ in range(take)]
            fresh = [e for e in events if e.seq > self.acked]
            if fresh:
                text = _ENCODER.encode([e.to_wire() for e in fresh])
                if len(text) > EVENT_BYTES and take > 1:
                    # one of them may be too big to send whole: go event by event
                    unsent.extendleft(reversed(events))
                    chunk = 1
                    continue
                if len(text) > EVENT_BYTES:
                    text = "[" + _fit(fresh[0])[1] + "]"
                parts.append(text[1:-1])
                size += len(text)
                count += len(fresh)
            inflight.extend(events)
        if not unsent:
            self._urgent = False
        if not parts:
            return None
        return '{"type":"events","events":[' + ",".join(parts) + "]}"

    def _next_events(self) -> list[Event]:
        """Up to ``MAX_BATCH`` events for an in-process hub, cut as ``_next_batch`` would."""
        unsent, inflight = self._unsent, self._inflight
        if len(unsent) <= MAX_BATCH:  # whole queues at a time: the agents' thread runs this
            events = list(unsent)
            unsent.clear()
        else:
            events = [unsent.popleft() for _ in range(MAX_BATCH)]
        inflight.extend(events)
        if not unsent:
            self._urgent = False
        if events and events[0].seq <= self.acked:  # (the queues are in seq order)
            events = [event for event in events if event.seq > self.acked]
        if not SMALL_KINDS.issuperset(map(_kind, events)):
            events = [event if event.kind in SMALL_KINDS else _fit(event)[0] for event in events]
        return events

    async def _read_loop(self, ws: WebSocketClientConnection) -> None:
        while True:
            message = json.loads(await _read(ws))
            kind = message.get("type")
            if kind == "ack":
                self._acknowledge(int(message["seq"]))
            elif kind == "command":
                ws.write_message(dumps(self._carry_out(message)))
            elif kind == "error":
                self._hub_error(message)

    def take_token(self, now: float) -> float:
        """Take a token (``0.0``: send now), or how long until there is one."""
        tokens = min(self.burst, self._tokens + (now - self._filled_at) * self.messages_per_s)
        self._filled_at = now
        if tokens >= 1:
            self._tokens = tokens - 1
            return 0.0
        self._tokens = tokens
        return (1 - tokens) / self.messages_per_s

    def _hub_error(self, error: dict[str, Any]) -> None:
        """The hub refused something this runtime sent: say so once per kind of error (a
        refused event is acked all the same, so it is never sent again)."""
        code = str(error.get("code"))
        self.refused += code == "bad_event"
        if code not in self._told:
            self._told.add(code)
            _log.warning(
                "the hub refused what %s sent (%s): %s; further ones are counted in link.refused",
                self._conductor.runtime,
                code,
                error.get("message"),
            )

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
        acked = self.acked = max(self.acked, seq)
        for queue in (self._inflight, self._unsent):
            if queue and queue[-1].seq <= acked:  # the common case: all of it (seq order)
                queue.clear()
            while queue and queue[0].seq <= acked:
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
        self._urgent = True  # no lingering: send what waits now
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(None)
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


def _fit(event: Event) -> tuple[Event, str]:
    """The event and its JSON, cut to fit ``EVENT_BYTES``.

    A cut event keeps its small fields, which the hub's view needs (a tool's name, a
    request's id), and says ``"truncated": true`` with the size it had; its largest fields
    go first, a mapping becoming ``{"truncated": true, "bytes": n}`` and a list ``[]``.
    """
    text = _ENCODER.encode(event.to_wire())
    if len(text) <= EVENT_BYTES:
        return event, text
    data: dict[str, Any] = dict(event.data)
    sizes = sorted(((len(_ENCODER.encode(v)), k) for k, v in data.items()), reverse=True)
    left = len(text)
    for size, key in sizes:
        if left <= EVENT_BYTES // 2:
            break
        value = data[key]
        data[key] = [] if isinstance(value, list) else {"truncated": True, "bytes": size}
        left -= size
    data.update(truncated=True, bytes=len(text))
    cut = Event(event.seq, event.ts, event.runtime, event.agent_id, event.kind, data)
    cut_text = _ENCODER.encode(cut.to_wire())
    if len(cut_text) > EVENT_BYTES:  # many fields, none large: keep only the mark
        data = {"truncated": True, "bytes": len(text)}
        cut = Event(event.seq, event.ts, event.runtime, event.agent_id, event.kind, data)
        cut_text = _ENCODER.encode(cut.to_wire())
    return cut, cut_text
