"""Reading the event store's history: pages, every event in id order, events as columns.

``EventHistory`` is the read side of ``EventStore`` (which adds the schema, the writer and
the runtimes): every read blocks, so loop code runs it in an executor, and every thread
reads through a connection of its own (``_reader``), never waiting for the writer (WAL).

**Reading history fast** (a hub restart, a frame of a million events): rows are read a
chunk at a time as *columns*, each one JSON array text that SQLite builds in C (the
``data`` texts are already JSON, so they are joined, not re-encoded). Python then makes
one ``json.loads`` call per column instead of a tuple and a ``loads`` per row, and the
next chunk's SQL runs on a helper thread meanwhile (sqlite3 releases the GIL while SQLite
works). ``ts`` alone is read as rows: a float written as text in SQL might not come back
exact.
"""

from __future__ import annotations

import abc
import contextlib
import gc
import json
import sqlite3
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from operator import lt
from typing import Any, NamedTuple, cast

from ..core.events import Event, EventKind

__all__ = ["MAX_PAGE", "EventColumns", "EventHistory"]

MAX_PAGE = 10_000

_SELECT = "SELECT id, seq, ts, runtime, agent_id, kind, data FROM events"
# One chunk of rows as columns: its count and last id, then one JSON array text per column
# (``ts`` apart: SQLite cannot write every float exactly in 17 digits, sqlite3 reads them)
_COLUMNS = (
    "SELECT count(*), max(id), json_group_array(id), json_group_array(seq),"
    " json_group_array(runtime), json_group_array(agent_id), json_group_array(kind),"
    " '[' || group_concat(data, ',') || ']'"
    f" FROM ({_SELECT} WHERE id > ? AND id <= ? ORDER BY id LIMIT ?)"
)
_TS = "SELECT ts FROM events WHERE id > ? AND id <= ? ORDER BY id"


class EventColumns(NamedTuple):
    """Events as columns, each list in store-id order (``EventStore.columns``)."""

    ids: list[int]
    seqs: list[int]
    ts: list[float]
    runtimes: list[str]
    agent_ids: list[str | None]
    kinds: list[str]
    data: list[dict[str, Any]]

    def events(self) -> Iterator[tuple[int, Event]]:
        """``(store id, Event)`` pairs."""
        fields: tuple[list[Any], ...] = self[1:]
        return zip(self.ids, map(Event, *fields), strict=True)


class EventHistory(abc.ABC):
    """Blocking reads of the ``events`` table (the read side of ``EventStore``)."""

    @abc.abstractmethod
    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (raises ``StoreError`` when the store is closed)."""

    @abc.abstractmethod
    def _connect(self) -> sqlite3.Connection:
        """A new connection, owned by the caller."""

    def last_seqs(self) -> dict[str, int]:
        """The highest ``seq`` stored for each runtime."""
        # a skip-scan of the (runtime, seq) index: one seek per runtime, where GROUP BY
        # would read all of it (0.1 s at a million events, on every hub start)
        rows = self._reader().execute(
            "WITH RECURSIVE r(runtime) AS (SELECT MIN(runtime) FROM events UNION ALL"
            " SELECT (SELECT MIN(runtime) FROM events WHERE runtime > r.runtime) FROM r"
            " WHERE r.runtime IS NOT NULL)"
            " SELECT runtime, (SELECT MAX(seq) FROM events WHERE events.runtime = r.runtime)"
            " FROM r WHERE runtime IS NOT NULL"
        )
        return dict(rows.fetchall())

    def last_seq(self, runtime: str) -> int:
        """The highest ``seq`` stored for ``runtime``; 0 if none."""
        sql = "SELECT MAX(seq) FROM events WHERE runtime = ?"
        return int(self._reader().execute(sql, (runtime,)).fetchone()[0] or 0)

    def count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def last_id(self) -> int:
        """The highest store id; 0 when the store is empty."""
        return int(self._reader().execute("SELECT MAX(id) FROM events").fetchone()[0] or 0)

    def id_before_last(self, n: int) -> int:
        """The store id after which the last ``n`` events lie; 0 if there are no more."""
        if n < 1:
            return self.last_id()
        # a walk down the id b-tree: n steps, whatever the length of history
        sql = "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?"
        row = self._reader().execute(sql, (n,)).fetchone()
        return 0 if row is None else int(row[0])

    def page(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        agent_id: str | None = None,
        runtime: str | None = None,
        kinds: Collection[str] | None = None,
    ) -> list[tuple[int, Event]]:
        """Up to ``limit`` (at most 10,000) events with store id > ``after``, ascending."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        given = [(f, v) for f, v in (("agent_id", agent_id), ("runtime", runtime)) if v is not None]
        where = ["id > ?", *(f"{f} = ?" for f, _ in given)]
        params: list[object] = [after, *(v for _, v in given)]
        if kinds is not None:
            kinds = list(kinds)
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        rows = self._reader().execute(sql, (*params, min(limit, MAX_PAGE))).fetchall()
        return [_row_event(row) for row in rows]

    def iter_events(
        self, after: int = 0, *, upto: int | None = None, chunk: int = 20_000
    ) -> Iterator[tuple[int, Event]]:
        """Events with store id > ``after`` (and <= ``upto``) in id order, ``chunk`` rows in
        memory at a time (to rebuild the view).

        The cyclic garbage collector is paused until the iteration ends (see _gc_paused).
        """
        with _gc_paused():  # the caller's loop too: see _gc_paused
            for columns in self._chunks(after, chunk, upto):
                yield from columns.events()

    def columns(self, after: int = 0, *, chunk: int = 20_000) -> EventColumns:
        """Every event with store id > ``after``, as columns (to build a DataFrame)."""
        whole: list[list[Any]] = [[] for _ in EventColumns._fields]
        with _gc_paused():
            for part in self._chunks(after, chunk):
                parts: tuple[list[Any], ...] = part
                for into, values in zip(whole, parts, strict=True):
                    into.extend(values)
        return EventColumns(*whole)

    def _chunks(self, after: int, chunk: int, upto: int | None = None) -> Iterator[EventColumns]:
        """Events with id in (``after``, ``upto`` or the highest id now], ``chunk`` rows at
        a time.

        The aggregate SQL of the next chunk runs on a helper thread (with its own
        connection) while the caller decodes and uses this one. Its ``ts`` are read here:
        as rows they cost the caller a little more than decoding text would, but they
        spare the helper twice that in ``printf``, and come back exact.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        upto = self.last_id() if upto is None else upto
        if upto <= after:
            return
        conn = self._connect()
        shared: dict[Any, Any] = {}

        def fetch(start: int) -> tuple[Any, ...]:
            row: tuple[Any, ...] = conn.execute(_COLUMNS, (start, upto, chunk)).fetchone()
            return row

        try:
            with ThreadPoolExecutor(1, thread_name_prefix="conductloop-store-read") as pool:
                pending = pool.submit(fetch, after)
                while True:
                    row = pending.result()
                    if not row[0]:
                        return
                    if row[1] < upto:
                        pending = pool.submit(fetch, row[1])
                    ts = self._reader().execute(_TS, (after, row[1])).fetchall()
                    yield _decode(row, ts, shared) or self._rows(after, row[1])
                    if row[1] >= upto:
                        return
                    after = row[1]
        finally:
            conn.close()

    def _rows(self, after: int, upto: int) -> EventColumns:
        """The slow path, row by row (it raises on the row whose ``data`` is broken)."""
        sql = f"{_SELECT} WHERE id > ? AND id <= ? ORDER BY id"
        rows = self._reader().execute(sql, (after, upto)).fetchall()
        ids, seqs, ts, runtimes, agent_ids, kinds, texts = (
            list(c) for c in zip(*rows, strict=True)
        )
        return EventColumns(ids, seqs, ts, runtimes, agent_ids, kinds, list(map(json.loads, texts)))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (it is process-wide: for bulk reads only).

    Reading history allocates objects by the hundred thousand (``data`` dicts, events)
    that hold no cycles and mostly stay alive for a while: the collector would start
    again after every 700 of them and walk them all, for nothing. In ``iter_events`` the
    pause lasts the whole iteration, the caller's loop included (a hub restart: the view
    rebuilt from a million events takes a third less time); it ends when the iteration
    ends or the generator is closed, and anything cyclic freed meanwhile is collected
    by the next collection.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _decode(
    row: tuple[Any, ...], ts: list[tuple[float]], shared: dict[Any, Any]
) -> EventColumns | None:
    """A chunk read by ``_COLUMNS`` (and its ``ts`` by ``_TS``) as columns; ``None``: read
    it row by row instead.

    Runtimes, agent ids and kinds repeat on every row: ``shared`` makes each repeat the
    same ``str`` object, so a million events hold a few thousand strings, not three
    million, and their hashes (the view looks agents and kinds up in dicts) are computed
    once each.
    """
    count = row[0]
    try:
        ids, seqs, runtimes, agent_ids, kinds, data = map(json.loads, row[2:])
    except ValueError:  # a broken data text somewhere in the chunk
        return None
    one = shared.setdefault
    columns = EventColumns(
        ids,
        seqs,
        list(chain.from_iterable(ts)),
        list(map(one, runtimes, runtimes)),
        list(map(one, agent_ids, agent_ids)),
        list(map(one, kinds, kinds)),
        data,
    )
    if any(len(column) != count for column in columns) or not all(
        map(lt, ids, islice(ids, 1, None))
    ):
        return None  # (never seen) aggregates that lost a row, or rows not in id order
    return columns


def _row_event(row: tuple[int, int, float, str, str | None, str, str]) -> tuple[int, Event]:
    id_, seq, ts, runtime, agent_id, kind, data = row
    return id_, Event(seq, ts, runtime, agent_id, cast(EventKind, kind), json.loads(data))
