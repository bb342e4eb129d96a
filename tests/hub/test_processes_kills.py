"""Processes killed with SIGKILL: a hub mid-stream, and a runtime while its agent waits.

A hub killed in the middle of a stream and served again on its home gets every event
exactly once (the store read directly); a runtime killed while waiting leaves its agent
lost and its request withdrawn. Processes come from ``_process_support``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import conductloop_jupyter as cl
from tests.hub._process_support import (
    Procs,
    assert_every_event_once,
    free_port,
    hub_file,
    request_open,
    state_of,
    store_rows,
    until,
)

# -- the hub killed mid-stream and served again ----------------------------------------


def test_hub_killed_mid_stream_and_restarted_gets_every_event_exactly_once(
    procs: Procs, home: Path
) -> None:
    steps = 3000
    port = free_port()
    first_hub, url = procs.serve(port, name="hub-1")
    runtime = procs.runtime("stream", steps)
    runtime.expect("MIDWAY", timeout=45)
    before = cl.connect(home=home)
    until(lambda: len(before.events()) > 10, "the first hub to receive events")

    first_hub.popen.kill()  # the runtime waits for it to come back (see the takeover tests)
    assert first_hub.exit_code() == -signal.SIGKILL
    assert (hub_file(home) or {}).get("pid") == first_hub.pid  # left behind

    second_hub, second_url = procs.serve(port, name="hub-2")
    assert second_url == url
    until(lambda: (hub_file(home) or {}).get("pid") == second_hub.pid, "the new hub.json")
    (kept,) = store_rows(home, "SELECT COUNT(*) FROM events WHERE kind = 'log'")
    assert 0 < kept[0] < steps  # the hub died in the middle of the stream

    stream_runtime, agent_id, request_id = runtime.expect("READY", timeout=60)
    hub = cl.connect(home=home)
    until(lambda: request_open(hub, request_id), "the request on the restarted hub", 30)
    assert hub.approve(request_id) is True
    assert runtime.expect("RESULT") == ["stream", "approved"]
    last_seq = int(runtime.expect("DONE")[1])
    assert runtime.exit_code() == 0, runtime.stderr()
    until(lambda: state_of(hub, agent_id) == "done", "the agent done on the hub")

    assert_every_event_once(home, stream_runtime, last_seq, steps)

    everything = hub.events()  # the hub's API tells the same story
    seen = everything[everything["runtime"] == stream_runtime]
    assert sorted(seen["seq"]) == list(range(1, last_seq + 1))
    assert (seen["kind"] == "log").sum() == steps
    states = [data["state"] for data in seen.loc[seen["kind"] == "agent.state", "data"]]
    assert "lost" not in states


# -- a runtime killed while its agent waits --------------------------------------------


def test_runtime_killed_while_waiting_marks_its_agent_lost_and_withdraws_its_request(
    procs: Procs, home: Path
) -> None:
    procs.serve(free_port())
    runtime = procs.runtime("doomed")
    _, agent_id, request_id = runtime.expect("READY")
    hub = cl.connect(home=home)
    until(lambda: request_open(hub, request_id), "the request on the hub")
    assert state_of(hub, agent_id) == "waiting"

    runtime.popen.kill()
    assert runtime.exit_code() == -signal.SIGKILL
    until(lambda: state_of(hub, agent_id) == "lost", "the agent lost", 15)  # lost_after 3 s
    assert not request_open(hub, request_id)

    decided = hub.events(agent_id=agent_id)
    withdrawn = list(decided.loc[decided["kind"] == "request.decided", "data"])
    assert withdrawn == [{"request_id": request_id, "decision": "withdrawn", "by": "hub"}]
    assert hub.approve(request_id) is False  # decided (withdrawn): first answer wins
