"""The hub's event store, on real SQLite files: group commit, de-duplication, durability."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conductloop_jupyter.core.events import Event, EventKind
from conductloop_jupyter.hub.store import EventStore, StoreError


def ev(
    seq: int,
    runtime: str = "rt-1",
    agent_id: str | None = "a1",
    kind: EventKind = "agent.status",
    **data: Any,
) -> Event:
    return Event(seq, 1_700_000_000.0 + seq, runtime, agent_id, kind, data or {"text": f"#{seq}"})


def raw_rows(path: Path, sql: str) -> list[Any]:
    """Read with a plain sqlite3 connection, independent of any EventStore."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "events.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[EventStore]:
    store = EventStore(path)
    store.open()
    yield store
    store.close()


def test_appended_events_are_paged_back_in_order_with_ids(store: EventStore) -> None:
    store.append([ev(1), ev(2, kind="log", level="info", message="hi")])
    store.append([ev(3, agent_id=None)])
    store.flush()

    page = store.page()
    assert [i for i, _ in page] == [1, 2, 3]
    assert [e for _, e in page] == [
        ev(1),
        ev(2, kind="log", level="info", message="hi"),
        ev(3, agent_id=None),
    ]
    assert store.page(after=2) == [page[2]]
    assert (store.count(), store.last_id(), store.last_seq("rt-1")) == (3, 3, 3)
    assert store.last_seq("never-seen") == 0


def test_data_is_stored_as_compact_json(store: EventStore, path: Path) -> None:
    store.append([ev(1, text="searching", n=[1, 2])])
    store.flush()
    assert raw_rows(path, "SELECT data FROM events") == [('{"text":"searching","n":[1,2]}',)]


def test_replayed_events_are_stored_once(store: EventStore) -> None:
    store.append([ev(1), ev(2), ev(3)])
    store.flush()
    store.append([ev(2), ev(3), ev(4)])  # a runtime replaying after a reconnect
    store.append([ev(1, runtime="rt-2")])  # the same seq in another runtime is another event
    store.flush()

    assert [(e.runtime, e.seq) for _, e in store.page()] == [
        ("rt-1", 1),
        ("rt-1", 2),
        ("rt-1", 3),
        ("rt-1", 4),
        ("rt-2", 1),
    ]
    assert store.last_seqs() == {"rt-1": 4, "rt-2": 1}


def test_events_given_with_an_id_are_stored_under_that_id(store: EventStore) -> None:
    store.append([(10, ev(1)), (11, ev(2))])
    store.append([ev(3)])
    store.flush()
    assert [(i, e.seq) for i, e in store.page()] == [(10, 1), (11, 2), (12, 3)]


def test_done_fires_after_the_commit_and_the_data_is_readable_elsewhere(
    store: EventStore, path: Path
) -> None:
    committed = threading.Event()
    seen_by_other_connection: list[Any] = []

    def done() -> None:  # runs on the writer thread, right after the commit
        seen_by_other_connection.extend(raw_rows(path, "SELECT seq FROM events ORDER BY id"))
        committed.set()

    store.append([ev(1), ev(2)], done)  # no flush: the batch timer commits it
    assert committed.wait(timeout=10)
    assert seen_by_other_connection == [(1,), (2,)]


def test_many_appends_are_grouped_into_few_commits(store: EventStore) -> None:
    for batch in range(10):
        store.append([ev(batch * 1000 + i) for i in range(1, 1001)])
    store.flush()
    assert store.count() == 10_000
    assert 1 <= store.commits <= 10  # one transaction per batch, never one per event


def test_a_batch_is_committed_once_it_holds_batch_events(path: Path) -> None:
    store = EventStore(path, batch_events=250, batch_seconds=60)
    store.open()
    try:
        last_committed = threading.Event()
        for seq in range(1, 1000):
            store.append([ev(seq)])
        store.append([ev(1000)], last_committed.set)
        assert last_committed.wait(timeout=10)  # no flush, and the 60 s timer never ran out
        assert store.commits == 4
        assert store.count() == 1000
    finally:
        store.close()


def test_history_survives_close_and_reopen(path: Path) -> None:
    with EventStore(path) as first:
        first.append([ev(seq) for seq in range(1, 101)])
        first.append([ev(seq, runtime="rt-2") for seq in range(1, 6)])
        first.flush()
        before = first.page(limit=1000)

    with EventStore(path) as second:
        assert second.page(limit=1000) == before
        assert second.last_seqs() == {"rt-1": 100, "rt-2": 5}
        assert second.last_id() == 105
        second.append([ev(101)])
        second.flush()
        assert second.page(after=105) == [(106, ev(101))]


def test_iter_events_yields_every_event_in_id_order(store: EventStore) -> None:
    store.append([ev(seq, runtime=f"rt-{seq % 3}") for seq in range(1, 51)])
    store.flush()
    for chunk in (1, 7, 50, 10_000):
        got = list(store.iter_events(chunk=chunk))
        assert [i for i, _ in got] == list(range(1, 51))
        assert [e.seq for _, e in got] == list(range(1, 51))
        assert [i for i, _ in store.iter_events(20, upto=33, chunk=chunk)] == list(range(21, 34))
    assert list(store.iter_events(50)) == list(store.iter_events(20, upto=20)) == []


def test_id_before_last_finds_where_the_last_n_events_begin(store: EventStore) -> None:
    assert store.id_before_last(5) == 0
    store.append([(i * 10, ev(i)) for i in range(1, 21)])  # ids 10, 20, ... 200
    store.flush()
    assert store.id_before_last(5) == 150
    assert [i for i, _ in store.iter_events(store.id_before_last(3))] == [180, 190, 200]
    assert store.id_before_last(20) == store.id_before_last(1000) == 0
    assert store.id_before_last(0) == 200


ODD = [
    Event(
        1,
        0.1,
        "rt-1",
        None,
        "log",
        {"level": "info", "message": 'quotes " and \\ and \u00e9\u2603'},
    ),
    Event(2, 1e-7, "rt-\u00e9", "a,1", "agent.status", {"text": "a\nb\u0000c"}),
    Event(3, 1_767_225_600.123456789, "rt-1", "a1", "usage", {"cost_usd": None, "n": 2**60}),
    Event(4, 123_456_789_012.5, "rt-1", "a1", "tool.started", {"args": {"x": [1, 2.5, {}]}}),
    Event(5, 1_767_225_601.0, "rt-1", "", "log", {}),
    Event(6, 5e-324, "rt-1", "a1", "log", {"big": 1.7976931348623157e308, "neg": -0.0}),
    Event(7, 1.4523142177899403e308, "rt-1", "a1", "log", {}),  # SQLite writes it inexactly
]


def test_bulk_reads_give_back_every_field_exactly(store: EventStore) -> None:
    store.append(ODD)
    store.flush()
    paged = store.page()
    for chunk in (1, 4, 100):
        assert list(store.iter_events(chunk=chunk)) == paged
    columns = store.columns()
    assert list(columns.events()) == paged
    assert columns.ts == [e.ts for e in ODD]  # every float exact, not rounded to 15 digits
    assert list(store.columns(after=4, chunk=1).events()) == paged[4:]
    assert list(store.columns(after=7)) == [[], [], [], [], [], [], []]


def test_a_broken_data_text_fails_the_read_at_that_row(store: EventStore, path: Path) -> None:
    store.append([ev(seq) for seq in range(1, 11)])
    store.flush()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE events SET data = '{broken' WHERE id = 7")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="line 1 column 2"):
        list(store.iter_events(chunk=4))
    assert [i for i, _ in itertools.islice(store.iter_events(chunk=4), 4)] == [1, 2, 3, 4]


def test_an_iteration_stopped_early_resumes_garbage_collection(store: EventStore) -> None:
    store.append([ev(seq) for seq in range(1, 101)])
    store.flush()
    events = store.iter_events(chunk=10)
    assert next(events)[0] == 1
    assert not gc.isenabled()  # paused while a bulk read runs
    events.close()  # its helper thread is gone too (the autouse fixture checks)
    assert gc.isenabled()


def test_page_filters_by_agent_runtime_and_kinds(store: EventStore) -> None:
    store.append(
        [
            ev(1, agent_id="a1", kind="agent.status"),
            ev(2, agent_id="a2", kind="log", level="info", message="x"),
            ev(3, agent_id="a1", kind="usage", model="m"),
            ev(1, runtime="rt-2", agent_id="a1", kind="log", level="info", message="y"),
        ]
    )
    store.flush()

    def seqs(**filters: Any) -> list[tuple[str, int]]:
        return [(e.runtime, e.seq) for _, e in store.page(**filters)]

    assert seqs(agent_id="a1") == [("rt-1", 1), ("rt-1", 3), ("rt-2", 1)]
    assert seqs(runtime="rt-2") == [("rt-2", 1)]
    assert seqs(kinds={"log", "usage"}) == [("rt-1", 2), ("rt-1", 3), ("rt-2", 1)]
    assert seqs(agent_id="a1", runtime="rt-1", kinds=["usage"]) == [("rt-1", 3)]
    assert seqs(kinds=[]) == []
    assert seqs(after=1, limit=2) == [("rt-1", 2), ("rt-1", 3)]


def test_page_limit_must_be_positive_and_is_capped(store: EventStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.page(limit=0)
    store.append([ev(seq) for seq in range(1, 10_051)])
    store.flush()
    assert len(store.page(limit=50_000)) == 10_000


def test_runtimes_are_upserted_keeping_first_seen(store: EventStore) -> None:
    store.upsert_runtime("rt-1", {"name": "research", "pid": 1})
    first = store.runtimes()["rt-1"]
    store.upsert_runtime("rt-1", {"name": "research", "pid": 2})
    store.upsert_runtime("rt-2", {"name": "other"})

    runtimes = store.runtimes()
    assert set(runtimes) == {"rt-1", "rt-2"}
    assert runtimes["rt-1"]["pid"] == 2
    assert runtimes["rt-1"]["first_seen"] == first["first_seen"]
    assert runtimes["rt-1"]["last_seen"] >= first["last_seen"]


def test_schema_version_is_recorded(store: EventStore, path: Path) -> None:
    assert EventStore.SCHEMA_VERSION == 1
    assert raw_rows(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]
    assert raw_rows(path, "PRAGMA journal_mode") == [("wal",)]


def test_a_database_from_a_newer_version_is_refused(path: Path) -> None:
    with EventStore(path):
        pass
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()

    with pytest.raises(StoreError, match=r"schema version 99.*upgrade"):
        EventStore(path).open()


def test_a_file_that_is_not_sqlite_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"these are not the events you are looking for\n" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        EventStore(path).open()


@pytest.mark.parametrize("legacy", ["empty file", "meta without schema_version"])
def test_an_older_database_is_migrated_to_the_current_schema(path: Path, legacy: str) -> None:
    path.parent.mkdir(parents=True)
    path.touch()  # an empty file is an empty SQLite database: version 0
    if legacy == "meta without schema_version":
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("INSERT INTO meta VALUES ('created_by', 'test')")
        conn.close()

    with EventStore(path) as store:
        store.append([ev(1)])
        store.flush()
        assert store.count() == 1
    assert raw_rows(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]


def test_an_event_that_cannot_be_serialized_is_reported_by_the_next_flush(
    store: EventStore,
) -> None:
    done = threading.Event()
    store.append([ev(1), ev(2, text={"a", "set"}), ev(3)], done.set)
    with pytest.raises(StoreError, match=r"seq=2 of runtime 'rt-1'.*not JSON-serializable"):
        store.flush()

    assert [e.seq for _, e in store.page()] == [1, 3]  # the others were stored
    assert not done.is_set()  # not everything of that append was committed
    store.append([ev(4)])  # the error was reported once; the store goes on
    store.flush()
    assert store.count() == 3


def test_a_failed_commit_is_reported_by_the_next_append(path: Path) -> None:
    store = EventStore(path)
    store.busy_timeout = 0.05
    store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        committed = threading.Event()
        store.append([ev(1)], committed.set)
        with pytest.raises(StoreError, match="could not store a batch of 1 events"):
            store.flush()
        blocker.execute("ROLLBACK")

        store.append([ev(2)])
        store.flush()
        assert not committed.is_set()
        assert [e.seq for _, e in store.page()] == [2]
    finally:
        blocker.close()
        store.close()


def test_an_error_makes_the_next_append_raise_without_queueing(store: EventStore) -> None:
    later_committed = threading.Event()
    store.append([ev(1, text={1})])
    store.append([ev(2)], later_committed.set)
    assert later_committed.wait(timeout=10)  # so the writer has met the bad event

    with pytest.raises(StoreError, match="seq=1"):
        store.append([ev(3)])
    store.flush()  # reported once: nothing left to raise
    assert [e.seq for _, e in store.page()] == [2]


def test_close_is_idempotent_and_stops_the_writer(path: Path) -> None:
    store = EventStore(path)
    store.open()
    store.append([ev(1)])
    store.close()
    store.close()

    assert not [t for t in threading.enumerate() if t.name == "conductloop-store"]
    with pytest.raises(StoreError, match="not open"):
        store.append([ev(2)])
    with pytest.raises(StoreError, match="not open"):
        store.count()
    with EventStore(path) as again:
        assert again.count() == 1  # close() committed what was queued


def test_concurrent_appends_from_threads_store_every_event_once(store: EventStore) -> None:
    def produce(worker: int) -> None:
        for start in range(1, 2501, 100):
            store.append([ev(seq, runtime=f"rt-{worker}") for seq in range(start, start + 100)])
            store.append([ev(seq, runtime="shared") for seq in range(1, 101)])

    threads = [threading.Thread(target=produce, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.flush()

    assert store.count() == 4 * 2500 + 100
    assert store.last_seqs() == {**{f"rt-{w}": 2500 for w in range(4)}, "shared": 100}
    pairs = [(e.runtime, e.seq) for _, e in store.iter_events()]
    assert len(pairs) == len(set(pairs))


async def test_append_does_not_block_the_event_loop(path: Path) -> None:
    store = EventStore(path)
    await asyncio.to_thread(store.open)
    try:
        loop = asyncio.get_running_loop()
        committed = loop.create_future()
        # on the loop thread, with blockbuster watching: a queue put, nothing else
        store.append([ev(1), ev(2)], lambda: loop.call_soon_threadsafe(committed.set_result, None))
        await asyncio.wait_for(committed, timeout=10)
        assert await asyncio.to_thread(store.count) == 2
    finally:
        await asyncio.to_thread(store.close)


def test_saved_state_is_read_back_and_replaced(store: EventStore, path: Path) -> None:
    assert store.load_state("view") is None
    state = {"agents": [["a1", 1.5, None, True, {"m": [0.1, 2]}]], "open": [], "é": "\u2603"}
    store.save_state("view", state)
    store.flush()
    assert store.load_state("view") == state
    (text,) = raw_rows(path, "SELECT value FROM meta WHERE key = 'view'")[0]
    assert text == json.dumps(state, separators=(",", ":"), ensure_ascii=False)  # compact
    store.save_state("view", {"v": 2})
    store.flush()
    assert store.load_state("view") == {"v": 2}
    with pytest.raises(ValueError, match="schema_version"):
        store.save_state("schema_version", 2)


@pytest.mark.parametrize("loss", ["not serializable", "a repeated (runtime, seq)"])
def test_no_state_is_saved_once_an_event_handed_over_was_not_stored(
    store: EventStore, loss: str
) -> None:
    store.append([ev(1), ev(2)])
    store.save_state("view", {"up_to": 2})
    store.flush()
    if loss == "not serializable":
        store.append([ev(3, text={"a", "set"})])
        with pytest.raises(StoreError):
            store.flush()
    else:
        store.append([ev(2)])  # derived state would count it, the store holds it once
    store.append([ev(4)])
    store.save_state("view", {"up_to": 4})
    store.flush()
    assert store.load_state("view") == {"up_to": 2}


def test_batches_of_every_size_are_stored_in_order_each_event_once(store: EventStore) -> None:
    seq, expected = 0, []
    for size in (1, 2, 3, 7, 1023, 1024, 1025, 2047, 2048, 3001):
        events = [ev(s) for s in range(seq + 1, seq + size + 1)]
        repeats = [ev(s) for s in range(max(1, seq - 2), seq + 1)] if seq else []
        store.append(repeats + events)  # a replay of the last few, then new ones
        store.flush()
        seq += size
        expected.extend(e.seq for e in events)
    assert [e.seq for _, e in store.iter_events()] == expected
    assert [i for i, _ in store.iter_events()] == list(range(1, len(expected) + 1))


def test_data_with_a_cycle_is_reported_like_data_that_cannot_be_serialized(
    store: EventStore,
) -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    store.append([ev(1), Event(2, 1.0, "rt-1", "a1", "log", cyclic), ev(3)])
    with pytest.raises(StoreError, match=r"seq=2 .*not JSON-serializable"):
        store.flush()
    assert [e.seq for _, e in store.page()] == [1, 3]
