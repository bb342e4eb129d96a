"""Clicks on the live dashboard's buttons decide requests and steer agents, in a real
IPython kernel (``kernel`` in conftest.py) that gets them as ``comm_msg`` on its shell
channel, exactly as from the JupyterLab widget manager; and, in this process, a refused
command is shown in the status line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

import conductloop_jupyter as cl

# Imported here, off any event loop: ``loop.dashboard()`` imports it (and ipywidgets, which
# reads many files) on first use, and blockbuster fails such an import on the test's loop.
import conductloop_jupyter.notebook.dashboard
from tests.notebook.conftest import WAIT_TIMEOUT

if TYPE_CHECKING:
    from tests.notebook.conftest import KernelFactory

pytestmark = pytest.mark.only_our_code_guarded  # jupyter_client blocks on the test's loop


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
