"""The hub's tornado application: the same handlers in every host.

The **hub listener** (loopback only) serves runtimes and local clients (``cl.connect``,
``conductloop status``); every request must carry the hub's secret as
``Authorization: Bearer <secret>``. The **Jupyter server extension** mounts the client API
under the server's ``base_url`` for browsers (the JupyterLab panel), behind Jupyter's own
authentication and ``@authorized`` (resource ``conductloop``); see ``serverext.py``. Both
use the mixins below, so the API behaves the same everywhere.

    /conductloop/runtime        WS    runtimes (hub listener only)
    /conductloop/api/ws         WS    live events + commands for clients
    /conductloop/api/agents     GET   every agent of every runtime
    /conductloop/api/pending    GET   open requests, oldest first
    /conductloop/api/events     GET   ?after=<id>&limit=<n>&agent_id=<id>: a page of events
    /conductloop/api/commands   POST  {"op": ..., ...}: steer; the owning runtime decides
    /conductloop/api/status     GET   runtimes and counts
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado import web, websocket

from ..core.errors import UsageError
from .bearer import BearerHandler, BearerSocket, HubNotFound
from .commands import serve_client_message
from .hub import Hub
from .phone import check_phone_options
from .protocol import (
    MAX_CLIENT_MESSAGE,
    MAX_CODE_WAIT,
    MAX_RUNTIME_MESSAGE,
    ProtocolError,
    dumps,
    load,
    parse_runtime_message,
)
from .rows import request_row
from .sendqueue import SendQueue
from .store import StoreError

HTTP_STATUS = {
    "bad_json": 400,
    "bad_message": 400,
    "bad_event": 400,
    "unknown_type": 400,
    "unauthorized": 401,
    "unknown_agent": 404,
    "unknown_request": 404,
    "unknown_code": 404,
    "usage": 409,
    "rate_limited": 429,
    "runtime_gone": 503,
    "timeout": 504,
}


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


# -- REST ----------------------------------------------------------------------------------


class JsonMixin(HubMixin):
    def send_json(self, body: Any, status: int = 200) -> asyncio.Future[None]:
        """Answer ``body``; the future is done once it is written out."""
        self.set_status(status)  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        self.set_header("Cache-Control", "no-store")  # type: ignore[attr-defined]
        written: asyncio.Future[None] = self.finish(  # type: ignore[attr-defined]
            dumps(body) if not isinstance(body, str) else body
        )
        return written

    def send_error_json(self, error: ProtocolError) -> None:
        body = {"error": {"code": error.code, "message": error.message}}
        self.send_json(body, HTTP_STATUS.get(error.code, 400))


class AgentsMixin(JsonMixin):
    async def respond(self) -> None:
        self.send_json({"agents": [a.row() for a in self.hub.view.agents.values()]})


class PendingMixin(JsonMixin):
    async def respond(self) -> None:
        self.send_json({"pending": [request_row(r) for r in self.hub.view.pending()]})


class StatusMixin(JsonMixin):
    async def respond(self) -> None:
        agents = self.hub.view.agents.values()
        states: dict[str, int] = {}
        for agent in agents:
            states[agent.state.value] = states.get(agent.state.value, 0) + 1
        self.send_json(
            {
                "runtimes": self.hub.runtime_rows(),
                "agents": states,
                "pending": len(self.hub.view.pending()),
                "spend_usd": self.hub.view.total_cost_usd,
                "last_id": self.hub.last_id,
            }
        )


class EventsMixin(JsonMixin):
    async def respond(self) -> None:
        try:
            after = int(self.get_argument("after", "0"))  # type: ignore[attr-defined]
            limit = int(self.get_argument("limit", "1000"))  # type: ignore[attr-defined]
        except ValueError:
            self.send_error_json(ProtocolError("bad_message", "after and limit are integers"))
            return
        if after < 0 or not 1 <= limit <= 10_000:
            self.send_error_json(
                ProtocolError("bad_message", "after must be >= 0 and limit within 1..10000")
            )
            return
        agent_id = self.get_argument("agent_id", None)  # type: ignore[attr-defined]
        events = await self.hub.events_page(after, limit, agent_id)
        self.send_json({"events": events, "last_id": self.hub.last_id})


class CommandsMixin(JsonMixin):
    async def respond(self) -> None:
        try:
            command = load(self.request.body)  # type: ignore[attr-defined]
            result = await self.hub.command(command, self.who())
        except ProtocolError as error:
            self.send_error_json(error)
            return
        self.send_json({"ok": True, "result": result})


class PhoneOpenMixin(JsonMixin):
    """Open the phone listener (if it is not yet) and make a one-time pairing URL."""

    async def respond(self) -> None:
        phone = self.hub.phone
        try:
            body = load(self.request.body or b"{}")  # type: ignore[attr-defined]
            host, port, tls, ttl = (
                body.get("host"),
                body.get("port"),
                body.get("tls"),
                body.get("ttl"),
            )
            check_phone_options(host, port)
            if ttl is not None and not (isinstance(ttl, (int, float)) and 10 <= ttl <= 86_400):
                raise UsageError("ttl must be 10..86400 seconds")
        except (ProtocolError, UsageError) as error:
            code = error.code if isinstance(error, ProtocolError) else "bad_message"
            self.send_error_json(ProtocolError(code, str(error)))
            return
        if phone is None:
            self.send_error_json(ProtocolError("usage", "this hub has no phone service"))
            return
        if not phone.open:
            await phone.start(host, port or 0, bool(tls))
        elif (host and host != phone.host) or (port and port != phone.port):
            self.send_error_json(
                ProtocolError("usage", f"the phone listener is already open at {phone.base_url}")
            )
            return
        elif tls and not phone.tls:
            # Not switched over: that would cut off the phones using the plain page now and
            # move its address. Say why, and how to get HTTPS (never a plain link instead).
            self.send_error_json(
                ProtocolError(
                    "usage",
                    f"tls=True: the phone listener is already open without TLS at "
                    f"{phone.base_url}, and one hub has one listener; restart the hub and "
                    "ask for tls=True first, or pair over the plain one with tls=False",
                )
            )
            return
        url, code_id, expires = phone.pair_url(ttl)
        self.send_json(
            {
                "url": url,
                "code_id": code_id,
                "expires": expires,
                "host": phone.host,
                "port": phone.port,
                "tls": phone.tls,
                "fingerprint": phone.fingerprint,
                "note": phone.note,
            }
        )


class PairingCodeMixin(JsonMixin):
    """``?id=<code_id>&wait=<seconds>``: whether a pairing code was used, is waiting or
    expired. With ``wait`` (at most 60), a waiting code's answer comes when it is claimed
    or expires, or when the wait is over: the notebook replaces a used QR code at once."""

    async def respond(self) -> None:
        id_ = self.get_argument("id", "")  # type: ignore[attr-defined]
        try:
            wait = float(self.get_argument("wait", "0"))  # type: ignore[attr-defined]
        except ValueError:
            wait = -1.0
        if not 0 <= wait <= MAX_CODE_WAIT:  # also refuses nan
            self.send_error_json(
                ProtocolError("bad_message", f"wait must be 0..{MAX_CODE_WAIT:g} seconds")
            )
            return
        phone = self.hub.phone
        status = await phone.code_status(id_, wait) if phone is not None and id_ else None
        if status is None:
            self.send_error_json(ProtocolError("unknown_code", f"no pairing code {id_[:40]!r}"))
            return
        self.send_json(status.public())


class DevicesMixin(JsonMixin):
    async def respond(self) -> None:
        phone = self.hub.phone
        if phone is not None and not phone.open:
            await asyncio.to_thread(phone.pairing.load)
        devices = [d.public() for d in phone.pairing.devices.values()] if phone else []
        self.send_json({"devices": devices})


class RevokeMixin(JsonMixin):
    async def respond(self) -> None:
        try:
            body = load(self.request.body)  # type: ignore[attr-defined]
            device_id = body.get("device_id")
            if not isinstance(device_id, str):
                raise ProtocolError("bad_message", "field 'device_id' must be a string")
        except ProtocolError as error:
            self.send_error_json(error)
            return
        phone = self.hub.phone
        if phone is None or not await phone.revoke(device_id):
            self.send_error_json(ProtocolError("bad_message", f"no device {device_id!r}"))
            return
        self.send_json({"ok": True})


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


class HubAgents(AgentsMixin, BearerHandler):
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.respond()


class HubPending(PendingMixin, BearerHandler):
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.respond()


class HubStatus(StatusMixin, BearerHandler):
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.respond()


class HubEvents(EventsMixin, BearerHandler):
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.respond()


class HubCommands(CommandsMixin, BearerHandler):
    async def post(self, *args: Any, **kwargs: Any) -> None:
        await self.respond()


class HubPhone(PhoneOpenMixin, BearerHandler):
    async def post(self, *args: Any, **kwargs: Any) -> None:
        await self.respond()


class HubPairingCode(PairingCodeMixin, BearerHandler):
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.respond()


class HubDevices(DevicesMixin, BearerHandler):
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.respond()


class HubRevoke(RevokeMixin, BearerHandler):
    async def post(self, *args: Any, **kwargs: Any) -> None:
        await self.respond()


class HubHandover(JsonMixin, BearerHandler):
    """A long-lived hub asks this (embedded) one for the home: see ``server.py``."""

    async def post(self, *args: Any, **kwargs: Any) -> None:
        handover = self.settings.get("conductloop_handover")
        if handover is None:
            self.send_error_json(
                ProtocolError("usage", "this hub is long-lived: it does not hand its home over")
            )
            return
        await self.send_json({"handing_over": True}, 202)
        handover()


class HubClientSocket(ClientSocketMixin, BearerSocket, websocket.WebSocketHandler):
    def who(self) -> str:
        return self.request.headers.get("X-ConductLoop-By", "client")[:64] or "client"


def hub_routes(prefix: str = "") -> list[tuple[str, type[web.RequestHandler]]]:
    return [
        (f"{prefix}/conductloop/runtime", RuntimeSocket),
        (f"{prefix}/conductloop/api/ws", HubClientSocket),
        (f"{prefix}/conductloop/api/agents", HubAgents),
        (f"{prefix}/conductloop/api/pending", HubPending),
        (f"{prefix}/conductloop/api/events", HubEvents),
        (f"{prefix}/conductloop/api/commands", HubCommands),
        (f"{prefix}/conductloop/api/status", HubStatus),
        (f"{prefix}/conductloop/api/phone", HubPhone),
        (f"{prefix}/conductloop/api/phone/code", HubPairingCode),
        (f"{prefix}/conductloop/api/devices", HubDevices),
        (f"{prefix}/conductloop/api/devices/revoke", HubRevoke),
        (f"{prefix}/conductloop/api/handover", HubHandover),
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
