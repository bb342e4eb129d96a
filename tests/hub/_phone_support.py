"""A hub with its phone listener open on loopback, and the phone's side of it.

Each ``PhoneHub`` is an embedded hub of its own (its own thread and loop, as in a script)
in a temporary home, with the phone listener opened through the hub's API. HTTP goes
through ``http.client`` (in async tests on a worker thread); WebSockets through tornado,
as a ``Peer`` of ``_support``.
"""

from __future__ import annotations

import http.client
import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from http.cookies import Morsel, SimpleCookie
from pathlib import Path
from typing import Any

import conductloop_jupyter as cl
from conductloop_jupyter.hub.phone import COOKIE, PhoneService
from conductloop_jupyter.hub.server import EmbeddedHub
from tests.hub._support import Message, Peer, connected, refused_handshake

PHONE_ROUTES = [
    ("GET", "/api/state"),
    ("GET", "/api/events?agent_id=a-1"),
    ("POST", "/api/command"),
    ("GET", "/ws"),
]


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        code: str = self.json()["error"]["code"]
        return code

    def cookie(self) -> Morsel[str]:
        return SimpleCookie(self.headers["Set-Cookie"])[COOKIE]


@dataclass
class Device:
    """A paired phone: its token (the cookie's value), CSRF token and id."""

    token: str
    csrf: str
    id: str

    @classmethod
    def paired_by(cls, reply: Reply) -> Device:
        """The device a successful ``POST /pair`` paired."""
        answer = reply.json()
        return cls(reply.cookie().value, answer["csrf"], answer["device"]["id"])


class PhoneHub:
    """An embedded hub in ``home`` whose phone listener is open on 127.0.0.1."""

    def __init__(self, home: Path) -> None:
        self.embedded = EmbeddedHub(home)
        self.address = self.embedded.start()
        self.client = cl.Hub(self.address, by="test")
        self.link = self.client.phone(host="127.0.0.1")
        self.port = self.link.port
        self.host = f"127.0.0.1:{self.port}"
        self.origin = f"http://{self.host}"

    @property
    def service(self) -> PhoneService:
        hub = self.embedded.server.hub
        assert hub is not None
        assert hub.phone is not None
        return hub.phone

    def stop(self) -> None:
        self.embedded.stop()

    def code(self, ttl: float | None = None) -> str:
        """A fresh one-time pairing code, from the hub's API as ``loop.phone()`` gets it."""
        return self.client.phone(host="127.0.0.1", ttl=ttl).url.split("#pair=", 1)[1]

    def fetch(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        token: str | None = None,
        origin: str | None = None,
        csrf: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = {"Host": self.host}
        if token is not None:
            sent["Cookie"] = f"{COOKIE}={token}"
        if origin is not None:
            sent["Origin"] = origin
        if csrf is not None:
            sent["X-CSRF-Token"] = csrf
        data = body if body is None or isinstance(body, (bytes, str)) else json.dumps(body)
        if data is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()

    def claim(self, code: str, *, origin: str | None = "") -> Reply:
        """POST /pair as the page does (same origin unless told otherwise)."""
        return self.fetch(
            "POST", "/pair", body={"code": code}, origin=self.origin if origin == "" else origin
        )

    def pair(self) -> Device:
        reply = self.claim(self.code())
        assert reply.status == 200, reply.body
        return Device.paired_by(reply)

    def command(self, device: Device, command: Message) -> Reply:
        return self.fetch(
            "POST", "/api/command", body=command, token=device.token, origin=self.origin,
            csrf=device.csrf,
        )  # fmt: skip

    def hub_fetch(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        """A request to the hub's own (loopback) listener, not the phone's."""
        port = int(self.address.url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(
                method, path, body=b"{}" if method == "POST" else None, headers=headers
            )
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()

    # -- the phone's WebSocket -------------------------------------------------------------

    def _ws_headers(self, token: str | None, headers: dict[str, str]) -> dict[str, str]:
        sent = {"Origin": self.origin, "Host": self.host}
        if token is not None:
            sent["Cookie"] = f"{COOKIE}={token}"
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        return sent

    def socket(self, device: Device) -> AbstractAsyncContextManager[Peer]:
        """The phone WebSocket of a paired ``device``, from the listener's own origin."""
        return connected(f"ws://{self.host}/ws", self._ws_headers(device.token, {}))

    async def refused_handshake(self, token: str | None, **headers: str) -> int:
        """The HTTP status with which the listener refuses a WebSocket handshake."""
        return await refused_handshake(f"ws://{self.host}/ws", self._ws_headers(token, headers))
