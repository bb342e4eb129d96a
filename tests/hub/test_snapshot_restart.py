"""The hub's saved view across restarts: a restart restores it and replays only later
events, and ends with the view a replay of every stored event builds, field for field —
after a clean stop, a crash after a periodic save, or events stored by a hub that saves
none; and while events come in, how often the view is saved.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from conductloop_jupyter.testing import ManualClock
from tests.hub._snapshot_support import (
    append,
    assert_restarted_like_a_replay,
    assert_same_view,
    feed,
    replayed,
    saved_id,
    saved_row,
    start,
    stop,
    story,
)


async def test_a_clean_stop_saves_the_view_and_a_restart_replays_nothing(path: Path) -> None:
    first = await start(path)
    await feed(first, "rt-1", 1, 170)
    await feed(first, "rt-2", 1, 55)
    await stop(first)
    assert await asyncio.to_thread(saved_row, path)

    hub = await start(path)
    try:
        assert hub.restored_at == hub.last_id == 225
        await assert_restarted_like_a_replay(hub, path, recent=30)
    finally:
        await stop(hub)


async def test_a_crash_after_a_periodic_save_restores_it_and_replays_the_rest(
    path: Path,
) -> None:
    first = await start(path, save_every=100, save_interval=0)
    await feed(first, "rt-1", 1, 250)  # saved after 100 and after 200 events
    await stop(first, clean=False)

    hub = await start(path, save_every=100, save_interval=0)
    try:
        assert hub.restored_at == 200
        await assert_restarted_like_a_replay(hub, path, recent=30)
        # the runtime reconnects: told what is stored, its replay is taken once
        assert hub.runtime_hello(object(), {"runtime": "rt-1"})["acked"] == 250  # type: ignore[arg-type]
        await feed(hub, "rt-1", 241, 260)
    finally:
        await stop(hub, clean=False)
    reference, events = await asyncio.to_thread(replayed, path)
    assert [e.seq for _, e in events] == list(range(1, 261))
    assert_same_view(hub.view, reference)


async def test_while_events_come_in_the_view_is_saved_no_sooner_than_save_interval(
    path: Path,
) -> None:
    clock = ManualClock()
    hub = await start(path, save_every=50, save_interval=5.0, clock=clock)
    try:
        await feed(hub, "rt-1", 1, 120)  # the first save at once, after 50 events
        assert saved_id(await asyncio.to_thread(saved_row, path)) == 50
        clock.advance(5.0)
        await feed(hub, "rt-1", 121, 130)
        assert saved_id(await asyncio.to_thread(saved_row, path)) == 130
    finally:
        await stop(hub, clean=False)


async def test_a_restart_after_more_than_save_every_replayed_events_saves_at_once(
    path: Path,
) -> None:
    await asyncio.to_thread(append, path, story("rt-1", 1, 120))  # from a version saving none
    hub = await start(path, save_every=100)
    assert hub.restored_at == 0
    await stop(hub, clean=False)  # killed before any event came in: the save is queued

    again = await start(path, save_every=100)
    try:
        assert again.restored_at == 120
        await assert_restarted_like_a_replay(again, path, recent=30)
    finally:
        await stop(again)


async def test_events_stored_after_the_save_by_a_hub_that_saves_none_are_replayed(
    path: Path,
) -> None:
    first = await start(path)
    await feed(first, "rt-1", 1, 90)
    await stop(first)
    # an older version of the hub adds events, and saves no view
    await asyncio.to_thread(append, path, story("rt-1", 91, 130) + story("rt-2", 1, 25))

    hub = await start(path)
    try:
        assert (hub.restored_at, hub.last_id) == (90, 155)
        await assert_restarted_like_a_replay(hub, path, recent=30)
    finally:
        await stop(hub)
