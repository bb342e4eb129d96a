"""The notebook dashboard in a real JupyterLab, in a real Chromium.

A ``jupyter lab`` server runs as a subprocess (``_lab_support.JupyterLab``: the hub in the
server, through the ConductLoop server extension), and the browser opens a notebook whose
cells start agents that need a person (an approval, a question with choices) and two busy
ones, then show ``loop.dashboard()``. The test clicks the dashboard's own buttons, as a user
would, and checks what they did both in the page and in the kernel (a later cell prints
what the agents returned). The dashboard as it first renders is saved as
``screenshots/jupyterlab-dashboard.png`` for people to look at.

Cells are run with Shift+Enter, one at a time, as a user steps through a notebook. The cell
that awaits what the agents returned runs after the clicks: it sees the state they left,
and the test does not rely on the kernel handling widget clicks while a cell is running
(which ipykernel does only in recent versions).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser._lab_support import JupyterLab

SCREENSHOT = Path(__file__).resolve().parent / "screenshots" / "jupyterlab-dashboard.png"
KERNEL_START = 60_000  # ms: the first kernel imports pandas, ipywidgets and the package
CELL_TIMEOUT = 30_000  # ms for a cell (or a click) to show its effect

SETUP = """\
import asyncio

import conductloop_jupyter as cl
from conductloop_jupyter.testing import Reply, ScriptedLLM

loop = cl.Conductor(name="lab-dashboard", budget_usd=1.0)
llm = ScriptedLLM(
    [
        Reply("Release notes for api-v2.", 1800, 400, expect="Release notes"),
        Reply("Sales grew 12% in 2025.", 3000, 500, expect="Analyse"),
    ],
    model="gpt-4o-mini",
    ordered=False,
)


@loop.agent(model="gpt-4o-mini")
async def deployer(ctx: cl.Context, service: str) -> str:
    ctx.status(f"preparing the release of {service}")
    notes = await llm.complete(f"Release notes for {service}", ctx)
    if not await ctx.approve(f"Deploy {service} to production?", details={"replicas": 3}):
        return f"kept {service} in staging"
    return f"deployed {service} ({notes.text})"


@loop.agent(model="gpt-4o-mini")
async def analyst(ctx: cl.Context) -> str:
    ctx.status("choosing a dataset")
    dataset = await ctx.ask("Which dataset should I analyse?", choices=["sales_2024", "sales_2025"])
    ctx.status(f"analysing {dataset}")
    reply = await llm.complete(f"Analyse {dataset}", ctx)
    return f"analysed {dataset} ({reply.text})"


async def busy(ctx: cl.Context, what: str) -> None:
    for step in range(1, 1_000_000):
        await ctx.checkpoint()  # where a pause holds the agent
        ctx.status(f"{what} {step}")
        ctx.usage(input_tokens=400, output_tokens=60)
        await asyncio.sleep(0.1)  # a step of work


loop.agent(name="crawler", model="gpt-4o-mini")(busy)
loop.agent(name="indexer", model="gpt-4o-mini")(busy)

deploy = loop.start("deployer", "api-v2")
analysis = loop.start("analyst")
crawl = loop.start("crawler", "reading page")
index = loop.start("indexer", "indexing document")
"""

DASHBOARD = """\
dashboard = loop.dashboard()
dashboard
"""

RESULTS = """\
import os

print("hub", os.environ.get("CONDUCTLOOP_HUB"))
print("deployer ->", await asyncio.wait_for(deploy, 30))
print("analyst ->", await asyncio.wait_for(analysis, 30))
print("crawler is", crawl.state, "/ indexer is", index.state)
llm.verify()
dashboard.close()
await loop.aclose()
print("closed")
"""


@pytest.fixture
def jupyter_lab(tmp_path: Path) -> Iterator[JupyterLab]:
    lab = JupyterLab.start(tmp_path)
    try:
        yield lab
    finally:
        outlived = lab.stop()
        assert not outlived, f"left running after SIGTERM: {outlived}\n{lab.output()}"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


def cell(page: Page, number: int) -> Locator:
    return page.locator(".jp-Notebook .jp-Cell").nth(number)


def run_cell(page: Page, number: int) -> None:
    """Select cell ``number`` (0-based) and run it with Shift+Enter, as a user does."""
    target = cell(page, number)
    target.locator(".jp-InputArea-editor").click()
    # the click made it the active cell, with the keyboard in its editor
    expect(target).to_have_class(re.compile(r"\bjp-mod-active\b"))
    expect(target.locator(".cm-editor")).to_have_class(re.compile(r"\bcm-focused\b"))
    page.keyboard.press("Shift+Enter")
    # queued ("[*]:") or run ("[1]:"): the kernel has it
    expect(target.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[(\*|\d+)\]:"))


def test_the_dashboard_steers_agents_from_jupyterlab(jupyter_lab: JupyterLab, page: Page) -> None:
    jupyter_lab.write_notebook("dashboard.ipynb", [SETUP, DASHBOARD, RESULTS])
    problems: list[str] = []  # uncaught errors and console errors in the page
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(jupyter_lab.page_url("lab/tree/dashboard.ipynb"))
    # the kernel is connected: a cell run before that is dropped by JupyterLab
    kernel = page.locator("#jp-main-statusbar").get_by_text("Python 3 (ipykernel) | Idle")
    expect(kernel).to_be_visible(timeout=KERNEL_START)
    run_cell(page, 0)
    run_cell(page, 1)

    # the dashboard, as it first renders: two requests and two busy agents
    dash = cell(page, 1).locator(".conductloop-dashboard")
    inbox = dash.locator(".widget-html").filter(has_text="Needs you")
    approval = dash.locator(".widget-hbox").filter(has_text="Deploy api-v2 to production?")
    question = dash.locator(".widget-hbox").filter(has_text="Which dataset should I analyse?")
    table = dash.locator("table.conductloop-agents")
    status_line = dash.locator(".widget-html").last
    expect(inbox).to_have_text("Needs you (2)", timeout=KERNEL_START)
    expect(approval.get_by_role("button", name="Approve")).to_be_visible()
    expect(approval.get_by_role("button", name="Reject")).to_be_visible()
    for choice in ("sales_2024", "sales_2025", "Decline"):
        expect(question.get_by_role("button", name=choice)).to_be_visible()
    for name in ("deployer", "analyst"):
        expect(state_of(table, name)).to_have_text("waiting")
    for name in ("crawler", "indexer"):
        expect(state_of(table, name)).to_have_text("running")
    expect(status_line).to_have_text(re.compile(r"^Pick an agent"))
    shot(cell(page, 1).locator(".jp-OutputArea-output"))

    # Approve: the deployer goes on and finishes
    approval_id = request_id(approval)
    approval.get_by_role("button", name="Approve").click()
    expect(status_line).to_have_text(f"Approved {approval_id}.")
    expect(approval).to_have_count(0)
    expect(inbox).to_have_text("Needs you (1)")
    expect(state_of(table, "deployer")).to_have_text("done")

    # a choice: the analyst goes on with it and finishes
    question_id = request_id(question)
    question.get_by_role("button", name="sales_2025").click()
    expect(status_line).to_have_text(f"Answered {question_id}.")
    expect(question).to_have_count(0)
    expect(inbox).to_contain_text("nothing right now")
    expect(state_of(table, "analyst")).to_have_text("done")
    expect(row(table, "analyst")).to_contain_text("→ analysed sales_2025")  # its result

    # pick the crawler in the Agent list and pause it; the indexer runs on
    picker = dash.get_by_label("Agent")
    option = picker.locator("option").filter(has_text=re.compile(r"^crawler\s\("))  # &nbsp;
    expect(option).to_have_count(1)
    chosen = option.get_attribute("value") or ""
    crawler_id = re.sub(r"^crawler \((.+)\)$", r"\1", chosen)
    picker.select_option(value=chosen)
    dash.get_by_role("button", name="Pause", exact=True).click()
    expect(status_line).to_have_text(f"Paused {crawler_id}.")
    expect(state_of(table, "crawler")).to_have_text("paused")
    expect(state_of(table, "indexer")).to_have_text("running")
    expect(dash.locator(".conductloop-totals")).to_contain_text("1 running · 0 waiting · 1 paused")

    # the kernel's side: what the agents returned, and their states
    run_cell(page, 2)
    results = cell(page, 2).locator(".jp-OutputArea-output")
    expect(results).to_contain_text("closed", timeout=CELL_TIMEOUT)
    assert jupyter_lab.hub_url, jupyter_lab.output()
    expect(results).to_have_text(
        f"hub {jupyter_lab.hub_url}\n"
        "deployer -> deployed api-v2 (Release notes for api-v2.)\n"
        "analyst -> analysed sales_2025 (Sales grew 12% in 2025.)\n"
        "crawler is paused / indexer is running\n"
        "closed\n"
    )
    expect(page.locator(".jp-OutputArea-output[data-mime-type*='stderr']")).to_have_count(0)
    assert problems == []


def request_id(card: Locator) -> str:
    """The id of the request a card shows (from its ``conductloop-request-<id>`` class)."""
    found = re.search(r"\bconductloop-request-(\S+)", card.get_attribute("class") or "")
    assert found is not None, card.get_attribute("class")
    return found.group(1)


def state_of(table: Locator, agent: str) -> Locator:
    return row(table, agent).locator(".conductloop-state")


def row(table: Locator, agent: str) -> Locator:
    """The table row of the agent called ``agent``."""
    return table.locator("tbody tr").filter(has=table.page.locator("b", has_text=agent))


def shot(output: Locator) -> None:
    """Save ``output`` as the screenshot, centred in the notebook so no toolbar covers it."""
    output.evaluate("element => element.scrollIntoView({block: 'center'})")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    # written here: with path= Playwright writes it on a thread of its loop's executor
    SCREENSHOT.write_bytes(output.screenshot())
