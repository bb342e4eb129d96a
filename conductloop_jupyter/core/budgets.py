"""Budgets: in USD, per agent and per conductor; when one is used up, the agent asks.

A budget is checked when usage is recorded and enforced at the agent's next gate: the
agent opens (or joins) a ``budget`` request and waits. Approving raises the budget by its
original amount above what is spent; rejecting stops the agent (the conductor's budget:
every agent). A subagent's spend counts against its parent's budget (and its parent's
parent's, through subagents), while each row's ``cost_usd`` stays its own spend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import BudgetExceeded

if TYPE_CHECKING:
    from .runs import AgentRecord, AgentSpec
    from .runtime import Runtime


class BudgetState:
    """One agent's slice of the budgets: written only by ``Budgets``."""

    __slots__ = ("limit", "step", "sub_spend")

    def __init__(self, limit: float | None) -> None:
        self.limit = limit  # None: only an owner's (or the conductor's) budget applies
        self.step = limit
        self.sub_spend = 0.0  # what its subagents spent


class Budgets:
    def __init__(self, runtime: Runtime, budget_usd: float | None) -> None:
        self._runtime = runtime
        self.limit = budget_usd  # the conductor's
        self._step = budget_usd
        self._open: dict[str, AgentRecord | None] = {}  # request id -> whose budget (None: ours)

    def state_for(
        self, spec: AgentSpec, parent: AgentRecord | None, subagent: bool
    ) -> BudgetState | None:
        """A new agent's slice, or ``None`` when no budget can apply to it (the fast path)."""
        owned = subagent and parent is not None and parent.budget is not None
        if spec.budget_usd is None and self.limit is None and not owned:
            return None
        return BudgetState(spec.budget_usd)

    def spent(self, record: AgentRecord, cost: float) -> None:
        """A subagent spent ``cost``: count it against the budgets of those it runs inside."""
        node = record
        while node.subagent and node.parent is not None:
            node = node.parent
            if node.budget is not None:
                node.budget.sub_spend += cost

    def _spent_by(self, record: AgentRecord) -> float:
        assert record.budget is not None
        return self._runtime.view.agents[record.agent_id].cost_usd + record.budget.sub_spend

    def due(self, record: AgentRecord) -> str | None:
        """The budget request this agent must wait on, opening it if needed."""
        node: AgentRecord | None = record
        while node is not None:
            budget = node.budget
            if (
                budget is not None
                and budget.limit is not None
                and self._spent_by(node) >= budget.limit
            ):
                return self._request(record, node)
            node = node.parent if node.subagent else None
        if self.limit is not None and self._runtime.view.total_cost_usd >= self.limit:
            return self._request(record, None)
        return None

    def _request(self, record: AgentRecord, owner: AgentRecord | None) -> str:
        for request_id, open_owner in self._open.items():
            if open_owner is owner:
                return request_id
        runtime = self._runtime
        if owner is not None:
            assert owner.budget is not None
            spent, limit, step = self._spent_by(owner), owner.budget.limit, owner.budget.step
            included = " (its subagents included)" if owner.budget.sub_spend else ""
            prompt = (
                f"{owner.spec.name} ({owner.agent_id}) has spent {usd(spent)}{included} of its "
                f"{usd(limit)} budget. Approve to allow {usd(step)} more; reject to stop it."
            )
        else:
            spent, limit, step = runtime.view.total_cost_usd, self.limit, self._step
            prompt = (
                f"The agents of {runtime.name} have spent {usd(spent)} of its {usd(limit)} "
                f"budget. Approve to allow {usd(step)} more; reject to stop all of them."
            )
        assert limit is not None
        assert step is not None
        details = {
            "scope": "agent" if owner is not None else "conductor",
            "spent_usd": spent,
            "budget_usd": limit,
            "new_budget_usd": max(limit, spent) + step,
        }

        def settle(decision: str, by: str) -> None:
            self._open.pop(request_id, None)
            self._settle(owner, decision, by)

        request_id = runtime.requests.new(
            record, "budget", prompt, details=details, on_decided=settle
        )
        self._open[request_id] = owner
        return request_id

    def _settle(self, owner: AgentRecord | None, decision: str, by: str) -> None:
        runtime = self._runtime
        if decision == "approved":
            if owner is not None:
                budget = owner.budget
                assert budget is not None
                assert budget.limit is not None
                assert budget.step is not None
                budget.limit = max(budget.limit, self._spent_by(owner)) + budget.step
            else:
                assert self.limit is not None
                assert self._step is not None
                self.limit = max(self.limit, runtime.view.total_cost_usd) + self._step
        elif decision == "rejected":
            targets = [owner] if owner is not None else list(runtime.records.values())
            for target in targets:
                runtime.gates.stop(target, BudgetExceeded(f"budget rejected by {by}", by=by))


def usd(amount: float | None) -> str:
    """Money for people: cents when it is dollars, four decimals when it is less."""
    if amount is None:
        return "$?"
    return f"${amount:,.2f}" if abs(amount) >= 1 else f"${amount:.4f}"
