"""A kernel's Conductors and the hub the first one started, in a real IPython kernel
(``kernel(hub=True)`` in conftest.py): the magics show and stop every agent on the hub and
pair a phone, and a hub client in a cell steers the kernel's own agents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.notebook.conftest import Kernel, KernelFactory

pytestmark = pytest.mark.only_our_code_guarded  # jupyter_client blocks on the test's loop


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
            "from conductloop_jupyter.testing import EventRecorder, match\n"
            "hub = await asyncio.to_thread(cl.connect)\n"
            "recorder = EventRecorder()\n"
            "loop.attach(recorder)  # first: a request opened from now on is recorded\n"
            "if not loop.pending():\n"
            "    await recorder.wait_for(match('request.opened'), timeout=30)\n"
        )
        assert await k.run("print(hub.approve(loop.pending()[0].id))") == "True\n"
        assert await k.run("print(await shipping)") == "deployed\n"
        # stop_all stops this process's agents itself and tells the hub to skip them
        assert await k.run("print(await asyncio.to_thread(hub.stop_all))") == "2\n"
        await k.run("await asyncio.gather(*idlers, return_exceptions=True)")
        assert await k.run("print([r.state.value for r in idlers])") == "['stopped', 'stopped']\n"
        await k.run("loop.close(); other.close()")
