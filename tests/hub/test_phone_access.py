"""The phone listener serves nothing but the phone page and its steering API, and only to
paired devices: no Jupyter endpoint, no Jupyter token, no hub secret opens anything on it,
and a device token opens nothing on the hub's own listener.

The phone listener is reachable from the LAN; each test has a real one bound to loopback
(the ``phone`` fixture).
"""

from __future__ import annotations

import pytest

from conductloop_jupyter.hub.phone import COOKIE
from tests.hub._phone_support import PHONE_ROUTES, PhoneHub


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
    assert await phone.refused_handshake(None) == 401
    assert await phone.refused_handshake("not-a-device-token") == 401


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
        assert await phone.refused_handshake(None, **headers) == 401


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
