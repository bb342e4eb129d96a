"""The route table: every endpoint mounted on each listener that offers it, and only there;
every error answered from the one error table (status, body, the client's exception).

A real hub in this process (``running_hub``) and its real phone listener (``phone``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

import conductloop_jupyter as cl
from conductloop_jupyter.core.errors import ConductLoopError, PairingError, UsageError
from conductloop_jupyter.hub.endpoints import ROUTES
from conductloop_jupyter.hub.protocol import ERRORS, exception_for
from conductloop_jupyter.hub.routes import Route
from tests.hub._phone_support import PhoneHub
from tests.hub._support import bearer, running_hub

SECRET_ROUTES = [r for r in ROUTES if "secret" in r.auth]
PHONE_ROUTES = [r for r in ROUTES if r.auth & {"device", "pairing"}]


async def _fetch(url: str, method: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = await AsyncHTTPClient().fetch(
        url,
        method=method,
        body=b"{}" if method == "POST" else None,
        headers=headers,
        raise_error=False,
    )
    return response.code, json.loads(response.body) if response.body else {}


@pytest.mark.parametrize("route", SECRET_ROUTES, ids=[r.path for r in SECRET_ROUTES])
async def test_every_listener_route_needs_the_secret_and_answers_from_the_table(
    tmp_path: Path, route: Route
) -> None:
    async with running_hub(tmp_path) as (_server, address):
        url = address.url + route.path
        status, body = await _fetch(url, route.method, {})
        assert (status, body["error"]["code"]) == (401, "unauthorized")

        status, body = await _fetch(url, route.method, bearer(address.secret))
        if status >= 400:  # an empty body is a bad request for some: said from the table
            code = body["error"]["code"]
            assert code not in ("unauthorized", "not_found", "bad_method"), body
            assert ERRORS[code].status == status, body

        other = "GET" if route.method == "POST" else "POST"
        status, _ = await _fetch(url, other, bearer(address.secret))
        assert status == 405


async def test_a_phone_route_is_not_on_the_hub_listener(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as (_server, address):
        for route in PHONE_ROUTES:
            assert route.phone_path is not None
            status, _ = await _fetch(
                address.url + route.phone_path, route.method, bearer(address.secret)
            )
            assert status == 404, route.phone_path


def test_the_listener_routes_are_not_on_the_phone_listener(phone: PhoneHub) -> None:
    device = phone.pair()
    for route in SECRET_ROUTES:
        body: dict[str, Any] | None = {} if route.method == "POST" else None
        reply = phone.fetch(
            route.method, route.path, body=body, token=device.token, origin=phone.origin,
            csrf=device.csrf,
        )  # fmt: skip
        assert (reply.status, reply.error) == (404, "not_found"), route.path


def test_commands_is_one_endpoint_on_the_listener_and_the_phone(phone: PhoneHub) -> None:
    device = phone.pair()
    on_phone = phone.command(device, {"op": "approve", "request_id": "r-nope"})
    assert (on_phone.status, on_phone.error) == (404, "unknown_request")
    with pytest.raises(UsageError) as on_listener:
        phone.client.approve("r-nope")
    assert str(on_listener.value) == on_phone.json()["error"]["message"]


def test_the_error_table_says_the_status_and_the_exception_of_every_code() -> None:
    assert {code for code, spec in ERRORS.items() if spec.status == 404} >= {
        "not_found",
        "unknown_agent",
        "unknown_request",
        "unknown_code",
    }
    assert type(exception_for("usage", "m")) is UsageError
    assert type(exception_for("pairing_locked", "wait")) is PairingError
    assert type(exception_for("runtime_gone", "gone")) is ConductLoopError
    assert type(exception_for("from-a-newer-hub", "?")) is ConductLoopError
    assert str(exception_for("timeout", "the runtime did not answer")) == (
        "the runtime did not answer"
    )


def test_the_protocol_document_lists_the_error_table_as_the_code_has_it() -> None:
    text = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    for code, spec in ERRORS.items():
        assert f"| `{code}` | {spec.status} | `{spec.raises.__name__}` |" in text, code


def test_a_client_raises_what_the_table_says_for_a_refused_phone_option(phone: PhoneHub) -> None:
    with pytest.raises(UsageError, match="host must be an IP address"):
        phone.client.phone(host="not-an-ip")
    assert isinstance(phone.client, cl.Hub)
