"""The dashboard's text: totals, the agents table, and request cards, as escaped HTML.

Pure functions of the view, so they are tested without a kernel. Every string that came
from an agent (names, activity, prompts, details) is untrusted and goes through
``html.escape``. The table puts live agents first and children under their parent,
indented, and shows one page of it: a view of 1,000 agents renders 50 rows.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.budgets import usd
from ..core.states import AgentState
from ..core.view import AgentView, Request

PAGE_SIZE = 50

STATE_COLOURS = {
    AgentState.QUEUED: "#6b7280",
    AgentState.RUNNING: "#15803d",
    AgentState.WAITING: "#c2410c",
    AgentState.PAUSED: "#7c3aed",
    AgentState.DONE: "#1d4ed8",
    AgentState.FAILED: "#b91c1c",
    AgentState.STOPPED: "#374151",
    AgentState.LOST: "#92400e",
}
# one style sheet per value, not a style per cell: a page of 50 rows stays ~15 KB
STYLE = (
    "<style>.conductloop-agents{border-collapse:collapse;font-size:13px}"
    ".conductloop-agents td,.conductloop-agents th{padding:2px 8px;text-align:left;"
    "vertical-align:top;border-bottom:1px solid #e5e7eb}"
    ".conductloop-agents td.cl-n{text-align:right;font-variant-numeric:tabular-nums}"
    ".conductloop-state{color:#fff;border-radius:8px;padding:0 6px}"
    ".cl-muted{color:#6b7280}.cl-alert{color:#c2410c}.cl-error{color:#b91c1c}"
    + "".join(
        f".conductloop-state.cl-{state.value}{{background:{colour}}}"
        for state, colour in STATE_COLOURS.items()
    )
    + "</style>"
)


def esc(text: object, limit: int = 200) -> str:
    """Untrusted text, cut to ``limit`` characters and escaped for HTML."""
    value = str(text)
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return html.escape(value, quote=True)


def elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def badge(state: AgentState) -> str:
    return f'<span class="conductloop-state cl-{state.value}">{state.value}</span>'


# -- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of the table: its rows (agent, depth), and where it is."""

    rows: list[tuple[AgentView, int]]
    number: int  # 0-based, clamped
    pages: int
    total: int


def ordered(agents: Iterable[AgentView], hide_ended: bool = False) -> list[tuple[AgentView, int]]:
    """Agents as a tree flattened for reading: live ones first, each child under its parent.

    Roots (no parent, or a parent not in the view) and siblings are ordered live first,
    then by start time. ``depth`` is how far to indent. Iterative, so a deep chain of
    hand-offs cannot overflow the stack.
    """
    everyone = {a.agent_id: a for a in agents}
    children: dict[str | None, list[AgentView]] = {}
    for agent in everyone.values():
        parent = agent.parent if agent.parent in everyone else None
        children.setdefault(parent, []).append(agent)
    for group in children.values():
        group.sort(key=lambda a: (a.state.final, a.started))
    out: list[tuple[AgentView, int]] = []
    stack = [(agent, 0) for agent in reversed(children.get(None, []))]
    while stack:
        agent, depth = stack.pop()
        if not (hide_ended and agent.state.final):
            out.append((agent, depth))
        stack.extend((child, depth + 1) for child in reversed(children.get(agent.agent_id, [])))
    return out


def page_of(rows: list[tuple[AgentView, int]], number: int, size: int = PAGE_SIZE) -> Page:
    pages = max(1, -(-len(rows) // size))
    number = min(max(0, number), pages - 1)
    return Page(rows[number * size : (number + 1) * size], number, pages, len(rows))


def _child_summary(agent: AgentView, counts: Mapping[str, dict[str, int]]) -> str:
    mine = counts.get(agent.agent_id)
    if not mine:
        return ""
    parts = ", ".join(f"{n} {state}" for state, n in sorted(mine.items()))
    return f' <span class="cl-muted">({sum(mine.values())} children: {parts})</span>'


def table(page: Page, agents: Mapping[str, AgentView], now: float) -> str:
    """The agents table for one page; an empty view gets a one-line hint."""
    if not page.total:
        return '<p class="cl-muted">No agents yet: start one with loop.start(...).</p>'
    counts: dict[str, dict[str, int]] = {}
    for agent in agents.values():
        if agent.parent is not None:
            mine = counts.setdefault(agent.parent, {})
            mine[agent.state.value] = mine.get(agent.state.value, 0) + 1
    # a page with no child agents has no use for a parent column
    parents = any(agent.parent for agent, _ in page.rows)
    columns = ("agent", "state", "activity", "", "cost", "elapsed") + ("parent",) * parents
    head = "".join(f"<th>{name}</th>" for name in columns)
    body = []
    for agent, depth in page.rows:
        indent = f' style="padding-left:{8 + 16 * depth}px"' if depth else ""
        mark = "└ " if depth else ""
        activity = _activity(agent)
        stalled = ""
        if agent.stalled:
            reason = esc(agent.stall_reason or "no progress", 200)
            stalled = f'<span title="{reason}" class="cl-alert">⚠ stalled</span>'
        parent = agents.get(agent.parent) if agent.parent else None
        parent_name = esc(parent.name if parent else agent.parent or "", 40)
        parent_cell = f'<td title="{esc(agent.parent or "")}">{parent_name}</td>' * parents
        cost = usd(agent.cost_usd) if agent.cost_usd or not agent.unpriced_calls else "$?"
        end = agent.ended if agent.ended is not None else now
        body.append(
            f'<tr data-agent="{esc(agent.agent_id)}">'
            f'<td{indent} title="{esc(agent.agent_id)}">{mark}'
            f"<b>{esc(agent.name, 60)}</b>{_child_summary(agent, counts)}</td>"
            f"<td>{badge(agent.state)}</td><td>{activity}</td><td>{stalled}</td>"
            f'<td class="cl-n">{cost}</td><td class="cl-n">{elapsed(end - agent.started)}</td>'
            f"{parent_cell}</tr>"
        )
    first = page.number * PAGE_SIZE + 1
    footer = (
        f'<div class="cl-muted">agents {first} to {first + len(page.rows) - 1} of '
        f"{page.total} · page {page.number + 1} of {page.pages}</div>"
    )
    return (
        f'{STYLE}<table class="conductloop-agents"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>{footer}"
    )


def _activity(agent: AgentView) -> str:
    """What an agent is doing; for one that ended, what it ended with (its result, its
    error), or its last activity marked as past."""
    if agent.error and agent.state is AgentState.FAILED:
        return f'<span class="cl-error">{esc(agent.error, 120)}</span>'
    if agent.state is AgentState.DONE and agent.result:
        return f'<span class="cl-muted">→</span> {esc(agent.result, 120)}'
    activity = esc(agent.activity, 120)
    if agent.state.final:
        return f'<span class="cl-muted">last: {activity}</span>' if activity else ""
    if agent.tool:
        activity = f"<code>{esc(agent.tool, 40)}</code> {activity}"
    return activity


def totals(
    agents: Iterable[AgentView], spent: float, budget: float | None, title: str, problem: str
) -> str:
    """The header: how many agents are in each live state, and spend against budget."""
    states: dict[AgentState, int] = {}
    stalled = 0
    for agent in agents:
        states[agent.state] = states.get(agent.state, 0) + 1
        stalled += agent.stalled
    live = [
        f"<b>{states.get(s, 0)}</b> {s.value}"
        for s in (AgentState.RUNNING, AgentState.WAITING, AgentState.PAUSED, AgentState.QUEUED)
    ]
    if stalled:
        live.append(f'<b class="cl-alert">{stalled}</b> stalled')
    ended = sum(n for s, n in states.items() if s.final)
    live.append(f"<b>{ended}</b> ended")
    spend = f"spent <b>{usd(spent)}</b>"
    if budget is not None:
        share = min(100.0, 100.0 * spent / budget) if budget else 100.0
        colour = "#b91c1c" if share >= 90 else "#15803d"
        spend += (
            f" of {usd(budget)} budget "
            f'<span style="display:inline-block;width:80px;height:8px;background:#e5e7eb">'
            f'<span style="display:block;width:{share:.0f}%;height:8px;background:{colour}">'
            "</span></span>"
        )
    spend = f'<span style="white-space:nowrap">{spend}</span>'  # one piece: never split
    warning = ""
    if problem:
        warning = f'<div class="cl-error">⚠ {esc(problem, 300)}</div>'
    return (
        f'<div class="conductloop-totals"><b>ConductLoop</b> · {esc(title, 80)} · '
        f"{' · '.join(live)} · {spend}{warning}</div>"
    )


# -- the inbox -----------------------------------------------------------------------------

KIND_WORDS = {"approval": "asks for approval", "question": "asks", "budget": "is over budget"}


def request_card(request: Request, agent: AgentView | None) -> str:
    """The text of one open request: who asks, what, and the details."""
    who = esc(agent.name if agent else request.agent_id, 60)
    what = KIND_WORDS.get(request.kind, request.kind)
    details = ""
    if request.details:
        details = f'<br><code style="font-size:12px">{esc(_json(request.details), 400)}</code>'
    return (
        f'<div title="{esc(request.agent_id)}"><b>{who}</b> {what}: '
        f"{esc(request.prompt, 500)}{details}</div>"
    )


def inbox_title(open_count: int, shown: int) -> str:
    if not open_count:
        return '<b>Needs you</b> <span style="color:#6b7280">· nothing right now</span>'
    more = f" · showing the oldest {shown}" if open_count > shown else ""
    return f'<b style="color:#c2410c">Needs you ({open_count})</b>{more}'


def _json(value: Any) -> str:
    try:
        return json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)
