"""Demonstration agents: routing, parallel fan-out, hand-off, and three moments that need you.

Used by ``conductloop demo`` and the example notebooks. The LLM is the scripted double from
``conductloop_jupyter.testing``, so the demo needs no API key and costs nothing, while the
spend it shows is priced from real model prices.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .conductor import Conductor
from .core.context import Context
from .testing import Reply, ScriptedLLM


@dataclass(frozen=True)
class Task:
    kind: str
    text: str


TASKS = [Task("research", "agent orchestration"), Task("code", "a CSV summary tool")]
PACE = 0.4  # seconds between steps, so a person can watch the agents work


def demo_llm() -> ScriptedLLM:
    return ScriptedLLM(
        [
            Reply("Five papers on orchestration.", 1200, 300, expect="Search"),
            *[Reply(f"Summary of part {n}.", 900, 120, expect=f"part {n}") for n in (1, 2, 3)],
            Reply("A polished report.", 2400, 800, expect="Write"),
            Reply("def summarize(path): ...", 1500, 600, expect="Code"),
            Reply("Tests for summarize().", 1600, 700, expect="Test"),
        ],
        model="gpt-4o-mini",
        ordered=False,
    )


def build(pace: float = PACE, llm: ScriptedLLM | None = None) -> tuple[Conductor, ScriptedLLM]:
    """A conductor with the demo agents registered, and the LLM they use."""
    llm = llm or demo_llm()
    loop = Conductor(name="demo", budget_usd=1.0)

    @loop.router
    def route(task: Task) -> str:
        return "coder" if task.kind == "code" else "researcher"

    @loop.agent(model="gpt-4o-mini")
    async def researcher(ctx: Context, task: Task) -> str:
        ctx.status(f"searching for {task.text}")
        async with ctx.tool("search", query=task.text):
            await asyncio.sleep(pace)
            found = await llm.complete(f"Search: {task.text}", ctx)
        parts = await ctx.parallel([("summarizer", n, found.text) for n in (1, 2, 3)], limit=2)
        for instruction in await ctx.checkpoint():
            ctx.log(f"new instruction: {instruction}")
        if not await ctx.approve(
            "Email the summary to 40 people?", details={"to": "research-list", "parts": 3}
        ):
            return "kept the summary to myself"
        return str(await ctx.handoff("writer", parts))

    @loop.agent(model="gpt-4o-mini")
    async def summarizer(ctx: Context, part: int, text: str) -> str:
        ctx.status(f"summarizing part {part}")
        await asyncio.sleep(pace)
        return (await llm.complete(f"Summarize part {part}: {text}", ctx)).text

    @loop.agent(model="gpt-4o-mini")
    async def writer(ctx: Context, parts: list[str]) -> str:
        ctx.status("writing the report")
        await asyncio.sleep(pace)
        return (await llm.complete(f"Write a report from {len(parts)} parts", ctx)).text

    @loop.agent(model="gpt-4o-mini", budget_usd=0.0005)
    async def coder(ctx: Context, task: Task) -> str:
        language = await ctx.ask(f"Which language for {task.text}?", choices=["python", "rust"])
        language = language or "python"  # declined: the agent picks the default
        ctx.status(f"writing {language} code")
        async with ctx.tool("editor", file=f"summarize.{'py' if language == 'python' else 'rs'}"):
            await asyncio.sleep(pace)
            code = await llm.complete(f"Code: {task.text} in {language}", ctx)
        await ctx.checkpoint()  # its small budget is used up here: it asks before going on
        ctx.status("writing tests")
        await llm.complete("Test the code", ctx)
        return code.text

    return loop, llm
