"""Supervisors: functions that see every event, in order, and may steer.

``@loop.supervisor`` registers ``async def watch(event, loop)`` (or a plain ``def``). They
run on the runtime's loop, one event at a time, in a task of their own, so a slow
supervisor never slows the agents: events wait in a bounded inbox (the oldest are dropped
past 100,000, and counted). An exception in a supervisor is recorded as an error ``log``
event; it keeps receiving events. What a supervisor steers says it was that supervisor
(``by="supervisor:<name>"``), and the events it causes are not fed back to it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .events import Event

if TYPE_CHECKING:
    from .runtime import Runtime

Supervisor = Callable[[Event, Any], "Awaitable[None] | None"]

#: who steers when a call gives no ``by=``: "python", or "supervisor:<name>" inside a
#: supervisor, so the events say who decided
ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("conductloop_actor", default="python")

_INBOX = 100_000


class Supervisors:
    def __init__(self, runtime: Runtime, owner: object) -> None:
        self._runtime = runtime
        self._owner = owner  # what a supervisor gets as its ``loop`` argument
        self._fns: list[Supervisor] = []
        self._inbox: deque[Event] = deque(maxlen=_INBOX)
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._waker: asyncio.Future[None] | None = None
        #: whether any supervisor is registered (read for every event: an attribute)
        self.active = False

    def add(self, fn: Supervisor) -> None:
        """Register ``fn``; on the loop thread (or before the runtime has a loop)."""
        self._fns.append(fn)
        self.active = True
        loop = self._runtime.host.loop
        if loop is not None and not loop.is_closed():
            self._ensure(loop)

    def _ensure(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._supervise(), name="conductloop:supervisor")

    def observe(self, event: Event) -> None:
        """Hand an event to the supervisors (called for every event while there are any)."""
        if event.data.get("source") == "supervisor":
            return
        if len(self._inbox) == self._inbox.maxlen:
            self.dropped += 1
        self._inbox.append(event)
        waker = self._waker
        if waker is not None and not waker.done():
            waker.set_result(None)
        elif self._task is None:
            loop = self._runtime.host.loop
            assert loop is not None
            self._ensure(loop)

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._runtime.closed:
            while self._inbox:
                event = self._inbox.popleft()
                for fn in list(self._fns):
                    await self._call(fn, event)
            self._waker = loop.create_future()
            await self._waker

    async def _call(self, fn: Supervisor, event: Event) -> None:
        name = getattr(fn, "__name__", repr(fn))
        acting = ACTOR.set(f"supervisor:{name}")  # its steering says who did it
        try:
            outcome = fn(event, self._owner)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as error:
            self._runtime.emit(
                None,
                "log",
                {
                    "level": "error",
                    "source": "supervisor",
                    "message": f"supervisor {name} raised {type(error).__name__}: {error}",
                },
            )
        finally:
            ACTOR.reset(acting)

    def release(self) -> asyncio.Task[None] | None:
        """Cancel the supervisor task (the runtime is closing); return it to be awaited."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task
