"""The approval card's "Note" box in the live dashboard, in a real IPython kernel
(``kernel`` in conftest.py): the note set there reaches the agent's code
(``Decision.note``) with Reject and with Approve, exactly as the JupyterLab widget manager
sends an edit and a click.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.notebook.conftest import Kernel, KernelFactory

pytestmark = pytest.mark.only_our_code_guarded  # jupyter_client blocks on the test's loop


NOTES = """
loop = cl.Conductor(name="notes")

@loop.agent
async def decides(ctx, what):
    d = await ctx.approve(f"Ship {what}?")
    return d.approved, d.note, d.args

dashboard = loop.dashboard()
display(dashboard)
"""


async def decide_with_note(k: Kernel, run: str, what: str, button: str, note: str) -> str:
    """Start ``decides``, set its card's Note, click ``button``; what the agent returned."""
    await k.run(f'{run} = loop.start("decides", "{what}")')
    await k.wait_for(lambda: k.html_containing(f"Ship {what}?"), "the card")
    note_box = await k.find("TextModel", description="Note")
    clicked = await k.find("ButtonModel", description=button)
    k.set_state(note_box, value=note)
    k.click(clicked)
    result = await k.run(f"print(await {run})")
    await k.wait_for(lambda: clicked in k.closed, "the decided card to be closed")
    return result


async def test_a_note_set_in_the_card_reaches_the_agent_with_reject_and_approve(
    kernel: KernelFactory,
) -> None:
    async with kernel() as k:
        await k.run(NOTES)
        rejected = await decide_with_note(k, "no", "api", "Reject", "not before the freeze")
        assert rejected == "(False, 'not before the freeze', None)\n"
        approved = await decide_with_note(k, "yes", "web", "Approve", "  only the web tier ")
        assert approved == "(True, 'only the web tier', None)\n"
        blank = await decide_with_note(k, "plain", "db", "Approve", "   ")
        assert blank == "(True, None, None)\n"
