"""Steering from the phone page in a real Chromium emulating phones: requests approved,
answered and rejected, one agent redirected, paused, resumed and stopped, stop all.

The page is opened from a fresh pairing link, as a phone opens it from the QR code. Waits
are on events (``EventRecorder``) and on Playwright's auto-waiting ``expect``; nothing
sleeps.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

import conductloop_jupyter as cl
from conductloop_jupyter.testing import match
from tests.browser._support import Lab, device_name

# -- needs you ---------------------------------------------------------------------------


def test_approving_on_the_phone_resumes_the_agent_and_the_title_counts_waiting_requests(
    lab: Lab,
) -> None:
    api, web = lab.start("deploy", "api"), lab.start("deploy", "web")
    api_request = lab.request_of(api)
    lab.request_of(web)

    phone = lab.paired()
    expect(phone.page).to_have_title("(2) ConductLoop")
    expect(phone.needs.get_by_role("article")).to_have_count(2)
    expect(phone.request("Deploy api?")).to_contain_text("replicas")
    phone.shot("request-pending")

    phone.request("Deploy api?").get_by_role("button", name="Approve").click()
    assert api.result(timeout=10) is True
    expect(phone.request("Deploy api?")).to_have_count(0)
    expect(phone.needs.get_by_role("article")).to_have_count(1)
    expect(phone.page).to_have_title("(1) ConductLoop")
    expect(phone.agent("deploy", "deploy api")).to_contain_text("done")
    expect(phone.agent("deploy", "deploy web")).to_contain_text("waiting")
    decided = lab.loop.request(api_request)
    assert (decided.decision, decided.decided_by) == ("approved", f"phone:{device_name(lab)}")
    assert not web.done()


def test_a_request_decided_elsewhere_stays_in_place_disabled_then_leaves(lab: Lab) -> None:
    api, web = lab.start("deploy", "api"), lab.start("deploy", "web")
    api_request = lab.request_of(api)
    lab.request_of(web)
    phone = lab.paired()
    expect(phone.needs.get_by_role("article")).to_have_count(2)

    assert lab.loop.approve(api_request)  # decided in the notebook
    card = phone.request("Deploy api?")
    expect(card).to_contain_text("approved by python")  # said, in place, not yanked away
    expect(card.get_by_role("button", name="Approve")).to_be_disabled()
    expect(phone.needs.get_by_role("article").first).to_contain_text("Deploy api?")
    expect(phone.page).to_have_title("(1) ConductLoop")
    expect(card).to_have_count(0, timeout=10_000)  # then it goes
    expect(phone.needs.get_by_role("article")).to_have_count(1)
    assert api.result(timeout=10) is True


def test_questions_are_answered_by_choice_and_by_text_and_a_rejection_reaches_the_agent(
    lab: Lab,
) -> None:
    pick, title, deploy = lab.start("pick"), lab.start("title"), lab.start("deploy", "db")
    for run in (pick, title, deploy):
        lab.request_of(run)

    phone = lab.paired()
    expect(phone.needs.get_by_role("article")).to_have_count(3)
    expect(phone.page).to_have_title("(3) ConductLoop")
    phone.shot("question")

    # after each answer, wait for its card to go: the cards below move up as it does
    phone.request("Which papers?").get_by_role("button", name="2025 papers").click()
    assert pick.result(timeout=10) == "2025 papers"
    expect(phone.request("Which papers?")).to_have_count(0)

    question = phone.request("What should the report be called?")
    question.get_by_label("Answer").fill("Agents in 2025")
    question.get_by_role("button", name="Send").click()
    assert title.result(timeout=10) == "Agents in 2025"
    expect(question).to_have_count(0)

    phone.request("Deploy db?").get_by_role("button", name="Reject").click()
    assert deploy.result(timeout=10) is False
    expect(phone.needs.get_by_role("article")).to_have_count(0)
    expect(phone.needs).to_contain_text("Nothing needs you")
    expect(phone.page).to_have_title("ConductLoop")


# -- one agent ---------------------------------------------------------------------------


def test_an_agent_opened_from_the_list_is_redirected_paused_resumed_and_stopped(
    lab: Lab,
) -> None:
    run = lab.start("worker")
    lab.recorder.wait_for_sync(match("agent.status", agent_id=run.agent_id, text="working"))
    phone = lab.paired()

    phone.agents.get_by_role("button", name="worker", exact=True).click()
    detail = phone.page.get_by_role("region", name="worker")
    expect(detail).to_be_visible()
    events = detail.get_by_role("list", name="Recent events")
    expect(events).to_contain_text("agent.started")
    expect(events).to_contain_text("working")

    instruction = "focus on 2025 papers"
    detail.get_by_label("New instruction").fill(instruction)
    detail.get_by_role("button", name="Redirect").click()
    lab.recorder.wait_for_sync(match("agent.status", agent_id=run.agent_id, text=instruction))
    assert lab.agents.seen[run.agent_id] == [instruction]
    expect(events).to_contain_text(f"{instruction} (phone:{device_name(lab)})")
    phone.shot("detail")

    since = len(lab.recorder.events)
    detail.get_by_role("button", name="Pause", exact=True).click()
    lab.wait_state(run, "paused", since)
    expect(detail.get_by_role("button", name="Resume", exact=True)).to_be_visible()
    expect(detail.get_by_role("button", name="Pause", exact=True)).to_be_hidden()
    expect(detail.locator("#d-state")).to_have_text("paused")

    since = len(lab.recorder.events)
    detail.get_by_role("button", name="Resume", exact=True).click()
    lab.wait_state(run, "running", since)
    expect(detail.get_by_role("button", name="Pause", exact=True)).to_be_visible()
    expect(detail.locator("#d-state")).to_have_text("running")

    detail.get_by_role("button", name="Stop", exact=True).click()
    lab.wait_state(run, "stopped")
    with pytest.raises(cl.AgentStopped):
        run.result(timeout=10)
    expect(detail.locator("#d-state")).to_have_text("stopped")
    expect(detail.get_by_role("button", name="Stop", exact=True)).to_be_hidden()
    expect(detail.get_by_label("New instruction")).to_be_hidden()

    detail.get_by_role("button", name="Back").click()
    expect(phone.agent("worker")).to_contain_text("stopped")


def test_stop_all_asks_for_confirmation_then_stops_every_live_agent(lab: Lab) -> None:
    runs = [lab.start("crawler"), lab.start("indexer"), lab.start("deploy", "api")]
    lab.request_of(runs[2])
    phone = lab.paired()
    expect(phone.agents.get_by_role("listitem")).to_have_count(3)

    phone.button("Stop all").click()
    dialog = phone.page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("all 3 live agents")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert not any(run.done() for run in runs)

    phone.button("Stop all").click()
    expect(dialog).to_be_visible()
    phone.shot("dialog")
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()
    for run in runs:
        lab.wait_state(run, "stopped")
        with pytest.raises(cl.AgentStopped):
            run.result(timeout=10)
    for name in ("crawler", "indexer", "deploy"):
        expect(phone.agent(name)).to_contain_text("stopped")
    expect(phone.needs.get_by_role("article")).to_have_count(0)
