"""Real processes for the hub's process tests: scripts, ``conductloop serve``, and reading them.

Every process is a real ``python`` subprocess (``Proc``), started through ``Procs`` (the
``procs`` fixture of conftest ends each one, whatever happens). A test waits for one by
reading its stdout until a marker line (``Proc.expect``), or by polling the hub's REST API
or files in a bounded loop (``until``).
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
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

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


def assert_every_event_once(home: Path, runtime: str, last_seq: int, steps: int) -> None:
    """The store holds the runtime's events 1..``last_seq``, each once, its ``steps`` logs
    all there, no ``gap``, and its agent ended ``done``, never ``lost`` on the way (read
    from the file itself)."""
    rows = store_rows(home, "SELECT seq FROM events WHERE runtime = ? ORDER BY seq", runtime)
    assert [seq for (seq,) in rows] == list(range(1, last_seq + 1))  # no gap, no duplicate
    logs = store_rows(home, "SELECT data FROM events WHERE runtime = ? AND kind = 'log'", runtime)
    messages = sorted(json.loads(data)["message"] for (data,) in logs)
    assert messages == sorted(f"step {i}" for i in range(1, steps + 1))
    assert not store_rows(home, "SELECT 1 FROM events WHERE runtime = ? AND kind = 'gap'", runtime)
    states = store_rows(
        home,
        "SELECT data FROM events WHERE runtime = ? AND kind = 'agent.state' ORDER BY id",
        runtime,
    )
    assert [json.loads(data)["state"] for (data,) in states][-1:] == ["done"]
    lost = store_rows(
        home, "SELECT data FROM events WHERE kind = 'agent.state' AND data LIKE ?", '%"lost"%'
    )
    assert not lost, lost


def store_rows(home: Path, sql: str, *params: Any) -> list[Any]:
    """Read the hub's SQLite file directly, read-only."""
    conn = sqlite3.connect(f"file:{home / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
