"""A saved view the hub must not restore: one that is corrupt, was saved by another
version, or holds more than the store does is replaced by a full replay; and once the
store has lost an event, no view is saved after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from conductloop_jupyter.core.events import Event
from conductloop_jupyter.hub.store import StoreError
from tests.hub._snapshot_support import (
    append,
    assert_restarted_like_a_replay,
    execute,
    feed,
    saved_row,
    start,
    stop,
    story,
    write_saved,
)


@pytest.mark.parametrize("corruption", ["not JSON", "not an object", "a broken view"])
async def test_a_corrupt_saved_view_is_replaced_by_a_full_replay_with_a_warning(
    path: Path, corruption: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = await start(path)
    await feed(first, "rt-1", 1, 110)
    await stop(first)
    (text,) = (await asyncio.to_thread(saved_row, path))[0]
    if corruption == "not JSON":
        text = text[: len(text) // 2]
    elif corruption == "not an object":
        text = "[1, 2]"
    else:
        saved = json.loads(text)
        saved["view"]["agents"][3] = {"agent_id": "x"}
        text = json.dumps(saved)
    await asyncio.to_thread(write_saved, path, text)

    with caplog.at_level(logging.WARNING, logger="conductloop_jupyter.hub.saved_view"):
        hub = await start(path)
    try:
        assert hub.restored_at == 0
        await assert_restarted_like_a_replay(hub, path, recent=30)
        assert "is unreadable" in caplog.text
    finally:
        await stop(hub)
    assert (await asyncio.to_thread(saved_row, path))[0][
        0
    ] != text  # the clean stop saved a good one again


@pytest.mark.parametrize("made_by", ["another format", "another package", "another view"])
async def test_a_view_saved_by_another_version_is_not_restored(
    path: Path, made_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = await start(path)
    await feed(first, "rt-1", 1, 60)
    await stop(first)
    saved = json.loads((await asyncio.to_thread(saved_row, path))[0][0])
    saved["made_by"][["another format", "another package", "another view"].index(made_by)] = 0
    await asyncio.to_thread(write_saved, path, json.dumps(saved))

    with caplog.at_level(logging.INFO, logger="conductloop_jupyter.hub.saved_view"):
        hub = await start(path)
    try:
        assert hub.restored_at == 0
        await assert_restarted_like_a_replay(hub, path, recent=30)
        assert "another version" in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        await stop(hub)


@pytest.mark.parametrize("store", ["cut back", "cut back and refilled"])
async def test_a_view_saved_beyond_what_the_store_holds_is_not_restored(
    path: Path, store: str
) -> None:
    first = await start(path)
    await feed(first, "rt-1", 1, 200)
    await stop(first)
    # e.g. an older copy of the events, or events deleted
    await asyncio.to_thread(execute, path, "DELETE FROM events WHERE id > 150")
    if store == "cut back and refilled":  # ids up to beyond the saved one, other events
        await asyncio.to_thread(append, path, list(enumerate(story("rt-9", 1, 80), start=151)))

    hub = await start(path)
    try:
        assert hub.restored_at == 0
        await assert_restarted_like_a_replay(hub, path, recent=30)
    finally:
        await stop(hub)


async def test_a_store_that_lost_an_event_saves_no_view_after_it(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = await start(path, save_every=50, save_interval=0)
    await feed(first, "rt-1", 1, 60)  # saved after 50
    # the door refuses such an event (tests/hub/test_wire_contract.py); handed to the store
    # past the door, it stands for any event the store loses
    unstorable = Event(61, 1_767_225_700.0, "rt-1", "rt-1-a3", "log", {"tags": {"a", "set"}})
    assert first.ingest("rt-1", [unstorable])[0]["code"] == "bad_event"
    first.store.append([unstorable])
    with pytest.raises(StoreError, match="not JSON-serializable"):
        await asyncio.to_thread(first.store.flush)
    with caplog.at_level(logging.WARNING, logger="conductloop_jupyter.hub.store"):
        await feed(first, "rt-1", 62, 180)  # the saves it makes now are refused
        await stop(first)  # and so is the one of the clean stop
    assert "no state is saved" in caplog.text

    hub = await start(path)
    try:
        assert hub.restored_at == 50
        await assert_restarted_like_a_replay(hub, path, recent=30)
    finally:
        await stop(hub)
