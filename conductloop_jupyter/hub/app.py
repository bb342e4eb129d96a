"""The hub listener's tornado application, and the WebSockets every host shares.

The **hub listener** (loopback only) serves runtimes and local clients (``cl.connect``,
``conductloop status``); every request must carry the hub's secret as
``Authorization: Bearer <secret>``. Its REST endpoints are the route table's
(``endpoints.ROUTES``, policy ``secret``); the **Jupyter server extension** mounts the same
table (policy ``jupyter``) and the same client socket (``ClientSocketMixin``) under the
server's ``base_url``; see ``serverext.py``.

    /conductloop/runtime        WS    runtimes (hub listener only)
    /conductloop/api/ws         WS    live rows, events and commands for clients
    /conductloop/api/...        REST  see endpoints.py
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado import web, websocket

from .bearer import BearerHandler, BearerSocket, HubNotFound
from .commands import serve_client_message
from .endpoints import ROUTES
from .hub import Hub
from .protocol import (
    MAX_CLIENT_MESSAGE,
    MAX_RUNTIME_MESSAGE,
    ProtocolError,
    dumps,
    parse_runtime_message,
)
from .routes import Call, Endpoints, mount
from .sendqueue import SendQueue
from .store import StoreError


class HubMixin:
    """Shared by every handler: the hub and who is asking."""

    settings: dict[str, Any]

    @property
    def hub(self) -> Hub:
        hub: Hub = self.settings["conductloop_hub"]
        return hub

    if TYPE_CHECKING:  # each concrete handler says who is asking (its own auth decides)

        def who(self) -> str: ...


class SocketMixin(HubMixin):
    """A WebSocket as the hub's ``Connection``: ``send`` never blocks or raises, and what
    the peer leaves unread is bounded (``sendqueue.SendQueue``: past ``SEND_LIMIT`` bytes, the
    connection is closed with 1013 and sent nothing more).

    ``TCP_NODELAY``: every message is small and wanted now (events, acks, commands). With
    Nagle's algorithm a message written while the previous one is still unacknowledged
    waits for that ACK, which a peer in delayed-ACK mode holds for 40 ms or more.
    """

    _queue: SendQueue | None = None

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)  # type: ignore[attr-defined]
        self.hub.opened(self)  # type: ignore[arg-type]

    @property
    def send_queue(self) -> SendQueue:
        if self._queue is None:
            self._queue = SendQueue(self._write, self._drop, self.hub.send_limit)
        return self._queue

    def send(self, message: dict[str, Any] | str) -> None:
        self.send_queue.send(message if isinstance(message, str) else dumps(message))

    async def drained(self) -> bool:
        return await self.send_queue.drained()

    def _write(self, text: str) -> asyncio.Future[None] | None:
        try:
            future: asyncio.Future[None] = self.write_message(text)  # type: ignore[attr-defined]
        except websocket.WebSocketClosedError:
            return None
        return future

    def _drop(self, code: int, reason: str) -> None:
        """Too slow: out of the live stream at once, then closed (see ``SendQueue``)."""
        self.hub.unsubscribe(self)  # type: ignore[arg-type]
        self.close(code, reason)  # type: ignore[attr-defined]

    def ended(self) -> None:
        """From ``on_close``: nothing more is sent, and a catch-up under way stops."""
        self.send_queue.closed()


# -- WebSockets ----------------------------------------------------------------------------


class ClientSocketMixin(SocketMixin):
    """Live events and commands for a client; every bad message gets an ``error`` reply."""

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    @property
    def max_message_size(self) -> int:
        return MAX_CLIENT_MESSAGE

    async def on_message(self, raw: str | bytes) -> None:
        await serve_client_message(self.hub, self, raw, self.who())  # type: ignore[arg-type]

    def on_close(self) -> None:
        self.ended()
        self.hub.closed(self)  # type: ignore[arg-type]


class RuntimeSocket(SocketMixin, BearerSocket, websocket.WebSocketHandler):
    """A Conductor's link. Speaks ``hello`` first; see ``protocol.py``."""

    runtime: str | None = None

    @property
    def max_message_size(self) -> int:
        return MAX_RUNTIME_MESSAGE

    def on_message(self, raw: str | bytes) -> None:
        try:
            message = parse_runtime_message(raw)
            if message["type"] == "hello":
                welcome = self.hub.runtime_hello(self, message)
                self.runtime = message["runtime"]
                self.send(welcome)
            elif self.runtime is None:
                raise ProtocolError("bad_message", "send 'hello' first")
            elif message["type"] == "events":
                try:
                    refused = self.hub.ingest(
                        self.runtime, message["events"], self._ack, message["refused"]
                    )
                    for error in refused:
                        self.send(error)
                except StoreError as error:  # keep the events in the runtime: it replays
                    _log.error("the hub's store failed: %s", error)
                    self.close(1011, "the hub cannot store events right now")
            else:
                self.hub.runtime_reply(message)
        except ProtocolError as error:
            self.send(error.to_wire())

    def _ack(self, seq: int) -> None:
        self.send({"type": "ack", "seq": seq})

    def on_close(self) -> None:
        self.ended()
        if self.runtime is not None:
            self.hub.runtime_closed(self.runtime, self)
        self.hub.closed(self)


class SecretEndpoint(HubMixin, Endpoints, BearerHandler):
    """An endpoint on the hub listener: the secret checked first (``BearerHandler``)."""

    def call(self) -> Call:
        request = self.request
        return Call(
            self.hub,
            self.who(),
            request.query_arguments,
            request.body,
            request.headers,
            request.remote_ip or "",
            settings=self.settings,
        )


class HubClientSocket(ClientSocketMixin, BearerSocket, websocket.WebSocketHandler):
    def who(self) -> str:
        return self.request.headers.get("X-ConductLoop-By", "client")[:64] or "client"


def hub_routes() -> list[Any]:
    return [
        ("/conductloop/runtime", RuntimeSocket),
        ("/conductloop/api/ws", HubClientSocket),
        *mount(ROUTES, "secret", SecretEndpoint),
    ]


def make_hub_app(
    hub: Hub, secret: str, handover: Callable[[], None] | None = None
) -> web.Application:
    """The hub listener's application (loopback; every request needs the secret).
    ``handover``: an embedded hub's, called when a long-lived hub asks for the home."""
    return web.Application(
        hub_routes(),
        conductloop_hub=hub,
        conductloop_secret=secret,
        conductloop_handover=handover,
        default_handler_class=HubNotFound,
        websocket_ping_interval=10,
        websocket_ping_timeout=10,
        log_function=_log_request,
    )


_log = logging.getLogger("conductloop.hub")


def _log_request(handler: web.RequestHandler) -> None:
    """Requests go to the ``conductloop.hub`` logger at debug level: an embedded hub must
    not print into its host's notebook cells. Paths only: secrets travel in headers."""
    request = handler.request
    _log.debug("%d %s %s", handler.get_status(), request.method, request.path)
