"""The hub's saved view: a restart restores it and replays only later events, and ends with
the view a replay of every stored event builds, field for field — after a clean stop, a
crash, a real SIGKILL, or with a saved view that is corrupt, from another version, or no
longer matches the store.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conductloop_jupyter.core.events import Event
from conductloop_jupyter.core.states import AgentState
from conductloop_jupyter.core.view import STATE_VERSION, View
from conductloop_jupyter.hub import saved_view
from conductloop_jupyter.hub.hub import Hub
from conductloop_jupyter.hub.store import EventStore, StoreError
from conductloop_jupyter.testing import ManualClock

ROOT = Path(__file__).resolve().parents[2]


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


# -- helpers ---------------------------------------------------------------------------


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


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "events.sqlite3"


# -- the view's state ------------------------------------------------------------------


def test_a_view_state_round_trips_through_json_equal_field_for_field() -> None:
    view = View()
    for event in story("rt-1", 1, 95) + story("rt-2", 1, 47):
        view.apply(event)
    assert view.pending()
    assert view.live()
    assert any(a.stalled for a in view.agents.values())

    restored = View.from_state(json.loads(json.dumps(view.state())))

    assert_same_view(restored, view)
    assert all(isinstance(a.state, AgentState) for a in restored.agents.values())
    assert all(isinstance(r.choices, tuple) for r in restored.requests.values() if r.choices)
    for event in story("rt-1", 96, 140):  # and both go on alike
        view.apply(event)
        restored.apply(event)
    assert_same_view(restored, view)


def test_a_view_state_is_a_copy_the_view_does_not_change_later() -> None:
    view = View()
    for event in story("rt-1", 1, 13):
        view.apply(event)
    state = view.state()
    before = json.dumps(state)
    for event in story("rt-1", 14, 40):
        view.apply(event)
    assert json.dumps(state) == before


@pytest.mark.parametrize(
    "change",
    ["another version", "another field", "a missing key", "a short agent", "an unknown open"],
)
def test_a_view_state_that_does_not_fit_is_refused(change: str) -> None:
    view = View()
    for event in story("rt-1", 1, 30):
        view.apply(event)
    state = view.state()
    if change == "another version":
        state["version"] = STATE_VERSION + 1
    elif change == "another field":
        state["agent_fields"].append("mood")
    elif change == "a missing key":
        del state["requests"]
    elif change == "a short agent":
        state["agents"][0].pop()
    else:
        state["open"].append("no-such-request")
    with pytest.raises(ValueError, match="view state"):
        View.from_state(state)


# -- restarts --------------------------------------------------------------------------


async def test_a_clean_stop_saves_the_view_and_a_restart_replays_nothing(path: Path) -> None:
    first = await start(path)
    await feed(first, "rt-1", 1, 170)
    await feed(first, "rt-2", 1, 55)
    await stop(first)
    assert await asyncio.to_thread(saved_row, path)

    hub = await start(path)
    try:
        assert hub.restored_at == hub.last_id == 225
        await assert_restarted_like_a_replay(hub, path, recent=30)
    finally:
        await stop(hub)


async def test_a_crash_after_a_periodic_save_restores_it_and_replays_the_rest(
    path: Path,
) -> None:
    first = await start(path, save_every=100, save_interval=0)
    await feed(first, "rt-1", 1, 250)  # saved after 100 and after 200 events
    await stop(first, clean=False)

    hub = await start(path, save_every=100, save_interval=0)
    try:
        assert hub.restored_at == 200
        await assert_restarted_like_a_replay(hub, path, recent=30)
        # the runtime reconnects: told what is stored, its replay is taken once
        assert hub.runtime_hello(object(), {"runtime": "rt-1"})["acked"] == 250  # type: ignore[arg-type]
        await feed(hub, "rt-1", 241, 260)
    finally:
        await stop(hub, clean=False)
    reference, events = await asyncio.to_thread(replayed, path)
    assert [e.seq for _, e in events] == list(range(1, 261))
    assert_same_view(hub.view, reference)


async def test_while_events_come_in_the_view_is_saved_no_sooner_than_save_interval(
    path: Path,
) -> None:
    clock = ManualClock()
    hub = await start(path, save_every=50, save_interval=5.0, clock=clock)
    try:
        await feed(hub, "rt-1", 1, 120)  # the first save at once, after 50 events
        assert saved_id(await asyncio.to_thread(saved_row, path)) == 50
        clock.advance(5.0)
        await feed(hub, "rt-1", 121, 130)
        assert saved_id(await asyncio.to_thread(saved_row, path)) == 130
    finally:
        await stop(hub, clean=False)


async def test_a_restart_after_more_than_save_every_replayed_events_saves_at_once(
    path: Path,
) -> None:
    await asyncio.to_thread(append, path, story("rt-1", 1, 120))  # from a version saving none
    hub = await start(path, save_every=100)
    assert hub.restored_at == 0
    await stop(hub, clean=False)  # killed before any event came in: the save is queued

    again = await start(path, save_every=100)
    try:
        assert again.restored_at == 120
        await assert_restarted_like_a_replay(again, path, recent=30)
    finally:
        await stop(again)


async def test_events_stored_after_the_save_by_a_hub_that_saves_none_are_replayed(
    path: Path,
) -> None:
    first = await start(path)
    await feed(first, "rt-1", 1, 90)
    await stop(first)
    # an older version of the hub adds events, and saves no view
    await asyncio.to_thread(append, path, story("rt-1", 91, 130) + story("rt-2", 1, 25))

    hub = await start(path)
    try:
        assert (hub.restored_at, hub.last_id) == (90, 155)
        await assert_restarted_like_a_replay(hub, path, recent=30)
    finally:
        await stop(hub)


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
    unstorable = Event(61, 1_767_225_700.0, "rt-1", "rt-1-a3", "log", {"tags": {"a", "set"}})
    first.ingest("rt-1", [unstorable])
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


# -- a real process, killed ------------------------------------------------------------

# the script: these imports, then story() as above, then the rest
KILLED_HUB_PRELUDE = """from __future__ import annotations

import asyncio
import sys

from conductloop_jupyter.core.events import Event
from conductloop_jupyter.hub.hub import Hub
from conductloop_jupyter.hub.store import EventStore
from conductloop_jupyter.testing import ManualClock


"""
KILLED_HUB = """


async def main(path):
    clock = ManualClock()  # standing still: a save is never put off (see start())
    hub = Hub(EventStore(path), recent=30, save_every=200, save_interval=0, clock=clock)
    await hub.start()
    committed = asyncio.Event()
    seq = 0
    while True:  # a stream of batches of 20 until the process is killed
        batch = story("rt-1", seq + 1, seq + 20)
        seq += 20
        hub.ingest("rt-1", batch, lambda acked: acked >= 1340 and committed.set())
        if seq == 1340:
            # committed: 1,340 events, and the views saved after 200, 400, ... 1,200 (each
            # handed to the store before the next batch): the kill comes between two saves
            await committed.wait()
            print("STREAMING", flush=True)
        await asyncio.sleep(0.0005)


asyncio.run(main(sys.argv[1]))
"""


def read_line(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    """The next line of ``proc``'s stdout, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    fd, line, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while not line.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            raise AssertionError(f"no line from the process within {timeout:g} s")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"the process ended (exit {proc.wait(10)})")
        line += chunk
    return line.decode().strip()


@pytest.fixture
def killed_hub(path: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    script = tmp_path / "killed_hub.py"
    script.write_text(KILLED_HUB_PRELUDE + inspect.getsource(story) + KILLED_HUB)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    stderr = (tmp_path / "killed_hub.stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, stderr=stderr, env=env
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
        stderr.close()


def test_a_hub_killed_mid_stream_restarts_with_the_view_a_full_replay_builds(
    path: Path, killed_hub: subprocess.Popen[bytes]
) -> None:
    assert read_line(killed_hub) == "STREAMING"
    killed_hub.send_signal(signal.SIGKILL)  # while events stream in and views are saved
    assert killed_hub.wait(10) == -signal.SIGKILL

    async def restart() -> tuple[Hub, int]:
        hub = await start(path, save_every=200)
        restored_at = hub.restored_at
        await stop(hub, clean=False)
        return hub, restored_at

    hub, restored_at = asyncio.run(restart())
    assert restored_at >= 1200
    assert hub.last_id >= 1340
    assert restored_at % 20 == 0  # a saved view covers whole batches
    asyncio.run(assert_restarted_like_a_replay(hub, path, recent=30))
    with EventStore(path) as store:
        assert hub._accepted == store.last_seqs() == {"rt-1": hub.last_id}
