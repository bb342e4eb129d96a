"""The live dashboard's text and its message budget, without a kernel: the agents' table
and its pages, escaping of untrusted text, what a request's card costs, and the budget
that keeps the widgets within their messages a second.
"""

from __future__ import annotations

from typing import Any

import pytest

from conductloop_jupyter.core.states import AgentState
from conductloop_jupyter.core.view import AgentView, Request
from conductloop_jupyter.notebook import dashboard_html as text
from conductloop_jupyter.notebook.dashboard_widgets import MessageBudget, card_cost


def agent(agent_id: str, state: AgentState, parent: str | None = None, **more: Any) -> AgentView:
    started = more.pop("started", 100.0)
    return AgentView(agent_id, agent_id.split("-")[0], "rt", parent, None, None, "", started,
                     state=state, **more)  # fmt: skip


def test_table_lists_live_agents_first_with_children_under_their_parent() -> None:
    agents = [
        agent("old-1", AgentState.DONE, started=1.0),
        agent("lead-2", AgentState.RUNNING, started=2.0),
        agent("kid-3", AgentState.DONE, "lead-2", started=3.0),
        agent("kid-4", AgentState.RUNNING, "lead-2", started=4.0),
        agent("orphan-5", AgentState.WAITING, "gone-0", started=5.0),
    ]
    rows = [(a.agent_id, depth) for a, depth in text.ordered(agents)]
    assert rows == [("lead-2", 0), ("kid-4", 1), ("kid-3", 1), ("orphan-5", 0), ("old-1", 0)]
    live = [a.agent_id for a, _ in text.ordered(agents, hide_ended=True)]
    assert live == ["lead-2", "kid-4", "orphan-5"]


def test_pages_hold_50_rows_and_a_page_past_the_end_shows_the_last() -> None:
    rows = text.ordered(agent(f"a-{n}", AgentState.RUNNING, started=n) for n in range(1000))
    page = text.page_of(rows, 99)
    assert (page.number, page.pages, page.total, len(page.rows)) == (19, 20, 1000, 50)


def test_untrusted_names_activity_and_prompts_are_escaped() -> None:
    evil = "<img src=x onerror=alert(1)>"
    shown = agent(f"{evil}-1", AgentState.RUNNING, activity=evil, stalled=True, stall_reason=evil)
    html = text.table(text.page_of(text.ordered([shown]), 0), {shown.agent_id: shown}, 200.0)
    request = Request("r1", shown.agent_id, "question", evil, (evil,), {"k": evil}, 1.0)
    html += text.request_card(request, shown) + text.totals([shown], 0.0, None, evil, evil)
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_card_never_costs_more_than_a_second_of_messages() -> None:
    many = Request("r1", "a", "question", "pick", tuple(map(str, range(50))), {}, 1.0)
    few = Request("r2", "a", "question", "pick", ("x", "y"), {}, 1.0)
    approval = Request("r3", "a", "approval", "ok?", None, {}, 1.0)
    assert [card_cost(r) for r in (many, few, approval)] == [5, 5, 5]  # approvals: a note box
    assert max(card_cost(r) for r in (many, few, approval)) < 18


def test_message_budget_allows_per_second_messages_in_any_one_second_window() -> None:
    now = [0.0]
    budget = MessageBudget(18, clock=lambda: now[0])
    budget.spend(10)
    assert budget.available() == 8  # spent, and stamped when the refresh settles
    budget.settle()
    now[0] = 0.5
    assert budget.available() == 8
    budget.spend(8)
    budget.settle()
    assert budget.available() == 0
    assert budget.wait() == pytest.approx(0.5)
    now[0] = 1.0
    assert budget.available() == 10
    now[0] = 1.5
    assert budget.available() == 18
