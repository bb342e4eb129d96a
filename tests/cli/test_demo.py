"""``conductloop demo`` as a user runs it: a real subprocess, answered through stdin."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

DEMO = [sys.executable, "-m", "conductloop_jupyter.cli", "demo", "--pace", "0"]


def _start() -> subprocess.Popen[str]:
    return subprocess.Popen(
        DEMO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _drive(answers: dict[str, str]) -> tuple[str, list[str]]:
    """Run the demo, answering each request by its kind; return the output and the kinds."""
    lines, asked = [], []
    with _start() as process:
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        for line in process.stdout:
            lines.append(line)
            found = re.match(r"Needs you \((\w+)\)", line)
            if found:
                asked.append(found.group(1))
                process.stdin.write(answers[found.group(1)] + "\n")
                process.stdin.flush()
            if line.startswith("The agents are done."):  # it runs until the user quits
                process.stdin.close()
        assert process.wait(timeout=60) == 0, process.stderr.read()
    return "".join(lines), asked


def _states(out: str) -> dict[str, str]:
    table = out.split("Agents:")[1].split("Spend by model:")[0]
    return dict(re.findall(r"(\S+-\d+-[0-9a-f]{6})\s+(\w+)", table))


def test_demo_runs_to_the_end_when_the_human_answers_every_request() -> None:
    out, asked = _drive({"question": "rust", "budget": "a", "approval": "a"})
    assert sorted(asked) == ["approval", "budget", "question"]
    assert "summarize.rs" in out  # the answer reached the agent
    states = _states(out)
    assert len([s for s in states.values() if s == "done"]) == 6
    assert "gpt-4o-mini" in out.split("Spend by model:")[1]


def test_demo_rejecting_the_budget_stops_that_agent_and_the_rest_go_on() -> None:
    out, _ = _drive({"question": "python", "budget": "r", "approval": "a"})
    states = _states(out)
    coder = [s for agent_id, s in states.items() if agent_id.startswith("coder-")]
    assert coder == ["stopped"]
    assert len([s for s in states.values() if s == "done"]) == 5


def test_demo_stops_every_agent_when_input_ends() -> None:
    done = subprocess.run(DEMO, input="", capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "no more input: stopping every agent" in done.stdout
    assert set(_states(done.stdout).values()) <= {"done", "stopped"}


def test_ctrl_c_stops_the_demo_cleanly() -> None:
    with _start() as process:
        assert process.stdout is not None
        for line in process.stdout:  # wait for the first moment that needs a human
            if "Needs you" in line:
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert re.search(r"stopped \d+ agent\(s\)", out)
    assert set(_states(out).values()) <= {"done", "stopped"}
    assert "Traceback" not in err


def test_the_demo_keeps_running_after_its_agents_are_done_until_the_user_quits() -> None:
    answers = {"question": "python", "budget": "a", "approval": "a"}
    with _start() as process:
        assert process.stdin is not None
        assert process.stdout is not None
        for line in process.stdout:
            found = re.match(r"Needs you \((\w+)\)", line)
            if found:
                process.stdin.write(answers[found.group(1)] + "\n")
                process.stdin.flush()
            if line.startswith("The agents are done."):
                break
        assert process.poll() is None  # the phone page stays up: still running
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
