"""The hub with real processes: ``conductloop serve``, runtimes in scripts, kills and restarts.

Every process here is a real ``python`` subprocess. A test waits for one by reading its
stdout until a marker line, or by polling the hub's REST API in a bounded loop; every
process a test starts is ended by the ``procs`` fixture, whatever happens.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

import conductloop_jupyter as cl

T = TypeVar("T")

CLI = [sys.executable, "-m", "conductloop_jupyter.cli"]

# A runtime as a user writes one: a plain script with a Conductor (hub=None by default).
# argv: NAME STEPS. The agent logs "step 1".."step STEPS" (a checkpoint after each), then
# asks for approval and returns what it was told. The script prints marker lines:
#   MIDWAY                                   the agent has logged a third of its steps
#   READY <runtime> <agent_id> <request_id>  the agent waits for approval
#   RESULT <result>                          the agent returned
#   DONE <runtime> <last seq>                the conductor closed (its events sent)
RUNTIME_SCRIPT = """
import asyncio
import sys

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match

name, steps = sys.argv[1], int(sys.argv[2])
loop = cl.Conductor(name=name)
recorder = EventRecorder()
loop.attach(recorder)


@loop.agent
async def worker(ctx, label, steps):
    for i in range(1, steps + 1):
        ctx.log(f"step {i}")
        await ctx.checkpoint()
        await asyncio.sleep(0.001)  # a stream, not a burst: the hub can die in the middle
    approved = await ctx.approve(f"may {label} finish?")
    return f"{label} {'approved' if approved else 'rejected'}"


run = loop.start("worker", name, steps)
if steps:
    recorder.wait_for_sync(match("log", message=f"step {max(steps // 3, 1)}"), timeout=60)
    print("MIDWAY", flush=True)
opened = recorder.wait_for_sync(match("request.opened", agent_id=run.agent_id), timeout=90)
print("READY", loop.runtime, run.agent_id, opened.data["request_id"], flush=True)
print("RESULT", run.result(timeout=90), flush=True)
loop.close()
print("DONE", loop.runtime, max(e.seq for e in recorder.events), flush=True)
"""

# A runtime that runs one agent to the end with no human in the loop.
QUICK_SCRIPT = """
import conductloop_jupyter as cl

loop = cl.Conductor(name="offline")


@loop.agent
async def worker(ctx, n):
    ctx.status("counting")
    ctx.log("counted")
    await ctx.checkpoint()
    return n * 2


print("RESULT", loop.run("worker", 21), flush=True)
loop.close()
"""


# -- helpers ---------------------------------------------------------------------------


def pause(seconds: float) -> None:
    """A short bounded wait between polls of another process (never on an event loop)."""
    threading.Event().wait(seconds)


def until(check: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Poll ``check`` until it returns something truthy (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        pause(0.05)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Proc:
    """A subprocess whose stdout is read line by line with a deadline (no thread, no sleep)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.stderr_path = logs / f"{name}.stderr"
        self._stderr: IO[bytes] = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in end()
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._stderr, env=env, cwd=logs
        )
        self.lines: list[str] = []
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def _explain(self, why: str) -> str:
        out = "".join(f"  {line}\n" for line in self.lines[-20:])
        return f"{self.name}: {why}\nstdout (last lines):\n{out}stderr:\n{self.stderr()[-4000:]}"

    def _next_line(self, deadline: float) -> str:
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(self._explain("no line in time"))
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(self._explain(f"stdout closed (exit {self.popen.wait(5)})"))
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n", 1)
        line = raw.decode()
        self.lines.append(line)
        return line

    def expect(self, marker: str, timeout: float = 30.0) -> list[str]:
        """Read lines until one starts with ``marker``; its words after the marker."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline)
            if line.startswith(marker):
                return line[len(marker) :].split()

    def exit_code(self, timeout: float = 30.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(self._explain(f"still running after {timeout:g} s")) from None

    def end(self) -> None:
        """Stop the process if it still runs (TERM, then KILL), reap it, close its pipes."""
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGCONT)  # a stopped process cannot die of TERM
                self.popen.terminate()
                try:
                    self.popen.wait(10)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(10)
        finally:
            assert self.popen.stdout is not None
            self.popen.stdout.close()
            self._stderr.close()


class Procs:
    def __init__(self, tmp_path: Path, home: Path) -> None:
        self.dir = tmp_path
        self.home = home
        self.started: list[Proc] = []
        (tmp_path / "runtime.py").write_text(RUNTIME_SCRIPT)
        (tmp_path / "quick.py").write_text(QUICK_SCRIPT)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTLOOP_HUB")}
        return env | {"CONDUCTLOOP_HOME": str(self.home), "PYTHONUNBUFFERED": "1"} | extra

    def start(self, name: str, args: list[str], **extra_env: str) -> Proc:
        proc = Proc(name, args, self.env(**extra_env), self.dir)
        self.started.append(proc)
        return proc

    def serve(self, port: int, name: str = "hub") -> tuple[Proc, str]:
        """``conductloop serve`` on this home and port, once it says where it listens."""
        hub = self.start(name, [*CLI, "serve", "--home", str(self.home), "--port", str(port)])
        words = hub.expect("conductloop hub at", timeout=30)
        return hub, words[0]

    def runtime(self, name: str, steps: int = 0, **extra_env: str) -> Proc:
        script = str(self.dir / "runtime.py")
        return self.start(
            f"runtime-{name}", [sys.executable, script, name, str(steps)], **extra_env
        )

    def end_all(self) -> None:
        errors: list[BaseException] = []
        for proc in reversed(self.started):
            try:
                proc.end()
            except BaseException as error:  # end every one, then report
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
def home(own_home: Path) -> Path:
    return own_home


@pytest.fixture
def procs(tmp_path: Path, home: Path) -> Iterator[Procs]:
    started = Procs(tmp_path, home)
    try:
        yield started
    finally:
        started.end_all()


def hub_file(home: Path) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads((home / "hub.json").read_text())
    except (OSError, ValueError):
        return None
    return found


def state_of(hub: cl.Hub, agent_id: str) -> str | None:
    agents = hub.agents()
    states = agents.loc[agents["agent_id"] == agent_id, "state"].tolist()
    return str(states[0]) if states else None


def request_open(hub: cl.Hub, request_id: str) -> bool:
    return any(r.id == request_id for r in hub.pending())


def store_rows(home: Path, sql: str, *params: Any) -> list[Any]:
    """Read the hub's SQLite file directly, read-only."""
    conn = sqlite3.connect(f"file:{home / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- 1. conductloop serve --------------------------------------------------------------


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


# -- 2. two runtimes on one hub --------------------------------------------------------


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


# -- 3. the hub killed mid-stream and served again --------------------------------------


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

    # Freeze the runtime for the restart: a runtime with hub=None that finds no hub starts
    # an embedded one on this home at once, and `conductloop serve` would then be refused.
    runtime.popen.send_signal(signal.SIGSTOP)
    try:
        first_hub.popen.kill()
        assert first_hub.exit_code() == -signal.SIGKILL
        assert (hub_file(home) or {}).get("pid") == first_hub.pid  # left behind

        second_hub, second_url = procs.serve(port, name="hub-2")
        assert second_url == url
        until(lambda: (hub_file(home) or {}).get("pid") == second_hub.pid, "the new hub.json")
        (kept,) = store_rows(home, "SELECT COUNT(*) FROM events WHERE kind = 'log'")
        assert 0 < kept[0] < steps  # the hub died in the middle of the stream
    finally:
        runtime.popen.send_signal(signal.SIGCONT)

    stream_runtime, agent_id, request_id = runtime.expect("READY", timeout=60)
    hub = cl.connect(home=home)
    until(lambda: request_open(hub, request_id), "the request on the restarted hub", 30)
    assert hub.approve(request_id) is True
    assert runtime.expect("RESULT") == ["stream", "approved"]
    last_seq = int(runtime.expect("DONE")[1])
    assert runtime.exit_code() == 0, runtime.stderr()
    until(lambda: state_of(hub, agent_id) == "done", "the agent done on the hub")

    rows = store_rows(home, "SELECT seq FROM events WHERE runtime = ? ORDER BY seq", stream_runtime)
    seqs = [seq for (seq,) in rows]
    assert len(seqs) == last_seq
    assert seqs == list(range(1, last_seq + 1))  # no gap, no duplicate
    messages = [
        json.loads(data)["message"]
        for (data,) in store_rows(
            home, "SELECT data FROM events WHERE runtime = ? AND kind = 'log'", stream_runtime
        )
    ]
    assert sorted(messages) == sorted(f"step {i}" for i in range(1, steps + 1))
    assert not store_rows(home, "SELECT 1 FROM events WHERE kind = 'gap'")

    everything = hub.events()  # the hub's API tells the same story
    seen = everything[everything["runtime"] == stream_runtime]
    assert sorted(seen["seq"]) == list(range(1, last_seq + 1))
    assert (seen["kind"] == "log").sum() == steps
    states = [data["state"] for data in seen.loc[seen["kind"] == "agent.state", "data"]]
    assert "lost" not in states


# -- 4. a runtime killed while its agent waits -----------------------------------------


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
    killed = time.monotonic()
    until(lambda: state_of(hub, agent_id) == "lost", "the agent lost", 15)
    assert time.monotonic() - killed < 8  # lost_after is 3 s
    assert not request_open(hub, request_id)

    decided = hub.events(agent_id=agent_id)
    withdrawn = list(decided.loc[decided["kind"] == "request.decided", "data"])
    assert withdrawn == [{"request_id": request_id, "decision": "withdrawn", "by": "hub"}]
    assert hub.approve(request_id) is False  # decided (withdrawn): first answer wins


# -- 5. the embedded default -----------------------------------------------------------


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


# -- 6. no hub at all ------------------------------------------------------------------


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
