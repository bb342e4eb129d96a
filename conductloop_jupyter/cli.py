"""The ``conductloop`` command."""

from __future__ import annotations

import argparse
import queue
import sys
from typing import TextIO

from .conductor import Conductor
from .core.events import Event
from .core.view import Request
from .demo import TASKS, build

_SHOWN = {"agent.started", "agent.status", "agent.state", "tool.started", "usage"}


class _QueueSink:
    """Hands events to the terminal thread without blocking the agents' loop."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def emit(self, event: Event) -> None:
        self.queue.put(event)


def _describe(event: Event) -> str | None:
    d = event.data
    text = {
        "agent.started": f"started{' by ' + d['parent'] if d.get('parent') else ''}",
        "agent.status": d.get("text"),
        "agent.state": d.get("state") if d.get("state") != "running" else None,
        "tool.started": f"tool {d.get('tool')} {d.get('args')}",
        "usage": f"{d.get('model')}: {d.get('input_tokens')}+{d.get('output_tokens')} tokens, "
        f"${d.get('cost_usd') or 0:.5f}",
    }.get(event.kind)
    return f"  {event.agent_id:<26} {text}" if text else None


def _prompt(request: Request, out: TextIO) -> str:
    out.write(f"\nNeeds you ({request.kind}) from {request.agent_id}: {request.prompt}\n")
    if request.choices:
        out.write(f"  answer with one of {', '.join(request.choices)} (or r to decline): ")
    else:
        out.write("  a = approve, r = reject: ")
    out.flush()
    return sys.stdin.readline()


def demo(pace: float) -> int:
    loop, llm = build(pace)
    sink = _QueueSink()
    loop.attach(sink)
    out = sys.stdout
    out.write("ConductLoop demo: two tasks, five agents, and three moments that need you.\n")
    out.write("Ctrl-C stops every agent cleanly.\n\n")
    runs = [loop.dispatch(task) for task in TASKS]
    try:
        while not all(run.done() for run in runs):
            try:
                event = sink.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            line = _describe(event) if event.kind in _SHOWN else None
            if line:
                out.write(line + "\n")
            if event.kind == "request.opened":
                request = loop.request(str(event.data["request_id"]))
                while request.open:
                    reply = _prompt(request, out)
                    if not reply:
                        out.write("\nno more input: stopping every agent\n")
                        loop.stop_all(by="terminal")
                        break
                    if not _decide(loop, request, reply.strip()):
                        out.write("  (not one of the options)\n")
                        continue
                    break
    except KeyboardInterrupt:
        out.write(f"\nstopped {loop.stop_all(by='terminal')} agent(s)\n")
    finally:
        loop.close()
    out.write("\nAgents:\n")
    out.write(loop.agents()[["agent_id", "state", "activity", "cost_usd"]].to_string() + "\n")
    out.write(f"\nSpend by model:\n{loop.spend(by='model').to_string()}\n")
    del llm  # the script is allowed to be only partly used when a human declines
    return 0


def _decide(loop: Conductor, request: Request, reply: str) -> bool:
    """Carry out the terminal's reply; ``False`` when it was not a valid one (ask again)."""
    if reply.lower() in ("r", "reject"):
        loop.reject(request.id, by="terminal")
    elif request.kind == "question":
        if not reply or (request.choices is not None and reply not in request.choices):
            return False
        loop.answer(request.id, reply, by="terminal")
    elif reply.lower() in ("a", "approve", "y", "yes"):
        loop.approve(request.id, by="terminal")
    else:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conductloop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="run demonstration agents that need you")
    run_demo.add_argument("--pace", type=float, default=0.4, help="seconds between steps")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.pace)
    return 2  # pragma: no cover - argparse refuses unknown commands first


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
