"""Steering commands are checked where they enter, over the real phone WebSocket and the
hub's REST API: text with a lone surrogate (which once killed the store's writer for every
runtime, and the hub again on every restart) gets a typed error; so do a non-string id and
fields an op does not take. The hub goes on storing every runtime's events afterwards."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match
from tests.hub._phone_support import PhoneHub

SURROGATE = "\ud800"


def _worker(home: Path) -> tuple[cl.Conductor, cl.AgentRun, EventRecorder]:
    """A conductor linked to the phone hub, with one agent waiting for approval."""
    loop = cl.Conductor("steered", home=str(home))
    recorder = EventRecorder()
    loop.attach(recorder)

    @loop.agent
    async def worker(ctx: cl.Context) -> Any:
        decision = await ctx.approve("Go?")
        return decision.approved, decision.note, await ctx.checkpoint()

    run = loop.start("worker")
    recorder.wait_for_sync(match("request.opened", agent_id=run.agent_id))
    return loop, run, recorder


async def test_lone_surrogates_in_any_command_text_are_refused_and_the_store_lives_on(
    phone: PhoneHub, tmp_path: Path
) -> None:
    loop, run, _ = await asyncio.to_thread(_worker, tmp_path / "hub")
    try:
        [request] = await asyncio.to_thread(loop.pending)
        device = await asyncio.to_thread(phone.pair)
        bad = [
            {"op": "redirect", "agent_id": run.agent_id, "text": f"focus {SURROGATE}"},
            {"op": "reject", "request_id": request.id, "note": SURROGATE},
            {"op": "answer", "request_id": request.id, "text": SURROGATE},
            {"op": "pause", "agent_id": SURROGATE},
            {"op": "approve", "request_id": request.id, "args": {"path": [SURROGATE]}},
        ]
        async with phone.socket(device) as ws:
            for n, command in enumerate(bad):
                await ws.send({"type": "command", "id": f"c{n}", "command": command})
                error = await ws.until(lambda m, n=n: m.get("id") == f"c{n}")
                assert (error["type"], error["code"]) == ("error", "bad_message"), command
            await ws.send(
                {
                    "type": "command",
                    "id": "ok",
                    "command": {"op": "approve", "request_id": request.id, "note": "fine ✓"},
                }
            )
            assert (await ws.until(lambda m: m.get("id") == "ok"))["result"] is True
        approved, note, _ = await asyncio.to_thread(run.result, 10)
        assert (approved, note) == (True, "fine ✓")
        stored = await asyncio.to_thread(phone.client.events)
        assert "agent.result" in set(stored["kind"])  # the store took everything after
    finally:
        await asyncio.to_thread(loop.close)


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"op": "pause", "agent_id": ["a-1"]}, "bad_message"),
        ({"op": "pause", "agent_id": {"id": 1}}, "bad_message"),
        ({"op": "approve", "request_id": 5}, "bad_message"),
        ({"op": "approve", "request_id": "nope", "agent_id": ["x"]}, "unknown_request"),
        ({"op": "pause", "agent_id": "KNOWN", "request_id": "nope"}, None),
    ],
    ids=["list-id", "object-id", "number-request", "stray-agent-id", "stray-request-id"],
)
async def test_commands_with_stray_or_mistyped_ids_get_typed_errors_never_a_500(
    phone: PhoneHub, tmp_path: Path, command: dict[str, Any], code: str | None
) -> None:
    loop, run, _ = await asyncio.to_thread(_worker, tmp_path / "hub")
    try:
        sent = {k: run.agent_id if v == "KNOWN" else v for k, v in command.items()}
        device = await asyncio.to_thread(phone.pair)
        reply = await asyncio.to_thread(phone.command, device, sent)
        if code is None:  # a field the op does not take is ignored: the pause is carried out
            assert reply.status == 200, reply.body
        else:
            assert reply.status in (400, 404), reply.body
            assert reply.json()["error"]["code"] == code
        [request] = await asyncio.to_thread(loop.pending)  # nothing was decided
        assert request.agent_id == run.agent_id
    finally:
        await asyncio.to_thread(loop.close)
