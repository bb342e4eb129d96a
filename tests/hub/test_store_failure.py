"""A store that fails for a while loses nothing, and acks never run ahead of the disk.

The failure is SQLite's own: a trigger in the real database file refuses every insert
while a row sits in ``refuse_now`` (as a full disk would refuse them), and the test takes
the row away to let the disk "recover". The hub has already applied the refused events to
its view and shown them to clients; it hands them to the store again, with the same ids,
until they are stored, and meanwhile acks the runtime only up to the event before them, so
the runtime keeps them too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conductloop_jupyter.core.events import Event
from conductloop_jupyter.hub.hub import Hub
from conductloop_jupyter.hub.store import EventStore, StoreError
from conductloop_jupyter.testing import ManualClock

BOUND = 30.0  # seconds the test waits for what must happen
LATER = 60.0  # seconds: by then every retry is due (the hub's clock is a ManualClock)


def events(first: int, last: int) -> list[Event]:
    """Events ``first``..``last`` of runtime ``rt``: one agent starting, then its status."""
    return [
        Event(seq, 1_767_225_600.0 + seq, "rt", "a-1", "agent.started", {"name": "w"})
        if seq == 1
        else Event(seq, 1_767_225_600.0 + seq, "rt", "a-1", "agent.status", {"text": f"s{seq}"})
        for seq in range(first, last + 1)
    ]


def disk(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(sql)
    conn.close()


REFUSE = """
CREATE TABLE IF NOT EXISTS refuse_now (x);
CREATE TRIGGER IF NOT EXISTS refuse BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM refuse_now) BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;
INSERT INTO refuse_now VALUES (1);
"""
RECOVER = "DELETE FROM refuse_now;"


class Acks:
    """Every ack the hub sends the runtime, and a way to wait for one."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._changed = asyncio.Event()

    def __call__(self, seq: int) -> None:
        self.seen.append(seq)
        self._changed.set()

    async def until(self, check: Callable[[list[int]], bool]) -> None:
        async def wait() -> None:
            while not check(self.seen):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), BOUND)


async def started(path: Path) -> Hub:
    hub = Hub(EventStore(path), clock=ManualClock())
    await hub.start()
    return hub


async def refused(hub: Hub, first: int, last: int, acks: Acks) -> None:
    """Ingest events ``first``..``last`` while the disk refuses them; return once the store
    has reported it (once: the next append is taken)."""
    hub.ingest("rt", events(first, last), acks)
    with pytest.raises(StoreError, match="disk full"):
        await asyncio.to_thread(hub.store.flush, BOUND)


async def retried(hub: Hub) -> None:
    """Move the hub's clock on until every retry is due; return once each has handed its
    batch to the store again."""
    due = list(hub.durability.retries)
    assert due, "no batch is waiting to be stored again"
    clock = hub._clock
    assert isinstance(clock, ManualClock)
    clock.advance(LATER)
    await asyncio.wait_for(asyncio.gather(*due), BOUND)


async def stopped(hub: Hub) -> list[tuple[int, int]]:
    """Stop the hub; the ``(id, seq)`` of every event its store holds."""
    hub.shutdown()
    await asyncio.to_thread(hub.store.close)
    return await asyncio.to_thread(stored_rows, hub.store.path)


def stored_rows(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        rows: list[tuple[int, int]] = conn.execute(
            "SELECT id, seq FROM events ORDER BY id"
        ).fetchall()
    conn.close()
    return rows


async def test_a_batch_the_disk_refused_is_stored_once_it_recovers_and_only_then_acked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.sqlite3"
    hub = await started(path)
    acks = Acks()
    try:
        await asyncio.to_thread(disk, path, REFUSE)
        await refused(hub, 1, 3, acks)
        assert hub.view.agents["a-1"].activity == "s3"  # the view and clients have them
        assert [seq for seq in acks.seen if seq > 0] == []

        await refused(hub, 4, 5, acks)  # refused too, while the disk is full
        await retried(hub)  # tried again: still full
        with pytest.raises(StoreError, match="disk full"):
            await asyncio.to_thread(hub.store.flush, BOUND)
        assert [seq for seq in acks.seen if seq > 0] == []

        await asyncio.to_thread(disk, path, RECOVER)
        await retried(hub)
        await acks.until(lambda seen: 5 in seen)
        assert hub.durability.acked("rt") == 5
    finally:
        rows = await stopped(hub)
    assert [seq for _, seq in rows] == [1, 2, 3, 4, 5]
    assert [id_ for id_, _ in rows] == [1, 2, 3, 4, 5]  # the ids the clients were shown


async def test_a_later_batch_stored_first_is_not_acked_past_the_refused_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.sqlite3"
    hub = await started(path)
    acks = Acks()
    try:
        await asyncio.to_thread(disk, path, REFUSE)
        await refused(hub, 1, 3, acks)
        await asyncio.to_thread(disk, path, RECOVER)  # before the first retry is due
        hub.ingest("rt", events(4, 6), acks)
        await asyncio.to_thread(hub.store.flush, BOUND)  # 4..6 are stored now, 1..3 not yet
        assert acks.seen == [0]  # stored up to 6, but the runtime must keep 1..3
        welcome = hub.runtime_hello(_Nobody(), {"runtime": "rt"})
        assert welcome["acked"] == 0  # a reconnect replays from 1, not from 7

        await retried(hub)
        await acks.until(lambda seen: 6 in seen)  # the retry stores 1..3
        assert acks.seen == [0, 6]
    finally:
        rows = await stopped(hub)
    assert sorted(seq for _, seq in rows) == [1, 2, 3, 4, 5, 6]


async def test_a_replay_of_refused_events_is_not_applied_twice(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    hub = await started(path)
    acks = Acks()
    try:
        await asyncio.to_thread(disk, path, REFUSE)
        await refused(hub, 1, 4, acks)
        hub.ingest("rt", events(1, 4), acks)  # the runtime replays what was not acked
        assert hub.last_id == 4  # applied once: the hub holds them, and stores them itself
        await asyncio.to_thread(disk, path, RECOVER)
        await retried(hub)
        await acks.until(lambda seen: 4 in seen)
    finally:
        rows = await stopped(hub)
    assert [seq for _, seq in rows] == [1, 2, 3, 4]


async def test_stopping_while_a_batch_waits_for_the_disk_cancels_its_retry(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.sqlite3"
    hub = await started(path)
    acks = Acks()
    await asyncio.to_thread(disk, path, REFUSE)
    await refused(hub, 1, 2, acks)
    assert hub.durability.retries  # one is due
    rows = await stopped(hub)  # no retry left behind (the runner fails a leaked task)
    assert not hub.durability.retries
    assert rows == []  # never stored, never acked: the runtime still holds them
    assert [seq for seq in acks.seen if seq > 0] == []


class _Nobody:
    """A connection that nobody reads (the welcome is returned, not sent)."""

    def send(self, message: object) -> None:
        pass

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        pass
