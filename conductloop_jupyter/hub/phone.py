"""The phone listener: a separate, locked-down server for the phone page and its API.

It is a second tornado ``HTTPServer`` in the hub's process, opened on demand on the
machine's LAN address (or one the user picks, a Tailscale ``100.x`` address included). It
serves ONLY the phone page, its assets and the steering API; nothing of Jupyter; and it
accepts only paired devices (a cookie), never a Jupyter token or the hub's secret.

Every request: the ``Host`` must be one this listener was opened for (DNS rebinding); every
response carries a strict CSP, ``Referrer-Policy: no-referrer``, ``nosniff`` and
``no-store``. State-changing requests also need a same-origin ``Origin`` and, for POST,
the ``X-CSRF-Token`` the page got from ``/api/state``. Messages are limited to 64 KiB
(a larger WebSocket message closes that connection with 1009) and commands are rate
limited per device. Logs name methods and paths, never a query or a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from pathlib import Path
from typing import Any

from tornado import httputil, web, websocket
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .certificate import self_signed
from .commands import serve_client_message
from .endpoints import ROUTES
from .hub import Hub
from .listener import PHONE_LIMITS, BoundedHTTPServer
from .pairing import CodeStatus, Device, Pairing, code_id
from .protocol import MAX_CLIENT_MESSAGE, ErrorCode, dumps
from .routes import Call, Endpoints, mount, refuse, refuse_http
from .sendqueue import SendQueue

log = logging.getLogger("conductloop.phone")
STATIC = Path(__file__).resolve().parent.parent / "static" / "phone"
COOKIE = "conductloop_device"
ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
RATE = 5.0  # commands a second, per device
BURST = 20


def lan_address() -> str | None:
    """This machine's address on its LAN, or ``None`` when only loopback is possible.

    Connecting a UDP socket sends no packet: it only asks the OS which interface would
    route to the (documentation-only) address.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            found: str = probe.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(found).is_loopback else found


class PhoneService:
    """The listener, its pairing book, and the live connections of each device."""

    def __init__(self, hub: Hub, home: Path) -> None:
        self.hub = hub
        self.pairing = Pairing(home)
        self.home = home
        self.host = ""
        self.port = 0
        self.tls = False
        self.fingerprint: str | None = None
        self.note = ""
        self._server: HTTPServer | None = None
        self.sockets: dict[str, set[PhoneSocket]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        #: set, and replaced by a fresh one, whenever a code is claimed (and on stop)
        self._claimed = asyncio.Event()
        self._stopping = False
        self._polls: set[asyncio.Task[Any]] = set()  # the long polls of code_status

    @property
    def open(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def start(self, host: str | None, port: int, tls: bool) -> None:
        """Listen on ``host`` (default: the LAN address) and ``port`` (0: any free one)."""
        await asyncio.to_thread(self.pairing.load)
        self.note = ""
        if not host:
            host = lan_address()
            if host is None:
                host = "127.0.0.1"
                self.note = (
                    "no LAN address found: the phone page listens on loopback only, so only "
                    "this machine can open it; pass host= (e.g. a Tailscale 100.x address)"
                )
        sockets = bind_sockets(port, host)
        self.host, self.port = host, sockets[0].getsockname()[1]
        ssl_options = None
        if tls:
            ssl_options, self.fingerprint = await asyncio.to_thread(
                self_signed, self.home, self.host
            )
        self.tls = tls
        app = web.Application(
            [
                (r"/", PageHandler, {"asset": "index.html"}),
                (r"/(app\.js|app\.css)", PageHandler),
                *mount(ROUTES, "pairing", PhoneEndpoint),
                *mount(ROUTES, "device", PhoneEndpoint),
                (r"/ws", PhoneSocket),
            ],
            default_handler_class=NotFound,
            phone=self,
            log_function=_log_request,
            websocket_ping_interval=10,
            websocket_ping_timeout=10,
        )
        self._server = BoundedHTTPServer(  # a cap and deadlines: see hub/listener.py
            app,
            limits=PHONE_LIMITS,
            name="phone listener",
            ssl_options=ssl_options,
            max_body_size=MAX_CLIENT_MESSAGE,
            xheaders=False,
        )
        self._server.add_sockets(sockets)

    def allowed_hosts(self) -> set[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        hosts = {f"{host}:{self.port}"}
        if self.host == "127.0.0.1":
            hosts.add(f"localhost:{self.port}")
        return hosts

    def origins(self) -> set[str]:
        scheme = "https" if self.tls else "http"
        return {f"{scheme}://{h}" for h in self.allowed_hosts()}

    def pair_url(self, ttl: float | None = None) -> tuple[str, str, float]:
        """A one-time pairing URL, its code's public id (see ``code_status``) and expiry."""
        code, expires = self.pairing.new_code(ttl)
        return f"{self.base_url}/#pair={code}", code_id(code), expires

    async def code_status(self, id_: str, wait: float = 0.0) -> CodeStatus | None:
        """Where the pairing code ``id_`` stands; if it is still waiting, wait up to
        ``wait`` seconds for it to be claimed or to expire (a long poll: the notebook
        replaces a used QR code at once). ``None`` if no such code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        poll = asyncio.current_task()
        if poll is not None:
            self._polls.add(poll)
        try:
            while True:
                status = self.pairing.status(id_)
                if status is None or status.state != "waiting":
                    return status
                until_expiry = status.expires - self.pairing.clock.wall()
                remaining = min(deadline - loop.time(), until_expiry)
                if remaining <= 0 or self._stopping:
                    return status
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._claimed.wait(), remaining)
        finally:
            self._polls.discard(poll)

    def claimed(self) -> None:
        """A code was just claimed: wake whoever waits on a code's status."""
        woken, self._claimed = self._claimed, asyncio.Event()
        woken.set()

    async def revoke(self, device_id: str) -> bool:
        device = self.pairing.revoke(device_id)
        if device is None:
            return False
        for connection in self.sockets.pop(device_id, set()):
            connection.close(4001, "this device was revoked")
        await asyncio.to_thread(self.pairing.save)
        return True

    def allow_command(self, device: Device) -> bool:
        """A token bucket per device: ``RATE`` a second, bursts of ``BURST``."""
        now = time.monotonic()
        tokens, last = self._buckets.get(device.id, (float(BURST), now))
        tokens = min(float(BURST), tokens + (now - last) * RATE)
        if tokens < 1:
            self._buckets[device.id] = (tokens, now)
            return False
        self._buckets[device.id] = (tokens - 1, now)
        return True

    async def stop(self) -> None:
        self._stopping = True
        self.claimed()  # long polls answer now rather than hold the closing hub open
        if self._polls:
            await asyncio.wait(set(self._polls), timeout=5.0)
        if self._server is not None:
            self._server.stop()
            for connections in self.sockets.values():
                for connection in connections:
                    connection.close(1001, "the hub is stopping")
            await self._server.close_all_connections()
            self._server = None


# -- handlers ------------------------------------------------------------------------------


class PhoneMixin:
    """Host allow-list, security headers, and the device behind the cookie."""

    request: httputil.HTTPServerRequest
    settings: dict[str, Any]

    @property
    def phone(self) -> PhoneService:
        phone: PhoneService = self.settings["phone"]
        return phone

    def secure_headers(self) -> None:
        handler: Any = self
        handler.set_header("Content-Security-Policy", CSP)
        handler.set_header("Referrer-Policy", "no-referrer")
        handler.set_header("X-Content-Type-Options", "nosniff")
        handler.set_header("X-Frame-Options", "DENY")
        handler.set_header("Cache-Control", "no-store")

    def check_host(self) -> None:
        if self.request.host not in self.phone.allowed_hosts():
            raise web.HTTPError(403, reason="unknown host")

    def same_origin(self) -> bool:
        return self.request.headers.get("Origin") in self.phone.origins()

    def current_device(self) -> Device | None:
        handler: Any = self
        device = self.phone.pairing.device(handler.get_cookie(COOKIE))
        if device is not None:
            self.phone.pairing.seen(device, self.request.remote_ip or "")
        return device


class PhoneHandler(PhoneMixin, web.RequestHandler):
    def set_default_headers(self) -> None:
        self.secure_headers()

    def prepare(self) -> None:
        self.check_host()

    def send_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(dumps(body))

    def fail(self, code: ErrorCode, message: str) -> None:
        refuse(self, code, message)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        refuse_http(self, status_code)

    def device_or_401(self) -> Device | None:
        device = self.current_device()
        if device is None:
            self.fail("unauthorized", "this phone is not paired (or was signed out)")
        return device

    def post_allowed(self, device: Device) -> bool:
        """A POST of a paired device: same origin, its CSRF token, a token of its rate."""
        if not self.same_origin():
            self.fail("forbidden", "cross-origin request refused")
            return False
        if not self.phone.pairing.check_csrf(device, self.request.headers.get("X-CSRF-Token")):
            self.fail("forbidden", "missing or wrong CSRF token")
            return False
        if not self.phone.allow_command(device):
            self.fail("rate_limited", "too many commands; slow down")
            return False
        return True


class NotFound(PhoneHandler):
    def prepare(self) -> None:
        self.check_host()
        raise web.HTTPError(404)


class PageHandler(PhoneHandler):
    def initialize(self, asset: str | None = None) -> None:
        self.asset = asset

    async def get(self, name: str | None = None) -> None:
        asset = self.asset or name or ""
        if asset not in ASSETS:
            raise web.HTTPError(404)
        body = await asyncio.to_thread((STATIC / asset).read_bytes)
        self.set_header("Content-Type", f"{ASSETS[asset]}; charset=utf-8")
        self.finish(body)


class PhoneEndpoint(Endpoints, PhoneHandler):
    """An endpoint on the phone listener (the ``Host`` checked in ``prepare``)."""

    def call(self) -> Call | None:
        device = None
        if "pairing" in self.route.auth:  # before pairing: a same-origin page only
            if not self.same_origin():
                self.fail("forbidden", "cross-origin request refused")
                return None
        else:
            device = self.device_or_401()
            if device is None or (self.request.method == "POST" and not self.post_allowed(device)):
                return None
        request = self.request
        return Call(
            self.phone.hub,
            f"phone:{device.name}" if device is not None else "phone",
            request.query_arguments,
            request.body,
            request.headers,
            request.remote_ip or "",
            device,
        )

    def set_device_cookie(self, token: str) -> None:
        self.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=self.phone.tls,
            path="/",
            expires_days=365,
        )


class PhoneSocket(PhoneMixin, websocket.WebSocketHandler):
    """Live events and commands for one paired device."""

    device: Device | None = None

    def set_default_headers(self) -> None:
        self.secure_headers()

    _queue: SendQueue | None = None

    def check_origin(self, origin: str) -> bool:
        return origin in self.phone.origins()

    async def get(self, *args: Any, **kwargs: Any) -> None:
        self.check_host()
        # The cookie authenticates, so the Origin must be this listener's own, exactly,
        # and present: tornado lets a handshake without one through (and one that says
        # ``Sec-Fetch-Site: same-origin``), which a page elsewhere cannot make, but a
        # stolen cookie in any other client can. Checked before the cookie is looked at.
        if not self.same_origin():
            refuse(self, "forbidden", "bad origin")
            return
        self.device = self.current_device()
        if self.device is None:
            refuse(self, "unauthorized", "not paired")
            return
        await super().get(*args, **kwargs)

    @property
    def max_message_size(self) -> int:
        return MAX_CLIENT_MESSAGE

    def open(self, *args: str, **kwargs: str) -> None:
        assert self.device is not None
        self.set_nodelay(True)  # live updates are small and wanted now (see app.SocketMixin)
        self.phone.sockets.setdefault(self.device.id, set()).add(self)

    @property
    def send_queue(self) -> SendQueue:
        """Bounded as every hub socket's is (see ``sendqueue.SendQueue``)."""
        if self._queue is None:
            self._queue = SendQueue(self._write, self._drop, self.phone.hub.send_limit)
        return self._queue

    def send(self, message: dict[str, Any] | str) -> None:
        self.send_queue.send(message if isinstance(message, str) else dumps(message))

    async def drained(self) -> bool:
        return await self.send_queue.drained()

    def _drop(self, code: int, reason: str) -> None:
        self.phone.hub.unsubscribe(self)
        self.close(code, reason)

    def _write(self, text: str) -> asyncio.Future[None] | None:
        try:
            return self.write_message(text)
        except websocket.WebSocketClosedError:
            return None

    async def on_message(self, raw: str | bytes) -> None:
        device = self.device
        if device is None or device.id not in self.phone.pairing.devices:
            self.close(4001, "this device was revoked")
            return
        await serve_client_message(
            self.phone.hub,
            self,
            raw,
            f"phone:{device.name}",
            lambda: self.phone.allow_command(device),
        )

    def on_close(self) -> None:
        self.send_queue.closed()
        self.phone.hub.unsubscribe(self)
        if self.device is not None:
            self.phone.sockets.get(self.device.id, set()).discard(self)


def _log_request(handler: web.RequestHandler) -> None:
    request = handler.request
    log.debug("%d %s %s", handler.get_status(), request.method, request.path)
