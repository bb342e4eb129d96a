"""A note (and an approval's edited args) reaches the agent's code from every hub surface:
the REST command, a client's WebSocket command and the ``cl.connect()`` client, in-process
and over HTTP. A malformed ``args`` is refused as ``bad_message`` and decides nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter import client as client_module
from conductloop_jupyter.hub.discovery import HubAddress
from conductloop_jupyter.testing import EventRecorder, match
from tests.hub._support import client_peer, command, get, is_event, running_hub
from tests.hub.test_api_hub_client import embedded_hub

Received = tuple[bool, str | None, dict[str, Any] | None]


@asynccontextmanager
async def asking(
    address: HubAddress, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[cl.Conductor, EventRecorder]]:
    """A real runtime on the hub with an agent ``decides`` that returns what it was told."""
    monkeypatch.setenv("CONDUCTLOOP_HUB_SECRET", address.secret)
    async with cl.Conductor("notes", hub=address.url) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)

        @loop.agent
        async def decides(ctx: cl.Context) -> Received:
            d = await ctx.approve("Deploy?", details={"env": "prod"})
            return d.approved, d.note, d.args

        yield loop, recorder


async def opened(loop: cl.Conductor, recorder: EventRecorder, run: cl.AgentRun) -> str:
    event = await recorder.wait_for(match("request.opened", agent_id=run.agent_id))
    assert loop.link is not None
    assert await loop.link.drain(10)  # the hub knows the request
    return str(event.data["request_id"])


async def test_a_rest_approve_brings_its_note_and_args_to_the_agent(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        asking(address, monkeypatch) as (loop, recorder),
    ):
        run = loop.start("decides")
        request_id = await opened(loop, recorder, run)
        body = {
            "op": "approve",
            "request_id": request_id,
            "note": "only the web tier",
            "args": {"env": "staging", "replicas": 2},
        }
        assert await command(address, body, by="tester") == (200, {"ok": True, "result": True})
        assert await asyncio.wait_for(run, 10) == (
            True,
            "only the web tier",
            {"env": "staging", "replicas": 2},
        )
        decided = loop.request(request_id)
        assert (decided.decided_by, decided.note) == ("tester", "only the web tier")


async def test_a_websocket_reject_brings_its_note_to_the_agent(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        asking(address, monkeypatch) as (loop, recorder),
        client_peer(address, by="ws-tester") as client,
    ):
        run = loop.start("decides")
        request_id = await opened(loop, recorder, run)
        reject = {"op": "reject", "request_id": request_id, "note": "not on a Friday"}
        await client.send({"type": "command", "id": "c1", "command": reject})
        reply = await client.until(lambda m: m["type"] in ("reply", "error"))
        assert reply == {"type": "reply", "id": "c1", "ok": True, "result": True}
        assert await asyncio.wait_for(run, 10) == (False, "not on a Friday", None)


@pytest.mark.parametrize(
    "bad",
    [
        {"op": "approve", "args": ["env", "staging"], "note": "a list"},
        {"op": "approve", "args": "env=staging"},
        {"op": "reject", "args": {"env": "staging"}, "note": "args on a reject"},
        {"op": "approve", "note": 7},
    ],
    ids=["args-a-list", "args-a-string", "args-on-reject", "note-not-a-string"],
)
async def test_a_malformed_decision_is_bad_message_and_decides_nothing(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, bad: dict[str, Any]
) -> None:
    async with (
        running_hub(tmp_path / "hub") as (_, address),
        asking(address, monkeypatch) as (loop, recorder),
        client_peer(address) as client,
    ):
        run = loop.start("decides")
        request_id = await opened(loop, recorder, run)
        status, body = await command(address, {**bad, "request_id": request_id})
        assert (status, body["error"]["code"]) == (400, "bad_message")
        assert body["error"]["message"]
        await client.send(
            {"type": "command", "id": "c9", "command": {**bad, "request_id": request_id}}
        )
        error = await client.until(lambda m: m["type"] in ("reply", "error"))
        assert (error["type"], error["code"], error.get("id")) == ("error", "bad_message", "c9")

        # nothing was lost: the request is still open, and a good decision still lands whole
        assert loop.request(request_id).open
        assert run.state is cl.AgentState.WAITING
        assert [p["id"] for p in (await get(address, "pending"))["pending"]] == [request_id]
        good = {"op": "approve", "request_id": request_id, "note": "ok", "args": {"env": "qa"}}
        assert await command(address, good) == (200, {"ok": True, "result": True})
        assert await asyncio.wait_for(run, 10) == (True, "ok", {"env": "qa"})


@pytest.mark.parametrize("path", ["in-process", "over-http"])
def test_the_hub_client_brings_note_and_args_to_the_agent(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if path == "over-http":  # as if the runtime lived in another process
        monkeypatch.setattr(client_module, "owner", lambda item_id: None)
    with (
        embedded_hub(tmp_path / "hub", monkeypatch) as (address, feed),
        cl.Conductor("client-notes", hub=address.url) as loop,
    ):

        @loop.agent
        async def decides(ctx: cl.Context) -> Received:
            d = await ctx.approve("Deploy?")
            return d.approved, d.note, d.args

        def request_id(run: cl.AgentRun) -> str:
            event = feed.wait_for(is_event("request.opened", run.agent_id))
            return str(event["data"]["request_id"])

        hub = cl.connect(by="tester")
        yes, no = loop.start("decides"), loop.start("decides")
        yes_id, no_id = request_id(yes), request_id(no)
        assert hub.approve(yes_id, note="edited", args={"env": "staging"}) is True
        assert hub.approve(yes_id, note="late", args={"env": "prod"}) is False
        assert hub.reject(no_id, note="not now") is True
        assert yes.result(10) == (True, "edited", {"env": "staging"})
        assert no.result(10) == (False, "not now", None)
        assert loop.request(yes_id).decided_by == "tester"
