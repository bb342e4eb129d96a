"""The hub's durable event store: every event of every runtime in ``<home>/events.sqlite3``.

- **WAL** (``journal_mode=WAL``, ``synchronous=NORMAL``): readers never wait for the writer
  and the writer never waits for readers, so the live view, the REST API and the phone page
  can page through history while events stream in. A commit is an append to the WAL file,
  with no fsync per commit (a power cut may lose the last moments, never corrupt the file).
- **Group commit**: ``append`` only puts events on a queue. One writer thread takes them in
  batches and commits a batch when it holds ``batch_events`` events or ``batch_seconds``
  have passed since its first event: one transaction (one ``executemany``) per batch, never
  one per event. Serializing ``data`` to JSON happens there too, off the caller's thread.
- **Why a thread**: sqlite3 calls block, and the hub's event loop must never block. The loop
  calls ``append`` (a queue put, nothing else) and is told of durability through the
  ``done`` callback, which the writer calls after the commit (so loop code passes
  ``lambda: loop.call_soon_threadsafe(...)``). Reads block too: loop code runs them in an
  executor, and every thread gets its own read connection.
- **De-duplication**: ``UNIQUE(runtime, seq)`` with ``INSERT OR IGNORE``, so a runtime that
  replays events after a reconnect stores each one once.
- **Failures are never silent**: when a batch cannot be stored, the writer keeps the error
  and the next ``append`` or ``flush`` raises it (once) as ``StoreError``; the ``done``
  callbacks of what was not stored are not called, so a runtime replays it.
- **Schema**: ``MIGRATIONS[i]`` upgrades version ``i`` to ``i + 1``, one transaction each;
  a database newer than this code is refused rather than misread.
- **Reading history fast** (a hub restart, a frame of a million events): rows are read a
  chunk at a time as *columns*, each one JSON array text that SQLite builds in C (the
  ``data`` texts are already JSON, so they are joined, not re-encoded). Python then makes
  one ``json.loads`` call per column instead of a tuple and a ``loads`` per row, and the
  next chunk's SQL runs on a helper thread meanwhile (sqlite3 releases the GIL while SQLite
  works). ``ts`` alone is read as rows: a float written as text in SQL might not come
  back exact.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from operator import lt
from pathlib import Path
from typing import Any, NamedTuple, cast

from ..core.errors import ConductLoopError
from ..core.events import Event, EventKind

__all__ = ["MIGRATIONS", "EventColumns", "EventStore", "StoreError"]

log = logging.getLogger(__name__)

MAX_PAGE = 10_000


def _default(value: object) -> object:
    if isinstance(value, Mapping):  # e.g. a read-only MappingProxyType
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_default).encode
_STOP = object()
# INSERT OR IGNORE, but only for a stored (runtime, seq): a clash of explicit ids is a bug
_INSERT = (
    "INSERT INTO events (id, runtime, seq, ts, agent_id, kind, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (runtime, seq) DO NOTHING"
)
_Row = tuple[int | None, str, int, float, str | None, str, str]
Item = Event | tuple[int, Event]  # an event, or (the store id to give it, the event)
_Batch = tuple[Sequence[Item], Callable[[], None] | None]
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


class StoreError(ConductLoopError):
    """The event store cannot be opened, or could not store events."""


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


def _schema_v1(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, runtime TEXT NOT NULL,"
        " seq INTEGER NOT NULL, ts REAL NOT NULL, agent_id TEXT, kind TEXT NOT NULL,"
        " data TEXT NOT NULL, UNIQUE (runtime, seq))"
    )
    conn.execute("CREATE INDEX events_agent ON events (agent_id, id)")
    conn.execute(
        "CREATE TABLE runtimes (runtime TEXT PRIMARY KEY, info TEXT NOT NULL,"
        " first_seen REAL NOT NULL, last_seen REAL NOT NULL)"
    )


#: ``MIGRATIONS[i]`` upgrades a database at schema version ``i`` to ``i + 1``.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_schema_v1]


class EventStore:
    """Events of every runtime in ``<home>/events.sqlite3``: WAL, group commit, de-duplicated
    by ``(runtime, seq)``.

    >>> store = EventStore(home / "events.sqlite3")
    >>> store.open()
    >>> store.append(events, done=lambda: loop.call_soon_threadsafe(ack))  # never blocks
    >>> store.page(after=0, limit=100)  # blocking: run it in an executor on a loop
    >>> store.close()
    """

    SCHEMA_VERSION = len(MIGRATIONS)
    #: seconds a connection waits for another one's write lock before failing
    busy_timeout = 5.0

    def __init__(
        self, path: str | os.PathLike[str], *, batch_events: int = 2000, batch_seconds: float = 0.05
    ) -> None:
        if batch_events < 1 or batch_seconds < 0:
            raise ValueError("batch_events must be >= 1 and batch_seconds >= 0")
        self.path = Path(path)
        self.batch_events = batch_events
        self.batch_seconds = batch_seconds
        #: transactions the writer committed (group commit makes this far below the events)
        self.commits = 0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._errors: collections.deque[StoreError] = collections.deque()
        self._writer: threading.Thread | None = None
        self._closed = False
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def __enter__(self) -> EventStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Create the folder and database if needed, migrate it, start the writer thread."""
        if self._closed:
            raise StoreError("this EventStore was closed; make a new one")
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            conn.execute("PRAGMA journal_mode=WAL")
            self._migrate(conn)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"{self.path} is not a usable SQLite database: {exc}") from exc
            raise
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="conductloop-store", daemon=True
        )
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = 0  # no meta table, or no schema_version in it
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
        if version > self.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this conductloop-jupyter"
                f" supports ({self.SCHEMA_VERSION}); upgrade the package to open it"
            )
        for target in range(version + 1, self.SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[target - 1](conn)
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(target),),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything appended so far is committed. Not for event-loop threads.

        Raises ``StoreError`` if something could not be stored, ``TimeoutError`` on timeout.
        """
        self._check()
        committed = threading.Event()
        self._queue.put(committed)
        if not committed.wait(timeout):
            raise TimeoutError(f"the event store did not commit within {timeout} s")
        self._raise_error()

    def close(self) -> None:
        """Commit what is queued, stop the writer, close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._raise_error()

    # -- writing --------------------------------------------------------------------------

    def append(self, events: Sequence[Item], done: Callable[[], None] | None = None) -> None:
        """Queue ``events`` for the writer; never blocks, so it is safe on an event loop.

        An ``(id, event)`` pair stores the event under that id (the hub numbers events itself
        so that it can fan them out before they are committed); a bare event gets the next id.
        ``done()`` is called from the writer thread once all of them are committed.
        Raises ``StoreError`` if an earlier batch could not be stored (nothing is queued then).
        """
        self._check()
        self._raise_error()
        self._queue.put((events, done))

    def _check(self) -> None:
        if self._closed or self._writer is None:
            raise StoreError("the event store is not open")
        if not self._writer.is_alive():
            raise StoreError("the event store's writer thread has stopped")

    def _raise_error(self) -> None:
        try:
            error = self._errors.popleft()  # atomic: each error is reported once
        except IndexError:
            return
        raise error

    def _fail(self, message: str, cause: BaseException) -> None:
        log.error("%s", message, exc_info=cause)
        error = StoreError(message)
        error.__cause__ = cause
        if not self._errors:  # keep the first unreported error
            self._errors.append(error)

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        rows: list[_Row] = []
        dones: list[Callable[[], None]] = []
        stopping = False
        try:
            while not stopping:
                item = self._queue.get()
                deadline = time.monotonic() + self.batch_seconds
                waiters: list[threading.Event] = []
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    if isinstance(item, threading.Event):
                        waiters.append(item)  # a flush: commit now
                        break
                    self._take(cast(_Batch, item), rows, dones)
                    if len(rows) >= self.batch_events:
                        break
                    try:
                        item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                self._commit(conn, rows, dones)
                rows, dones = [], []
                for waiter in waiters:
                    waiter.set()
        except BaseException as exc:
            self._fail(f"the event store's writer thread failed: {exc!r}", exc)
            raise
        finally:
            conn.close()
            while True:  # wake any flush still waiting; _check() now reports the dead writer
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, threading.Event):
                    item.set()

    def _take(self, batch: _Batch, rows: list[_Row], dones: list[Callable[[], None]]) -> None:
        events, done = batch
        stored = True
        for item in events:
            id_, e = item if isinstance(item, tuple) else (None, item)
            try:
                data = _encode(e.data)
            except (TypeError, ValueError, RecursionError) as exc:
                self._fail(
                    f"event seq={e.seq} of runtime {e.runtime!r} (kind {e.kind!r}, agent"
                    f" {e.agent_id!r}) was not stored: its data is not JSON-serializable: {exc}",
                    exc,
                )
                stored = False
                continue
            rows.append((id_, e.runtime, e.seq, e.ts, e.agent_id, e.kind, data))
        if done is not None and stored:
            dones.append(done)

    def _commit(
        self, conn: sqlite3.Connection, rows: list[_Row], dones: list[Callable[[], None]]
    ) -> None:
        if rows:
            try:
                conn.execute("BEGIN")
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._fail(f"could not store a batch of {len(rows)} events: {exc}", exc)
                return
            self.commits += 1
        for done in dones:
            try:
                done()
            except Exception:
                log.exception("an event store 'done' callback failed")

    # -- reading (blocking) ---------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        if self._closed or self._writer is None:
            raise StoreError("the event store is not open")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._readers_lock:
                self._readers.append(conn)
        return conn

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
        sql = (
            "SELECT id, seq, ts, runtime, agent_id, kind, data FROM events"
            f" WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        )
        rows = self._reader().execute(sql, (*params, min(limit, MAX_PAGE))).fetchall()
        return [_row_event(row) for row in rows]

    def iter_events(self, chunk: int = 20_000) -> Iterator[tuple[int, Event]]:
        """Every event in id order, ``chunk`` rows in memory at a time (to rebuild the view).

        The cyclic garbage collector is paused until the iteration ends (see _gc_paused).
        """
        with _gc_paused():  # the caller's loop too: see _gc_paused
            for columns in self._chunks(0, chunk):
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

    def _chunks(self, after: int, chunk: int) -> Iterator[EventColumns]:
        """Events with id in (``after``, the highest id now], ``chunk`` rows at a time.

        The aggregate SQL of the next chunk runs on a helper thread (with its own
        connection) while the caller decodes and uses this one. Its ``ts`` are read here:
        as rows they cost the caller a little more than decoding text would, but they
        spare the helper twice that in ``printf``, and come back exact.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        upto = self.last_id()
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

    def upsert_runtime(self, runtime: str, info: Mapping[str, Any]) -> None:
        """Record (or refresh) what is known about a runtime; blocking."""
        now = time.time()
        self._reader().execute(
            "INSERT INTO runtimes (runtime, info, first_seen, last_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (runtime) DO UPDATE SET info = excluded.info,"
            " last_seen = excluded.last_seen",
            (runtime, _encode(info), now, now),
        )

    def runtimes(self) -> dict[str, dict[str, Any]]:
        """Each runtime's info, with ``first_seen`` and ``last_seen`` added."""
        rows = self._reader().execute("SELECT runtime, info, first_seen, last_seen FROM runtimes")
        return {
            runtime: {**json.loads(info), "first_seen": first, "last_seen": last}
            for runtime, info, first, last in rows.fetchall()
        }


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
