"""The live dashboard and the magics, in a real IPython kernel with real comms.

Each kernel test starts its own kernel (``kernel`` in conftest.py) and plays the front
end: it reads every comm message the widgets send on iopub (the kernel stamps each with
the time it sent it), and clicks buttons by sending ``comm_msg`` on the shell channel
exactly as the JupyterLab widget manager does. Inside the kernel blockbuster is on for
this project's code, so a blocking call on the kernel's event loop fails the test, and so
does any error its loop reports or any traceback a widget callback prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pytest
from blockbuster import blockbuster_ctx

import conductloop_jupyter as cl
from conductloop_jupyter.core.states import AgentState
from conductloop_jupyter.core.view import AgentView, Request
from conductloop_jupyter.notebook import dashboard_html as text
from conductloop_jupyter.notebook.dashboard_widgets import MessageBudget, card_cost

if TYPE_CHECKING:
    from tests.notebook.conftest import Kernel

KernelFactory = Callable[..., AbstractAsyncContextManager["Kernel"]]

LIMIT = 20  # front-end messages in any one second
WAIT_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _no_blocking_on_event_loops() -> Iterator[None]:
    """blockbuster for this project's code only, in the test process (as in tests/server):
    jupyter_client writes connection files and starts the kernel's process on the test's
    loop by design. Inside each kernel, ``SETUP`` (conftest.py) turns the same guard on."""
    with blockbuster_ctx("conductloop_jupyter"):
        yield


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


# -- the message rate ----------------------------------------------------------------------

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
    return await ctx.approve(f"Step {n}?")

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


# -- clicks resolve requests ---------------------------------------------------------------

INBOX = """
loop = cl.Conductor(name="inbox")

@loop.agent
async def deployer(ctx):
    approved = await ctx.approve("Deploy <b>now</b>?", details={"to": "prod"})
    return "deployed" if approved else "held"

@loop.agent
async def chooser(ctx):
    return await ctx.ask("Which dataset?", choices=["alpha", "beta"])

@loop.agent
async def writer(ctx):
    return await ctx.ask("Title of the report?")

dashboard = loop.dashboard()
display(dashboard)
"""


async def test_clicking_approve_and_reject_in_the_inbox_decides_the_requests(
    kernel: KernelFactory,
) -> None:
    async with kernel() as k:
        await k.run(INBOX)
        await k.run('first = loop.start("deployer")')
        approve = await k.find("ButtonModel", description="Approve")
        card = await k.wait_for(lambda: k.html_containing("asks for approval"), "the card")
        assert "Deploy &lt;b&gt;now&lt;/b&gt;?" in card  # untrusted text is escaped
        assert "&quot;to&quot;: &quot;prod&quot;" in card
        k.click(approve)
        assert await k.run("print(await first)") == "deployed\n"
        await k.wait_for(lambda: approve in k.closed, "the decided card to be closed")
        await k.wait_for(lambda: k.html_containing("Approved r1-"), "the status line")

        await k.run('second = loop.start("deployer")')
        reject = await k.find("ButtonModel", description="Reject")
        k.click(reject)
        k.click(reject)  # a second click: the first answer won
        assert await k.run("print(await second)") == "held\n"
        await k.wait_for(lambda: k.html_containing("already decided by notebook"), "the status")


async def test_choice_button_and_answer_box_answer_questions(kernel: KernelFactory) -> None:
    async with kernel() as k:
        await k.run(INBOX)
        await k.run('choosing = loop.start("chooser")')
        k.click(await k.find("ButtonModel", description="beta"))
        assert await k.run("print(await choosing)") == "beta\n"

        await k.run('writing = loop.start("writer")')
        answer_box = await k.find("TextModel", description="Answer")
        send = await k.find("ButtonModel", description="Answer")
        k.click(send)  # nothing typed yet: a hint, no answer
        await k.wait_for(lambda: k.html_containing("Type an answer first."), "the hint")
        k.set_state(answer_box, value="Agents in 2025")
        k.click(send)
        assert await k.run("print(await writing)") == "Agents in 2025\n"


STEERING = """
loop = cl.Conductor(name="steer")

@loop.agent
async def worker(ctx):
    notes = []
    while "finish" not in notes:
        notes += await ctx.checkpoint()
        await asyncio.sleep(0.01)
    return notes

run = loop.start("worker")
dashboard = loop.dashboard()
display(dashboard)
"""


async def test_agent_buttons_pause_resume_redirect_and_stop(kernel: KernelFactory) -> None:
    async with kernel() as k:
        await k.run(STEERING)
        picker = await k.find("DropdownModel", description="Agent")
        await k.wait_for(lambda: k.models[picker].get("_options_labels"), "the picker's agents")
        k.click(await k.find("ButtonModel", description="Pause"))
        await k.wait_for(
            lambda: k.html_containing("Pick an agent first, in the Agent list."), "the hint"
        )

        k.set_state(picker, index=0)
        k.click(await k.find("ButtonModel", description="Pause"))
        await k.wait_for(lambda: k.html_containing(">paused<"), "the agent to be paused")
        k.click(await k.find("ButtonModel", description="Resume"))
        await k.wait_for(lambda: k.html_containing(">running<"), "the agent to run again")
        k.set_state(await k.find("TextModel", description="New instruction"), value="finish")
        k.click(await k.find("ButtonModel", description="Redirect"))
        assert await k.run("print(await run)") == "['finish']\n"

        again = (await k.run('again = loop.start("worker"); print(again.agent_id)')).strip()
        await k.wait_for(
            lambda: any(again in label for label in k.models[picker]["_options_labels"]),
            "the picker to offer the new run",
        )
        k.set_state(picker, index=0)
        k.click(await k.find("ButtonModel", description="Stop"))
        await k.wait_for(lambda: k.html_containing(">stopped<"), "the agent to stop")
        assert await k.run("print(again.state)") == "stopped\n"


async def until(widget: Any, trait: str, check: Callable[[], Any]) -> None:
    """Wait, without sleeping, until ``check()`` holds after a change of ``widget.trait``."""
    changed = asyncio.Event()
    widget.observe(lambda _change: changed.set(), names=trait)
    async with asyncio.timeout(WAIT_TIMEOUT):
        while not check():
            changed.clear()
            await changed.wait()


def named(widget: Any, description: str) -> Any:
    """The widget inside ``widget`` with this description."""
    if getattr(widget, "description", None) == description:
        return widget
    for child in getattr(widget, "children", ()):
        if (found := named(child, description)) is not None:
            return found
    return None


async def test_a_refused_command_is_shown_in_the_status_line_not_raised() -> None:
    loop = cl.Conductor(name="local", hub=False)

    @loop.agent
    async def worker(ctx: cl.Context) -> None:
        while True:
            await ctx.checkpoint()
            await asyncio.sleep(0.01)

    run = loop.start("worker")
    dashboard = loop.dashboard()
    try:
        picker, status = named(dashboard.widget, "Agent"), dashboard.widget.children[-1]
        await until(picker, "options", lambda: picker.options)
        picker.value = run.agent_id
        loop.stop(run.agent_id)  # it ends before the picker catches up: a stale pick
        with pytest.raises(cl.AgentStopped):
            await run
        named(dashboard.widget, "Pause").click()
        await until(status, "value", lambda: "has already ended" in status.value)
        assert "cannot be paused" in status.value
    finally:
        dashboard.close()
        await loop.aclose()


# -- the magics, against the hub the kernel's Conductor started ----------------------------

MAGIC_AGENTS = """
%load_ext conductloop_jupyter

loop = cl.Conductor(name="magic")

@loop.agent
async def deployer(ctx):
    return "deployed" if await ctx.approve("Ship it?") else "held"

@loop.agent
async def idler(ctx):
    while True:
        await ctx.checkpoint()
        await asyncio.sleep(0.02)

shipping = loop.start("deployer")
idlers = [loop.start("idler") for _ in range(2)]

other = cl.Conductor(name="other")  # a second runtime on the same hub

@other.agent
async def summarizer(ctx):
    return "summary"

summary = other.start("summarizer")
"""


def displayed(k: Kernel, since: int) -> list[dict[str, Any]]:
    return [
        m["content"]["data"]
        for m in k.iopub[since:]
        if m["msg_type"] in ("display_data", "update_display_data")
    ]


async def test_magics_show_every_agent_on_the_hub_pair_a_phone_and_stop_all_after_confirming(
    kernel: KernelFactory,
) -> None:
    async with kernel(hub=True) as k:
        await k.run(MAGIC_AGENTS)
        await k.run("%agents")
        table = await k.wait_for(lambda: k.html_containing("<b>summarizer</b>"), "the hub's view")
        assert "hub http://127.0.0.1:" in table
        assert "<b>deployer</b>" in table  # the agents of both runtimes
        # the click goes to the hub, which routes it back to this kernel's Conductor
        k.click(await k.find("ButtonModel", description="Approve"))
        assert await k.run("print(await shipping)") == "deployed\n"

        since = len(k.iopub)
        await k.run("%phone --host 127.0.0.1")
        qr = await k.wait_for(
            lambda: [d for d in displayed(k, since) if "<img" in d.get("text/html", "")],
            "the pairing QR code",
        )
        assert "data:image/png;base64," in qr[-1]["text/html"]

        since = len(k.iopub)
        await k.run("%stop_all")
        preview = await k.wait_for(
            lambda: [d for d in displayed(k, since) if "would stop" in d["text/plain"]],
            "what %stop_all would stop",
        )
        assert "would stop 2 agent(s)" in preview[-1]["text/plain"]
        assert "%stop_all --yes" in preview[-1]["text/plain"]
        assert await k.run("print([r.state.value for r in idlers])") == "['running', 'running']\n"

        since = len(k.iopub)
        await k.run("%stop_all --yes")
        await k.wait_for(
            lambda: [d for d in displayed(k, since) if "Stopped 2 agent(s)" in d["text/plain"]],
            "%stop_all --yes to stop them",
        )
        await k.run("await asyncio.gather(*idlers, return_exceptions=True)")
        assert await k.run("print([r.state.value for r in idlers])") == "['stopped', 'stopped']\n"
        await k.run("loop.close(); other.close()")


# -- the text and the budget, without a kernel ---------------------------------------------


def agent(agent_id: str, state: AgentState, parent: str | None = None, **more: Any) -> AgentView:
    started = more.pop("started", 100.0)
    return AgentView(agent_id, agent_id.split("-")[0], "rt", parent, None, None, "", started,
                     state=state, **more)  # fmt: skip


def test_table_lists_live_agents_first_with_children_under_their_parent() -> None:
    agents = [
        agent("old-1", AgentState.DONE, started=1.0),
        agent("lead-2", AgentState.RUNNING, started=2.0),
        agent("kid-3", AgentState.DONE, "lead-2", started=3.0),
        agent("kid-4", AgentState.RUNNING, "lead-2", started=4.0),
        agent("orphan-5", AgentState.WAITING, "gone-0", started=5.0),
    ]
    rows = [(a.agent_id, depth) for a, depth in text.ordered(agents)]
    assert rows == [("lead-2", 0), ("kid-4", 1), ("kid-3", 1), ("orphan-5", 0), ("old-1", 0)]
    live = [a.agent_id for a, _ in text.ordered(agents, hide_ended=True)]
    assert live == ["lead-2", "kid-4", "orphan-5"]


def test_pages_hold_50_rows_and_a_page_past_the_end_shows_the_last() -> None:
    rows = text.ordered(agent(f"a-{n}", AgentState.RUNNING, started=n) for n in range(1000))
    page = text.page_of(rows, 99)
    assert (page.number, page.pages, page.total, len(page.rows)) == (19, 20, 1000, 50)


def test_untrusted_names_activity_and_prompts_are_escaped() -> None:
    evil = "<img src=x onerror=alert(1)>"
    shown = agent(f"{evil}-1", AgentState.RUNNING, activity=evil, stalled=True, stall_reason=evil)
    html = text.table(text.page_of(text.ordered([shown]), 0), {shown.agent_id: shown}, 200.0)
    request = Request("r1", shown.agent_id, "question", evil, (evil,), {"k": evil}, 1.0)
    html += text.request_card(request, shown) + text.totals([shown], 0.0, None, evil, evil)
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_card_never_costs_more_than_a_second_of_messages() -> None:
    many = Request("r1", "a", "question", "pick", tuple(map(str, range(50))), {}, 1.0)
    few = Request("r2", "a", "question", "pick", ("x", "y"), {}, 1.0)
    approval = Request("r3", "a", "approval", "ok?", None, {}, 1.0)
    assert [card_cost(r) for r in (many, few, approval)] == [5, 5, 4]
    assert max(card_cost(r) for r in (many, few, approval)) < 18


def test_message_budget_allows_per_second_messages_in_any_one_second_window() -> None:
    now = [0.0]
    budget = MessageBudget(18, clock=lambda: now[0])
    budget.spend(10)
    assert budget.available() == 8  # spent, and stamped when the refresh settles
    budget.settle()
    now[0] = 0.5
    assert budget.available() == 8
    budget.spend(8)
    budget.settle()
    assert budget.available() == 0
    assert budget.wait() == pytest.approx(0.5)
    now[0] = 1.0
    assert budget.available() == 10
    now[0] = 1.5
    assert budget.available() == 18


def test_most_in_one_second_counts_a_sliding_window() -> None:
    assert most_in_one_second([0.0, 0.5, 0.99, 1.0, 1.2, 3.0]) == 4


async def test_a_cell_steers_its_own_kernels_agents_through_the_hub_client(
    kernel: KernelFactory,
) -> None:
    # A hub client's call made on the kernel's loop would hold that loop, which this
    # kernel's runtime needs to answer the hub: it waited 10 s for itself and failed. Its
    # steering of the kernel's own agents now happens in-process, with no HTTP at all
    # (blockbuster, active in the kernel, would refuse a blocking call here).
    async with kernel(hub=True) as k:
        await k.run(MAGIC_AGENTS)
        await k.run(
            "hub = await asyncio.to_thread(cl.connect)\n"
            "while not loop.pending():\n"
            "    await asyncio.sleep(0.05)\n"
        )
        assert await k.run("print(hub.approve(loop.pending()[0].id))") == "True\n"
        assert await k.run("print(await shipping)") == "deployed\n"
        # stop_all stops this process's agents itself and tells the hub to skip them
        assert await k.run("print(await asyncio.to_thread(hub.stop_all))") == "2\n"
        await k.run("await asyncio.gather(*idlers, return_exceptions=True)")
        assert await k.run("print([r.state.value for r in idlers])") == "['stopped', 'stopped']\n"
        await k.run("loop.close(); other.close()")
