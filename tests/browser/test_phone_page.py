"""The phone page in a real Chromium emulating phones, against a real hub and real agents.

Each test has a conductor of its own (and so an embedded hub of its own, in a temporary
home) whose phone listener is bound to loopback only. The page is opened from the pairing
link, as a phone opens it from the QR code. Waits are on events (``EventRecorder``) and
on Playwright's auto-waiting ``expect``; nothing sleeps. Each state the page can be in is
saved as a screenshot per profile in ``tests/browser/screenshots/`` for people to look at.
"""

from __future__ import annotations

import asyncio
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Playwright, expect

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match

PROFILES = ["Pixel 7", "iPhone 13"]
STATIC = Path(cl.__file__).resolve().parent / "static" / "phone"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
LONG_NAME = "summarize-every-quarterly-report-for-the-board"

# Every WebSocket the page opens, so a test can drop its connection as a lost network does.
TRACK_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = function (...args) {
    const socket = new Native(...args);
    window.__sockets.push(socket);
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
})();"""

# For every visible button in ``root``: its box, and the height of the area where a tap
# lands on it (an agent's name button is stretched over its whole card by a pseudo-element).
BUTTON_TARGETS = """(root) => {
  const found = [];
  for (const button of document.querySelector(root).querySelectorAll("button")) {
    if (!button.getClientRects().length) continue;
    button.scrollIntoView({ block: "center" });
    const box = button.getBoundingClientRect();
    const x = Math.min(Math.max(box.left + box.width / 2, 0), innerWidth - 1);
    let top = null, bottom = null;
    const from = Math.max(0, Math.floor(box.top) - 80), to = Math.min(innerHeight, box.bottom + 80);
    for (let y = from; y < to; y++) {
      const hit = document.elementFromPoint(x, y);
      if (hit && button.contains(hit)) { if (top === null) top = y; bottom = y; }
    }
    found.push({ label: button.textContent.trim(), box: box.height,
                 target: top === null ? 0 : bottom - top + 1 });
  }
  window.scrollTo(0, 0);
  return found;
}"""


# -- the agents a phone steers -----------------------------------------------------------


@dataclass
class Agents:
    """Agents registered on the test's conductor; ``seen``: what each worker's checkpoint
    returned, by agent id."""

    seen: dict[str, list[str]] = field(default_factory=dict)

    def register(self, loop: cl.Conductor) -> None:
        seen = self.seen

        @loop.agent(model="gpt-4o-mini")
        async def deploy(ctx: cl.Context, what: str) -> bool:
            ctx.status(f"ready to deploy {what}")
            ctx.usage(input_tokens=1200, output_tokens=300)
            return await ctx.approve(f"Deploy {what}?", details={"env": what, "replicas": 3})

        @loop.agent
        async def pick(ctx: cl.Context) -> str | None:
            ctx.status("choosing a dataset")
            return await ctx.ask("Which papers?", choices=["2024 papers", "2025 papers"])

        @loop.agent
        async def title(ctx: cl.Context) -> str | None:
            ctx.status("writing the report")
            return await ctx.ask("What should the report be called?")

        async def work(ctx: cl.Context) -> None:
            ctx.status("working")
            ctx.usage(model="gpt-4o-mini", input_tokens=5000, output_tokens=800)
            while True:
                for text in await ctx.checkpoint():
                    seen.setdefault(ctx.agent_id, []).append(text)
                    ctx.status(text)
                await asyncio.sleep(0.05)  # a step of work between checkpoints

        for name in ("worker", "crawler", "indexer", LONG_NAME):
            loop.agent(name=name)(work)


# -- the phone ---------------------------------------------------------------------------


@dataclass
class Phone:
    """One paired phone: a browser context emulating a device, and its page."""

    profile: str
    context: BrowserContext
    page: Page

    @property
    def needs(self) -> Locator:
        return self.page.get_by_role("region", name="Needs you")

    @property
    def agents(self) -> Locator:
        return self.page.get_by_role("list", name="Agents")

    def request(self, prompt: str) -> Locator:
        return self.needs.get_by_role("article").filter(has_text=prompt)

    def agent(self, name: str, doing: str | None = None) -> Locator:
        """The item of the agent called ``name`` (and whose activity says ``doing``)."""
        button = self.page.get_by_role("button", name=name, exact=True)
        return self.agents.get_by_role("listitem").filter(has=button, has_text=doing)

    def button(self, name: str) -> Locator:
        return self.page.get_by_role("button", name=name, exact=True)

    def shot(self, state: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        slug = re.sub(r"\W+", "-", self.profile.lower())
        # written here: with path= Playwright writes it on a thread of its loop's executor
        png = self.page.screenshot(full_page=True)
        (SCREENSHOTS / f"{slug}-{state}.png").write_bytes(png)


@dataclass
class Lab:
    """The test's conductor, its agents, and phones paired with its hub."""

    loop: cl.Conductor
    recorder: EventRecorder
    agents: Agents
    playwright: Playwright
    browser: Browser
    profile: str
    starter: Callable[..., cl.AgentRun]
    contexts: list[BrowserContext] = field(default_factory=list)

    def start(self, name: str, *args: Any) -> cl.AgentRun:
        return self.starter(self.loop, name, *args)

    def request_of(self, run: cl.AgentRun) -> str:
        opened = self.recorder.wait_for_sync(match("request.opened", agent_id=run.agent_id))
        return str(opened.data["request_id"])

    def wait_state(self, run: cl.AgentRun, state: str, since: int = 0) -> None:
        self.recorder.wait_for_sync(
            match("agent.state", agent_id=run.agent_id, state=state), since=since
        )

    def new_page(self, init_script: str | None = None, **options: Any) -> Phone:
        context = self.browser.new_context(**{**self.playwright.devices[self.profile], **options})
        self.contexts.append(context)
        if init_script is not None:
            context.add_init_script(init_script)
        return Phone(self.profile, context, context.new_page())

    def paired(self, init_script: str | None = None, **options: Any) -> Phone:
        """A phone that opened a fresh pairing link and shows the hub's agents."""
        phone = self.new_page(init_script, **options)
        phone.page.goto(self.loop.phone(host="127.0.0.1").url)
        expect(phone.needs).to_be_visible()
        return phone


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def lab(
    conductor: tuple[cl.Conductor, EventRecorder],
    start: Callable[..., cl.AgentRun],
    playwright: Playwright,
    browser: Browser,
    profile: str,
) -> Iterator[Lab]:
    loop, recorder = conductor
    agents = Agents()
    agents.register(loop)
    lab = Lab(loop, recorder, agents, playwright, browser, profile, start)
    try:
        yield lab
    finally:
        for context in lab.contexts:
            context.close()


# -- pairing -----------------------------------------------------------------------------


def test_the_qr_code_pairs_the_phone_and_the_secret_leaves_the_address_bar(lab: Lab) -> None:
    lab.start("worker")
    link = lab.loop.phone(host="127.0.0.1")
    assert (link.host, link.tls) == ("127.0.0.1", False)

    [found] = zxingcpp.read_barcodes(Image.open(io.BytesIO(link.qr_png())))
    assert found.format == zxingcpp.BarcodeFormat.QRCode
    assert found.text == link.url
    svg = ET.fromstring(link.qr_svg())
    assert svg.tag.endswith("svg")
    assert [p for p in svg.iter() if p.tag.endswith("path") and p.get("d")]

    phone = lab.new_page()
    phone.page.goto(found.text)
    expect(phone.needs).to_be_visible()
    expect(phone.agents).to_be_visible()
    expect(phone.agent("worker")).to_contain_text("running")
    assert "pair=" not in phone.page.url
    assert phone.page.url == link.page_url
    phone.shot("paired")

    devices = lab.loop.devices()
    assert len(devices) == 1
    assert devices["name"][0] == ("Pixel" if "Pixel" in lab.profile else "iPhone")
    assert devices["user_agent"][0] == lab.playwright.devices[lab.profile]["user_agent"]

    # the link is spent: another phone that opens it is not paired
    other = lab.new_page()
    other.page.goto(link.url)
    expect(other.page.get_by_role("heading", name="Not paired")).to_be_visible()
    expect(other.page.get_by_text("already used")).to_be_visible()
    assert "pair=" not in other.page.url
    assert len(lab.loop.devices()) == 1


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


# -- signed out, offline -----------------------------------------------------------------


def test_a_revoked_phone_shows_it_is_signed_out_at_once_and_after_a_reload(lab: Lab) -> None:
    lab.start("worker")
    phone = lab.paired()
    expect(phone.agent("worker")).to_be_visible()
    [device_id] = lab.loop.devices()["id"]

    lab.loop.revoke(device_id)
    signed_out = phone.page.get_by_role("heading", name="Signed out")
    expect(signed_out).to_be_visible()
    expect(phone.needs).to_be_hidden()
    expect(phone.agents).to_be_hidden()
    phone.shot("signed-out")

    phone.page.reload()
    expect(signed_out).to_be_visible()
    expect(phone.needs).to_be_hidden()
    assert lab.loop.devices().empty


def test_a_dropped_connection_shows_offline_then_catches_up_without_duplicates(
    lab: Lab,
) -> None:
    worker, deploy = lab.start("worker"), lab.start("deploy", "api")
    request_id = lab.request_of(deploy)
    phone = lab.paired(init_script=TRACK_SOCKETS)
    expect(phone.agent("worker")).to_contain_text("working")
    expect(phone.request("Deploy api?")).to_be_visible()
    banner = phone.page.get_by_role("alert")
    expect(banner).to_be_hidden()

    phone.context.set_offline(True)  # new connections fail; the open one is dropped:
    phone.page.evaluate("window.__sockets.forEach((socket) => socket.close())")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Offline")
    phone.shot("offline")

    lab.loop.redirect(worker.agent_id, "now on step two")
    lab.recorder.wait_for_sync(
        match("agent.status", agent_id=worker.agent_id, text="now on step two")
    )
    assert lab.loop.approve(request_id) is True
    assert deploy.result(timeout=10) is True
    expect(phone.agent("worker")).to_contain_text("working")  # it cannot have heard yet
    expect(banner).to_be_visible()

    phone.context.set_offline(False)
    expect(banner).to_be_hidden()
    expect(phone.agent("worker")).to_contain_text("now on step two")
    expect(phone.agent("deploy")).to_contain_text("done")
    expect(phone.needs.get_by_role("article")).to_have_count(0)
    expect(phone.page).to_have_title("ConductLoop")
    expect(phone.agents.get_by_role("listitem")).to_have_count(2)
    expect(phone.agent("worker")).to_have_count(1)
    expect(phone.agent("deploy")).to_have_count(1)


# -- how it looks ------------------------------------------------------------------------


def test_the_page_follows_a_dark_color_scheme(lab: Lab) -> None:
    lab.start("worker")
    lab.request_of(lab.start("deploy", "api"))
    phone = lab.paired(color_scheme="dark")
    expect(phone.request("Deploy api?")).to_be_visible()
    background = phone.page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(16, 18, 22)"
    phone.shot("dark")


def test_the_page_is_small_fits_360_px_and_every_button_is_a_44_px_target(lab: Lab) -> None:
    size = sum((STATIC / name).stat().st_size for name in ("index.html", "app.js", "app.css"))
    assert size <= 30 * 1024

    lab.start(LONG_NAME)
    lab.request_of(lab.start("deploy", "a-very-long-service-name-without-any-spaces-in-it"))
    lab.request_of(lab.start("pick"))
    lab.request_of(lab.start("title"))
    phone = lab.paired(viewport={"width": 360, "height": 740})
    page = phone.page
    expect(phone.needs.get_by_role("article")).to_have_count(3)
    expect(phone.agents.get_by_role("listitem")).to_have_count(4)

    def fits(state: str, root: str = "body") -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"{state}: the page is {width} px wide"
        small = [b for b in page.evaluate(BUTTON_TARGETS, root) if b["target"] < 44]
        assert not small, f"{state}: buttons smaller than 44 px: {small}"

    fits("main view")
    page.get_by_role("button", name=LONG_NAME).click()
    detail = page.get_by_role("region", name=LONG_NAME)
    expect(detail.get_by_role("list", name="Recent events")).to_contain_text("agent.started")
    detail.get_by_label("New instruction").fill("x" * 300)
    detail.get_by_role("button", name="Redirect").click()
    expect(detail.get_by_role("list", name="Recent events")).to_contain_text("x" * 100)
    fits("detail")
    detail.get_by_role("button", name="Back").click()
    phone.button("Stop all").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    fits("dialog", "dialog[open]")  # the page behind a modal dialog takes no taps


def device_name(lab: Lab) -> str:
    return "Pixel" if "Pixel" in lab.profile else "iPhone"
