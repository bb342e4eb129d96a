"""The event store's SQL: its schema, the migrations to it, and the writer's statements."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable


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

MOST_ROWS = 1024  # rows in one INSERT statement (fewer if SQLite takes fewer parameters)
SAVE_STATE = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"


@functools.cache
def insert_sql(rows: int) -> str:
    """An INSERT of ``rows`` events at once, explicit ids and all. A repeated
    ``(runtime, seq)`` is skipped (a replay); a clash of ids is an error (a bug)."""
    values = ",".join(["(?,?,?,?,?,?,?)"] * rows)
    return (
        f"INSERT INTO events (id, runtime, seq, ts, agent_id, kind, data) VALUES {values}"
        " ON CONFLICT (runtime, seq) DO NOTHING"
    )
