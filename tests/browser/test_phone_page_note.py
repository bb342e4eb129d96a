"""The approval card's "Note" box on the phone page, in a real Chromium emulating phones:
a note typed there reaches the agent's code (``Decision.note``) with Reject and Approve.

Screenshots of the card with its note box, light and dark at 360 px, are saved for people
to look at (``Phone.shot``).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

import conductloop_jupyter as cl
from tests.browser._support import Lab, device_name

Received = tuple[bool, str | None, dict[str, Any] | None]


def register_decides(lab: Lab) -> None:
    @lab.loop.agent
    async def decides(ctx: cl.Context, what: str) -> Received:
        ctx.status(f"ready to deploy {what}")
        d = await ctx.approve(f"Ship {what}?", details={"env": what})
        return d.approved, d.note, d.args


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_note_typed_on_the_phone_reaches_the_agent_with_reject(lab: Lab, scheme: str) -> None:
    register_decides(lab)
    run = lab.start("decides", "api")
    request_id = lab.request_of(run)

    phone = lab.paired(color_scheme=scheme, viewport={"width": 360, "height": 740})
    card = phone.request("Ship api?")
    note = card.get_by_label("Note")
    expect(note).to_be_visible()
    phone.shot(f"note-empty-{scheme}")  # its placeholder
    note.fill("not before the 2 pm freeze lifts")
    phone.shot(f"note-{scheme}")
    box, page_width = note.bounding_box(), phone.page.evaluate("innerWidth")
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= page_width, (box, page_width)

    card.get_by_role("button", name="Reject").click()
    assert run.result(timeout=10) == (False, "not before the 2 pm freeze lifts", None)
    decided = lab.loop.request(request_id)
    assert (decided.decision, decided.note, decided.decided_by) == (
        "rejected",
        "not before the 2 pm freeze lifts",
        f"phone:{device_name(lab)}",
    )


def test_a_note_typed_on_the_phone_reaches_the_agent_with_approve_and_blank_is_none(
    lab: Lab,
) -> None:
    register_decides(lab)
    noted, blank = lab.start("decides", "api"), lab.start("decides", "web")
    lab.request_of(noted)
    lab.request_of(blank)
    phone = lab.paired()

    card = phone.request("Ship api?")
    card.get_by_label("Note").fill("  only the web tier  ")
    card.get_by_role("button", name="Approve").click()
    assert noted.result(timeout=10) == (True, "only the web tier", None)
    expect(card).to_have_count(0)

    card = phone.request("Ship web?")
    card.get_by_label("Note").fill("   ")  # only blanks: no note
    card.get_by_role("button", name="Approve").click()
    assert blank.result(timeout=10) == (True, None, None)
