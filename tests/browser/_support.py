"""The phone page's side of the browser tests: the agents a phone steers, a paired phone
(a browser context emulating a device, and its page), and the ``Lab`` that holds them.

Each state the page can be in is saved as a screenshot per profile in
``tests/browser/screenshots/`` for people to look at (``Phone.shot``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Locator, Page, Playwright, expect

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
LONG_NAME = "summarize-every-quarterly-report-for-the-board"


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
            return (
                await ctx.approve(f"Deploy {what}?", details={"env": what, "replicas": 3})
            ).approved

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


def device_name(lab: Lab) -> str:
    """The name the page gives the phone it pairs (from its user agent)."""
    return "Pixel" if "Pixel" in lab.profile else "iPhone"
