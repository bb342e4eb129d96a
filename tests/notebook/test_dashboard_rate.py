"""The live dashboard's message rate, in a real IPython kernel (``kernel`` in conftest.py):
at most 20 front-end messages in any one second, under a flood of events, with 1,000
agents, and while requests open and close; the kernel stamps each message with the time
it sent it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.notebook.conftest import KernelFactory

pytestmark = pytest.mark.only_our_code_guarded  # jupyter_client blocks on the test's loop

LIMIT = 20  # front-end messages in any one second


def busiest_second(sent: list[tuple[float, dict[str, Any]]]) -> list[str]:
    """What the widgets sent in their busiest second (for a failure's message)."""
    times = [at for at, _ in sent]
    most = most_in_one_second(times)
    for i, (at, _) in enumerate(sent):
        window = [m for t, m in sent[i:] if t - at < 1.0]
        if len(window) == most:
            return [
                f"{m['msg_type']} {m['content']['data'].get('method', '')} "
                f"{sorted(m['content']['data'].get('state', {}))[:3]}"
                for m in window
            ]
    return []


def most_in_one_second(times: list[float]) -> int:
    """The largest number of messages sent within any window of one second."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_most_in_one_second_counts_a_sliding_window() -> None:
    assert most_in_one_second([0.0, 0.5, 0.99, 1.0, 1.2, 3.0]) == 4


FLOOD = """
import time

loop = cl.Conductor(name="flood")

@loop.agent
async def flood(ctx, seconds, rate):
    sent, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            ctx.status(f"event {sent}")
            sent += 1
        await asyncio.sleep(max(sent / rate - elapsed, 0))  # burst, then let the loop run
    return round(sent / (time.perf_counter() - start))

dashboard = loop.dashboard()
display(dashboard)
"""


async def test_dashboard_sends_at_most_20_messages_a_second_under_10000_events_a_second(
    kernel: KernelFactory,
) -> None:
    async with kernel() as k:
        await k.run(FLOOD)
        start = len(k.iopub)
        await k.run('run = loop.start("flood", 3.0, 10_000)')
        rate = int(await k.run("print(await run)"))
        await k.wait_for(lambda: k.html_containing(">done<"), "the table to show the end")
        sent = k.comm_messages(start)

        assert rate >= 8_000, f"the agent emitted only {rate} events a second"
        busiest = most_in_one_second([at for at, _ in sent])
        assert busiest <= LIMIT, "\n".join(busiest_second(sent))
        duration = sent[-1][0] - sent[0][0]
        assert len(sent) <= LIMIT * (duration + 1)
        # and it stayed live: the activity column moved on many times
        activities = [m for _, m in sent if "event " in str(m["content"]["data"])]
        assert len(activities) >= 6, f"only {len(activities)} refreshes in 3 s"


THOUSAND = """
loop = cl.Conductor(name="crowd")

@loop.agent
async def worker(ctx, n):
    ctx.status(f"working on item {n}")
    await asyncio.Event().wait()

@loop.agent
async def boss(ctx):
    return await ctx.parallel([("worker", n) for n in range(999)])

boss_run = loop.start("boss")
dashboard = loop.dashboard()
display(dashboard)
"""


async def test_dashboard_of_1000_agents_pages_them_under_their_parent_within_the_rate(
    kernel: KernelFactory,
) -> None:
    async with kernel() as k:
        start = len(k.iopub)
        await k.run(THOUSAND)
        first_page = await k.wait_for(
            lambda: k.html_containing("of 1000 · page 1 of 20"), "a table of 1,000 agents"
        )
        assert first_page.count("<tr data-agent=") == 50
        assert "999 children" in first_page  # on the row of their parent, the boss
        assert "└ " in first_page  # children indented under their parent
        k.click(await k.find("ButtonModel", description="Next ▶"))
        second = await k.wait_for(lambda: k.html_containing("page 2 of 20"), "page 2")
        assert "agents 51 to 100 of 1000" in second
        await k.run("loop.stop_all()")
        await k.wait_for(lambda: k.html_containing("<b>1000</b> ended"), "every agent ended")
        created = sum(1 for _, m in k.comm_messages(start) if m["msg_type"] == "comm_open")
        later = [at for at, m in k.comm_messages(start) if m["msg_type"] != "comm_open"]
        assert created < 40  # showing the dashboard: one message per widget
        assert most_in_one_second(later) <= LIMIT, later


CHURN = """
loop = cl.Conductor(name="churn")

@loop.agent
async def asker(ctx, n):
    return (await ctx.approve(f"Step {n}?")).approved

display(dashboard := loop.dashboard())
"""


async def test_forty_requests_opening_and_closing_stay_within_the_rate_and_leave_no_comm(
    kernel: KernelFactory,
) -> None:
    async with kernel() as k:
        start = len(k.iopub)
        await k.run(CHURN)
        shown = len(k.iopub)
        await k.run('runs = [loop.start("asker", n) for n in range(40)]')
        await k.wait_for(lambda: k.html_containing("Needs you (40)"), "forty open requests")
        await k.wait_for(
            lambda: sum(1 for m in k.models.values() if m.get("description") == "Approve") == 5,
            "the oldest five requests with buttons",
        )
        await k.run("for request in loop.pending(): loop.approve(request.id)")
        assert await k.run("print(sum(await asyncio.gather(*runs)))") == "40\n"
        await k.wait_for(lambda: k.html_containing("nothing right now"), "an empty inbox")
        await k.wait_for(
            lambda: not any(m.get("description") == "Approve" for c, m in k.models.items()
                            if c not in k.closed),
            "the decided cards to be closed",
        )  # fmt: skip
        sent = k.comm_messages(shown)
        assert most_in_one_second([at for at, _ in sent]) <= LIMIT, "\n".join(busiest_second(sent))

        await k.run("dashboard.close()")
        opened = {m["content"]["comm_id"] for _, m in k.comm_messages(start)
                  if m["msg_type"] == "comm_open"}  # fmt: skip
        assert opened <= k.closed  # no comm left behind in the kernel or the front end
