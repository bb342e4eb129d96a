"""What the saved view's tests share: a story of events, hubs started and stopped on a
store, and the check that a restarted hub holds what a replay of every stored event builds.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from conductloop_jupyter.core.events import Event
from conductloop_jupyter.core.view import View
from conductloop_jupyter.hub import saved_view
from conductloop_jupyter.hub.hub import Hub
from conductloop_jupyter.hub.store import EventStore
from conductloop_jupyter.testing import ManualClock


def story(runtime: str, first: int, last: int) -> list[Event]:
    """Events ``first``..``last`` of one runtime: agents of 20 events each that start, work,
    spend (priced and not, two models), stall, ask, get answers and end each another way;
    some stay live, some leave a request open."""
    events = []
    for seq in range(first, last + 1):
        n, step = divmod(seq - 1, 20)
        agent, ask = f"{runtime}-a{n}", f"{runtime}-q{n}"
        cost = 0.000137 * (seq % 5) if seq % 5 else None
        ending = [
            ("agent.error", {"type": "ValueError", "message": f"bad {n}"}),
            ("agent.result", {"result": f"result {n}"}),
            ("agent.status", {"text": "still going"}),  # stays running
            ("agent.state", {"state": "stopped"}),
        ][n % 4]
        kind, data = [
            ("agent.started", {"name": f"worker-{n % 3}", "model": "m1", "budget_usd": 1.5,
                               "input": f"job {n}", "parent": f"{runtime}-a{n - 1}" if n > 0
                               else None}),
            ("agent.state", {"state": "running"}),
            ("agent.status", {"text": f"step {seq}"}),
            ("tool.started", {"tool": "search", "span": seq, "args": {"q": [1, 2.5]}}),
            ("tool.finished", {"tool": "search", "span": seq, "ok": True}),
            ("usage", {"model": "m1", "input_tokens": 100 + seq, "output_tokens": 7,
                       "cost_usd": cost}),
            ("request.opened", {"request_id": ask, "kind": "question", "prompt": "which?",
                                "choices": ["a", "b"], "details": {"n": n}}),
            ("agent.state", {"state": "waiting", "request_id": ask}),
            ("request.decided", {"request_id": ask, "decision": "answered", "by": "phone",
                                 "text": "a", "note": "fine"}),
            ("agent.state", {"state": "running"}),
            ("agent.stalled", {"stalled": True, "reason": "no event for 120 s"}),
            ("agent.stalled", {"stalled": n % 2 == 0, "reason": "still nothing"}),
            ("usage", {"model": "m2", "input_tokens": 3, "output_tokens": seq,
                       "cost_usd": 0.1 / (seq + 1)}),
            ("request.opened", {"request_id": f"{ask}-ok", "kind": "approval",
                                "prompt": "may I?", "details": {"cmd": ["rm", "x"]}}),
            ("log", {"level": "info", "message": "waiting for approval"}),
            ("request.decided", {"request_id": f"{ask}-ok", "decision": "approved", "by": "lab"})
            if n % 3 else ("log", {"level": "info", "message": "left open"}),
            ("handoff", {"to": f"{runtime}-a{n + 1}"}),
            ("agent.status", {"text": "wrapping up"}),
            ending,
            ("agent.state", {"state": "done"}) if n % 4 < 2 else ("log", {"message": "end"}),
        ][step]  # fmt: skip
        events.append(Event(seq, 1_767_225_600.0 + seq * 0.013, runtime, agent, kind, data))
    return events


# -- replays, and hubs on a store ------------------------------------------------------


def replayed(path: Path) -> tuple[View, list[tuple[int, Event]]]:
    """The view built event by event from everything in the store, and every event."""
    with EventStore(path) as store:
        events = list(store.iter_events())
    view = View()
    for _, event in events:
        view.apply(event)
    return view, events


def assert_same_view(view: View, reference: View) -> None:
    assert view.agents == reference.agents  # every field of every agent
    assert view.requests == reference.requests
    assert view.pending() == reference.pending()  # the same open requests, in the same order
    assert view.total_cost_usd == reference.total_cost_usd
    assert view.state() == reference.state()


async def assert_restarted_like_a_replay(hub: Hub, path: Path, recent: int) -> None:
    reference, events = await asyncio.to_thread(replayed, path)
    assert_same_view(hub.view, reference)
    assert list(hub._recent) == events[-recent:]
    assert hub.last_id == events[-1][0]
    live = {a.runtime for a in reference.live() if a.runtime != "hub"}
    assert {r for r, link in hub.runtimes.items() if link.lost_timer is not None} == live


async def start(path: Path, **options: Any) -> Hub:
    """A started hub; its clock stands still, so a save is never put off by the time the
    last one took (the hub waits 100 times that)."""
    hub = Hub(EventStore(path), **{"recent": 30, "clock": ManualClock(), **options})
    await hub.start()
    return hub


async def feed(hub: Hub, runtime: str, first: int, last: int, batch: int = 10) -> None:
    """Ingest ``story(runtime, first, last)`` in batches; return once all are committed."""
    committed = asyncio.get_running_loop().create_future()

    def acked(seq: int) -> None:
        if seq >= last and not committed.done():
            committed.set_result(None)

    for start_seq in range(first, last + 1, batch):
        hub.ingest(runtime, story(runtime, start_seq, min(last, start_seq + batch - 1)), acked)
    await asyncio.wait_for(committed, 10)


async def stop(hub: Hub, *, clean: bool = True) -> None:
    """A clean stop (``shutdown``, which saves the view), or one as if the process died:
    nothing more is handed to the store, which only had to commit what it was given."""
    if clean:
        hub.shutdown()
    else:
        for link in hub.runtimes.values():
            if link.lost_timer is not None:
                link.lost_timer.cancel()
    await asyncio.to_thread(hub.store.close)


def saved_row(path: Path) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT value FROM meta WHERE key = ?", (saved_view.KEY,)).fetchall()
    finally:
        conn.close()


def saved_id(rows: list[Any]) -> int:
    (text,) = rows[0]
    found: int = json.loads(text)["id"]
    return found


def write_saved(path: Path, text: str) -> None:
    execute(path, "UPDATE meta SET value = ? WHERE key = ?", text, saved_view.KEY)


def execute(path: Path, sql: str, *params: Any) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql, params)
    conn.close()


def append(path: Path, events: list[Event] | list[tuple[int, Event]]) -> None:
    """Store events as an older hub would have: no view saved with them."""
    with EventStore(path) as store:
        store.append(events)
