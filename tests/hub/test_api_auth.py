"""The hub's API refuses every request without its secret: REST routes and both WebSockets.

A real tornado server in this process; real HTTP, real WebSocket handshakes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from tests.hub._support import (
    api,
    client_peer,
    get,
    running_hub,
    runtime_peer,
)

REST_ROUTES = [
    ("agents", None),
    ("pending", None),
    ("events?after=0", None),
    ("status", None),
    ("commands", {"op": "stop_all"}),
]
WRONG_CREDENTIALS: list[Callable[[str], dict[str, str]]] = [
    lambda secret: {},
    lambda secret: {"Authorization": "Bearer not-the-secret"},
    lambda secret: {"Authorization": f"Bearer {secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"},
    lambda secret: {"Authorization": f"Bearer {secret}x"},
    lambda secret: {"Authorization": f"Basic {secret}"},
    lambda secret: {"Authorization": secret},
    lambda secret: {"X-ConductLoop-Secret": secret},
]
CREDENTIAL_IDS = [
    "none",
    "wrong",
    "one-char-off",
    "longer",
    "basic-scheme",
    "no-scheme",
    "other-header",
]


@pytest.mark.parametrize("credentials", WRONG_CREDENTIALS, ids=CREDENTIAL_IDS)
async def test_every_rest_route_refuses_a_missing_or_wrong_secret_with_401(
    tmp_path: Path, credentials: Callable[[str], dict[str, str]]
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address):
        headers = credentials(address.secret)
        for path, body in REST_ROUTES:
            response = await AsyncHTTPClient().fetch(
                f"{address.url}/conductloop/api/{path}",
                method="GET" if body is None else "POST",
                body=None if body is None else json.dumps(body),
                headers=headers,
                raise_error=False,
            )
            assert response.code == 401, path
            assert json.loads(response.body)["error"]["code"] == "unauthorized"
            assert address.secret not in response.body.decode()
            assert address.secret[:-1] not in response.body.decode()


@pytest.mark.parametrize("credentials", WRONG_CREDENTIALS, ids=CREDENTIAL_IDS)
@pytest.mark.parametrize("channel", ["runtime", "client"])
async def test_both_websockets_refuse_a_missing_or_wrong_secret_with_http_401(
    tmp_path: Path, channel: str, credentials: Callable[[str], dict[str, str]]
) -> None:
    async with running_hub(tmp_path / "hub") as (_, address):
        url = address.runtime_ws if channel == "runtime" else address.client_ws
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(HTTPRequest(url, headers=credentials(address.secret)))
        assert refused.value.code == 401
        assert refused.value.response is not None
        body = refused.value.response.body.decode()
        assert json.loads(body)["error"]["code"] == "unauthorized"
        assert address.secret[:-1] not in body


async def test_every_route_answers_the_right_secret(tmp_path: Path) -> None:
    async with running_hub(tmp_path / "hub") as (_, address):
        for path, body in REST_ROUTES:
            status, answer = await api(address, path, body=body)
            assert status == 200, (path, answer)
        assert (await get(address, "status"))["runtimes"] == []
        async with runtime_peer(address):  # welcomed
            pass
        async with client_peer(address):  # subscribed
            pass
