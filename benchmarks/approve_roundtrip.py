"""Approve round trip: from sending the approve command to the agent running again.

The hub runs in its own process (``python -m conductloop_jupyter.cli serve``, phone listener
on 127.0.0.1). In this process: a ``Conductor(hub=URL)`` (agents on its own loop thread)
whose agent loops ``await ctx.approve(...)``, and, on a second thread with its own loop, the
approving client. The client sees each ``request.opened`` on a phone WebSocket and approves
it at once, by one of:

- **phone**: a ``command`` on the phone's ``/ws`` (paired devices, cookie and ``Origin``;
  rotated over ten devices so the per-device rate limit, 5 a second, never bites);
- **REST**: ``cl.Hub(...).approve(id)``, the Hub client's ``POST /conductloop/api/commands``;
- **in-process** (for comparison, no hub): ``loop.approve(id)`` from the client's thread.

Round trip = the runtime's sink sees ``agent.state running`` for that agent after the
decision (``now_ns()`` on the conductor's thread) - ``now_ns()`` just before the client
sent the command; one process, one clock. The **baseline** is the same loop against a bare
tornado relay (``_harness.baseline_main``): the producer "opens" on its own thread, the
client answers through the relay, and the producer stamps the arrival: two tornado hops.

    python benchmarks/approve_roundtrip.py [--quick]

Prints a table and a final ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import tempfile
import threading
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from _figures import Figure, print_table
from _harness import (
    BaselineProcess,
    HubProcess,
    machine,
    ms,
    now_ns,
    percentile,
    set_nodelay,
)
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

T = TypeVar("T")
P95_TARGET_MS = 20.0
DEVICES = 10  # the phone rate limit is per device: 5 commands a second, bursts of 20
PACE = 0.03  # seconds the agent works between two approvals (about 30 approvals a second)


class RunningStamps:
    """An event sink: when an agent goes ``running`` after a request was decided, the time
    (``now_ns()``, on the conductor's loop thread) under that request's id."""

    def __init__(self) -> None:
        self.decided: dict[str, str] = {}  # agent id -> the request just decided
        self.running: dict[str, int] = {}  # request id -> when its agent ran again

    def emit(self, event: Any) -> None:
        if event.kind == "request.decided":
            self.decided[event.agent_id] = event.data["request_id"]
        elif event.kind == "agent.state" and event.data.get("state") == "running":
            request_id = self.decided.pop(event.agent_id, None)
            if request_id is not None:
                self.running[request_id] = now_ns()


class ClientThread:
    """A thread running its own event loop: the approving client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


@dataclass
class Result:
    route: str
    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, route: str, samples: list[int]) -> Result:
        return cls(route, len(samples), ms(percentile(samples, 50)), ms(percentile(samples, 95)),
                   ms(percentile(samples, 99)), ms(max(samples)))  # fmt: skip

    def figure(self) -> str:
        return f"{self.p50_ms:.2f} / {self.p95_ms:.2f} / {self.p99_ms:.2f} ms"


# -- the hub routes --------------------------------------------------------------------------


async def phone_socket(hub: HubProcess, device: Any) -> WebSocketClientConnection:
    request = HTTPRequest(f"ws://{hub.phone_host}/ws", headers=hub.phone_headers(device))
    return await websocket_connect(request)


async def approve_all(
    hub: HubProcess, devices: list[Any], runtime: str, prefix: str, n: int,
    approve: Callable[[str], Any],
) -> dict[str, int]:  # fmt: skip
    """Watch a phone socket; approve each of our ``n`` requests as soon as it opens with
    ``approve(request_id)`` (a coroutine or not); return when each was sent."""
    watcher = await phone_socket(hub, devices[0])
    await watcher.write_message(json.dumps({"type": "subscribe", "after": 0}))
    sent: dict[str, int] = {}
    try:
        while len(sent) < n:
            raw = await asyncio.wait_for(watcher.read_message(), 30)
            if raw is None:
                raise ConnectionError("the phone socket closed")
            message = json.loads(raw)
            for event in message.get("events", ()):
                data = event["data"]
                if (event["kind"] == "request.opened" and event["runtime"] == runtime
                        and data["prompt"].startswith(prefix)):  # fmt: skip
                    sent[data["request_id"]] = now_ns()
                    outcome = approve(data["request_id"])
                    if asyncio.iscoroutine(outcome):
                        await outcome
    finally:
        watcher.close()
    return sent


async def phone_route(
    hub: HubProcess, devices: list[Any], runtime: str, n: int, prefix: str = "phone"
) -> dict[str, int]:
    sockets = [await phone_socket(hub, d) for d in devices]
    replies: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def read(ws: WebSocketClientConnection) -> None:
        while (raw := await ws.read_message()) is not None:
            replies.append(json.loads(raw))
            if len(replies) >= n:
                answered.set()

    readers = [asyncio.ensure_future(read(ws)) for ws in sockets]
    turn = itertools.cycle(sockets)

    def approve(request_id: str) -> None:
        command = {"op": "approve", "request_id": request_id}
        next(turn).write_message(json.dumps({"type": "command", "id": request_id,
                                             "command": command}))  # fmt: skip

    try:
        sent = await approve_all(hub, devices, runtime, prefix, n, approve)
        await asyncio.wait_for(answered.wait(), 30)
    finally:
        for ws in sockets:
            ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    refused = [r for r in replies if not (r.get("type") == "reply" and r.get("ok"))]
    if refused:
        raise RuntimeError(f"the hub refused approvals: {refused[:3]}")
    return sent


# -- the baseline: a bare tornado relay --------------------------------------------------------


async def baseline_route(base: BaselineProcess, producer: ClientThread, n: int) -> list[int]:
    """The producer (on its own thread, as the conductor is) broadcasts "opened i" after
    ``PACE``; the client (this loop) answers through the relay; the producer stamps it."""
    arrived: dict[int, int] = {}

    async def produce() -> None:
        ws = await websocket_connect(f"ws://127.0.0.1:{base.port}/producer")
        set_nodelay(ws)
        for i in range(n):
            await asyncio.sleep(PACE)
            await ws.write_message(json.dumps({"opened": i}))
            raw = await asyncio.wait_for(ws.read_message(), 30)
            arrived[i] = now_ns()
            if raw != json.dumps({"approve": i}):
                raise RuntimeError(f"the relay sent {raw!r}")
        ws.close()

    client = await websocket_connect(f"ws://127.0.0.1:{base.port}/ws")
    set_nodelay(client)
    await client.read_message()  # its hello
    done = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(produce(), producer.loop))
    sent: dict[int, int] = {}
    while len(sent) < n:
        raw = await asyncio.wait_for(client.read_message(), 30)
        assert isinstance(raw, str)
        i = json.loads(raw)["opened"]
        sent[i] = now_ns()
        await client.write_message(json.dumps({"approve": i}))
    await done
    client.close()
    return [arrived[i] - sent[i] for i in range(n)]


# -- running it ------------------------------------------------------------------------------


def measure(n: int) -> list[Result]:
    import conductloop_jupyter as cl

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="conductloop-bench-") as tmp:
        hub = HubProcess(Path(tmp) / "home").start()
        client = ClientThread()
        try:
            devices = [hub.pair() for _ in range(DEVICES)]
            for name in ("CONDUCTLOOP_HUB", "CONDUCTLOOP_HUB_SECRET"):
                os.environ.pop(name, None)
            os.environ["CONDUCTLOOP_HOME"] = str(hub.home)  # its hub.json holds the secret
            loop = cl.Conductor("approve-bench", hub=hub.url, stall_after=3600)
            stamps = RunningStamps()
            loop.attach(stamps)

            @loop.agent
            async def asker(ctx: cl.Context, prefix: str, count: int) -> None:
                for i in range(count):
                    await asyncio.sleep(PACE)
                    await ctx.approve(f"{prefix} {i}: go on?")

            rest = cl.Hub(hub.client.address, by="bench")
            routes: dict[str, Callable[[], Coroutine[Any, Any, dict[str, int]]]] = {
                "phone WebSocket": lambda: phone_route(hub, devices, loop.runtime, n),
                "Hub client REST": lambda: approve_all(
                    hub, devices, loop.runtime, "rest", n, rest.approve
                ),
                "in-process loop.approve": lambda: approve_all(
                    hub, devices, loop.runtime, "local", n, loop.approve
                ),
            }
            # a short warm-up (first connections, first calls), not counted
            warm = asyncio.run_coroutine_threadsafe(
                phone_route(hub, devices, loop.runtime, 10, "warm"), client.loop
            )
            loop.start("asker", "warm", 10).result(60)
            warm.result(60)
            for (route, start), prefix in zip(routes.items(), ("phone", "rest", "local"),
                                              strict=True):  # fmt: skip
                sent_future = asyncio.run_coroutine_threadsafe(start(), client.loop)
                run = loop.start("asker", prefix, n)
                sent = sent_future.result(300)
                run.result(60)
                samples = [stamps.running[r] - t for r, t in sent.items()]
                results.append(Result.of(route, samples))
                print(f"  {route:26} p50/p95/p99 {results[-1].figure()}", flush=True)
            loop.close()
        finally:
            hub.stop()
        base = BaselineProcess().start()
        producer = ClientThread()
        try:
            samples = client.run(baseline_route(base, producer, n))
            results.append(Result.of("baseline: bare tornado relay", samples))
            print(f"  {'baseline':26} p50/p95/p99 {results[-1].figure()}", flush=True)
        finally:
            base.stop()
            producer.stop()
            client.stop()
    return results


def report(results: list[Result], quick: bool) -> dict[str, Any]:
    base = results[-1]
    rows: list[Figure] = []
    checks: dict[str, bool] = {}
    for result in results[:-1]:
        gated = result.route != "in-process loop.approve"
        ok = result.p95_ms <= P95_TARGET_MS if gated else None
        if ok is not None:
            checks[f"p95 {result.route}"] = ok
        rows.append(Figure(
            f"approve -> running, {result.route} (p50 / p95 / p99, n={result.n})",
            result.figure(), base.figure() if gated else "",
            target=f"p95 <= {P95_TARGET_MS:g} ms" if gated else "", ok=ok,
        ))  # fmt: skip
    print_table("Approve round trip (loopback; hub in its own process)", rows)
    return {
        "benchmark": "approve_roundtrip",
        "quick": quick,
        "machine": machine(),
        "pass": all(checks.values()),
        "checks": checks,
        "results": [asdict(r) for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer approvals (a smoke test)")
    args = parser.parse_args()
    results = measure(60 if args.quick else 400)
    print("RESULT " + json.dumps(report(results, args.quick)))


if __name__ == "__main__":
    main()
