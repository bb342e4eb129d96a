"""The phone's WebSocket is authenticated by a cookie, so it needs the listener's own
``Origin``, present and exact, with a valid cookie too (issue 12, point 9); on a real
phone listener bound to loopback.
"""

from __future__ import annotations

import asyncio

import pytest

from conductloop_jupyter.hub.phone import COOKIE
from tests.hub._phone_support import PhoneHub
from tests.hub._support import refused_handshake

EVIL = "http://evil.example"


def handshake_headers(phone: PhoneHub, token: str, **extra: str) -> dict[str, str]:
    """A handshake with a valid cookie and whatever else ``extra`` says (no ``Origin``)."""
    headers = {"Host": phone.host, "Cookie": f"{COOKIE}={token}"}
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return headers


@pytest.mark.parametrize(
    "extra",
    [
        {},  # no Origin at all
        {"Sec_WebSocket_Origin": EVIL},  # the old draft's header, and no Origin
        {"Sec_Fetch_Site": "same-origin"},  # tornado takes this as same-origin by itself
        {"Sec_Fetch_Site": "same-origin", "Origin": EVIL},
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Origin": "https://{host}"},  # the right host, the wrong scheme
        {"Origin": "http://{host}/"},  # not an origin: a URL
    ],
    ids=lambda extra: ",".join(f"{k}={v}" for k, v in extra.items()) or "none",
)
async def test_a_phone_websocket_without_its_own_origin_is_refused_even_with_a_valid_cookie(
    phone: PhoneHub, extra: dict[str, str]
) -> None:
    device = await asyncio.to_thread(phone.pair)
    extra = {k: v.format(host=phone.host) for k, v in extra.items()}
    url = f"ws://{phone.host}/ws"
    assert await refused_handshake(url, handshake_headers(phone, device.token, **extra)) == 403
    # the same cookie from the listener's own origin is let in
    async with phone.socket(device) as ws:
        await ws.send({"type": "subscribe", "after": 0})
        assert (await ws.recv())["type"] == "snapshot"


async def test_an_unpaired_websocket_from_the_right_origin_still_needs_its_cookie(
    phone: PhoneHub,
) -> None:
    assert await phone.refused_handshake(None) == 401
    assert await phone.refused_handshake("not-a-token") == 401
