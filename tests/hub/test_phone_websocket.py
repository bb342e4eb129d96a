"""The phone's WebSocket: bad and oversized messages, the command rate limit, and a revoked
device's connection closed at once; on a real phone listener bound to loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from tornado.websocket import WebSocketClosedError

from conductloop_jupyter.hub.protocol import MAX_CLIENT_MESSAGE
from tests.hub._phone_support import PhoneHub


async def test_a_malformed_websocket_message_gets_an_error_and_the_connection_keeps_serving(
    phone: PhoneHub,
) -> None:
    device = await asyncio.to_thread(phone.pair)
    async with phone.socket(device) as ws:
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
    async with phone.socket(big_device) as big, phone.socket(ok_device) as ok:
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
    async with phone.socket(device) as ws:
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
    async with phone.socket(revoked) as gone, phone.socket(kept) as ok:
        for ws in (gone, ok):
            await ws.send({"type": "subscribe", "after": 0})
            assert (await ws.recv())["type"] == "snapshot"
        await asyncio.to_thread(phone.client.revoke, revoked.id)
        assert await gone.closed(timeout=5) == 4001  # well before a ping could notice
        await ok.send({"type": "command", "id": "c1", "command": {"op": "stop_all"}})
        assert await ok.recv() == {"type": "reply", "id": "c1", "ok": True, "result": 0}
    state = await asyncio.to_thread(phone.fetch, "GET", "/api/state", token=revoked.token)
    assert state.status == 401
    assert await phone.refused_handshake(revoked.token) == 401
    assert list((await asyncio.to_thread(phone.client.devices))["id"]) == [kept.id]
