"""Catching up from further back than the hub's recent ring, while events keep coming: the
hand-over from the store to the ring loses nothing and repeats nothing (issue 12, point 6).

A real hub and real sockets: a runtime sends 60,000 events (the ring holds the last
50,000), a client subscribes from the first one and reads nothing while the runtime sends
60,000 more (so the ring moves on past everything the client has been sent), then reads
it all: every id once, in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from conductloop_jupyter.hub.hub import RECENT
from conductloop_jupyter.hub.protocol import MAX_BATCH
from tests.hub._support import (
    Message,
    Peer,
    bearer,
    connected,
    running_hub,
    runtime_peer,
    send_events,
    wire,
)

BEFORE = RECENT + 10_000  # events stored before the client subscribes: 10,000 only stored
DURING = RECENT + 10_000  # events sent while it has read nothing


def logs(first: int, count: int) -> list[Message]:
    return [
        wire(seq, "log", "a-1", level="info", message=f"m{seq}")
        for seq in range(first, first + count)
    ]


async def send_many(runtime: Peer, first: int, count: int) -> None:
    for start in range(first, first + count, MAX_BATCH):
        await send_events(runtime, *logs(start, min(MAX_BATCH, first + count - start)))


async def ids_until(client: Peer, last: int) -> list[int]:
    ids: list[int] = []

    async def scan() -> None:
        while not ids or ids[-1] < last:
            message = await client.recv()
            assert message["type"] == "events", message
            ids.extend(e["id"] for e in message["events"])

    await asyncio.wait_for(scan(), 60)
    return ids


async def test_a_client_catching_up_from_before_the_ring_while_events_arrive_gets_each_once(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as (server, address), runtime_peer(address) as runtime:
        await send_many(runtime, 1, BEFORE)
        hub = server.hub
        assert hub is not None
        assert hub.last_id == BEFORE
        assert hub._recent[0][0] > 2  # id 2 is only in the store
        async with connected(address.client_ws, bearer(address.secret)) as client:
            await client.send({"type": "subscribe", "after": 1})
            await send_many(runtime, BEFORE + 1, DURING)  # the client reads nothing meanwhile
            last = hub.last_id
            assert hub._recent[0][0] > BEFORE  # the ring has moved past the first catch-up
            ids = await ids_until(client, last)
            # and live events after the catch-up follow on
            await send_events(runtime, *logs(BEFORE + DURING + 1, 3))
            ids += await ids_until(client, last + 3)
    assert ids == list(range(2, last + 4))


async def test_a_client_catching_up_from_just_inside_the_ring_gets_each_event_once(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as (server, address), runtime_peer(address) as runtime:
        await send_many(runtime, 1, BEFORE)
        hub = server.hub
        assert hub is not None
        oldest = hub._recent[0][0]
        for after in (oldest - 2, oldest - 1, oldest, BEFORE - 1, BEFORE):
            async with connected(address.client_ws, bearer(address.secret)) as client:
                await client.send({"type": "subscribe", "after": after})
                if after == BEFORE:
                    await send_events(runtime, *logs(hub._accepted["rt-a"] + 1, 1))
                last = hub.last_id
                assert await ids_until(client, last) == list(range(after + 1, last + 1)), after
