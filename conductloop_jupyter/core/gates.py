"""Gates: where stop, budget and pause take effect, and how a held agent is woken.

Every await point an agent passes through ours (``checkpoint``, ``approve``, ``ask``, the
start and end of a ``tool`` span, ``parallel``/``handoff``, entering a ``subagent``) is a
*gate*. A gate checks, in this order:

1. **stop**: raise ``AgentStopped`` (``BudgetExceeded`` when a budget was rejected) in the
   agent; it ends ``stopped``. An async agent that is *not* at a gate (inside a tool body,
   awaiting its own I/O) has its task cancelled at once: it sees ``CancelledError`` there,
   and ``AgentStopped`` at the next gate or tool-span exit. A cancellation that ConductLoop
   did not issue is never swallowed. A plain ``def`` agent (a thread) cannot be
   interrupted: it sees the stop at its next gate.
2. **budget** (``budgets``): wait on a budget request while a budget is used up.
3. **pause**: hold (``paused``) until ``resume`` or ``stop``.

One agent may be at several gates at once (a framework's parallel tool calls run as tasks
of one agent): every waiter is woken by a pause ending, a stop or a decision, and each
checks again why it waited; a stop raises ``AgentStopped`` in each, even in a task that
the agent's cancelled task awaits. The agent shows ``waiting`` while any of its tasks
waits for a human, ``paused`` while a pause holds it and none does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from .errors import AgentStopped
from .states import AgentState

if TYPE_CHECKING:
    from .runs import AgentRecord
    from .runtime import Runtime


class GateState:
    """One agent's slice of the gates: written only by ``Gates``."""

    __slots__ = ("instructions", "pause", "stop", "waiters")

    def __init__(self, pause: bool) -> None:
        self.stop: AgentStopped | None = None  # set once a stop is requested
        self.pause = pause
        #: futures of the agent's tasks held in a gate -> the task that waits on each
        self.waiters: dict[asyncio.Future[None], asyncio.Task[Any] | None] = {}
        self.instructions: deque[str] = deque()


class Gates:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        #: how many cancellations we made of each task to deliver a stop
        self._cancels: dict[asyncio.Task[Any], int] = {}

    @staticmethod
    def state_for(parent: AgentRecord | None) -> GateState:
        """A new agent's slice: a child of a paused parent starts paused."""
        return GateState(parent.gate.pause if parent is not None else False)

    # -- the gate ----------------------------------------------------------------------

    @staticmethod
    def clear(record: AgentRecord) -> bool:
        """True when a gate has nothing to do (the fast path of every gate)."""
        gate = record.gate
        return gate.stop is None and not gate.pause and record.budget is None

    @staticmethod
    def passing(record: AgentRecord) -> bool:
        """True when a checkpoint has nothing to do: ``clear``, and no instruction queued."""
        gate = record.gate
        return (
            gate.stop is None and not gate.pause and record.budget is None and not gate.instructions
        )

    async def gate(self, record: AgentRecord) -> None:
        runtime, gate = self._runtime, record.gate
        while True:
            if gate.stop is not None:
                raise gate.stop
            if record.budget is not None:
                request_id = runtime.budgets.due(record)
                if request_id is not None:
                    await runtime.requests.wait(record, request_id)
                    continue
            asking = runtime.requests.waiting(record)  # another task of it waits for a human
            if gate.pause:
                if not asking:
                    runtime.set_state(record, AgentState.PAUSED)
                await self.block(record)  # until resumed, stopped, or a decision
                continue
            if not asking:
                runtime.set_state(record, AgentState.RUNNING)
            return

    @staticmethod
    def stopped(record: AgentRecord) -> AgentStopped | None:
        return record.gate.stop

    # -- holding and waking ------------------------------------------------------------

    @staticmethod
    async def block(record: AgentRecord) -> None:
        """Wait until ``wake(record)``; the caller checks again why it waited."""
        future = asyncio.get_running_loop().create_future()
        waiters = record.gate.waiters
        task = waiters[future] = asyncio.current_task()
        try:
            await future
        except asyncio.CancelledError:
            # A stop wakes every waiter and cancels the agent's task; when that task awaits
            # this one (``gather``, a task group) the cancellation reaches it too, after the
            # wake. Deliver the stop here instead, as at every other gate; a cancellation
            # that came before any wake is not ours to turn into anything.
            stop = record.gate.stop
            if stop is None or not future.done() or future.cancelled() or task is None:
                raise
            task.uncancel()
            raise stop from None
        finally:
            del waiters[future]

    @staticmethod
    def wake(record: AgentRecord) -> None:
        """Wake every task of the agent that is held in a gate."""
        for future in record.gate.waiters:
            if not future.done():
                future.set_result(None)

    @staticmethod
    def blocked(record: AgentRecord) -> bool:
        """Whether some task of the agent is held in a gate (so it is not idle)."""
        return bool(record.gate.waiters)

    # -- stop --------------------------------------------------------------------------

    def stop(self, record: AgentRecord, reason: AgentStopped) -> None:
        """Stop the agent and its children (idempotent; an ended agent is left as it is)."""
        gate = record.gate
        if gate.stop is not None or record.outcome is not None:
            return
        gate.stop = reason
        for child in list(record.children):
            self.stop(child, AgentStopped(f"its parent {record.agent_id} was stopped"))
        held = set(gate.waiters.values())
        self.wake(record)
        task = record.task
        if record.started and task is not None and task not in held:
            self._cancel(task)

    def _cancel(self, task: asyncio.Task[Any]) -> None:
        if task is _current_task() or task.done():
            return
        if self._cancels.get(task) and task.cancelling():
            return  # a cancellation of ours is already on its way (a subagent's parent)
        if task.cancel(msg="conductloop: stop"):
            self._cancels[task] = self._cancels.get(task, 0) + 1

    def absorb(self, record: AgentRecord) -> bool:
        """Undo the cancellations we made to deliver a stop; ``False`` if one came from outside."""
        task = record.task
        if record.gate.stop is None or task is None:
            return False
        if task.cancelling() > self._cancels.get(task, 0):
            return False
        while task.cancelling():
            task.uncancel()
        self._cancels.pop(task, None)
        return True

    def release(self, record: AgentRecord) -> None:
        """The agent ended: forget its task (a subagent's task is its parent's)."""
        if record.task is not None and not record.subagent:
            self._cancels.pop(record.task, None)

    # -- pause and redirect ------------------------------------------------------------

    def pause(self, record: AgentRecord, pause: bool) -> None:
        """Pause or resume the agent and its children."""
        for target in (record, *record.descendants()):
            target.gate.pause = pause
            if not pause:
                self.wake(target)

    @staticmethod
    def redirect(record: AgentRecord, text: str) -> None:
        record.gate.instructions.append(text)

    @staticmethod
    def take_instructions(record: AgentRecord) -> list[str]:
        queued = record.gate.instructions
        if not queued:
            return []
        texts = list(queued)
        queued.clear()
        return texts


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
