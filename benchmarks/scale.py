"""Scale: 10,000 agents alive in one runtime, and 100,000 children through ``ctx.parallel``.

Each case runs in a fresh process of its own (this script with ``--case``), so that memory
freed by one case is not reused by the next and ``ru_maxrss`` is that case's peak:

- **agents**: ``loop.start`` 10,000 times from the loop's own thread (an ``async def main``
  under ``asyncio.run``, so the Conductor binds to that loop); each agent counts itself as
  running and then awaits an ``asyncio.Event``. Measured: the time until every one is
  running, and RSS per agent (``gc.collect()``, then RSS before and after, over 10,000);
  with the embedded hub, after the hub has acknowledged every event. Once with ``hub=False``
  and once with the embedded hub (``$CONDUCTLOOP_HOME`` a temporary folder), which lives in
  the same process and so is counted too. Baseline: 10,000 bare asyncio tasks awaiting an
  Event, measured the same way.
- **children**: one agent runs ``await ctx.parallel([("child", i) for i in range(100_000)],
  limit=100)`` of a child that returns its argument. Measured: the time, and peak RSS
  (sampled every 2 ms) above the RSS before. Baseline: 100 asyncio workers taking the same
  100,000 calls from a shared iterator, each a task of a bare coroutine (what ``limit``
  does, without the bookkeeping).

    python benchmarks/scale.py [--quick]

Prints a table and a final ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]
from _figures import Figure, load_average, print_table
from _harness import child_env, machine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

AGENTS = 10_000
CHILDREN = 100_000
LIMIT = 100
START_WITHIN_S = 2.0
MAX_BYTES_PER_AGENT = 10 * 1024


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


class PeakRss:
    """The highest RSS seen while it runs (sampled every 2 ms by a thread)."""

    def __init__(self) -> None:
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._done.wait(0.002):
            self.peak = max(self.peak, process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)


# -- the cases, each in its own process ---------------------------------------------------


async def agents_case(n: int, hub: str) -> dict[str, Any]:
    """``n`` agents (or bare tasks) alive at once, each awaiting an Event."""
    import conductloop_jupyter as cl

    release = asyncio.Event()
    running = 0
    everyone = asyncio.Event()

    async def idle() -> None:
        nonlocal running
        running += 1
        if running == n:
            everyone.set()
        await release.wait()

    async def agent(ctx: cl.Context) -> None:
        await idle()

    loop = None
    if hub != "asyncio":
        loop = cl.Conductor(name="scale", hub=False if hub == "none" else None)
        loop.agent(agent)
        release.set()
        await loop.start("agent")  # warm-up: binds to this loop; with a hub, connects
        running = 0
        release = asyncio.Event()
        if loop.link is not None:
            await loop.link.drain(60)
    before = rss()
    started = time.perf_counter()
    if loop is None:
        tasks = [asyncio.ensure_future(idle()) for _ in range(n)]
    else:
        runs = [loop.start("agent") for _ in range(n)]
    calls = time.perf_counter() - started
    await everyone.wait()
    all_running = time.perf_counter() - started
    flushed = None
    if loop is not None and loop.link is not None:
        if not await loop.link.drain(120):
            raise RuntimeError("the hub did not acknowledge every event within 120 s")
        flushed = time.perf_counter() - started
    after = rss()
    alive = n
    if loop is not None:
        alive = sum(run.state is cl.AgentState.RUNNING for run in runs)
    release.set()
    if loop is None:
        await asyncio.gather(*tasks)
    else:
        await asyncio.gather(*runs)
        await loop.aclose()
    return {
        "n": n,
        "start_calls_s": calls,
        "all_running_s": all_running,
        "flushed_s": flushed,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_agent": (after - before) / n,
        "alive": alive,
    }


async def children_case(n: int, hub: str) -> dict[str, Any]:
    """``n`` children, at most ``LIMIT`` at a time (or the bare asyncio worker pool)."""
    import conductloop_jupyter as cl

    async def child(ctx: cl.Context, i: int) -> int:
        return i

    async def parent(ctx: cl.Context, n: int) -> list[int]:
        return await ctx.parallel([("child", i) for i in range(n)], limit=LIMIT)

    async def bare(i: int) -> int:
        return i

    async def pool(n: int) -> list[int]:
        results = [0] * n
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                results[i] = await asyncio.ensure_future(bare(i))  # a task each, as a child

        await asyncio.gather(*(worker() for _ in range(LIMIT)))
        return results

    loop = None
    if hub != "asyncio":
        loop = cl.Conductor(name="scale", hub=False if hub == "none" else None)
        loop.agent(child)
        loop.agent(parent)
        await loop.start("parent", 10)  # warm-up; with a hub, connects
        if loop.link is not None:
            await loop.link.drain(60)
    before = rss()
    with PeakRss() as sampled:
        started = time.perf_counter()
        results = await (pool(n) if loop is None else loop.start("parent", n))
        elapsed = time.perf_counter() - started
        flushed = None
        if loop is not None and loop.link is not None:
            if not await loop.link.drain(300):
                raise RuntimeError("the hub did not acknowledge every event within 300 s")
            flushed = time.perf_counter() - started
    peak = sampled.peak
    dropped = 0
    if loop is not None:
        dropped = loop.link.dropped if loop.link is not None else 0
        await loop.aclose()
    return {
        "n": n,
        "seconds": elapsed,
        "flushed_s": flushed,
        "rss_before": before,
        "peak_rss": peak,
        "peak_above_before": peak - before,
        "in_order": results == list(range(n)),
        "dropped": dropped,  # events the link's full buffer dropped before the hub had them
    }


def run_case(case: str, hub: str, n: int, home: Path) -> dict[str, Any]:
    """One case in a fresh process (this script with ``--case``); its JSON result."""
    env = child_env(home)
    out = subprocess.run(
        [sys.executable, __file__, "--case", case, "--hub", hub, "--n", str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"case {case}/{hub} failed:\n{out.stderr}")
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


# -- the report -------------------------------------------------------------------------------


def kb(n: float) -> str:
    return f"{n / 1024:,.1f} KB"


def mb(n: float) -> str:
    return f"{n / 1024 / 1024:,.1f} MB"


def report(quick: bool, agents: dict[str, Any], children: dict[str, Any]) -> dict[str, Any]:
    base = agents["asyncio"]
    rows: list[Figure] = [
        Figure(
            f"{base['n']:,} bare asyncio tasks: all running / RSS each",
            f"{base['all_running_s']:.3f} s / {kb(base['bytes_per_agent'])}",
        )
    ]
    checks: dict[str, bool] = {}
    for hub, label in (("none", "hub=False"), ("embedded", "embedded hub")):
        found = agents[hub]
        n = found["n"]
        start_ok = found["all_running_s"] <= START_WITHIN_S * n / AGENTS and found["alive"] == n
        bytes_ok = found["bytes_per_agent"] <= MAX_BYTES_PER_AGENT
        checks[f"start_{hub}"], checks[f"rss_{hub}"] = start_ok, bytes_ok
        flushed = f", stored {found['flushed_s']:.2f} s" if found["flushed_s"] else ""
        rows += [
            Figure(
                f"{n:,} agents, {label}: all running ({found['alive']:,} alive)",
                f"{found['all_running_s']:.3f} s{flushed}",
                f"{base['all_running_s']:.3f} s",
                f"x{found['all_running_s'] / base['all_running_s']:.0f}",
                f"<= {START_WITHIN_S * n / AGENTS:g} s",
                start_ok,
            ),
            Figure(
                f"  RSS per agent, {label}",
                kb(found["bytes_per_agent"]),
                kb(base["bytes_per_agent"]),
                f"x{found['bytes_per_agent'] / base['bytes_per_agent']:.1f}",
                f"<= {kb(MAX_BYTES_PER_AGENT)}",
                bytes_ok,
            ),
        ]
    bare = children["asyncio"]
    rows.append(
        Figure(
            f"{bare['n']:,} bare coroutines, {LIMIT} workers: time / peak RSS above start",
            f"{bare['seconds']:.2f} s / {mb(bare['peak_above_before'])}",
        )
    )
    for hub, label in (("none", "hub=False"), ("embedded", "embedded hub")):
        found = children[hub]
        checks[f"children_{hub}"] = found["in_order"] and not found["dropped"]
        flushed = f", stored {found['flushed_s']:.2f} s" if found["flushed_s"] else ""
        if found["dropped"]:
            flushed += f", {found['dropped']:,} events dropped"
        rows += [
            Figure(
                f"{found['n']:,} children, parallel(limit={LIMIT}), {label}",
                f"{found['seconds']:.2f} s ({found['seconds'] / found['n'] * 1e6:.0f} us each)"
                + flushed,
                f"{bare['seconds']:.2f} s",
                f"x{found['seconds'] / bare['seconds']:.0f}",
                "all done, in order",
                checks[f"children_{hub}"],
            ),
            Figure(
                f"  peak RSS above start, {label}",
                f"{mb(found['peak_above_before'])} (peak {mb(found['peak_rss'])})",
                mb(bare["peak_above_before"]),
            ),
        ]
    print_table("Scale: agents alive in one runtime, and children through ctx.parallel", rows)
    load = load_average()
    return {
        "benchmark": "scale",
        "quick": quick,
        "machine": machine(),
        "load_average": load,
        "pass": all(checks.values()),
        "checks": checks,
        "agents": agents,
        "children": children,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer children (a smoke test)")
    parser.add_argument("--case", choices=["agents", "children"], help=argparse.SUPPRESS)
    parser.add_argument("--hub", choices=["asyncio", "none", "embedded"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        case = agents_case if args.case == "agents" else children_case
        print(json.dumps(asyncio.run(case(args.n, args.hub))))
        return
    children_n = 10_000 if args.quick else CHILDREN
    agents: dict[str, Any] = {}
    children: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="conductloop-scale-") as folder:
        for hub in ("asyncio", "none", "embedded"):
            home = Path(folder) / f"home-{hub}"
            agents[hub] = run_case("agents", hub, AGENTS, home / "agents")
            children[hub] = run_case("children", hub, children_n, home / "children")
    result = report(args.quick, agents, children)
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
