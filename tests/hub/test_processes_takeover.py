"""One hub per home, and it stays put: the takeover and restart rules with real processes.

- ``conductloop serve`` killed with SIGKILL and served again (on another port) while two
  runtimes stream: they wait for it (no embedded hub in between) and replay to it;
- killed for longer than the grace: a runtime embeds a hub, and the served hub started
  later takes the home back;
- a script's embedded hub, then ``conductloop serve`` or a Jupyter server: the long-lived
  hub takes over while runtimes stream;
- two runtimes racing to start an embedded hub: one wins, the other uses it.

Each checks, in the SQLite file itself, that every event arrived exactly once and no agent
was marked lost, and steers every agent afterwards. Processes come from ``_process_support``.
"""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

import conductloop_jupyter as cl
from tests.hub._process_support import (
    Proc,
    Procs,
    assert_every_event_once,
    free_port,
    hub_file,
    request_open,
    until,
)

STEPS = 3000


def streaming(procs: Procs, *names: str, **env: str) -> list[Proc]:
    """Runtimes that each log ``STEPS`` steps, once every one of them is a third through."""
    runtimes = [procs.runtime(name, STEPS, **env) for name in names]
    for runtime in runtimes:
        runtime.expect("MIDWAY", timeout=60)
    return runtimes


def approve_all(hub: cl.Hub, runtimes: list[Proc], home: Path) -> None:
    """Approve each runtime's request on ``hub``; each finishes with every event stored once."""
    ready = [runtime.expect("READY", timeout=90) for runtime in runtimes]
    for (runtime_id, _, request_id), runtime in zip(ready, runtimes, strict=True):
        until(lambda r=request_id: request_open(hub, r), f"request {request_id} on the hub", 30)
        until(lambda r=runtime_id: linked(hub.status(), r), f"{runtime_id} linked to the hub", 30)
        assert hub.approve(request_id) is True
        assert runtime.expect("RESULT")[1] == "approved"
    for (runtime_id, _, _), runtime in zip(ready, runtimes, strict=True):
        last_seq = int(runtime.expect("DONE")[1])
        assert runtime.exit_code() == 0, runtime.stderr()
        assert_every_event_once(home, runtime_id, last_seq, STEPS)


def test_serve_killed_and_served_again_on_another_port_while_two_runtimes_stream(
    procs: Procs, home: Path
) -> None:
    first_hub, _ = procs.serve(free_port(), name="hub-1")
    runtimes = streaming(procs, "a", "b")
    first_hub.popen.kill()
    assert first_hub.exit_code() == -signal.SIGKILL
    assert (hub_file(home) or {}).get("pid") == first_hub.pid  # left behind, and waited for

    second_hub, url = procs.serve(free_port(), name="hub-2")
    assert not any(line.startswith("took the home over") for line in second_hub.lines)
    found = until(lambda: hub_file(home), "hub.json")
    assert (found["pid"], found["url"], found["kind"]) == (second_hub.pid, url, "serve")
    approve_all(cl.connect(home=home), runtimes, home)
    assert (hub_file(home) or {}).get("pid") == second_hub.pid  # nobody took the home


def test_serve_gone_longer_than_the_grace_a_runtime_embeds_and_serve_takes_the_home_back(
    procs: Procs, home: Path
) -> None:
    first_hub, _ = procs.serve(free_port(), name="hub-1")
    runtimes = streaming(procs, "a", "b", CONDUCTLOOP_HUB_GRACE="0.5")
    first_hub.popen.kill()
    assert first_hub.exit_code() == -signal.SIGKILL
    embedded = until(
        lambda: (f := hub_file(home)) and f["kind"] == "embedded" and f, "an embedded hub"
    )
    assert embedded["pid"] in {runtime.pid for runtime in runtimes}

    second_hub, _ = procs.serve(free_port(), name="hub-2")
    assert second_hub.expect("took the home over") == [
        "from", "the", "embedded", "hub", "of", "pid", str(embedded["pid"])
    ]  # fmt: skip
    assert until(lambda: hub_file(home), "hub.json")["pid"] == second_hub.pid
    approve_all(cl.connect(home=home), runtimes, home)


def test_serve_takes_over_from_a_scripts_embedded_hub_while_runtimes_stream(
    procs: Procs, home: Path
) -> None:
    runtimes = streaming(procs, "host", "guest")  # the first one's embedded hub serves both
    embedded = until(lambda: hub_file(home), "the embedded hub's hub.json")
    assert embedded["kind"] == "embedded"
    assert embedded["pid"] in {runtime.pid for runtime in runtimes}

    served, url = procs.serve(free_port())
    assert served.expect("took the home over")[-1] == str(embedded["pid"])
    found = until(lambda: hub_file(home), "hub.json")
    assert (found["pid"], found["url"], found["kind"]) == (served.pid, url, "serve")
    approve_all(cl.connect(home=home), runtimes, home)
    assert (hub_file(home) or {}).get("pid") == served.pid  # the script left it alone


def test_a_jupyter_server_takes_over_from_a_scripts_embedded_hub(
    procs: Procs, home: Path, tmp_path: Path
) -> None:
    (runtime,) = streaming(procs, "script")
    assert (hub_file(home) or {}).get("pid") == runtime.pid
    port, token = free_port(), "takeover-token"
    jupyter = procs.start(
        "jupyter",
        [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
            f"--port={port}", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
        ],
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/conductloop/api"
    found = until(lambda: (f := hub_file(home)) and f["kind"] == "jupyter" and f, "Jupyter's hub")
    assert found["pid"] == jupyter.pid

    runtime_id, agent_id, request_id = runtime.expect("READY", timeout=90)

    def pending() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = lab(f"{api}/pending", token)["pending"]
        return items

    until(lambda: any(r["id"] == request_id for r in pending()), "the request in Lab")
    until(lambda: linked(lab(f"{api}/status", token), runtime_id), "the script linked to Lab")
    answer = lab(f"{api}/commands", token, {"op": "approve", "request_id": request_id})
    assert answer == {"ok": True, "result": True}
    assert runtime.expect("RESULT") == ["script", "approved"]
    last_seq = int(runtime.expect("DONE")[1])
    assert runtime.exit_code() == 0, runtime.stderr()
    rows = lab(f"{api}/agents", token)["agents"]
    assert [(a["agent_id"], a["state"]) for a in rows] == [(agent_id, "done")]
    assert_every_event_once(home, runtime_id, last_seq, STEPS)
    assert "took the home over from the embedded hub" in jupyter.stderr()


def test_two_runtimes_racing_to_start_an_embedded_hub_share_the_one_that_wins(
    procs: Procs, home: Path
) -> None:
    runtimes = streaming(procs, "left", "right")  # started together, no hub yet
    found = until(lambda: hub_file(home), "the winner's hub.json")
    assert found["kind"] == "embedded"
    winner = next(r for r in runtimes if r.pid == found["pid"])
    hub = cl.connect(home=home)
    status = hub.status()
    assert len(status["runtimes"]) == 2  # the loser is linked to the winner's hub
    approve_all(hub, [r for r in runtimes if r is not winner] + [winner], home)
    assert "Traceback" not in "".join(r.stderr() for r in runtimes)


def linked(status: dict[str, Any], runtime_id: str) -> bool:
    """Whether the hub's status shows ``runtime_id`` connected (it can be steered)."""
    return any(r["runtime"] == runtime_id and r["connected"] for r in status["runtimes"])


def lab(url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    """A request to the Jupyter server's API with its token (no XSRF needed with a token)."""
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
