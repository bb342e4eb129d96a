"""A script's own hub: the embedded default serves other scripts, or ``CONDUCTLOOP_HUB=off``.

With no hub running, the first runtime script embeds one (its pid in hub.json) that later
scripts use; a later embedded hub keeps the history. With the hub off, agents run and
nothing is written to the home folder. Processes come from ``_process_support``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import conductloop_jupyter as cl
from tests.hub._process_support import Procs, hub_file, request_open, until

# -- the embedded default --------------------------------------------------------------


def test_embedded_hub_serves_other_scripts_and_a_later_one_keeps_the_history(
    procs: Procs, home: Path
) -> None:
    assert not home.exists()
    first = procs.runtime("first")
    first_runtime, first_agent, first_request = first.expect("READY")
    found = until(lambda: hub_file(home), "hub.json of the embedded hub")
    assert found["pid"] == first.pid
    assert (home / "hub.json").stat().st_mode & 0o777 == 0o600

    second = procs.runtime("second")
    second_runtime, second_agent, second_request = second.expect("READY")
    hub = cl.connect(home=home)
    until(
        lambda: request_open(hub, first_request) and request_open(hub, second_request),
        "both requests on the embedded hub",
    )
    assert hub_file(home) == found  # the second script used the first one's hub
    agents = hub.agents()
    assert set(agents["runtime"]) == {first_runtime, second_runtime}
    assert set(agents["agent_id"]) == {first_agent, second_agent}

    assert hub.approve(second_request) is True
    assert second.expect("RESULT") == ["second", "approved"]
    assert second.exit_code() == 0, second.stderr()
    assert hub.approve(first_request) is True
    assert first.expect("RESULT") == ["first", "approved"]
    assert first.exit_code() == 0, first.stderr()
    assert not (home / "hub.json").exists()  # the embedded hub ended with its process

    third = procs.runtime("third")
    _, third_agent, third_request = third.expect("READY")
    found_again = until(lambda: hub_file(home), "hub.json of the new embedded hub")
    assert found_again["pid"] == third.pid
    later = cl.connect(home=home)
    until(lambda: request_open(later, third_request), "the third request")
    history = later.events()
    results = history[history["kind"] == "agent.result"]
    assert set(results["agent_id"]) == {first_agent, second_agent}
    agents = later.agents().set_index("agent_id")
    assert agents.loc[first_agent, "state"] == "done"
    assert agents.loc[second_agent, "state"] == "done"
    assert agents.loc[third_agent, "state"] == "waiting"

    assert later.approve(third_request) is True
    assert third.expect("RESULT") == ["third", "approved"]
    assert third.exit_code() == 0, third.stderr()
    assert not (home / "hub.json").exists()


# -- no hub at all ---------------------------------------------------------------------


def test_hub_off_runs_agents_and_writes_nothing_to_the_home_folder(
    procs: Procs, home: Path, tmp_path: Path
) -> None:
    quick = procs.start(
        "quick", [sys.executable, str(tmp_path / "quick.py")], CONDUCTLOOP_HUB="off"
    )
    assert quick.expect("RESULT") == ["42"]
    assert quick.exit_code() == 0, quick.stderr()
    assert not home.exists()
    assert not (tmp_path / "hub.json").exists()  # nor in its working folder
