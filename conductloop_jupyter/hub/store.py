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
  callbacks of what was not stored are not called, and the ``failed`` callbacks of a
  transaction that failed are, so that the caller can hand those events over again.
- **Saved state** (``save_state``): plain data derived from the events, e.g. the hub's
  view, so that a restart need not replay all of history. It is written by the writer in
  the transaction of the events appended before it, or a later one, and not at all once
  this store has lost an event: stored state always describes events the store holds.
- **Schema** (``schema.py``): ``MIGRATIONS[i]`` upgrades version ``i`` to ``i + 1``, one
  transaction each; a database newer than this code is refused rather than misread.
- **Reading** is ``EventHistory``'s (``history.py``), which this class extends.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..core.errors import ConductLoopError
from ..core.events import Event
from .history import EventColumns, EventHistory
from .schema import MIGRATIONS, MOST_ROWS, SAVE_STATE, insert_sql

__all__ = ["MIGRATIONS", "EventColumns", "EventStore", "StoreError"]

log = logging.getLogger(__name__)


def _default(value: object) -> object:
    if isinstance(value, Mapping):  # e.g. a read-only MappingProxyType
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_default).encode


def _call(callbacks: list[Callback | None], name: str) -> None:
    for callback in callbacks:
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("an event store %r callback failed", name)


def _data_encoder() -> Callable[[Any], str]:
    """``_encode`` for the writer, the same text at less than half the cost per event.

    ``JSONEncoder.encode`` makes a new C encoder on every call, which costs as much as
    encoding a small ``data``; this one is made once (as ``JSONEncoder.iterencode`` makes
    it, so the text is the same), without the check for circular references: a cycle ends
    in ``RecursionError``, which the writer reports like any data it cannot serialize.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator
        return _encode
    encoder = make(
        None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    join = "".join

    def encode(data: Any) -> str:
        return join(encoder(data, 0))

    return encode


_encode_data = _data_encoder()


def _encode_in_pieces(value: Any, depth: int = 3) -> str:
    """``_encode(value)``, the same text, made by one ``_encode`` call per item of the
    outer ``depth`` levels of lists and dicts.

    json's C encoder keeps the GIL for all of one call: a whole saved view (a megabyte of
    JSON, ~20 ms) in one call would stall the hub's loop that long. Between small calls
    the writer thread lets the loop run.
    """
    if depth and isinstance(value, list):
        return f"[{','.join([_encode_in_pieces(item, depth - 1) for item in value])}]"
    if depth and isinstance(value, dict) and all(type(key) is str for key in value):
        items = [f"{_encode(k)}:{_encode_in_pieces(v, depth - 1)}" for k, v in value.items()]
        return f"{{{','.join(items)}}}"
    return _encode(value)


_STOP = object()
_COLUMNS = 7  # an event's parameters in an INSERT: id, runtime, seq, ts, agent_id, kind, data
Item = Event | tuple[int, Event]  # an event, or (the store id to give it, the event)
Callback = Callable[[], None]
_Batch = tuple[Sequence[Item], Callback | None, Callback | None]  # events, done, failed


@dataclass(frozen=True, slots=True)
class _State:
    """A ``save_state`` on the writer's queue."""

    key: str
    value: Any


class StoreError(ConductLoopError):
    """The event store cannot be opened, or could not store events."""


class EventStore(EventHistory):
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
        # whether every event handed to the writer was stored (written by the writer only)
        self._complete = True
        self._refused_state = False
        self._most_rows = 1
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
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the history is this user's alone: create the file 0600 before SQLite does (0644
        # under umask 022); SQLite gives -wal and -shm the database file's mode
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
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
        limit = max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 7)
        self._most_rows = min(MOST_ROWS, 1 << (limit.bit_length() - 1))
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

    def append(
        self,
        events: Sequence[Item],
        done: Callback | None = None,
        failed: Callback | None = None,
    ) -> None:
        """Queue ``events`` for the writer; never blocks, so it is safe on an event loop.

        An ``(id, event)`` pair stores the event under that id (the hub numbers events itself
        so that it can fan them out before they are committed); a bare event gets the next id.
        ``done()`` is called from the writer thread once all of them are committed;
        ``failed()`` instead if their transaction failed (SQLite refused it: a full disk, a
        lock held too long), so that none of them was stored and the same ``events`` can be
        appended again. Data that cannot be serialized fails for good: neither is called.
        Raises ``StoreError`` if an earlier batch could not be stored (nothing is queued then).
        """
        self._check()
        self._raise_error()
        self._queue.put((events, done, failed))

    def save_state(self, key: str, value: Any) -> None:
        """Queue ``value`` (plain data, JSON-serializable) to be stored under ``key`` in the
        ``meta`` table; never blocks. ``value`` must not change once handed over: the writer
        thread encodes it.

        It is written in the transaction that commits the events appended before it (or a
        later one), so it is never stored without them. Once this store has lost an event
        (its data not serializable, a batch that failed, or a ``(runtime, seq)`` already
        stored) it is not written at all: state derived from every event handed over would
        then describe events the store does not hold.
        """
        if key == "schema_version":
            raise ValueError("'schema_version' is the store's own key")
        self._check()
        self._queue.put(_State(key, value))

    def load_state(self, key: str) -> Any:
        """What ``save_state`` last stored under ``key``; ``None`` if nothing. Blocking.

        Raises ``ValueError`` if the stored text is not JSON.
        """
        sql = "SELECT value FROM meta WHERE key = ?"
        row = self._reader().execute(sql, (key,)).fetchone()
        return None if row is None else json.loads(row[0])

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
        self._complete = False
        error = StoreError(message)
        error.__cause__ = cause
        if not self._errors:  # keep the first unreported error
            self._errors.append(error)

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        params: list[Any] = []  # _COLUMNS per event
        outcomes: list[tuple[Callback | None, Callback | None]] = []  # done, failed
        states: list[_State] = []
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
                    if isinstance(item, _State):
                        states.append(item)
                    else:
                        self._take(cast(_Batch, item), params, outcomes)
                        if len(params) >= self.batch_events * _COLUMNS:
                            break
                    try:
                        item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                self._commit(conn, params, outcomes, states)
                params, outcomes, states = [], [], []
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

    def _take(
        self,
        batch: _Batch,
        params: list[Any],
        outcomes: list[tuple[Callback | None, Callback | None]],
    ) -> None:
        events, done, failed = batch
        stored = True
        extend = params.extend
        for item in events:
            id_, e = item if isinstance(item, tuple) else (None, item)
            try:
                data = _encode_data(e.data)
            except (TypeError, ValueError, RecursionError) as exc:
                self._fail(
                    f"event seq={e.seq} of runtime {e.runtime!r} (kind {e.kind!r}, agent"
                    f" {e.agent_id!r}) was not stored: its data is not JSON-serializable: {exc}",
                    exc,
                )
                stored = False
                continue
            # flat, as the INSERT takes them: no tuple per row kept, none taken apart again
            extend((id_, e.runtime, e.seq, e.ts, e.agent_id, e.kind, data))
        if stored:
            outcomes.append((done, failed))

    def _commit(
        self,
        conn: sqlite3.Connection,
        params: list[Any],
        outcomes: list[tuple[Callback | None, Callback | None]],
        states: list[_State],
    ) -> None:
        if params or states:
            try:
                conn.execute("BEGIN")
                if params and self._insert(conn, params) != len(params) // _COLUMNS:
                    self._complete = False  # a repeat of a stored (runtime, seq), skipped
                for state in states:
                    self._save(conn, state)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                what = f"a batch of {len(params) // _COLUMNS} events" if params else "saved state"
                self._fail(f"could not store {what}: {exc}", exc)
                _call([failed for _, failed in outcomes], "failed")
                return
            self.commits += 1
        _call([done for done, _ in outcomes], "done")

    def _insert(self, conn: sqlite3.Connection, params: list[Any]) -> int:
        """Insert the events of ``params`` in order, up to ``_most_rows`` per statement; the
        rows stored.

        Not ``executemany``: it steps the statement once per row, and sqlite3 lets go of
        the GIL and takes it back around every step; with the agents' loop busy in the
        same process each take is a thread switch (the writer's CPU per event measured
        5.4 us that way, 3.5 us so). Statements hold a power of two of rows, so that a
        dozen SQL texts serve every batch size from sqlite3's statement cache.
        """
        stored = at = 0
        count = len(params) // _COLUMNS
        while at < count:
            size = min(self._most_rows, 1 << ((count - at).bit_length() - 1))
            rows = params[at * _COLUMNS : (at + size) * _COLUMNS]
            stored += conn.execute(insert_sql(size), rows).rowcount
            at += size
        return stored

    def _save(self, conn: sqlite3.Connection, state: _State) -> None:
        if not self._complete:
            if not self._refused_state:  # once: it would repeat with every save
                self._refused_state = True
                log.warning(
                    "from now on no state is saved in %s: an event handed to it was not"
                    " stored, or repeated one it holds (the next start reads more history)",
                    self.path,
                )
            return
        try:
            text = _encode_in_pieces(state.value)
        except (TypeError, ValueError, RecursionError) as exc:
            log.error("state %r not saved: it is not JSON-serializable: %s", state.key, exc)
            return
        conn.execute(SAVE_STATE, (state.key, text))

    # -- reading (EventHistory's methods), and the runtimes (blocking) --------------------

    def _reader(self) -> sqlite3.Connection:
        if self._closed or self._writer is None:
            raise StoreError("the event store is not open")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._readers_lock:
                self._readers.append(conn)
        return conn

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
