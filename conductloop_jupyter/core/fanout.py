"""``ctx.parallel`` and ``ctx.handoff``: children that a parent waits for.

Rules (also in ``docs/concepts.md``):

- Children run concurrently, at most ``limit`` at a time when a limit is given; the
  results come back in the order of the items, whatever order the children finish in.
- Fail fast: when a child ends other than ``done`` (failed, stopped, lost), the siblings
  still running are stopped, no further child is started, and the parent gets
  ``AgentFailed`` (the child's exception is its ``__cause__``). Siblings that had already
  finished keep their results (visible in ``loop.agents()`` and the events).
  With ``return_exceptions=True`` nothing is stopped: the ``AgentFailed`` takes the child's
  place in the results and the others go on.
- Stopping the parent stops its children; pausing it pauses them.

Children are started lazily (only ``limit`` exist at a time), so 100,000 items cost the
memory of ``limit`` agents plus their finished results.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import AgentFailed, AgentStopped, UsageError
from .states import AgentState

if TYPE_CHECKING:
    from .runs import AgentRecord, AgentSpec
    from .runtime import Runtime

Call = tuple["AgentSpec", tuple[Any, ...], dict[str, Any]]


class FanState:
    """One ``fan_out`` call of a parent, while it waits: written only here.

    Each child it waits for holds it as ``reports_to``. A parent may run several fan-outs
    at once (from several of its tasks): each has its own.
    """

    __slots__ = ("completions", "owner")

    def __init__(self, owner: AgentRecord) -> None:
        self.owner = owner
        self.completions: deque[AgentRecord] = deque()  # children that ended, in order


def parse_items(runtime: Runtime, items: Sequence[Any]) -> list[Call]:
    """Check every ``(agent_name, *args)`` item before any child starts."""
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise UsageError("parallel takes a list of (agent_name, *args) tuples")
    calls: list[Call] = []
    for item in items:
        if not isinstance(item, (tuple, list)) or not item:
            raise UsageError(f"each parallel item is a tuple (agent_name, *args), not {item!r}")
        spec = runtime.spec(item[0])
        args = tuple(item[1:])
        spec.check_args(args, {})
        calls.append((spec, args, {}))
    return calls


def child_failure(child: AgentRecord) -> AgentFailed | None:
    assert child.outcome is not None
    state, value = child.outcome
    if state is AgentState.DONE:
        return None
    error = AgentFailed(child.agent_id, child.spec.name, state.value, str(value))
    if isinstance(value, BaseException):
        error.__cause__ = value
    return error


def child_ended(runtime: Runtime, child: AgentRecord) -> None:
    """Tell the parent waiting in ``fan_out`` (if any) that ``child`` ended."""
    fan = child.reports_to
    if fan is not None:
        child.reports_to = None
        fan.completions.append(child)
        runtime.gates.wake(fan.owner)


async def fan_out(
    runtime: Runtime,
    parent: AgentRecord,
    calls: list[Call],
    limit: int | None,
    return_exceptions: bool,
    on_spawn: Callable[[AgentRecord], None] | None = None,
) -> list[Any]:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise UsageError(f"limit must be a positive integer or None, not {limit!r}")
    results: list[Any] = [None] * len(calls)
    running: dict[AgentRecord, int] = {}
    fan = FanState(parent)
    try:
        return await _run(runtime, fan, calls, limit, return_exceptions, on_spawn, results, running)
    finally:
        for child in running:  # stopped or abandoned: they no longer report here
            child.reports_to = None
        fan.completions.clear()


async def _run(
    runtime: Runtime,
    fan: FanState,
    calls: list[Call],
    limit: int | None,
    return_exceptions: bool,
    on_spawn: Callable[[AgentRecord], None] | None,
    results: list[Any],
    running: dict[AgentRecord, int],
) -> list[Any]:
    parent, completions = fan.owner, fan.completions
    gates = runtime.gates
    started = 0
    failure: AgentFailed | None = None
    while failure is None and (started < len(calls) or running):
        while started < len(calls) and (limit is None or len(running) < limit):
            spec, args, kwargs = calls[started]
            child = runtime.spawn(spec, args, kwargs, parent=parent)
            child.reports_to = fan
            if on_spawn is not None:
                on_spawn(child)
            running[child] = started
            started += 1
        while completions and failure is None:
            child = completions.popleft()
            index = running.pop(child)
            error = child_failure(child)
            if error is None:
                results[index] = child.outcome[1] if child.outcome else None
            elif return_exceptions:
                results[index] = error
            else:
                failure = error
        room = started < len(calls) and (limit is None or len(running) < limit)
        if failure is None and running and not completions and not room:
            await gates.block(parent)
            stop = gates.stopped(parent)
            if stop is not None:
                raise stop
    if failure is not None:
        for sibling in running:
            gates.stop(sibling, AgentStopped(f"sibling {failure.agent_id} ended {failure.state}"))
        raise failure
    return results
