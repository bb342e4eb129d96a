"""The notebook surfaces under load: the live dashboard's message rate, and the timeline.

- **dashboard**: in a real IPython kernel (started with jupyter_client, as JupyterLab
  does), ``loop.dashboard()`` is displayed while one agent emits 10,000 events a second
  (``ctx.status``, in bursts of 100) for 5 seconds. Everything the kernel sends to the
  front end on iopub is read, as the front end would; widget messages (``comm_open``,
  ``comm_msg``, ``comm_close``) are counted by the kernel's own send time. Measured: the
  most in any one-second window and the mean per second, and the events a second the
  agent reached. Baseline, in a fresh kernel: the same agent with an ``ipywidgets.HTML``
  updated on every event (what a dashboard without coalescing does).
- **timeline**: a real run (``hub=False``, a manual clock): a lead fans out to 100 agents
  that make 100 tool calls each, 10,000 tool spans. Measured: ``loop.plot_timeline()``
  (the frames and the figure), ``timeline_figure`` alone, and the figure's JSON (what the
  notebook sends to the browser). Baseline: the usual plotly way, one ``go.Bar`` trace
  per agent, built from the same frame (tool spans only: it draws less than the timeline).

Timings are the best of 3 runs. The machine is shared; the load average is printed.

    python benchmarks/dashboard.py [--quick]

``--quick``: a 2-second flood. Prints a table and a final ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from _figures import Figure, best, load_average, print_table
from _harness import machine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

RATE = 10_000  # events a second the agent emits
SECONDS = 5.0
LIMIT = 20  # widget messages in any one second
AGENTS, CALLS = 100, 100  # 10,000 tool spans
TIMELINE_S = 0.150  # the bound for 10,000 spans: an interactive figure

T = TypeVar("T")


# -- a kernel, and the front end's side of iopub ------------------------------------------------


@dataclass
class Kernel:
    client: Any
    iopub: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def read_iopub(self) -> None:
        while True:
            self.iopub.append(await self.client.get_iopub_msg())
            self.arrived.set()

    async def run(self, code: str, timeout: float = 180.0) -> str:
        """Run a cell that must succeed; return what it printed once the kernel is idle."""
        msg_id = self.client.execute(code)
        reply = await self.client.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = await self.client.get_shell_msg(timeout=timeout)
        if reply["content"]["status"] != "ok":
            raise RuntimeError("\n".join(reply["content"].get("traceback", [])))
        deadline = time.monotonic() + timeout
        while not any(
            m["msg_type"] == "status"
            and m["parent_header"].get("msg_id") == msg_id
            and m["content"]["execution_state"] == "idle"
            for m in reversed(self.iopub)
        ):
            self.arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), max(0.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"the kernel did not finish {code[:60]!r}")
        return "".join(
            m["content"]["text"]
            for m in self.iopub
            if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id
        )

    def comm_messages(self, since: int) -> list[tuple[float, dict[str, Any]]]:
        """Widget messages after ``since``, with the time the kernel sent each."""
        return [
            (m["header"]["date"].timestamp(), m)
            for m in self.iopub[since:]
            if m["msg_type"] in ("comm_open", "comm_msg", "comm_close")
        ]


@asynccontextmanager
async def kernel(folder: Path) -> Any:
    from jupyter_client.manager import AsyncKernelManager

    dirs = {name: folder / name for name in ("home", "ipython", "jupyter", "runtime")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTLOOP_")}
    env |= {
        "CONDUCTLOOP_HUB": "off",  # the agents' own Conductor, as tests/notebook does
        "CONDUCTLOOP_HOME": str(dirs["home"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "JUPYTER_CONFIG_DIR": str(dirs["jupyter"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    }
    manager = AsyncKernelManager(kernel_name="python3")
    manager.connection_file = str(dirs["runtime"] / f"kernel-{uuid.uuid4().hex}.json")
    log = (folder / "kernel.log").open("wb")  # its warnings, out of the table's way
    await manager.start_kernel(env=env, cwd=str(folder), stderr=log)
    client = manager.client()
    client.start_channels(hb=False)
    session = Kernel(client)
    reader: asyncio.Future[None] | None = None
    try:
        await client.wait_for_ready(timeout=120)
        reader = asyncio.ensure_future(session.read_iopub())
        yield session
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        client.stop_channels()
        await manager.shutdown_kernel(now=True)
        log.close()


AGENT = """
import asyncio, time
import conductloop_jupyter as cl

loop = cl.Conductor(name="flood")

@loop.agent
async def flood(ctx, seconds, rate):
    sent, began, start = 0, time.time(), time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            ctx.status(f"event {sent}")
            sent += 1
        await asyncio.sleep(max(sent / rate - elapsed, 0))  # burst, then let the loop run
    return round(sent / (time.perf_counter() - start)), began, time.time()
"""

SHOW_DASHBOARD = """
dashboard = loop.dashboard()
display(dashboard)
"""

SHOW_NAIVE = """
import ipywidgets as widgets

class EveryEvent:
    \"\"\"An HTML widget written on every event: no coalescing, no budget.\"\"\"
    def __init__(self):
        self.widget = widgets.HTML()
    def emit(self, event):
        self.widget.value = f"<b>{event.agent_id}</b> {event.kind}: {event.data}"

naive = EveryEvent()
loop.attach(naive)
display(naive.widget)
"""


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


async def flood(show: str, seconds: float) -> dict[str, Any]:
    """Widget messages while the agent floods, in a fresh kernel showing ``show``."""
    with tempfile.TemporaryDirectory(prefix="conductloop-dashboard-") as folder:
        async with kernel(Path(folder)) as k:
            await k.run(AGENT)
            await k.run(show)
            await k.run("await asyncio.sleep(1.5)")  # showing it is not part of the flood
            start = len(k.iopub)
            await k.run(f'run = loop.start("flood", {seconds}, {RATE})')
            rate, began, ended = json.loads(await k.run("print(list(await run))"))
            await k.run("await asyncio.sleep(1.5)")  # what it still sends about the end
            sent = k.comm_messages(start)
    times = [at for at, _ in sent]
    during = [at for at in times if began <= at <= ended]  # the kernel's clock, both
    return {
        "agent_events_per_s": rate,
        "flood_s": ended - began,
        "messages": len(times),
        "busiest_second": most_in_one_second(times),
        "mean_per_s": len(during) / (ended - began),
        # it stayed live: updates that show the agent's latest activity
        "activity_updates": sum("event " in str(m["content"]["data"]) for _, m in sent),
    }


# -- the timeline -------------------------------------------------------------------------------


def real_run() -> Any:
    """A finished conductor whose 100 agents made 100 tool calls each, on a manual clock."""
    import conductloop_jupyter as cl
    from conductloop_jupyter.testing import ManualClock

    clock = ManualClock()
    loop = cl.Conductor(name="timeline", hub=False, clock=clock, event_log_size=1_000_000)

    @loop.agent
    async def worker(ctx: cl.Context, n: int) -> int:
        for call in range(CALLS):
            async with ctx.tool("search", query=f"{n}/{call}"):
                clock.advance(0.01 * (1 + (n + call) % 7))
            if call % 10 == 0:
                ctx.status(f"call {call}")
        return n

    @loop.agent
    async def lead(ctx: cl.Context) -> list[int]:
        found: list[int] = await ctx.parallel([("worker", n) for n in range(AGENTS)])
        return found

    loop.run("lead")
    return loop


def naive_figure(events: Any) -> Any:
    """One ``go.Bar`` trace per agent with its tool spans (plotly's usual way)."""
    import pandas as pd
    import plotly.graph_objects as go

    tools = events[events["kind"] == "tool.finished"]
    traces = []
    for agent_id, spans in tools.groupby("agent_id", sort=False):
        ends = spans["ts"].astype("int64") / 1e6  # epoch ms
        widths = pd.Series([d["duration_s"] * 1000 for d in spans["data"]], index=spans.index)
        traces.append(
            go.Bar(
                name=str(agent_id),
                orientation="h",
                base=ends - widths,
                x=widths,
                y=[agent_id] * len(spans),
                hovertext=[d["tool"] for d in spans["data"]],
            )
        )
    return go.Figure(data=traces, layout={"barmode": "overlay", "xaxis": {"type": "date"}})


def timeline(repeat: int = 3) -> dict[str, Any]:
    from conductloop_jupyter.notebook.plots import timeline_figure

    loop = real_run()
    events, agents = loop.events(), loop.agents()
    spans = int((events["kind"] == "tool.finished").sum())
    plot_s, fig = best(repeat, loop.plot_timeline)
    figure_s, _ = best(repeat, lambda: timeline_figure(events, agents))
    naive_s, naive = best(repeat, lambda: naive_figure(events))
    json_s, text = best(repeat, fig.to_json)
    naive_json_s, naive_text = best(repeat, naive.to_json)
    loop.close()
    return {
        "spans": spans,
        "agents": len(agents),
        "events": len(events),
        "plot_timeline_s": plot_s,
        "timeline_figure_s": figure_s,
        "traces": len(fig.data),
        "json_s": json_s,
        "json_bytes": len(text),
        "naive_figure_s": naive_s,
        "naive_traces": len(naive.data),
        "naive_json_s": naive_json_s,
        "naive_json_bytes": len(naive_text),
    }


# -- the report -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 2-second flood (a smoke test)")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else SECONDS

    ours = asyncio.run(flood(SHOW_DASHBOARD, seconds))
    naive = asyncio.run(flood(SHOW_NAIVE, seconds))
    plot = timeline()

    checks = {
        "dashboard_rate": ours["busiest_second"] <= LIMIT,
        "dashboard_live": ours["activity_updates"] >= 2 * seconds,
        "agent_kept_its_rate": ours["agent_events_per_s"] >= 0.8 * RATE,
        "timeline_spans": plot["spans"] == AGENTS * CALLS,
        "timeline_time": plot["plot_timeline_s"] <= TIMELINE_S,
    }
    rows = [
        Figure(
            f"dashboard: widget messages, busiest second ({RATE:,} ev/s for {seconds:g} s)",
            f"{ours['busiest_second']}",
            f"{naive['busiest_second']:,}",
            f"x{ours['busiest_second'] / max(naive['busiest_second'], 1):.4f}",
            f"<= {LIMIT}",
            checks["dashboard_rate"],
        ),
        Figure(
            "  widget messages a second, mean over the flood",
            f"{ours['mean_per_s']:.1f}",
            f"{naive['mean_per_s']:,.0f}",
        ),
        Figure(
            "  updates showing the agent's latest activity",
            f"{ours['activity_updates']:,}",
            f"{naive['activity_updates']:,}",
            target=f">= {2 * seconds:g} (2 a second)",
            ok=checks["dashboard_live"],
        ),
        Figure(
            "  events a second the agent reached with it shown",
            f"{ours['agent_events_per_s']:,}",
            f"{naive['agent_events_per_s']:,}",
            target=f">= {int(0.8 * RATE):,}",
            ok=checks["agent_kept_its_rate"],
        ),
        Figure(
            f"timeline: loop.plot_timeline(), {plot['spans']:,} tool spans, "
            f"{plot['agents']} agents",
            f"{plot['plot_timeline_s']:.3f} s",
            f"{plot['naive_figure_s']:.3f} s",
            f"x{plot['plot_timeline_s'] / plot['naive_figure_s']:.2f}",
            f"<= {TIMELINE_S:g} s",
            checks["timeline_time"],
        ),
        Figure(
            "  timeline_figure alone (frames already built)",
            f"{plot['timeline_figure_s']:.3f} s",
            f"{plot['naive_figure_s']:.3f} s",
            f"x{plot['timeline_figure_s'] / plot['naive_figure_s']:.2f}",
        ),
        Figure(
            "  traces in the figure",
            f"{plot['traces']}",
            f"{plot['naive_traces']}",
        ),
        Figure(
            "  figure JSON for the browser: time / size",
            f"{plot['json_s']:.3f} s / {plot['json_bytes'] / 1e6:.1f} MB",
            f"{plot['naive_json_s']:.3f} s / {plot['naive_json_bytes'] / 1e6:.1f} MB",
        ),
    ]
    print_table("Notebook: the live dashboard under a flood of events, and the timeline", rows)
    print("baselines: an ipywidgets.HTML written on every event (fresh kernel, same agent);")
    print("           plotly with one go.Bar trace per agent (tool spans only)")
    load = load_average()
    result = {
        "benchmark": "dashboard",
        "quick": args.quick,
        "machine": machine(),
        "load_average": load,
        "pass": all(checks.values()),
        "checks": checks,
        "dashboard": ours,
        "naive_widget": naive,
        "timeline": plot,
    }
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
