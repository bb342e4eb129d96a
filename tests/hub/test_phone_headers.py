"""What the phone listener checks and sends in headers: same origin and the device's CSRF
token for every change, the Host it was opened for (DNS rebinding), and CSP, no-referrer,
nosniff and no-store on every response.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.hub._phone_support import PHONE_ROUTES, PhoneHub

FOREIGN = "http://evil.example"


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
        assert await phone.refused_handshake(device.token, Origin=origin) == 403


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
    origin = f"http://{rebound}"
    assert await phone.refused_handshake(device.token, Host=rebound, Origin=origin) == 403


# -- on every response ---------------------------------------------------------------------


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
