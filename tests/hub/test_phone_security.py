"""The phone listener's defences, on a real listener bound to loopback.

The phone listener is reachable from the LAN, so it must serve nothing but the phone page
and its steering API, and only to paired devices: no Jupyter endpoint, no Jupyter token,
no hub secret; same-origin, CSRF-protected, Host-checked (DNS rebinding), size- and
rate-limited; and it must never write a secret into a log. ``Pairing`` (codes, tokens,
back-off) is also tested on its own with a ``ManualClock``, so expiry needs no waiting.

Each test has an embedded hub of its own (its own thread and loop, as in a script) in a
temporary home, with the phone listener opened through the hub's API. HTTP goes through
``http.client`` (in async tests on a worker thread); WebSockets through tornado.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import itertools
import json
import logging
import re
import ssl
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import Morsel, SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

import conductloop_jupyter as cl
from conductloop_jupyter.hub.pairing import DEVICES_FILE, Pairing, digest
from conductloop_jupyter.hub.phone import COOKIE, PhoneService
from conductloop_jupyter.hub.protocol import MAX_CLIENT_MESSAGE
from conductloop_jupyter.hub.server import EmbeddedHub, stop_embedded
from conductloop_jupyter.testing import ManualClock

Message = dict[str, Any]
FOREIGN = "http://evil.example"


# -- a hub with its phone listener, and clients of it --------------------------------------


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
        answer = reply.json()
        return Device(reply.cookie().value, answer["csrf"], answer["device"]["id"])

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


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[PhoneHub]:
    started = PhoneHub(tmp_path / "hub")
    try:
        yield started
    finally:
        started.stop()


class Socket:
    """One phone WebSocket; every read is bounded."""

    def __init__(self, ws: WebSocketClientConnection) -> None:
        self.ws = ws
        self.ended = False

    async def send(self, message: Message | str) -> None:
        await self.ws.write_message(message if isinstance(message, str) else json.dumps(message))

    async def _read(self) -> str | bytes | None:
        raw = await self.ws.read_message()
        self.ended = raw is None
        return raw

    async def recv(self) -> Message:
        raw = await asyncio.wait_for(self._read(), 10)
        assert raw is not None, f"the listener closed the connection ({self.ws.close_code})"
        message: Message = json.loads(raw)
        return message

    async def closed(self, timeout: float = 10) -> int | None:
        """Wait until the listener closes this connection; its close code."""

        async def drain() -> None:
            while not self.ended:
                await self._read()

        await asyncio.wait_for(drain(), timeout)
        return self.ws.close_code


def ws_request(phone: PhoneHub, token: str | None, **headers: str) -> HTTPRequest:
    sent = {"Origin": phone.origin, "Host": phone.host}
    if token is not None:
        sent["Cookie"] = f"{COOKIE}={token}"
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return HTTPRequest(
        f"ws://{phone.host}/ws", headers=sent, connect_timeout=10, request_timeout=10
    )


@asynccontextmanager
async def socket(phone: PhoneHub, device: Device) -> AsyncIterator[Socket]:
    connection = Socket(await websocket_connect(ws_request(phone, device.token)))
    try:
        yield connection
    finally:
        connection.ws.close()
        await connection.closed()


async def refused_handshake(request: HTTPRequest) -> int:
    """The HTTP status of a WebSocket handshake the listener refuses."""
    try:
        ws = await websocket_connect(request)
    except HTTPClientError as refused:
        return refused.code
    ws.close()
    pytest.fail("the WebSocket handshake was accepted")


# -- only paired devices, only the phone's routes ------------------------------------------

PHONE_ROUTES = [
    ("GET", "/api/state"),
    ("GET", "/api/events?agent_id=a-1"),
    ("POST", "/api/command"),
    ("GET", "/ws"),
]


@pytest.mark.parametrize("cookie", [None, "", "not-a-device-token", "x" * 43])
@pytest.mark.parametrize(("method", "path"), PHONE_ROUTES)
def test_every_phone_route_refuses_a_request_without_a_paired_device_with_401(
    phone: PhoneHub, method: str, path: str, cookie: str | None
) -> None:
    body = {"op": "stop_all"} if method == "POST" else None
    reply = phone.fetch(method, path, body=body, token=cookie, origin=phone.origin)
    assert (reply.status, reply.error) == (401, "unauthorized")


def test_pair_is_post_only(phone: PhoneHub) -> None:
    assert phone.fetch("GET", "/pair").status in (404, 405)
    assert phone.fetch("GET", f"/pair?code={phone.code()}").status in (404, 405)


async def test_the_websocket_handshake_without_a_paired_device_is_refused_with_401(
    phone: PhoneHub,
) -> None:
    assert await refused_handshake(ws_request(phone, None)) == 401
    assert await refused_handshake(ws_request(phone, "not-a-device-token")) == 401


@pytest.mark.parametrize(
    "path",
    [
        "/api/kernels",
        "/api/contents",
        "/api/sessions",
        "/tree",
        "/lab",
        "/login",
        "/static/app.js",
        "/static/../app.js",
        "/index.html",
        "/app.js.map",
        "/favicon.ico",
        "/conductloop/api/agents",
        "/conductloop/api/phone",
        "/conductloop/runtime",
        "/api/state/x",
    ],
)
def test_paths_outside_the_phone_page_are_404_even_for_a_paired_device(
    phone: PhoneHub, path: str
) -> None:
    device = phone.pair()
    assert phone.fetch("GET", path).status == 404
    assert phone.fetch("GET", path, token=device.token).status == 404
    assert phone.fetch("POST", path, token=device.token, origin=phone.origin).status == 404


def test_every_response_carries_csp_no_referrer_nosniff_and_no_store(phone: PhoneHub) -> None:
    device = phone.pair()
    replies = {
        "page": phone.fetch("GET", "/"),
        "script": phone.fetch("GET", "/app.js"),
        "style": phone.fetch("GET", "/app.css"),
        "state": phone.fetch("GET", "/api/state", token=device.token),
        "events": phone.fetch("GET", "/api/events?agent_id=none", token=device.token),
        "command": phone.command(device, {"op": "stop_all"}),
        "unpaired": phone.fetch("GET", "/api/state"),
        "unknown": phone.fetch("GET", "/api/kernels"),
        "bad code": phone.claim("wrong"),
        "socket": phone.fetch("GET", "/ws"),
        "foreign host": phone.fetch("GET", "/", headers={"Host": f"evil.example:{phone.port}"}),
    }
    assert [name for name, r in replies.items() if r.status >= 500] == []
    for name, reply in replies.items():
        csp = reply.headers["Content-Security-Policy"] or ""
        assert "default-src 'self'" in csp, name
        assert "frame-ancestors 'none'" in csp, name
        assert "unsafe-inline" not in csp, name
        assert "unsafe-eval" not in csp, name
        assert reply.headers["Referrer-Policy"] == "no-referrer", name
        assert reply.headers["X-Content-Type-Options"] == "nosniff", name
        assert reply.headers["Cache-Control"] == "no-store", name
    assert replies["page"].headers["Content-Type"].startswith("text/html")
    assert replies["script"].headers["Content-Type"].startswith("text/javascript")
    assert replies["style"].headers["Content-Type"].startswith("text/css")


# -- pairing: the Pairing book on its own ------------------------------------------------


def pairing(tmp_path: Path, ttl: float = 300.0) -> tuple[Pairing, ManualClock]:
    clock = ManualClock()
    return Pairing(tmp_path, ttl=ttl, clock=clock), clock


def claim(
    book: Pairing, code: str, address: str = "192.0.2.7"
) -> tuple[cl.PairingError | None, str]:
    """``(error, token)`` of one claim."""
    try:
        _, token = book.claim(code, name="", user_agent="Mozilla (iPhone)", address=address)
    except cl.PairingError as error:
        return error, ""
    return None, token


def test_a_code_pairs_until_its_ttl_and_is_refused_as_expired_after(tmp_path: Path) -> None:
    book, clock = pairing(tmp_path, ttl=60)
    early, late = book.new_code()[0], book.new_code()[0]
    short, expires = book.new_code(ttl=10)
    assert expires == clock.wall() + 10
    clock.advance(59)
    assert claim(book, early)[0] is None
    error, _ = claim(book, short)
    assert error is not None
    assert "expired" in str(error)
    clock.advance(1)
    error, _ = claim(book, late)
    assert error is not None
    assert "expired" in str(error)


def test_a_code_pairs_once_and_a_second_claim_is_refused_as_used(tmp_path: Path) -> None:
    book, _ = pairing(tmp_path)
    code, _ = book.new_code()
    first, token = claim(book, code)
    assert first is None
    assert book.device(token) is not None
    second, _ = claim(book, code, address="192.0.2.8")
    assert second is not None
    assert "already used" in str(second)
    assert len(book.devices) == 1


def test_an_unknown_code_is_refused(tmp_path: Path) -> None:
    book, _ = pairing(tmp_path)
    code, _ = book.new_code()
    for wrong in ("", "nope", code[:-1], code + "x", code.upper()):
        error, _ = claim(book, wrong, address=f"192.0.2.{len(wrong)}")
        assert error is not None, wrong
        assert "not known" in str(error), wrong
    assert book.devices == {}


def test_repeated_failures_from_one_address_back_off_exponentially_and_a_success_resets(
    tmp_path: Path,
) -> None:
    book, clock = pairing(tmp_path, ttl=86_400)
    code, _ = book.new_code()
    waits = []
    for _ in range(12):
        error, _ = claim(book, "wrong")
        assert error is not None
        waits.append(error.retry_after)
        # while locked out every claim is refused, even with a good code, which stays good
        if error.retry_after:
            locked, _ = claim(book, code)
            assert locked is not None
            assert "too many" in str(locked)
            assert 0 < locked.retry_after <= error.retry_after
        clock.advance(error.retry_after)
    assert waits[:2] == [0, 0]
    assert all(b > a for a, b in itertools.pairwise(waits[2:10]))  # grows
    assert waits[2:5] == [4, 8, 16]
    assert max(waits) == 300  # capped
    elsewhere, _ = claim(book, "wrong", address="192.0.2.99")  # another address: no wait
    assert elsewhere is not None
    assert elsewhere.retry_after == 0

    assert claim(book, code)[0] is None  # after the wait, the good code pairs
    error, _ = claim(book, "wrong")
    assert error is not None
    assert error.retry_after == 0


def test_a_revoked_device_token_identifies_nothing(tmp_path: Path) -> None:
    book, _ = pairing(tmp_path)
    _, token = claim(book, book.new_code()[0])
    _, other = claim(book, book.new_code()[0])
    device = book.device(token)
    assert device is not None
    assert book.revoke(device.id) is device
    assert book.device(token) is None
    assert book.device(other) is not None
    assert book.revoke(device.id) is None
    assert book.revoke("d-unknown") is None


def test_devices_json_holds_only_sha256_of_tokens_and_is_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    book, _ = pairing(tmp_path)
    code = book.new_code()[0]
    _, token = claim(book, code)
    device = book.device(token)
    assert device is not None
    book.save()
    path = tmp_path / DEVICES_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert token not in text
    assert code not in text
    assert book.csrf(device) not in text
    [row] = json.loads(text)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest() == digest(token)

    again = Pairing(tmp_path)  # a restarted hub knows the phone by its token
    again.load()
    found = again.device(token)
    assert found is not None
    assert found.id == device.id


def test_the_csrf_token_belongs_to_one_device(tmp_path: Path) -> None:
    book, _ = pairing(tmp_path)
    one = book.device(claim(book, book.new_code()[0])[1])
    two = book.device(claim(book, book.new_code()[0])[1])
    assert one is not None
    assert two is not None
    assert book.check_csrf(one, book.csrf(one))
    for wrong in (None, "", book.csrf(two), book.csrf(one)[:-1]):
        assert not book.check_csrf(one, wrong), wrong


# -- pairing over HTTP -------------------------------------------------------------------


def test_a_used_or_wrong_code_is_refused_over_http_with_403_pairing(phone: PhoneHub) -> None:
    code = phone.code()
    assert phone.claim(code).status == 200
    used = phone.claim(code)
    assert (used.status, used.error) == (403, "pairing")
    assert "already used" in used.json()["error"]["message"]
    assert "Set-Cookie" not in used.headers
    wrong = phone.claim(code[:-1] + ("A" if code[-1] != "A" else "B"))
    assert (wrong.status, wrong.error) == (403, "pairing")
    assert "Set-Cookie" not in wrong.headers
    assert len(phone.client.devices()) == 1


def test_an_expired_code_is_refused_over_http_with_403_pairing(phone: PhoneHub) -> None:
    clock = ManualClock()
    phone.service.pairing = Pairing(phone.service.home, clock=clock)
    code = phone.code(ttl=10)
    clock.advance(10)
    expired = phone.claim(code)
    assert (expired.status, expired.error) == (403, "pairing")
    assert "expired" in expired.json()["error"]["message"]
    assert phone.client.devices().empty


def test_repeated_wrong_codes_over_http_are_locked_out_with_429_and_retry_after(
    phone: PhoneHub,
) -> None:
    clock = ManualClock()
    phone.service.pairing = Pairing(phone.service.home, clock=clock)
    code = phone.code()
    statuses = [phone.claim("wrong").status for _ in range(3)]
    assert statuses == [403, 403, 403]
    locked = phone.claim(code)  # even the right code, while locked out
    assert (locked.status, locked.error) == (429, "pairing")
    assert int(locked.headers["Retry-After"]) >= 4
    assert locked.json()["error"]["retry_after"] == 4
    clock.advance(4)
    assert phone.claim(code).status == 200


def test_two_concurrent_claims_of_one_code_pair_exactly_one_phone(phone: PhoneHub) -> None:
    code = phone.code()
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def race() -> None:
        barrier.wait(10)
        statuses.append(phone.claim(code).status)

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 403]
    assert len(phone.client.devices()) == 1


# -- no other credential opens anything ----------------------------------------------------


def test_a_jupyter_token_or_the_hub_secret_opens_nothing_on_the_phone_port(
    phone: PhoneHub,
) -> None:
    secret = phone.address.secret
    jupyter = "0123456789abcdef0123456789abcdef0123456789abcdef"
    attempts: list[tuple[str, dict[str, str]]] = [  # (query, headers)
        ("", {"Authorization": f"token {jupyter}"}),
        (f"token={jupyter}", {}),
        ("", {"Authorization": f"Bearer {secret}"}),
        ("", {"Authorization": f"token {secret}"}),
        (f"token={secret}", {}),
        ("", {"Cookie": f"{COOKIE}={secret}"}),
        ("", {"X-CSRF-Token": secret}),
    ]
    for query, headers in attempts:
        for method, path in PHONE_ROUTES:
            target = f"{path}{'&' if '?' in path else '?'}{query}" if query else path
            body = {"op": "stop_all"} if method == "POST" else None
            reply = phone.fetch(method, target, body=body, origin=phone.origin, headers=headers)
            assert reply.status == 401, (target, headers)


async def test_a_jupyter_token_or_the_hub_secret_cannot_open_the_phone_websocket(
    phone: PhoneHub,
) -> None:
    secret = phone.address.secret
    for headers in ({"Authorization": f"Bearer {secret}"}, {"Authorization": "token abc"}):
        assert await refused_handshake(ws_request(phone, None, **headers)) == 401


def test_a_device_token_opens_nothing_on_the_hub_listener(phone: PhoneHub) -> None:
    device = phone.pair()
    routes = [
        ("GET", "/conductloop/api/agents"),
        ("GET", "/conductloop/api/status"),
        ("GET", "/conductloop/api/devices"),
        ("POST", "/conductloop/api/commands"),
        ("POST", "/conductloop/api/phone"),
        ("POST", "/conductloop/api/devices/revoke"),
        ("GET", "/conductloop/api/ws"),
        ("GET", "/conductloop/runtime"),
    ]
    for credentials in (
        {"Cookie": f"{COOKIE}={device.token}"},
        {"Authorization": f"Bearer {device.token}"},
        {"Authorization": f"Bearer {device.csrf}"},
    ):
        for method, path in routes:
            assert phone.hub_fetch(method, path, credentials).status == 401, (path, credentials)


# -- same origin, CSRF, Host ---------------------------------------------------------------


def test_a_foreign_origin_cannot_pair_and_does_not_spend_the_code(phone: PhoneHub) -> None:
    code = phone.code()
    for origin in (FOREIGN, f"http://evil.example:{phone.port}", "null", None):
        refused = phone.claim(code, origin=origin)
        assert (refused.status, refused.error) == (403, "forbidden"), origin
        assert "Set-Cookie" not in refused.headers
    assert phone.claim(code).status == 200


def test_a_command_needs_the_same_origin_and_the_devices_csrf_token(phone: PhoneHub) -> None:
    device, other = phone.pair(), phone.pair()
    stop_all = {"op": "stop_all"}

    def post(origin: str | None, csrf: str | None) -> int:
        reply = phone.fetch(
            "POST", "/api/command", body=stop_all, token=device.token, origin=origin, csrf=csrf
        )
        return reply.status

    assert post(FOREIGN, device.csrf) == 403
    assert post("null", device.csrf) == 403
    assert post(None, device.csrf) == 403
    assert post(phone.origin, None) == 403
    assert post(phone.origin, "") == 403
    assert post(phone.origin, "0" * 64) == 403
    assert post(phone.origin, other.csrf) == 403
    reply = phone.command(device, stop_all)
    assert (reply.status, reply.json()) == (200, {"ok": True, "result": 0})


async def test_the_websocket_handshake_from_a_foreign_origin_is_refused_with_403(
    phone: PhoneHub,
) -> None:
    device = await asyncio.to_thread(phone.pair)
    for origin in (FOREIGN, f"http://evil.example:{phone.port}", "null"):
        assert await refused_handshake(ws_request(phone, device.token, Origin=origin)) == 403


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/app.js"), ("POST", "/pair"), *PHONE_ROUTES, ("GET", "/nope")],
)
def test_a_foreign_host_header_is_refused_with_403_on_every_route(
    phone: PhoneHub, method: str, path: str
) -> None:
    device = phone.pair()
    rebound = f"evil.example:{phone.port}"  # DNS rebinding: evil.example -> 127.0.0.1
    body = {"op": "stop_all"} if path == "/api/command" else {"code": phone.code()}
    reply = phone.fetch(
        method,
        path,
        body=body if method == "POST" else None,
        token=device.token,
        origin=f"http://{rebound}",
        csrf=device.csrf,
        headers={"Host": rebound},
    )
    assert reply.status == 403
    # the names the listener was opened for are accepted
    local = phone.fetch("GET", "/api/state", token=device.token, headers={"Host": phone.host})
    assert local.status == 200
    named = phone.fetch(
        "GET", "/api/state", token=device.token, headers={"Host": f"localhost:{phone.port}"}
    )
    assert named.status == 200


async def test_the_websocket_handshake_with_a_foreign_host_is_refused_with_403(
    phone: PhoneHub,
) -> None:
    device = await asyncio.to_thread(phone.pair)
    rebound = f"evil.example:{phone.port}"
    request = ws_request(phone, device.token, Host=rebound, Origin=f"http://{rebound}")
    assert await refused_handshake(request) == 403


# -- the WebSocket -------------------------------------------------------------------------


async def test_a_malformed_websocket_message_gets_an_error_and_the_connection_keeps_serving(
    phone: PhoneHub,
) -> None:
    device = await asyncio.to_thread(phone.pair)
    async with socket(phone, device) as ws:
        for raw, code in [
            ("not json", "bad_json"),
            ("[1, 2]", "bad_json"),
            ('{"type": "hello"}', "unknown_type"),
            ('{"type": "subscribe", "after": -1}', "bad_message"),
            ('{"type": "command", "id": "c1", "command": {"op": "format_disk"}}', "bad_message"),
        ]:
            await ws.send(raw)
            error = await ws.recv()
            assert (error["type"], error["code"]) == ("error", code), raw
        await ws.send({"type": "subscribe", "after": 0})
        assert (await ws.recv())["type"] == "snapshot"
        await ws.send({"type": "command", "id": "c2", "command": {"op": "stop_all"}})
        assert await ws.recv() == {"type": "reply", "id": "c2", "ok": True, "result": 0}


async def test_an_oversized_websocket_message_closes_only_that_connection_with_1009(
    phone: PhoneHub,
) -> None:
    big_device = await asyncio.to_thread(phone.pair)
    ok_device = await asyncio.to_thread(phone.pair)
    async with socket(phone, big_device) as big, socket(phone, ok_device) as ok:
        with contextlib.suppress(WebSocketClosedError):
            await big.send("x" * (MAX_CLIENT_MESSAGE + 1))
        assert await big.closed() == 1009

        message = {"type": "command", "id": "c1", "command": {"op": "stop_all", "note": ""}}
        message["command"]["note"] = "n" * (MAX_CLIENT_MESSAGE - len(json.dumps(message)))
        assert len(json.dumps(message).encode()) == MAX_CLIENT_MESSAGE  # at the limit: fine
        await ok.send(json.dumps(message))
        assert await ok.recv() == {"type": "reply", "id": "c1", "ok": True, "result": 0}
        await ok.send({"type": "subscribe", "after": 0})
        assert (await ok.recv())["type"] == "snapshot"


async def test_commands_beyond_the_rate_limit_get_rate_limited_errors(phone: PhoneHub) -> None:
    device = await asyncio.to_thread(phone.pair)
    async with socket(phone, device) as ws:
        count = 40
        for i in range(count):  # a burst, sent before any reply is read
            command = {"op": "pause", "agent_id": "nobody"}
            await ws.send({"type": "command", "id": f"c{i}", "command": command})
        replies = [await ws.recv() for _ in range(count)]
    assert [r["id"] for r in replies] == [f"c{i}" for i in range(count)]
    codes = [r["code"] for r in replies]
    assert codes[:20] == ["unknown_agent"] * 20  # the burst the bucket allows
    assert "rate_limited" in codes[20:]
    assert set(codes) == {"unknown_agent", "rate_limited"}


async def test_revoking_a_device_closes_its_websocket_with_4001_at_once_and_spares_others(
    phone: PhoneHub,
) -> None:
    revoked, kept = await asyncio.to_thread(phone.pair), await asyncio.to_thread(phone.pair)
    async with socket(phone, revoked) as gone, socket(phone, kept) as ok:
        for ws in (gone, ok):
            await ws.send({"type": "subscribe", "after": 0})
            assert (await ws.recv())["type"] == "snapshot"
        await asyncio.to_thread(phone.client.revoke, revoked.id)
        assert await gone.closed(timeout=5) == 4001  # well before a ping could notice
        await ok.send({"type": "command", "id": "c1", "command": {"op": "stop_all"}})
        assert await ok.recv() == {"type": "reply", "id": "c1", "ok": True, "result": 0}
    state = await asyncio.to_thread(phone.fetch, "GET", "/api/state", token=revoked.token)
    assert state.status == 401
    assert await refused_handshake(ws_request(phone, revoked.token)) == 401
    assert list((await asyncio.to_thread(phone.client.devices))["id"]) == [kept.id]


# -- secrets stay out of logs ----------------------------------------------------------------


async def test_no_secret_reaches_any_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="conductloop")
    caplog.set_level(logging.DEBUG, logger="tornado")
    jupyter_token = "f" * 48
    phone = await asyncio.to_thread(PhoneHub, tmp_path / "hub")
    try:
        code = await asyncio.to_thread(phone.code)
        wrong = code[::-1]
        assert (await asyncio.to_thread(phone.claim, wrong)).status == 403
        paired = await asyncio.to_thread(phone.claim, code)
        assert paired.status == 200
        device = Device(paired.cookie().value, paired.json()["csrf"], paired.json()["device"]["id"])
        await asyncio.to_thread(phone.claim, code)  # used
        for path in ("/api/state", f"/api/state?token={jupyter_token}", "/api/events?agent_id=x"):
            await asyncio.to_thread(phone.fetch, "GET", path, token=device.token)
        await asyncio.to_thread(phone.command, device, {"op": "stop_all"})
        await asyncio.to_thread(phone.command, device, {"op": "stop", "agent_id": code})
        async with socket(phone, device) as ws:
            await ws.send({"type": "subscribe", "after": 0})
            await ws.recv()
            await ws.send({"type": "command", "id": "c1", "command": {"op": "stop_all"}})
            await ws.recv()
            await asyncio.to_thread(phone.client.revoke, device.id)
            assert await ws.closed() == 4001
        await asyncio.to_thread(phone.fetch, "GET", "/api/state", token=device.token)
    finally:
        await asyncio.to_thread(phone.stop)
    out, err = await asyncio.to_thread(capfd.readouterr)  # file I/O: off the loop
    logged = caplog.text + out + err
    assert "POST /pair" in caplog.text  # the listener's log was captured
    secrets = {
        "pairing code": code,
        "wrong code": wrong,
        "device token": device.token,
        "CSRF token": device.csrf,
        "hub secret": phone.address.secret,
        "jupyter token": jupyter_token,
    }
    assert [name for name, value in secrets.items() if value in logged] == []


# -- the cookie, and TLS -------------------------------------------------------------------


def test_the_device_cookie_is_httponly_samesite_strict_and_not_secure_over_http(
    phone: PhoneHub,
) -> None:
    reply = phone.claim(phone.code())
    assert reply.status == 200
    cookie = reply.cookie()
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert not cookie["secure"]
    assert cookie["expires"]  # kept across browser restarts
    assert reply.cookie().value not in reply.body.decode()  # the page's script never sees it


def test_with_tls_the_link_carries_a_sha256_fingerprint_and_the_cookie_is_secure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONDUCTLOOP_HUB", raising=False)
    monkeypatch.delenv("CONDUCTLOOP_HUB_SECRET", raising=False)
    monkeypatch.setenv("CONDUCTLOOP_HOME", str(tmp_path / "home"))
    loop = cl.Conductor(name="tls")
    try:
        link = loop.phone(host="127.0.0.1", tls=True)
        assert link.tls
        assert link.url.startswith(f"https://127.0.0.1:{link.port}/#pair=")
        assert link.fingerprint is not None
        assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", link.fingerprint)
        key = tmp_path / "home" / "phone-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # self-signed: the fingerprint is the check
        connection = http.client.HTTPSConnection(
            "127.0.0.1", link.port, timeout=10, context=context
        )
        try:
            connection.request("GET", "/")
            page = connection.getresponse()
            assert (page.status, page.read()[:15]) == (200, b"<!doctype html>")
            assert connection.sock is not None
            der = connection.sock.getpeercert(binary_form=True)
            assert der is not None
            served = hashlib.sha256(der).hexdigest().upper()
            assert link.fingerprint.replace(":", "") == served

            origin = f"https://127.0.0.1:{link.port}"
            code = link.url.split("#pair=", 1)[1]
            body = json.dumps({"code": code})
            headers = {"Origin": origin, "Content-Type": "application/json"}
            connection.request("POST", "/pair", body=body, headers=headers)
            paired = connection.getresponse()
            paired.read()
            assert paired.status == 200
            cookie = SimpleCookie(paired.headers["Set-Cookie"])[COOKIE]
            assert cookie["secure"] is True
            assert cookie["httponly"] is True
            assert cookie["samesite"] == "Strict"
        finally:
            connection.close()
        assert len(loop.devices()) == 1
    finally:
        try:
            loop.close()
        finally:
            stop_embedded()
