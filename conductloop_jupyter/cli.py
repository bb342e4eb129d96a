"""The ``conductloop`` command."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import queue
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .client import connect
from .core.budgets import usd
from .core.errors import ConductLoopError
from .hub.discovery import resolve_home

# each command imports what it runs (the demo's agents, the hub's server, the QR code):
# ``conductloop --version`` and ``--help`` start at the cost of the package import alone
if TYPE_CHECKING:
    from .conductor import Conductor
    from .core.events import Event
    from .core.view import Request
    from .notebook.phone import PhoneLink

_SHOWN = {"agent.started", "agent.status", "agent.state", "tool.started", "usage"}


class _Inbox:
    """One queue for the terminal thread: the agents' events (this is their sink) and the
    lines typed at the terminal (read on a thread), so neither waits for the other."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def emit(self, event: Event) -> None:
        self.queue.put(("event", event))

    def read_lines(self, stream: TextIO) -> None:
        for line in iter(stream.readline, ""):
            self.queue.put(("line", line.strip()))
        self.queue.put(("eof", None))


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


def _prompt(request: Request, out: TextIO) -> None:
    out.write(f"\nNeeds you ({request.kind}) from {request.agent_id}: {request.prompt}\n")
    if request.choices:
        out.write(f"  answer with one of {', '.join(request.choices)} (or r to decline): ")
    else:
        out.write("  a = approve, r = reject: ")
    out.flush()


def demo(pace: float, phone: bool = True) -> int:
    from .demo import TASKS, build

    loop, _ = build(pace)
    inbox = _Inbox()
    loop.attach(inbox)
    out = sys.stdout
    out.write("ConductLoop demo: two tasks, five agents, and three moments that need you.\n")
    if phone:
        try:
            _print_phone(loop.phone(), out)
            out.write("Answer here, or on your phone: the first answer wins.\n")
        except ConductLoopError as error:
            out.write(f"(no phone page: {error})\n")
    out.write("Ctrl-C stops every agent cleanly.\n\n")
    threading.Thread(target=inbox.read_lines, args=(sys.stdin,), daemon=True).start()
    runs = [loop.dispatch(task) for task in TASKS]
    asking: Request | None = None
    quitting = False
    try:
        while not all(run.done() for run in runs):
            try:
                kind, item = inbox.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "event":
                line = _describe(item) if item.kind in _SHOWN else None
                if line:
                    out.write(line + "\n")
                decided = item.kind == "request.decided"
                if decided and asking is not None and item.data["request_id"] == asking.id:
                    if item.data.get("by") != "terminal":
                        out.write(f"  (decided by {item.data.get('by')})\n")
                    asking = None
            elif kind == "eof":
                out.write("\nno more input: stopping every agent\n")
                loop.stop_all(by="terminal")
                quitting = True
                continue
            elif asking is not None and not _decide(loop, asking, item):
                out.write("  (not one of the options)\n")
                _prompt(asking, out)
            if asking is None or not loop.request(asking.id).open:
                pending = loop.pending()
                asking = pending[0] if pending else None
                if asking is not None:
                    _prompt(asking, out)
    except KeyboardInterrupt:
        out.write(f"\nstopped {loop.stop_all(by='terminal')} agent(s)\n")
        quitting = True
    finally:
        loop.close()
    out.write("\nAgents:\n")
    out.write(loop.agents()[["agent_id", "state", "activity", "cost_usd"]].to_string() + "\n")
    out.write(f"\nSpend by model:\n{loop.spend(by='model').to_string()}\n")
    if not quitting:  # the work is done; the phone page stays up until the user quits
        try:  # Ctrl-C may come as soon as the line is out, even before flush() returns
            out.write("\nThe agents are done. Quit with Ctrl-C (or Ctrl-D).\n")
            out.flush()
            while inbox.queue.get()[0] != "eof":
                pass
        except KeyboardInterrupt:
            pass
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


def _print_phone(link: PhoneLink, out: TextIO) -> None:
    out.write(link.qr_text())
    out.write(f"Scan it, or open {link.url} on your phone (one use, 5 minutes).\n")
    if link.fingerprint:
        out.write(f"Certificate SHA-256: {link.fingerprint}\n")
    if link.note:
        out.write(f"Note: {link.note}\n")
    out.flush()


def serve(
    home: str | None, host: str, port: int, phone: bool = False, phone_host: str | None = None
) -> int:
    """Run a hub in the foreground until SIGINT or SIGTERM."""
    from .hub.server import HubBusy, HubServer
    from .notebook.phone import PhoneLink

    server = HubServer(resolve_home(home), host=host, port=port)
    try:
        address = server.bind()
    except HubBusy as busy:
        print(f"conductloop: {busy}", file=sys.stderr)
        return 1

    async def run() -> None:
        await server.start()
        print(f"conductloop hub at {address.url} (home {server.home}); Ctrl-C stops it", flush=True)
        for pid in server.took_over_from:
            print(f"took the home over from the embedded hub of pid {pid}", flush=True)
        if phone and server.hub is not None and server.hub.phone is not None:
            service = server.hub.phone
            await service.start(phone_host, 0, tls=False)
            url, _, expires = service.pair_url()
            _print_phone(
                PhoneLink(url, expires, service.host, service.port, note=service.note), sys.stdout
            )
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        await stopping.wait()
        await server.stop()

    asyncio.run(run())
    print("conductloop hub stopped", flush=True)
    return 0


def status(home: str | None, as_json: bool) -> int:
    """Print every agent and open request on the hub."""
    try:
        hub = connect(home=home)
        summary, agents, pending = hub.status(), hub.agents(), hub.pending()
    except ConductLoopError as error:
        print(f"conductloop: {error}", file=sys.stderr)
        return 1
    if as_json:
        rows = agents.drop(columns=["started", "ended"]).to_dict(orient="records")
        body = {"hub": hub.address.url, **summary, "agents": rows,
                "pending": [dataclasses.asdict(r) for r in pending]}  # fmt: skip
        print(json.dumps(body, default=str, indent=2))
        return 0
    connected = sum(1 for r in summary["runtimes"] if r["connected"])
    print(f"hub {hub.address.url}: {connected} runtime(s) connected, "
          f"spend {usd(summary['spend_usd'])}")  # fmt: skip
    if agents.empty:
        print("no agents yet")
    else:
        print(agents[["agent_id", "state", "activity", "cost_usd"]].to_string(index=False))
    for request in pending:
        print(f"needs you: {request.id} ({request.kind}) {request.agent_id}: {request.prompt}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conductloop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="run demonstration agents that need you")
    run_demo.add_argument("--pace", type=float, default=0.4, help="seconds between steps")
    run_demo.add_argument("--no-phone", action="store_true", help="do not open the phone page")
    run_serve = commands.add_parser("serve", help="run a hub (without Jupyter)")
    run_serve.add_argument("--home", help="the hub's data folder (default: $CONDUCTLOOP_HOME)")
    run_serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run_serve.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    run_serve.add_argument("--phone", action="store_true", help="open the phone page now")
    run_serve.add_argument("--phone-host", help="address for the phone page (default: LAN)")
    run_status = commands.add_parser("status", help="every agent and open request on the hub")
    run_status.add_argument("--home", help="the hub's data folder (default: $CONDUCTLOOP_HOME)")
    run_status.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.pace, phone=not args.no_phone)
    if args.command == "serve":
        return serve(args.home, args.host, args.port, args.phone, args.phone_host)
    return status(args.home, args.json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
