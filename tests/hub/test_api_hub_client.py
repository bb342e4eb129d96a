"""``cl.connect()``: the Python client of a hub, against an embedded hub and a real
``cl.Conductor`` runtime.

Each test watches the hub through ``HubFeed``, a real subscribed client on a thread of its
own, so a test waits for what the hub published rather than for time to pass.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

import conductloop_jupyter as cl
from conductloop_jupyter.hub.discovery import HubAddress
from conductloop_jupyter.hub.server import EmbeddedHub
from tests.hub._support import (
    Message,
    bearer,
    is_event,
)


class HubFeed:
    """A real client of the hub, subscribed on a thread (and event loop) of its own.

    It hands every message to the test thread through a ``SimpleQueue``, which takes no
    Python-level lock on the feed's loop thread.
    """

    def __init__(self, address: HubAddress) -> None:
        self._messages: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self.seen: list[Message] = []
        self._ws: WebSocketClientConnection | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-hub-feed")
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(address), self._loop)
        snapshot = self._messages.get(timeout=10)
        assert snapshot is not None
        assert snapshot["type"] == "snapshot"

    async def _listen(self, address: HubAddress) -> None:
        try:
            request = HTTPRequest(address.client_ws, headers=bearer(address.secret))
            self._ws = await websocket_connect(request)
            await self._ws.write_message(json.dumps({"type": "subscribe", "after": 0}))
            while (raw := await self._ws.read_message()) is not None:
                self._messages.put(json.loads(raw))
        finally:
            self._messages.put(None)

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 10) -> Message:
        """The first event the hub published that matches (waiting for it if need be)."""
        for event in self.seen:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
            assert message is not None, "the hub closed the feed"
            assert message["type"] == "events", message
            self.seen.extend(message["events"])
            for event in message["events"]:
                if predicate(event):
                    return event

    def close(self) -> None:
        if self._ws is not None:
            self._loop.call_soon_threadsafe(self._ws.close)
            while self._messages.get(timeout=10) is not None:
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextmanager
def embedded_hub(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[HubAddress, HubFeed]]:
    monkeypatch.setenv("CONDUCTLOOP_HOME", str(home))  # cl.connect() finds hub.json here
    embedded = EmbeddedHub(home)
    address = embedded.start()
    try:
        feed = HubFeed(address)
        try:
            yield address, feed
        finally:
            feed.close()
    finally:
        embedded.stop()


def test_the_hub_client_sees_agents_pending_and_every_event_of_a_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        embedded_hub(tmp_path / "hub", monkeypatch) as (address, feed),
        cl.Conductor("seen", hub=address.url) as loop,
    ):

        @loop.agent
        async def asks(ctx: cl.Context, what: str) -> bool:
            ctx.status(f"asking about {what}")
            return (await ctx.approve(f"Deploy {what}?", details={"what": what})).approved

        first, second = loop.start("asks", "api"), loop.start("asks", "web")
        for run in (first, second):
            feed.wait_for(is_event("request.opened", run.agent_id))
        hub = cl.connect()
        assert hub.address == address

        agents = hub.agents()
        assert list(agents["agent_id"]) == [first.agent_id, second.agent_id]
        assert list(agents["state"]) == ["waiting", "waiting"]
        assert list(agents["activity"]) == ["asking about api", "asking about web"]
        assert set(agents["runtime"]) == {loop.runtime}

        pending = hub.pending()
        assert [(r.agent_id, r.kind, r.prompt, r.details) for r in pending] == [
            (first.agent_id, "approval", "Deploy api?", {"what": "api"}),
            (second.agent_id, "approval", "Deploy web?", {"what": "web"}),
        ]
        assert [r.id for r in pending] == [r.id for r in loop.pending()]

        emitted = loop.events()
        feed.wait_for(lambda e: e["runtime"] == loop.runtime and e["seq"] == emitted["seq"].max())
        events = hub.events()
        assert list(events["id"]) == list(range(1, len(emitted) + 1))  # ascending, no gap
        assert list(zip(events["seq"], events["kind"], strict=True)) == list(
            zip(emitted["seq"], emitted["kind"], strict=True)
        )
        mine = hub.events(agent_id=first.agent_id)
        assert set(mine["agent_id"]) == {first.agent_id}
        assert len(mine) == (emitted["agent_id"] == first.agent_id).sum()
        assert list(hub.events(after=int(events["id"].iloc[-2]))["id"]) == [len(emitted)]


def test_the_hub_client_steers_a_runtime_and_each_command_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        embedded_hub(tmp_path / "hub", monkeypatch) as (address, feed),
        cl.Conductor("steered", hub=address.url) as loop,
    ):

        @loop.agent
        async def asks(ctx: cl.Context) -> bool:
            return (await ctx.approve("Deploy?")).approved

        @loop.agent
        async def chooses(ctx: cl.Context) -> tuple[str | None, list[str]]:
            answer = await ctx.ask("Which dataset?", choices=["a", "b"])
            return answer, await ctx.checkpoint()

        def request_id(run: cl.AgentRun) -> str:
            return str(
                feed.wait_for(is_event("request.opened", run.agent_id))["data"]["request_id"]
            )

        hub = cl.connect(by="tester")
        yes, no, question = loop.start("asks"), loop.start("asks"), loop.start("chooses")
        yes_id, no_id, question_id = request_id(yes), request_id(no), request_id(question)

        assert hub.approve(yes_id, note="fine") is True
        assert hub.approve(yes_id) is False  # first answer wins
        assert hub.reject(yes_id) is False
        assert hub.reject(no_id, note="not now") is True
        assert yes.result(10) is True
        assert no.result(10) is False
        assert (loop.request(yes_id).decided_by, loop.request(no_id).note) == ("tester", "not now")

        hub.pause(question.agent_id)  # takes effect once its question is answered
        hub.redirect(question.agent_id, "use the 2025 data")
        assert hub.answer(question_id, "a") is True
        assert hub.answer(question_id, "b") is False
        feed.wait_for(is_event("agent.state", question.agent_id, state="paused"))
        assert question.state is cl.AgentState.PAUSED
        hub.resume(question.agent_id)
        assert question.result(10) == ("a", ["use the 2025 data"])
        commands = [
            (e.data["op"], e.data["by"]) for e in loop.events().itertuples() if e.kind == "command"
        ]
        assert commands == [("pause", "tester"), ("resume", "tester")]

        one, two, three = (loop.start("asks") for _ in range(3))
        for run in (one, two, three):
            request_id(run)
        hub.stop(one.agent_id)
        feed.wait_for(is_event("agent.state", one.agent_id, state="stopped"))
        hub.stop(one.agent_id)  # idempotent
        assert hub.stop_all() == 2
        for run in (one, two, three):
            with pytest.raises(cl.AgentStopped):
                run.result(10)
        assert hub.stop_all() == 0
        assert hub.pending() == []


def test_the_hub_client_raises_usage_error_for_unknown_ids_and_finished_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        embedded_hub(tmp_path / "hub", monkeypatch) as (address, feed),
        cl.Conductor("done", hub=address.url) as loop,
    ):

        @loop.agent
        async def quick(ctx: cl.Context) -> int:
            return 1

        @loop.agent
        async def chooses(ctx: cl.Context) -> str | None:
            return await ctx.ask("Which?", choices=["a", "b"])

        finished = loop.start("quick")
        assert finished.result(10) == 1
        feed.wait_for(is_event("agent.state", finished.agent_id, state="done"))
        asking = loop.start("chooses")
        question_id = feed.wait_for(is_event("request.opened", asking.agent_id))["data"][
            "request_id"
        ]
        hub = cl.connect()

        with pytest.raises(cl.UsageError, match="r-unknown"):
            hub.approve("r-unknown")
        with pytest.raises(cl.UsageError, match="r-unknown"):
            hub.answer("r-unknown", "a")
        with pytest.raises(cl.UsageError, match="nobody"):
            hub.pause("nobody")
        with pytest.raises(cl.UsageError, match="nobody"):
            hub.stop("nobody")
        for verb in (hub.pause, hub.resume):
            with pytest.raises(cl.UsageError, match=finished.agent_id):
                verb(finished.agent_id)
        with pytest.raises(cl.UsageError, match=finished.agent_id):
            hub.redirect(finished.agent_id, "more")
        hub.stop(finished.agent_id)  # stopping a finished agent is a no-op, not an error
        with pytest.raises(cl.UsageError):
            hub.answer(question_id, "c")  # not one of the choices
        with pytest.raises(cl.UsageError):
            hub.approve(question_id)  # a question is answered, not approved
        assert hub.answer(question_id, "b") is True
        assert asking.result(10) == "b"


def test_connect_without_a_running_hub_raises_usage_error_saying_how_to_start_one(
    tmp_path: Path,
) -> None:
    with pytest.raises(cl.UsageError, match="conductloop serve"):
        cl.connect()  # $CONDUCTLOOP_HOME is an empty folder
    with pytest.raises(cl.UsageError, match="conductloop serve"):
        cl.connect(home=tmp_path / "nowhere")


def test_connect_finds_the_hub_in_hub_json_and_not_after_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "hub"
    with embedded_hub(home, monkeypatch) as (address, _):
        hub = cl.connect()
        assert hub.address == address
        assert hub.status()["runtimes"] == []
    with pytest.raises(cl.UsageError, match="conductloop serve"):
        cl.connect(home=home)
