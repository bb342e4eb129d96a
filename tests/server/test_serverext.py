"""The Jupyter server extension, on a real Jupyter server with token auth and real kernels.

Each test has its own server: pytest-jupyter's ``jp_serverapp``, spoken to with ``jp_fetch``
and ``jp_ws_fetch`` (``server`` in ``conftest.py`` wraps them). Kernels are started through
the server's kernels API, so they inherit the environment the extension exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClientConnection

from conductloop_jupyter.hub.discovery import HUB_ENV, SECRET_ENV
from conductloop_jupyter.serverext import ConductLoopApp

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp
    from pytest_jupyter.pytest_tornasync import AsyncHTTPServerClient

    from tests.server.conftest import Fetch, Jupyter

T = TypeVar("T")

EXTENSION = "conductloop_jupyter.serverext"

POLL_TIMEOUT = 30.0  # overall deadline of a wait on the server or a kernel
CELL_TIMEOUT = 60.0  # the first cell imports pandas and the package in a fresh kernel
REFUSED = {401, 403}  # Jupyter refuses an unauthenticated API request with 403

AGENT_CELL = """
import conductloop_jupyter as cl

loop = cl.Conductor(name="kernel-test")

@loop.agent
async def deployer(ctx):
    approved = await ctx.approve("Deploy?")
    return "deployed" if approved else "held"

run = loop.start("deployer")
print("agent:", run.agent_id)
"""

ENV_CELL = """
import hashlib, os
secret = os.environ.get("CONDUCTLOOP_HUB_SECRET", "").encode()
print("hub:", os.environ.get("CONDUCTLOOP_HUB"), hashlib.sha256(secret).hexdigest())
"""


def api(name: str) -> str:
    return f"conductloop/api/{name}"


async def until_hub(server: Jupyter, check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """``check()`` now, then again after each change the hub announces on its live stream
    (``api/ws``, subscribed first, so no change slips between two checks), until it returns
    something; bounded by an overall deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + POLL_TIMEOUT
    ws = await server.ws(api("ws"))
    try:
        await ws.write_message(json.dumps({"type": "subscribe", "after": 0}))
        while (found := await check()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {POLL_TIMEOUT:g} s waiting for {what}")
            with contextlib.suppress(TimeoutError):  # then check once more, and time out
                await read_json(ws, remaining)  # the snapshot, then each batch of events
        return found
    finally:
        await close(ws)


async def agent_in(server: Jupyter, agent_id: str, state: str) -> dict[str, Any]:
    """The hub's row of ``agent_id`` once it is in ``state``."""

    async def check() -> dict[str, Any] | None:
        agents = (await server.fetch(api("agents"))).json()["agents"]
        return next((a for a in agents if a["agent_id"] == agent_id and a["state"] == state), None)

    return await until_hub(server, check, f"agent {agent_id} to be {state}")


async def read_json(ws: WebSocketClientConnection, timeout: float = POLL_TIMEOUT) -> Any:
    raw = await asyncio.wait_for(ws.read_message(), timeout)
    assert raw is not None, "the WebSocket closed"
    return json.loads(raw)


async def close(ws: WebSocketClientConnection) -> None:
    """Close a WebSocket and wait until it is closed (the server has answered the close,
    so neither end has a task left for it)."""
    ws.close()
    while await asyncio.wait_for(ws.read_message(), POLL_TIMEOUT) is not None:
        pass


# -- a kernel, spoken to over the server's channels WebSocket -------------------------------


@dataclass
class Execution:
    reply: dict[str, Any]
    stdout: str
    results: list[str] = field(default_factory=list)  # text/plain of execute_result


class Kernel:
    """A kernel started by ``POST api/kernels``, driven by Jupyter messages over
    ``api/kernels/<id>/channels`` (the JSON protocol, a ``channel`` key per message)."""

    def __init__(self, server: Jupyter, kernel_id: str, ws: WebSocketClientConnection):
        self.server = server
        self.id = kernel_id
        self.ws = ws
        self.session = uuid.uuid4().hex

    @classmethod
    async def start(cls, server: Jupyter) -> Kernel:
        response = await server.fetch("api/kernels", method="POST", body={"name": "python3"})
        assert response.code == 201, response.body
        kernel_id = response.json()["id"]
        ws = await server.ws(f"api/kernels/{kernel_id}/channels")
        return cls(server, kernel_id, ws)

    async def shutdown(self) -> None:
        await close(self.ws)
        response = await self.server.fetch(f"api/kernels/{self.id}", method="DELETE")
        assert response.code == 204, response.body

    async def execute(self, code: str, timeout: float = CELL_TIMEOUT) -> Execution:
        """Run a cell; return its ``execute_reply`` content and what it printed, once the
        kernel is idle again (or fail at ``timeout``)."""
        msg_id = uuid.uuid4().hex
        await self.ws.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": self.session,
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "buffers": [],
                    "channel": "shell",
                }
            )
        )
        reply: dict[str, Any] | None = None
        idle = False
        stdout: list[str] = []
        results: list[str] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while reply is None or not idle:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no execute_reply within {timeout:g} s for {code!r}")
            message = await read_json(self.ws, remaining)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "execute_reply":
                reply = content
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "stream" and content["name"] == "stdout":
                stdout.append(content["text"])
            elif kind == "execute_result":
                results.append(content["data"].get("text/plain", ""))
        return Execution(reply, "".join(stdout), results)


async def start_waiting_agent(server: Jupyter, kernel: Kernel) -> tuple[str, str]:
    """Run ``AGENT_CELL`` and wait until the hub shows its agent waiting on a request;
    returns ``(agent_id, request_id)``."""
    cell = await kernel.execute(AGENT_CELL)
    assert cell.reply["status"] == "ok", cell.reply
    agent_id = cell.stdout.split("agent:", 1)[1].strip()
    row = await agent_in(server, agent_id, "waiting")
    return agent_id, row["request_id"]


# -- 1. the extension loads and exports a live hub ------------------------------------------


async def test_extension_loads_and_exports_the_address_and_secret_of_a_live_hub(
    server: Jupyter,
) -> None:
    manager = server.app.extension_manager
    assert manager.extensions[EXTENSION].enabled
    assert manager.linked_extensions[EXTENSION]
    (ext_app,) = manager.extension_apps[EXTENSION]
    assert isinstance(ext_app, ConductLoopApp)
    assert ext_app.hub_server is not None
    assert ext_app.hub_server.address is not None
    assert ext_app.hub_server.home == server.home  # ConductLoopApp.home from the config

    hub_url, secret = os.environ[HUB_ENV], os.environ[SECRET_ENV]
    assert hub_url == ext_app.hub_server.address.url
    assert hub_url.startswith("http://127.0.0.1:")
    assert len(secret) >= 32

    status = await server.hub_fetch(f"{hub_url}/conductloop/api/status", f"Bearer {secret}")
    assert status.code == 200
    body = json.loads(status.body)
    assert {"runtimes", "agents", "pending", "spend_usd", "last_id"} <= body.keys()


# -- 2. Jupyter's auth in front of every conductloop handler --------------------------------


async def test_jp_fetch_carries_the_token_and_the_server_refuses_a_request_without_it(
    jp_serverapp: ServerApp,
    jp_fetch: Fetch,
    jp_auth_header: dict[str, str],
    http_server_client: AsyncHTTPServerClient,
    jp_base_url: str,
) -> None:
    # what every test here relies on: token auth on, no unauthenticated access
    assert jp_serverapp.allow_unauthenticated_access is False
    assert jp_serverapp.identity_provider.auth_enabled
    token = jp_serverapp.identity_provider.token
    assert token
    assert jp_auth_header == {"Authorization": f"token {token}"}

    for parts in (("api", "me"), ("conductloop", "api", "agents")):
        answered = await jp_fetch(*parts)  # raises for an HTTP error status
        assert answered.code == 200
        assert answered.request.headers["Authorization"] == f"token {token}"

        # the same request from the client under jp_fetch, with no Authorization header
        bare = await http_server_client.fetch(f"{jp_base_url}{'/'.join(parts)}", raise_error=False)
        assert "Authorization" not in bare.request.headers
        assert bare.code == 403


ENDPOINTS = [
    ("GET", "agents"),
    ("GET", "pending"),
    ("GET", "status"),
    ("GET", "events"),
    ("POST", "commands"),
    ("WS", "ws"),
]


CREDENTIALS = ["none", "wrong-token", "hub-secret"]


def credentials(kind: str) -> dict[str, str]:
    """``Authorization`` headers that must not open the Jupyter API."""
    if kind == "wrong-token":
        return {"Authorization": "token not-the-jupyter-token"}
    if kind == "hub-secret":  # the runtime secret is not a Jupyter credential
        return {"Authorization": f"Bearer {os.environ[SECRET_ENV]}"}
    return {}


@pytest.mark.parametrize("kind", CREDENTIALS)
@pytest.mark.parametrize(("method", "name"), ENDPOINTS, ids=[n for _, n in ENDPOINTS])
async def test_conductloop_endpoint_refuses_a_request_without_the_jupyter_token(
    server: Jupyter, method: str, name: str, kind: str
) -> None:
    headers = credentials(kind)
    if method == "WS":
        with pytest.raises(HTTPClientError) as refused:
            await server.ws(api(name), token=False, headers=headers)
        # no upgrade: 403 (as Jupyter's kernel channels answer), or, as Jupyter's own
        # events socket does, a redirect to the login page that is not followed
        assert refused.value.code in REFUSED | {302}
        if refused.value.code == 302:
            assert refused.value.response is not None
            assert "/login" in refused.value.response.headers["Location"]
        return
    body = {"op": "stop_all"} if method == "POST" else None
    response = await server.fetch(api(name), method=method, body=body, token=False, headers=headers)
    assert response.code in REFUSED
    if response.body:
        data = response.json()
        assert not {"agents", "pending", "runtimes", "events", "ok", "result"} & data.keys()


async def test_conductloop_endpoints_answer_token_requests_in_the_protocol_shapes(
    server: Jupyter,
) -> None:
    agents = await server.fetch(api("agents"))
    assert (agents.code, agents.json()) == (200, {"agents": []})
    assert agents.headers["Content-Type"].startswith("application/json")

    pending = await server.fetch(api("pending"))
    assert (pending.code, pending.json()) == (200, {"pending": []})

    status = await server.fetch(api("status"))
    assert status.code == 200
    assert status.json() == {
        "runtimes": [],
        "agents": {},
        "pending": 0,
        "spend_usd": 0.0,
        "last_id": 0,
    }

    events = await server.fetch(api("events"), params={"after": 0, "limit": 10})
    assert (events.code, events.json()) == (200, {"events": [], "last_id": 0})

    bad = await server.fetch(api("events"), params={"after": "x"})
    assert bad.code == 400
    assert bad.json()["error"]["code"] == "bad_message"

    command = await server.fetch(api("commands"), method="POST", body={"op": "stop_all"})
    assert (command.code, command.json()) == (200, {"ok": True, "result": 0})

    unknown = await server.fetch(
        api("commands"), method="POST", body={"op": "approve", "request_id": "nope"}
    )
    assert unknown.code == 404
    assert unknown.json()["error"]["code"] == "unknown_request"

    ws = await server.ws(api("ws"))
    try:
        await ws.write_message(json.dumps({"type": "subscribe", "after": 0}))
        snapshot = await read_json(ws)
        assert snapshot == {
            "type": "snapshot",
            "last_id": 0,
            "agents": [],
            "pending": [],
            "runtimes": [],
        }
        await ws.write_message(
            json.dumps({"type": "command", "id": "c1", "command": {"op": "stop_all"}})
        )
        assert await read_json(ws) == {"type": "reply", "id": "c1", "ok": True, "result": 0}
    finally:
        await close(ws)


# -- 3. the hub's secret and the Jupyter token stay apart -----------------------------------


async def test_hub_secret_never_appears_in_a_jupyter_api_response(
    server: Jupyter,
) -> None:
    secret = os.environ[SECRET_ENV]
    for path in (
        api("agents"),
        api("pending"),
        api("status"),
        api("events"),
        "api/me",
        "api/status",
        "api/kernelspecs",
        "api/kernels",
        "api/sessions",
        "api/contents",
        "api/config/notebook",
    ):
        response = await server.fetch(path)
        assert response.code == 200, path
    await server.fetch(api("commands"), method="POST", body={"op": "stop_all"})
    await server.fetch(api("commands"), method="POST", body=b"not json")
    await server.fetch(api("agents"), token=False)
    ws = await server.ws(api("ws"))
    try:
        for message in ('{"type": "subscribe", "after": 0}', "not json"):
            await ws.write_message(message)
            answer = await asyncio.wait_for(ws.read_message(), POLL_TIMEOUT)
            assert isinstance(answer, str)
            server.bodies.append(answer.encode())
    finally:
        await close(ws)

    assert len(server.bodies) >= 14
    leaking = [body[:80] for body in server.bodies if secret.encode() in body]
    assert leaking == []


@pytest.mark.parametrize("scheme", ["token", "Bearer"])
async def test_hub_listener_refuses_the_jupyter_token(server: Jupyter, scheme: str) -> None:
    hub_url = os.environ[HUB_ENV]
    for path in ("status", "agents", "pending", "events"):
        response = await server.hub_fetch(
            f"{hub_url}/conductloop/api/{path}", f"{scheme} {server.token}"
        )
        assert response.code == 401, path
        assert json.loads(response.body)["error"]["code"] == "unauthorized"


# -- 4. a notebook kernel's agent, seen and steered through the Jupyter API -----------------


async def test_kernel_agent_waits_for_approval_without_blocking_the_kernel_and_finishes_once_approved(  # noqa: E501
    server: Jupyter,
) -> None:
    kernel = await Kernel.start(server)
    try:
        inherited = await kernel.execute(ENV_CELL)
        digest = hashlib.sha256(os.environ[SECRET_ENV].encode()).hexdigest()
        # the kernel inherits the address and secret the extension exported
        assert inherited.stdout.strip() == f"hub: {os.environ[HUB_ENV]} {digest}"

        first = await kernel.execute(AGENT_CELL)
        assert first.reply["status"] == "ok", first.reply
        assert "agent: deployer" in first.stdout
        agent_id = first.stdout.split("agent:", 1)[1].strip()

        # the kernel is free while the agent waits for a human
        second = await kernel.execute("1 + 1")
        assert second.reply["status"] == "ok"
        assert second.results == ["2"]

        row = await agent_in(server, agent_id, "waiting")
        assert row["name"] == "deployer"
        request_id = row["request_id"]

        pending = (await server.fetch(api("pending"))).json()["pending"]
        (request,) = [p for p in pending if p["id"] == request_id]
        assert request["agent_id"] == agent_id
        assert request["kind"] == "approval"
        assert request["prompt"] == "Deploy?"

        approve = await server.fetch(
            api("commands"), method="POST", body={"op": "approve", "request_id": request_id}
        )
        assert (approve.code, approve.json()) == (200, {"ok": True, "result": True})

        await agent_in(server, agent_id, "done")
        assert (await server.fetch(api("pending"))).json() == {"pending": []}

        third = await kernel.execute('print("result:", await run)')
        assert third.reply["status"] == "ok", third.reply
        assert "result: deployed" in third.stdout

        secret = os.environ[SECRET_ENV].encode()
        assert not [b[:80] for b in server.bodies if secret in b]
    finally:
        await kernel.shutdown()


# -- 5. who decided -------------------------------------------------------------------------


async def test_decision_through_the_jupyter_api_is_recorded_as_by_jupyterlab_and_the_username(
    server: Jupyter,
) -> None:
    kernel = await Kernel.start(server)
    try:
        agent_id, request_id = await start_waiting_agent(server, kernel)
        command = {"op": "approve", "request_id": request_id, "note": "ship it"}

        anonymous = await server.fetch(api("commands"), method="POST", body=command, token=False)
        assert anonymous.code in REFUSED
        pending = (await server.fetch(api("pending"))).json()["pending"]
        assert [p["id"] for p in pending] == [request_id]  # the refused call decided nothing

        # a browser session: the token request's cookie names the same user afterwards
        me = await server.fetch("api/me", cookies=True)
        username = me.json()["identity"]["username"]
        assert username
        approve = await server.fetch(api("commands"), method="POST", body=command, cookies=True)
        assert approve.json() == {"ok": True, "result": True}

        async def decided() -> dict[str, Any] | None:
            page = await server.fetch(api("events"), params={"agent_id": agent_id})
            return next(
                (
                    e
                    for e in page.json()["events"]
                    if e["kind"] == "request.decided" and e["data"]["request_id"] == request_id
                ),
                None,
            )

        event = await until_hub(server, decided, f"request {request_id} to be decided")
        assert event["data"]["decision"] == "approved"
        assert event["data"]["by"] == f"jupyterlab:{username}"
        assert event["data"]["note"] == "ship it"
    finally:
        await kernel.shutdown()
