"""The hub's event store: ingest, a million events into a DataFrame, a hub restart.

Events are realistic: the kinds and payloads of ``docs/protocol.md`` as agents emit them
(start, running, then rounds of status, a tool call, its end, usage and a log line, with
now and then a question asked and answered, a hand-off, a result and the end), numbered by
one runtime, 500 events an agent.

- **ingest**: ``EventStore.append`` of batches of 1,000 ``(id, event)`` pairs with a
  ``done`` callback, as the hub hands them over, as fast as they can be queued; the clock
  stops when ``flush()`` returns (everything committed). Baseline: raw sqlite3
  ``executemany`` of the same rows, already JSON-encoded, one transaction per 2,000 rows,
  into the same schema (WAL, ``synchronous=NORMAL``): SQLite's own floor.
- **frame**: ``notebook.frames.events_frame_from_store`` of that store (``data`` parsed
  into dicts, as ``loop.events()`` has it). Baseline: ``pd.read_sql`` of the same rows
  with ``data`` left as JSON text; also shown, ``read_sql`` then ``json.loads`` per row
  (what it takes to get dicts that way).
- **restart**: ``Hub.start()`` on that store: open it, restore the live view of every
  agent and the ring of recent events. Three ways: with the view a clean stop saved (it
  covers every event: nothing to replay); after a crash, with the view saved
  ``saved_view.SAVE_EVERY`` events before the end (a hub saves that often while events come in);
  and with no saved view (a store from a version that saved none), replaying every event,
  whose baseline is the same replay with the row-by-row read this package had before (a
  cursor, ``json.loads`` and ``Event(...)`` per row). The full replay's parts are shown
  too: the store's ``iter_events`` alone, and the rebuild's own loop (``View.apply`` and the
  recent-events ring) over events already in memory, which no store can make faster.

Every timing is the best of ``--repeat`` runs (3): the machine is shared, and the best run
is the one least disturbed. The frame and the restart each run in a fresh process (as a
restarted hub is), on the file the ingest wrote. Correctness is checked on the way: the
frame equals ``events_frame`` of the same events, and each restarted view equals, field for
field, one built event by event (and each recent ring the row-by-row one).

    python benchmarks/store.py [--quick] [--repeat N]

``--quick``: 100,000 events (the targets scale with the count). Prints a table and a final
``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _figures import Figure, best, load_average, print_table
from _harness import machine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from conductloop_jupyter.core.events import Event, EventKind  # noqa: E402
from conductloop_jupyter.core.view import View  # noqa: E402
from conductloop_jupyter.hub import saved_view  # noqa: E402
from conductloop_jupyter.hub.hub import Hub  # noqa: E402
from conductloop_jupyter.hub.schema import insert_sql  # noqa: E402
from conductloop_jupyter.hub.store import EventStore, _encode  # noqa: E402
from conductloop_jupyter.notebook.frames import events_frame, events_frame_from_store  # noqa: E402

EVENTS = 1_000_000
INGEST_PER_S = 100_000
FRAME_S = 2.5  # for 1,000,000 events
RESTART_S = 3.0  # for 1,000,000 events
BATCH = 1_000
RUNTIME = "research-a1b2c3"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

# -- realistic events -----------------------------------------------------------------------


def make_events(n: int, per_agent: int = 500) -> list[Event]:
    """``n`` events of one runtime, agent after agent, in the shapes of docs/protocol.md."""
    events: list[Event] = []
    seq, ts, span, number = 0, T0, 0, 0

    def emit(agent: str, kind: EventKind, data: dict[str, Any], step: float = 0.0137) -> None:
        nonlocal seq, ts
        seq += 1
        ts += step
        events.append(Event(seq, ts, RUNTIME, agent, kind, data))

    models = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku")
    tools = ("search", "fetch", "python", "read_file")
    while len(events) < n:
        number += 1
        name = ("researcher", "coder", "writer", "summarizer")[number % 4]
        agent = f"{name}-{number}-a1b2c3"
        model = models[number % 3]
        parent = f"researcher-{number - 1}-a1b2c3" if number % 4 == 1 and number > 1 else None
        started = {"name": name, "parent": parent, "model": model, "budget_usd": 1.0}
        emit(agent, "agent.started", {**started, "input": f"agent orchestration #{number}"})
        emit(agent, "agent.state", {"state": "running"})
        rounds, first = 0, seq
        while len(events) < n and seq - first < per_agent - 12:
            rounds += 1
            span += 1
            tool = tools[rounds % 4]
            emit(agent, "agent.status", {"text": f"{tool}: step {rounds} of the plan"})
            args = {"query": f"papers on agents {rounds}", "limit": 10}
            emit(agent, "tool.started", {"span": span, "tool": tool, "args": args})
            ok = rounds % 17 != 0
            finished = {"span": span, "tool": tool, "ok": ok, "duration_s": 0.25 + rounds % 7 / 10}
            emit(agent, "tool.finished", finished if ok else {**finished, "error": "TimeoutError"})
            tokens = {"input_tokens": 1200 + rounds, "output_tokens": 300}
            cost = {"cost_usd": 0.00036 + rounds * 1e-7, "priced_by": "genai-prices"}
            emit(agent, "usage", {"model": model, **tokens, **cost})
            emit(agent, "log", {"level": "info", "message": f"found {rounds * 3} results"})
            if rounds % 40 == 0:
                request = f"r{seq}-a1b2c3"
                question = {"prompt": "Which dataset?", "choices": ["a", "b"], "details": {}}
                opened = {"request_id": request, "kind": "question", **question}
                emit(agent, "request.opened", opened)
                emit(agent, "agent.state", {"state": "waiting", "request_id": request})
                answer = {"decision": "answered", "by": "phone:pixel", "text": "a"}
                emit(agent, "request.decided", {"request_id": request, **answer})
                emit(agent, "agent.state", {"state": "running"})
        if len(events) < n:
            emit(agent, "handoff", {"to": f"writer-{number}-a1b2c3", "name": "writer"})
            emit(agent, "agent.result", {"result": "a summary of 12 papers"})
            emit(agent, "agent.state", {"state": "done", "reason": "returned"})
    return events[:n]


# -- (a) ingest -----------------------------------------------------------------------------


def ingest(events: list[Event], path: Path) -> float:
    """Events a second through ``EventStore.append`` until committed."""
    store = EventStore(path)
    store.open()
    pairs = [(i, e) for i, e in enumerate(events, 1)]
    try:
        start = time.perf_counter()
        for i in range(0, len(pairs), BATCH):
            store.append(pairs[i : i + BATCH], done=lambda: None)
        store.flush()
        return len(events) / (time.perf_counter() - start)
    finally:
        store.close()


def ingest_raw(events: list[Event], path: Path) -> float:
    """Events a second through raw ``executemany``, 2,000 rows a transaction."""
    rows = [(i, e.runtime, e.seq, e.ts, e.agent_id, e.kind, _encode(e.data))
            for i, e in enumerate(events, 1)]  # fmt: skip
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, runtime TEXT NOT NULL,"
        " seq INTEGER NOT NULL, ts REAL NOT NULL, agent_id TEXT, kind TEXT NOT NULL,"
        " data TEXT NOT NULL, UNIQUE (runtime, seq))"
    )
    conn.execute("CREATE INDEX events_agent ON events (agent_id, id)")
    try:
        start = time.perf_counter()
        for i in range(0, len(rows), 2000):
            conn.execute("BEGIN")
            conn.executemany(insert_sql(1), rows[i : i + 2000])
            conn.execute("COMMIT")
        return len(rows) / (time.perf_counter() - start)
    finally:
        conn.close()


# -- (c) restart: the row-by-row read this package had before, as the baseline ---------------


class RowByRowHub(Hub):
    """``Hub`` with its rebuild reading history as the store did before: a cursor,
    ``fetchmany(10_000)``, then ``json.loads`` and ``Event(...)`` for every row."""

    def _rebuild(self) -> None:
        self.store.open()
        view = View()
        last_id = 0
        for store_id, event in _rows(self.store):
            view.apply(event)
            last_id = store_id
            self._recent.append((store_id, event))
        self.view = view
        self.last_id = last_id
        self._durable = self.store.last_seqs()
        self._accepted = dict(self._durable)


def _rows(store: EventStore) -> Iterator[tuple[int, Event]]:
    cursor = store._reader().execute(
        "SELECT id, seq, ts, runtime, agent_id, kind, data FROM events ORDER BY id"
    )
    while rows := cursor.fetchmany(10_000):
        for id_, seq, ts, runtime, agent_id, kind, data in rows:
            yield id_, Event(seq, ts, runtime, agent_id, kind, json.loads(data))


def restart(
    repeat: int, cls: type[Hub], path: Path, saved: dict[str, Any] | None = None
) -> tuple[float, Hub]:
    """The best time of ``repeat`` runs of ``Hub.start()`` on ``path`` with ``saved`` as its
    saved view (``None``: none), and the last hub."""
    times, hub = [], None

    async def start() -> tuple[float, Hub]:
        hub = cls(EventStore(path))
        start = time.perf_counter()
        await hub.start()
        took = time.perf_counter() - start
        hub.shutdown()
        return took, hub

    for _ in range(repeat):
        save(path, saved)  # (a hub saves its view when it stops: put this one back)
        gc.collect()
        took, hub = asyncio.run(start())
        hub.store.close()
        times.append(took)
    assert hub is not None
    return min(times), hub


def save(path: Path, saved: dict[str, Any] | None) -> None:
    """Make ``saved`` the store's saved view (``None``: remove it), as a hub saves it."""
    with EventStore(path) as store:
        if saved is not None:
            store.save_state(saved_view.KEY, saved)
    if saved is None:
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (saved_view.KEY,))
        conn.close()


def hub_loop(events: list[tuple[int, Event]]) -> None:
    """The loop of ``saved_view.rebuild`` replaying every event, over events already in memory."""
    view = View()
    recent: collections.deque[tuple[int, Event]] = collections.deque(maxlen=50_000)
    last_id = 0
    for store_id, event in events:
        view.apply(event)
        last_id = store_id
        recent.append((store_id, event))
    assert last_id == len(events)


def same_view(view: View, reference: View) -> bool:
    """Equal field for field (agents, requests, open requests and their order, total)."""
    return (
        view.agents == reference.agents
        and view.requests == reference.requests
        and view.pending() == reference.pending()
        and view.total_cost_usd == reference.total_cost_usd
    )


# -- each measured part in a fresh process of its own ---------------------------------------


def frame_part(path: Path, n: int, repeat: int) -> dict[str, Any]:
    store = EventStore(path)
    store.open()
    conn = sqlite3.connect(path)
    sql = "SELECT id, seq, ts, runtime, agent_id, kind, data FROM events ORDER BY id"

    def read_sql_parsed() -> pd.DataFrame:
        found = pd.read_sql(sql, conn)
        found["data"] = found["data"].map(json.loads)
        return found

    try:
        frame_s, frame = best(repeat, lambda: events_frame_from_store(store))
        read_sql_s, _ = best(repeat, lambda: pd.read_sql(sql, conn))
        parsed_s, _ = best(repeat, read_sql_parsed)
    finally:
        conn.close()
        store.close()
    same = frame["id"].tolist() == list(range(1, n + 1))
    try:
        pd.testing.assert_frame_equal(frame.drop(columns="id"), events_frame(make_events(n)))
    except AssertionError:
        same = False
    return {"frame_s": frame_s, "read_sql_s": read_sql_s, "read_sql_json_loads_s": parsed_s,
            "frame_equals_events_frame": same}  # fmt: skip


def restart_part(path: Path, n: int, repeat: int) -> dict[str, Any]:
    reference = View()
    behind = max(0, n - saved_view.SAVE_EVERY)  # what a crash's saved view covers
    crashed: dict[str, Any] | None = None
    events = make_events(n)
    for store_id, event in enumerate(events, 1):
        reference.apply(event)
        if store_id == behind:
            crashed = saved_view.capture(reference, (store_id, event))
    stopped = saved_view.capture(reference, (n, events[-1]))
    del events
    saved_s, saved = restart(repeat, Hub, path, stopped)
    crash_s, crash = restart(repeat, Hub, path, crashed)
    restart_s, hub = restart(repeat, Hub, path)
    before_s, before = restart(1, RowByRowHub, path)
    exact = (
        all(same_view(h.view, reference) for h in (saved, crash, hub, before))
        and [h.restored_at for h in (saved, crash, hub)] == [n, behind, 0]
        and all(h.last_id == n for h in (saved, crash, hub))
        and all(list(h._recent) == list(before._recent) for h in (saved, crash, hub))
    )
    del saved, crash, hub, before, reference
    store = EventStore(path)
    store.open()
    try:
        iter_s, _ = best(repeat, lambda: collections.deque(store.iter_events(), maxlen=0))
        in_memory = list(store.iter_events())
    finally:
        store.close()
    gc.freeze()  # as a restarted hub has none of them in memory
    loop_s, _ = best(repeat, lambda: hub_loop(in_memory))
    return {"restart_saved_view_s": saved_s, "restart_after_crash_s": crash_s,
            "restart_s": restart_s, "restart_row_by_row_s": before_s, "iter_events_s": iter_s,
            "hub_loop_in_memory_s": loop_s, "restart_view_exact": exact}  # fmt: skip


PARTS = {"frame": frame_part, "restart": restart_part}


def run_part(part: str, path: Path, n: int, repeat: int) -> dict[str, Any]:
    found = subprocess.run(
        [sys.executable, __file__, "--part", part, "--path", str(path), "--n", str(n),
         "--repeat", str(repeat)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(found.stdout.splitlines()[-1])
    return result


# -- the report -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events (a smoke test)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing (best)")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = max(1, args.repeat)
    if args.part is not None:
        print(json.dumps(PARTS[args.part](args.path, args.n, repeat)))
        return
    n = EVENTS // 10 if args.quick else EVENTS
    scale = n / EVENTS

    events = make_events(n)
    kinds = collections.Counter(e.kind for e in events)
    gc.freeze()  # a hub holds none of them: keep them out of the cyclic collector's way
    with tempfile.TemporaryDirectory(prefix="conductloop-store-") as folder:
        home = Path(folder)
        # (a) ingest: each run into a fresh file; the last run's file is the history below
        paths = [home / f"ingest-{i}" / "events.sqlite3" for i in range(repeat)]
        rates = [ingest(events, path) for path in paths]
        raw = [ingest_raw(events, home / f"raw-{i}.sqlite3") for i in range(repeat)]
        del events
        figures: dict[str, Any] = {"ingest_per_s": max(rates), "raw_executemany_per_s": max(raw)}
        # (b) and (c), each in a process of its own
        figures |= run_part("frame", paths[-1], n, repeat)
        figures |= run_part("restart", paths[-1], n, repeat)
    checks = {
        "ingest": figures["ingest_per_s"] >= INGEST_PER_S,
        "frame_equals_events_frame": figures.pop("frame_equals_events_frame"),
        "restart_view_exact": figures.pop("restart_view_exact"),
    }
    frame_s, read_sql_s, parsed_s = (
        figures[k] for k in ("frame_s", "read_sql_s", "read_sql_json_loads_s")
    )
    saved_s, crash_s, restart_s, before_s, iter_s, loop_s = (
        figures[k]
        for k in (
            "restart_saved_view_s",
            "restart_after_crash_s",
            "restart_s",
            "restart_row_by_row_s",
            "iter_events_s",
            "hub_loop_in_memory_s",
        )
    )
    same = checks["frame_equals_events_frame"]
    checks["frame"] = frame_s <= FRAME_S * scale
    checks["restart"] = saved_s <= RESTART_S * scale
    checks["restart_after_crash"] = crash_s <= RESTART_S * scale
    count = f"{n:,}"
    rows = [
        Figure(
            f"ingest: EventStore.append, {BATCH:,}-event batches, until committed",
            f"{figures['ingest_per_s']:,.0f} ev/s",
            f"{figures['raw_executemany_per_s']:,.0f} ev/s",
            f"x{figures['ingest_per_s'] / figures['raw_executemany_per_s']:.2f}",
            f">= {INGEST_PER_S:,} ev/s",
            checks["ingest"],
        ),
        Figure(
            f"frame: {count} events -> DataFrame, data as dicts",
            f"{frame_s:.2f} s",
            f"{read_sql_s:.2f} s",
            f"x{frame_s / read_sql_s:.2f}",
            f"<= {FRAME_S * scale:g} s",
            checks["frame"],
        ),
        Figure(
            "  pd.read_sql, then json.loads of each data (dicts that way)",
            f"{parsed_s:.2f} s",
            f"{read_sql_s:.2f} s",
            f"x{parsed_s / read_sql_s:.2f}",
        ),
        Figure(
            "  the frame equals events_frame() of the same events",
            str(same),
            target="equal",
            ok=same,
        ),
        Figure(
            f"restart: Hub.start() with {count} events, the view saved at a clean stop",
            f"{saved_s:.2f} s",
            f"{restart_s:.2f} s",
            f"x{saved_s / restart_s:.3f}",
            f"<= {RESTART_S * scale:g} s",
            checks["restart"],
        ),
        Figure(
            f"  after a crash: the view saved {min(n, saved_view.SAVE_EVERY):,} events"
            " before the end",
            f"{crash_s:.2f} s",
            f"{restart_s:.2f} s",
            f"x{crash_s / restart_s:.3f}",
            f"<= {RESTART_S * scale:g} s",
            checks["restart_after_crash"],
        ),
        Figure(
            "  no saved view: every event replayed (baseline: read row by row)",
            f"{restart_s:.2f} s",
            f"{before_s:.2f} s",
            f"x{restart_s / before_s:.2f}",
        ),
        Figure("    of which EventStore.iter_events alone", f"{iter_s:.2f} s"),
        Figure(
            "    of which the rebuild's loop (View.apply, recent ring), in memory",
            f"{loop_s:.2f} s",
        ),
        Figure(
            "  each view equals one built event by event",
            str(checks["restart_view_exact"]),
            target="equal",
            ok=checks["restart_view_exact"],
        ),
    ]
    print_table(
        f"Event store: {count} events of {len(kinds)} kinds"
        f" ({', '.join(f'{k} {v:,}' for k, v in kinds.most_common(4))}, ...)",
        rows,
    )
    print("baselines: raw executemany (same rows, pre-encoded); pd.read_sql (data as text);")
    print("           restarts: Hub.start() replaying every event; that replay reading")
    print("           history row by row, as before")
    load = load_average()
    result = {
        "benchmark": "store",
        "quick": args.quick,
        "events": n,
        "machine": machine(),
        "load_average": load,
        "pass": all(checks.values()),
        "checks": checks,
        "figures": figures,
    }
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
