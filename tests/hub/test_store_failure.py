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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
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


@dataclass
class FullDisk:
    """A started hub whose store's disk refuses every insert until ``recover()``."""

    hub: Hub
    path: Path
    acks: Acks = field(default_factory=Acks)
    rows: list[tuple[int, int]] = field(default_factory=list)  # stored, once it stopped

    async def refused(self, first: int, last: int) -> None:
        """Ingest events ``first``..``last`` while the disk refuses them; return once the
        store has reported it (once: the next append is taken)."""
        self.hub.ingest("rt", events(first, last), self.acks)
        with pytest.raises(StoreError, match="disk full"):
            await asyncio.to_thread(self.hub.store.flush, BOUND)

    async def recover(self) -> None:
        await asyncio.to_thread(disk, self.path, RECOVER)

    async def retried(self) -> None:
        """Move the hub's clock on until every retry is due; return once each has handed
        its batch to the store again."""
        due = list(self.hub.durability.retries)
        assert due, "no batch is waiting to be stored again"
        clock = self.hub._clock
        assert isinstance(clock, ManualClock)
        clock.advance(LATER)
        await asyncio.wait_for(asyncio.gather(*due), BOUND)

    def positive_acks(self) -> list[int]:
        return [seq for seq in self.acks.seen if seq > 0]


@asynccontextmanager
async def full_disk(tmp_path: Path) -> AsyncIterator[FullDisk]:
    """A hub on a full disk; stopped at the end, with what its store holds in ``rows``."""
    path = tmp_path / "events.sqlite3"
    hub = Hub(EventStore(path), clock=ManualClock())
    await hub.start()
    scene = FullDisk(hub, path)
    try:
        await asyncio.to_thread(disk, path, REFUSE)
        yield scene
    finally:
        hub.shutdown()
        await hub.settled()
        await asyncio.to_thread(hub.store.close)
        scene.rows = await asyncio.to_thread(stored_rows, path)


def stored_rows(path: Path) -> list[tuple[int, int]]:
    """The ``(id, seq)`` of every event the store at ``path`` holds."""
    with sqlite3.connect(path) as conn:
        rows: list[tuple[int, int]] = conn.execute(
            "SELECT id, seq FROM events ORDER BY id"
        ).fetchall()
    conn.close()
    return rows


async def test_a_batch_the_disk_refused_is_stored_once_it_recovers_and_only_then_acked(
    tmp_path: Path,
) -> None:
    async with full_disk(tmp_path) as scene:
        await scene.refused(1, 3)
        assert scene.hub.view.agents["a-1"].activity == "s3"  # the view and clients have them
        assert scene.positive_acks() == []

        await scene.refused(4, 5)  # refused too, while the disk is full
        await scene.retried()  # tried again: still full
        with pytest.raises(StoreError, match="disk full"):
            await asyncio.to_thread(scene.hub.store.flush, BOUND)
        assert scene.positive_acks() == []

        await scene.recover()
        await scene.retried()
        await scene.acks.until(lambda seen: 5 in seen)
        assert scene.hub.durability.acked("rt") == 5
    assert [seq for _, seq in scene.rows] == [1, 2, 3, 4, 5]
    assert [id_ for id_, _ in scene.rows] == [1, 2, 3, 4, 5]  # the ids the clients saw


async def test_a_later_batch_stored_first_is_not_acked_past_the_refused_one(
    tmp_path: Path,
) -> None:
    async with full_disk(tmp_path) as scene:
        hub, acks = scene.hub, scene.acks
        await scene.refused(1, 3)
        await scene.recover()  # before the first retry is due
        hub.ingest("rt", events(4, 6), acks)
        await asyncio.to_thread(hub.store.flush, BOUND)  # 4..6 are stored now, 1..3 not yet
        assert acks.seen == [0]  # stored up to 6, but the runtime must keep 1..3
        welcome = hub.runtime_hello(_Nobody(), {"runtime": "rt"})
        assert welcome["acked"] == 0  # a reconnect replays from 1, not from 7

        await scene.retried()
        await acks.until(lambda seen: 6 in seen)  # the retry stores 1..3
        assert acks.seen == [0, 6]
    assert sorted(seq for _, seq in scene.rows) == [1, 2, 3, 4, 5, 6]


async def test_a_replay_of_refused_events_is_not_applied_twice(tmp_path: Path) -> None:
    async with full_disk(tmp_path) as scene:
        await scene.refused(1, 4)
        scene.hub.ingest("rt", events(1, 4), scene.acks)  # the runtime replays: not acked
        assert scene.hub.last_id == 4  # applied once: the hub holds them, stores them itself
        await scene.recover()
        await scene.retried()
        await scene.acks.until(lambda seen: 4 in seen)
    assert [seq for _, seq in scene.rows] == [1, 2, 3, 4]


async def test_stopping_while_a_batch_waits_for_the_disk_cancels_its_retry(
    tmp_path: Path,
) -> None:
    async with full_disk(tmp_path) as scene:
        await scene.refused(1, 2)
        assert scene.hub.durability.retries  # one is due
    # stopped: no retry left behind (the runner fails a leaked task)
    assert not scene.hub.durability.retries
    assert scene.rows == []  # never stored, never acked: the runtime still holds them
    assert scene.positive_acks() == []


class _Nobody:
    """A connection that nobody reads (the welcome is returned, not sent)."""

    def send(self, message: object) -> None:
        pass

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        pass
