"""Agent step: what one ``ctx.log(...)`` + ``await ctx.checkpoint()`` costs an agent.

Measured in one run, on this machine:

- **bare asyncio**: ``out.append(i); await asyncio.sleep(0)``, the floor of a step that
  yields to the loop;
- **ConductLoop**, the default set-up: ``Conductor()`` with ``$CONDUCTLOOP_HOME`` a temporary
  folder and no ``$CONDUCTLOOP_HUB``, so it starts an embedded hub that stores every event in
  SQLite. The agent times its own loop (the *step*); the run also times start to the moment
  the hub has acknowledged every event as committed (*end to end*, flush included). Then the
  hub is asked how many events it holds (``cl.connect(home=...).status()["last_id"]``) and
  the SQLite file is counted: proof that persistence happened;
- ConductLoop with ``hub=False`` (nothing leaves the process) and with the hub in its own
  process (``conductloop serve``, as in Jupyter, where the hub runs in the server), for scale;
- the hub's ``EventStore`` alone, committing as many ``log`` events: what persisting an
  event costs by itself (the embedded hub's writer thread shares the GIL with the agents);
- **LangGraph**: a one-node ``StateGraph`` whose node appends to a list in the state and
  loops back to itself N times (``invoke`` once per run, sync: LangGraph's cheaper path),
  without a checkpointer and with ``SqliteSaver`` on a temporary file.

Each figure is the median of several repetitions after a warm-up; repetitions of the
asyncio baseline and the ConductLoop variants are interleaved so that load from elsewhere on
the machine hits them alike.

    python benchmarks/agent_step.py [--quick]

Prints a table and a final ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import operator
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, TypedDict

import psutil  # type: ignore[import-untyped, unused-ignore]
from _figures import Figure, load_average, median, print_table, us
from _harness import HubProcess, machine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import conductloop_jupyter as cl  # noqa: E402

MAX_VS_ASYNCIO = 5.0  # a step costs at most 5x a bare asyncio step
MIN_VS_LANGGRAPH = 20.0  # and at least 20x less than a LangGraph node step


# -- the two sides ----------------------------------------------------------------------------


async def stepper(ctx: cl.Context, steps: int) -> float:
    """The agent: log a line and pass a checkpoint, ``steps`` times; its own loop's time."""
    started = time.perf_counter()
    for _ in range(steps):
        ctx.log("step")
        await ctx.checkpoint()
    return time.perf_counter() - started


async def bare_asyncio(steps: int) -> float:
    out: list[int] = []
    started = time.perf_counter()
    for i in range(steps):
        out.append(i)
        await asyncio.sleep(0)
    return time.perf_counter() - started


class State(TypedDict):
    items: Annotated[list[int], operator.add]


def langgraph_loop(steps: int, checkpointer: Any = None) -> Any:
    """One node that appends to ``items`` and loops back to itself until it has ``steps``."""
    from langgraph.graph import END, START, StateGraph

    def step(state: State) -> dict[str, list[int]]:
        return {"items": [len(state["items"])]}

    graph = StateGraph(State)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", lambda s: END if len(s["items"]) >= steps else "step")
    return graph.compile(checkpointer=checkpointer)


def langgraph_single() -> Any:
    """The same node, once: ``invoke`` per step."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(State)
    graph.add_node("step", lambda s: {"items": [len(s["items"])]})
    graph.add_edge(START, "step")
    graph.add_edge("step", END)
    return graph.compile()


# -- measuring ConductLoop --------------------------------------------------------------------


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of each thread of this process, by thread name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    found: dict[str, float] = defaultdict(float)
    for t in psutil.Process().threads():
        found[names.get(t.id, "other")] += t.user_time + t.system_time
    return found


async def timed_run(loop: cl.Conductor, steps: int) -> tuple[float, float]:
    """(the agent's own time, start to every event acknowledged as committed)."""
    started = time.perf_counter()
    inside = await loop.start("stepper", steps)
    if loop.link is not None and not await loop.link.drain(300):
        raise RuntimeError("the hub did not acknowledge every event within 300 s")
    return inside, time.perf_counter() - started


async def measure_conductloop(steps: int, reps: int, process_home: Path) -> dict[str, Any]:
    loops = {
        "no_hub": cl.Conductor(name="bench-no-hub", hub=False),
        "embedded": cl.Conductor(name="bench-embedded"),  # hub=None, $CONDUCTLOOP_HOME
        "process": cl.Conductor(name="bench-process", home=str(process_home)),
    }
    for loop in loops.values():
        loop.agent(stepper)
    times: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, float] = defaultdict(float)
    await bare_asyncio(steps // 5)  # warm-up (and the links connect)
    for loop in loops.values():
        await timed_run(loop, steps // 5)
    for _ in range(reps):
        gc.collect()
        times["asyncio"].append(await bare_asyncio(steps) / steps)
        for key, loop in loops.items():
            gc.collect()
            before = thread_cpu()
            inside, end_to_end = await timed_run(loop, steps)
            if key == "embedded":
                for name, seconds in thread_cpu().items():
                    cpu[name] += seconds - before.get(name, 0.0)
            times[key].append(inside / steps)
            times[f"{key}_e2e"].append(end_to_end / steps)
    embedded = loops["embedded"]
    assert embedded.link is not None
    for loop in loops.values():
        await loop.aclose()
    return {
        "per_step_s": {k: median(v) for k, v in times.items()},
        "cpu_per_step_s": {k: v / (reps * steps) for k, v in cpu.items()},
        "emitted": embedded.link.acked,  # the last seq the hub acknowledged
        "unacked": embedded.link.unacked,
        "dropped": embedded.link.dropped,
        "runtime": embedded.runtime,
    }


def stored_events(home: Path, runtime: str) -> tuple[int, int]:
    """(the hub's ``last_id``, the rows of ``runtime`` in its SQLite file)."""
    last_id = int(cl.connect(home=str(home)).status()["last_id"])
    with sqlite3.connect(home / "events.sqlite3") as db:
        (rows,) = db.execute("SELECT count(*) FROM events WHERE runtime = ?", (runtime,)).fetchone()
    return last_id, int(rows)


def measure_store(events: int, reps: int, folder: Path) -> float:
    """Seconds per event for the hub's ``EventStore`` alone to commit ``log`` events (JSON
    and SQLite, on its writer thread, with nothing else running)."""
    from conductloop_jupyter.core.events import Event
    from conductloop_jupyter.hub.store import EventStore

    per_event = []
    for rep in range(reps + 1):  # the first is the warm-up
        batch = [
            Event(seq, time.time(), "bench-store", "stepper-1", "log", {"level": "info",
                  "message": "step"})
            for seq in range(1, events + 1)
        ]  # fmt: skip
        store = EventStore(folder / f"store-{rep}.sqlite3")
        store.open()
        try:
            gc.collect()
            started = time.perf_counter()
            for i in range(0, events, 1000):  # as the hub hands them over: in batches
                store.append(batch[i : i + 1000])
            store.flush()
            elapsed = time.perf_counter() - started
        finally:
            store.close()
        if rep:
            per_event.append(elapsed / events)
    return median(per_event)


# -- measuring LangGraph ----------------------------------------------------------------------


def measure_langgraph(steps: int, reps: int, folder: Path) -> dict[str, float]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(folder / "langgraph.sqlite3", check_same_thread=False)
    figures: dict[str, float] = {}
    try:
        for key, checkpointer in (("langgraph", None), ("langgraph_sqlite", SqliteSaver(conn))):
            graph = langgraph_loop(steps, checkpointer)
            per_step = []
            for rep in range(reps + 1):  # the first is the warm-up
                config = {"recursion_limit": steps + 10, "configurable": {"thread_id": str(rep)}}
                gc.collect()
                started = time.perf_counter()
                out = graph.invoke({"items": []}, config)
                elapsed = time.perf_counter() - started
                assert len(out["items"]) == steps
                if rep:
                    per_step.append(elapsed / steps)
            figures[key] = median(per_step)
        single = langgraph_single()
        for _ in range(20):
            single.invoke({"items": []})
        per_invoke = []
        for _ in range(reps):
            started = time.perf_counter()
            for _ in range(steps):
                single.invoke({"items": []})
            per_invoke.append((time.perf_counter() - started) / steps)
        figures["langgraph_invoke"] = median(per_invoke)
    finally:
        conn.close()
    return figures


# -- the report -------------------------------------------------------------------------------


def report(
    quick: bool,
    cl_steps: int,
    lg_steps: int,
    reps: int,
    found: dict[str, Any],
    stored: tuple[int, int],
) -> dict[str, Any]:
    t = found["per_step_s"]
    base, step, e2e = t["asyncio"], t["embedded"], t["embedded_e2e"]
    vs_asyncio, vs_langgraph = step / base, t["langgraph"] / step
    last_id, rows = stored
    persisted = (
        found["unacked"] == 0 and not found["dropped"] and rows == found["emitted"] <= last_id
    )
    checks = {
        "step_vs_asyncio": vs_asyncio <= MAX_VS_ASYNCIO,
        "step_vs_langgraph": vs_langgraph >= MIN_VS_LANGGRAPH,
        "persisted": persisted,
    }
    cpu = found["cpu_per_step_s"]
    cpu_text = ", ".join(
        f"{name} {us(cpu.get(name, 0.0))}"
        for name in ("MainThread", "conductloop-hub", "conductloop-store")
    )
    rows_out = [
        Figure("bare asyncio step (append + sleep(0))", us(base)),
        Figure(
            "ConductLoop step, hub=False", us(t["no_hub"]), us(base),
            f"x{t['no_hub'] / base:.1f}",
        ),
        Figure(
            "ConductLoop step, embedded hub (default)", us(step), f"asyncio {us(base)}",
            f"x{vs_asyncio:.1f}", f"<= x{MAX_VS_ASYNCIO:g} asyncio", checks["step_vs_asyncio"],
        ),
        Figure(
            "  vs LangGraph node step, no checkpointer", us(step),
            f"LangGraph {us(t['langgraph'])}", f"{vs_langgraph:.1f}x cheaper",
            f">= {MIN_VS_LANGGRAPH:g}x cheaper", checks["step_vs_langgraph"],
        ),
        Figure(
            "  CPU per step by thread (agent loop, hub, SQLite writer)", cpu_text,
        ),
        Figure(
            "  the hub's SQLite store alone, per event (JSON + insert)", us(t["store"]),
        ),
        Figure(
            "ConductLoop end to end, embedded hub, until stored",
            f"{us(e2e)} ({1 / e2e:,.0f} steps/s)", us(base), f"x{e2e / base:.1f}",
        ),
        Figure(
            "  vs LangGraph node step with SqliteSaver", us(e2e),
            f"LangGraph {us(t['langgraph_sqlite'])}", f"{t['langgraph_sqlite'] / e2e:.1f}x cheaper",
        ),
        Figure(
            "ConductLoop step, hub in its own process", us(t["process"]), us(base),
            f"x{t['process'] / base:.1f}",
        ),
        Figure(
            "  end to end, until stored", us(t["process_e2e"]), us(base),
            f"x{t['process_e2e'] / base:.1f}",
        ),
        Figure("LangGraph node step, no checkpointer", us(t["langgraph"])),
        Figure("LangGraph node step, SqliteSaver", us(t["langgraph_sqlite"])),
        Figure("LangGraph one-node graph, invoke per step", us(t["langgraph_invoke"])),
        Figure(
            "events stored by the embedded hub (SQLite rows / emitted)",
            f"{rows:,} / {found['emitted']:,}", "", "", "all, every one acked", persisted,
        ),
    ]  # fmt: skip
    print_table(
        f"Agent step: ctx.log + await ctx.checkpoint() (median of {reps}; ConductLoop "
        f"{cl_steps:,} steps a run, LangGraph {lg_steps:,})",
        rows_out,
    )
    load = load_average()
    return {
        "benchmark": "agent_step",
        "quick": quick,
        "machine": machine(),
        "load_average": load,
        "steps": {"conductloop": cl_steps, "langgraph": lg_steps},
        "repetitions": reps,
        "pass": all(checks.values()),
        "checks": checks,
        "per_step_us": {k: round(v * 1e6, 3) for k, v in t.items()},
        "cpu_per_step_us": {k: round(v * 1e6, 3) for k, v in cpu.items()},
        "ratios": {"step_vs_asyncio": vs_asyncio, "langgraph_vs_step": vs_langgraph},
        "stored": {"sqlite_rows": rows, "hub_last_id": last_id, "emitted": found["emitted"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    args = parser.parse_args()
    cl_steps, lg_steps, reps = (4_000, 200, 3) if args.quick else (20_000, 1_000, 7)
    folder = Path(tempfile.mkdtemp(prefix="conductloop-bench-"))
    # registered first, so it runs last at exit: after the embedded hub has stopped
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for name in ("CONDUCTLOOP_HUB", "CONDUCTLOOP_HUB_SECRET"):
        os.environ.pop(name, None)
    os.environ["CONDUCTLOOP_HOME"] = str(folder / "embedded")
    hub = HubProcess(folder / "process").start()
    try:
        found = asyncio.run(measure_conductloop(cl_steps, reps, folder / "process"))
    finally:
        hub.stop()
    stored = stored_events(folder / "embedded", found["runtime"])
    found["per_step_s"]["store"] = measure_store(cl_steps, reps, folder)
    found["per_step_s"].update(measure_langgraph(lg_steps, reps, folder))
    result = report(args.quick, cl_steps, lg_steps, reps, found, stored)
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
