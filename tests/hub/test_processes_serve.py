"""``conductloop serve`` as its own process: hub.json, ``conductloop status``, two runtimes.

The served hub announces itself in hub.json (mode 600), answers ``conductloop status``,
refuses a second hub on its home and cleans up on SIGTERM; runtime scripts find it and
each approval resumes the right agent. Processes come from ``_process_support``.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import conductloop_jupyter as cl
from tests.hub._process_support import (
    CLI,
    Procs,
    free_port,
    hub_file,
    request_open,
    state_of,
    until,
)

# -- conductloop serve -----------------------------------------------------------------


def test_serve_announces_itself_in_hub_json_refuses_a_second_hub_and_cleans_up_on_sigterm(
    procs: Procs, home: Path
) -> None:
    port = free_port()
    hub, url = procs.serve(port)
    assert url == f"http://127.0.0.1:{port}"

    found = until(lambda: hub_file(home), "hub.json")
    assert found["url"] == url
    assert found["pid"] == hub.pid
    assert len(found["secret"]) >= 40
    assert (home / "hub.json").stat().st_mode & 0o777 == 0o600

    env = procs.env()
    status = subprocess.run(
        [*CLI, "status"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert status.returncode == 0, status.stderr
    assert f"hub {url}: 0 runtime(s) connected" in status.stdout
    assert "no agents yet" in status.stdout

    as_json = subprocess.run(
        [*CLI, "status", "--json"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["hub"] == url
    assert body["agents"] == []
    assert body["pending"] == []

    second = subprocess.run(
        [*CLI, "serve", "--home", str(home), "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    assert f"another hub already serves {home} at {url} (pid {hub.pid})" in second.stderr
    assert hub_file(home) == found  # the refused hub did not touch the running one's file

    hub.popen.send_signal(signal.SIGTERM)
    assert hub.expect("conductloop hub stopped") == []
    assert hub.exit_code() == 0
    assert not (home / "hub.json").exists()
    assert "Traceback" not in hub.stderr()


# -- two runtimes on one hub -----------------------------------------------------------


def test_two_runtimes_find_the_served_hub_and_each_approval_resumes_the_right_agent(
    procs: Procs, home: Path
) -> None:
    _, url = procs.serve(free_port())
    alpha = procs.runtime("alpha")
    beta = procs.runtime("beta")
    alpha_runtime, alpha_agent, alpha_request = alpha.expect("READY")
    beta_runtime, beta_agent, beta_request = beta.expect("READY")
    assert alpha_runtime != beta_runtime

    hub = cl.connect(home=home)
    assert hub.address.url == url
    until(
        lambda: request_open(hub, alpha_request) and request_open(hub, beta_request),
        "both requests on the hub",
    )
    agents = hub.agents().set_index("agent_id")
    assert agents.loc[alpha_agent, "state"] == "waiting"
    assert agents.loc[beta_agent, "state"] == "waiting"
    assert agents.loc[alpha_agent, "runtime"] == alpha_runtime
    assert agents.loc[beta_agent, "runtime"] == beta_runtime
    runtimes = {r["runtime"]: r for r in hub.status()["runtimes"]}
    assert runtimes[alpha_runtime]["pid"] == alpha.pid
    assert runtimes[beta_runtime]["pid"] == beta.pid

    assert hub.approve(beta_request) is True
    assert beta.expect("RESULT") == ["beta", "approved"]
    assert beta.exit_code() == 0, beta.stderr()
    assert request_open(hub, alpha_request)  # the other runtime's agent still waits
    assert alpha.popen.poll() is None

    assert hub.reject(alpha_request) is True
    assert alpha.expect("RESULT") == ["alpha", "rejected"]
    assert alpha.exit_code() == 0, alpha.stderr()

    until(
        lambda: state_of(hub, alpha_agent) == state_of(hub, beta_agent) == "done",
        "both agents done on the hub",
    )
    assert hub.pending() == []
