"""Deterministic test doubles, shipped so users test their own agents the way we test ours.

- ``ScriptedLLM``: stands in for an LLM provider (the one thing we fake). It answers with
  scripted replies that carry token usage, in order, and fails loudly when used past its
  script or when replies are left over (``verify()``, or leaving its ``with`` block).
- ``ManualClock``: a clock a test moves by hand, so stall detection is tested without
  waiting.
- ``EventRecorder``: an event sink that keeps every event and lets a test *wait for* one
  (on the event, never by sleeping).
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .core.context import Context, SyncContext
from .core.events import Event

__all__ = ["EventRecorder", "ManualClock", "Reply", "ScriptError", "ScriptedLLM", "match"]


class ScriptError(AssertionError):
    """The scripted LLM was used in a way its script does not allow."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``expect``: a text the prompt must contain."""

    text: str
    input_tokens: int = 100
    output_tokens: int = 20
    expect: str | None = None
    model: str | None = None


class ScriptedLLM:
    """A fake LLM provider that replies from a script and reports token usage.

    >>> llm = ScriptedLLM(["Paris", Reply("42", input_tokens=900, expect="answer")])
    >>> reply = await llm.complete("Capital of France?", ctx)   # records usage on ctx
    >>> reply.text
    'Paris'
    >>> llm.verify()          # raises ScriptError: one reply was never used

    With ``ordered=False`` each prompt takes the first unused reply whose ``expect`` it
    contains, which keeps the script deterministic when agents run in parallel.
    """

    def __init__(
        self, replies: Iterable[Reply | str], *, model: str = "gpt-4o-mini", ordered: bool = True
    ) -> None:
        self.model = model
        self.ordered = ordered
        self._replies = [r if isinstance(r, Reply) else Reply(r) for r in replies]
        self._used = [False] * len(self._replies)
        self._lock = threading.Lock()
        self._failure: ScriptError | None = None
        self.prompts: list[str] = []

    @property
    def remaining(self) -> int:
        return self._used.count(False)

    def _take(self, prompt: str) -> Reply:
        with self._lock:
            self.prompts.append(prompt)
            for i, reply in enumerate(self._replies):
                if self._used[i]:
                    continue
                if reply.expect is None or reply.expect in prompt:
                    self._used[i] = True
                    return reply
                if self.ordered:
                    self._failure = ScriptError(
                        f"scripted reply {i + 1} expects a prompt containing "
                        f"{reply.expect!r}, got {prompt!r}"
                    )
                    raise self._failure
            self._failure = ScriptError(
                f"the script has no reply left for prompt {len(self.prompts)}: {prompt!r} "
                f"({len(self._replies)} scripted)"
            )
            raise self._failure

    def _record(self, reply: Reply, ctx: Context | SyncContext | None) -> Reply:
        if ctx is not None:
            ctx.usage(reply.model or self.model, reply.input_tokens, reply.output_tokens)
        return reply

    async def complete(self, prompt: str, ctx: Context | SyncContext | None = None) -> Reply:
        """The next reply; with ``ctx``, its usage is recorded on that agent."""
        await asyncio.sleep(0)  # a real provider call would yield to other agents
        return self._record(self._take(prompt), ctx)

    def complete_sync(self, prompt: str, ctx: Context | SyncContext | None = None) -> Reply:
        """``complete`` for plain ``def`` agents."""
        return self._record(self._take(prompt), ctx)

    def verify(self) -> None:
        """Raise ``ScriptError`` if the script was misused or replies were never used."""
        if self._failure is not None:
            raise self._failure
        if self.remaining:
            left = [r.text for r, used in zip(self._replies, self._used, strict=True) if not used]
            raise ScriptError(f"{len(left)} scripted replies were never used: {left!r}")

    def __enter__(self) -> ScriptedLLM:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.verify()


class ManualClock:
    """A clock that moves only when a test calls ``advance``.

    ``sleep`` waits on the calling loop until the clock has been advanced past its end;
    ``advance`` can be called from any thread. ``await clock.sleepers(n)`` returns once
    ``n`` sleeps are waiting, so that a test knows an ``advance`` will wake them.
    """

    def __init__(self, start: float = 1_000.0, wall_start: float = 1_767_225_600.0) -> None:
        self._now = start
        self._offset = wall_start - start
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []  # see sleepers()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._offset

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            self._count += 1
            heapq.heappush(self._sleepers, (self._now + seconds, self._count, future))
            self._wake_watchers()
        await future

    async def sleepers(self, count: int = 1) -> None:
        """Return once at least ``count`` sleeps are waiting on this clock."""
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            self._watchers.append((count, future))
            self._wake_watchers()
        await future

    def _wake_watchers(self) -> None:  # with the lock held
        waiting = sum(not f.done() for _, _, f in self._sleepers)
        for entry in [w for w in self._watchers if w[0] <= waiting]:
            self._watchers.remove(entry)
            entry[1].get_loop().call_soon_threadsafe(_resolve, entry[1])

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            due = []
            while self._sleepers and self._sleepers[0][0] <= self._now:
                due.append(heapq.heappop(self._sleepers)[2])
        for future in due:
            future.get_loop().call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def match(
    kind: str | None = None, /, agent_id: str | None = None, **data: Any
) -> Callable[[Event], bool]:
    """A predicate on events: ``match("agent.state", agent_id=x, state="paused")``."""

    def predicate(event: Event) -> bool:
        return (
            (kind is None or event.kind == kind)
            and (agent_id is None or event.agent_id == agent_id)
            and all(event.data.get(k) == v for k, v in data.items())
        )

    return predicate


class EventRecorder:
    """An event sink that keeps every event; ``wait_for`` waits until one matches.

    >>> recorder = EventRecorder(); loop.attach(recorder)
    >>> event = await recorder.wait_for(match("request.opened"))

    Lock-free on purpose: ``emit`` runs on the conductor's loop thread and must never
    wait for a test thread. A waiter registers, then re-reads the events, so an event
    emitted in between is not missed (list appends and copies are atomic in CPython).
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._waiters: list[tuple[Callable[[Event], bool], Callable[[Event], None]]] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
        for waiter in list(self._waiters):
            if waiter[0](event):
                waiter[1](event)

    def _register(
        self, predicate: Callable[[Event], bool], notify: Callable[[Event], None], since: int
    ) -> tuple[Callable[[Event], bool], Callable[[Event], None]] | Event:
        waiter = (predicate, notify)
        self._waiters.append(waiter)
        for event in self.events[since:]:
            if predicate(event):
                self._waiters.remove(waiter)
                return event
        return waiter

    async def wait_for(
        self, predicate: Callable[[Event], bool], timeout: float = 10.0, since: int = 0
    ) -> Event:
        """The first recorded event (from index ``since``) matching ``predicate``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Event] = loop.create_future()

        def settle(event: Event) -> None:
            if not future.done():
                future.set_result(event)

        def notify(event: Event) -> None:
            loop.call_soon_threadsafe(settle, event)

        waiter = self._register(predicate, notify, since)
        if isinstance(waiter, Event):
            return waiter
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no matching event within {timeout} s") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def wait_for_sync(
        self, predicate: Callable[[Event], bool], timeout: float = 10.0, since: int = 0
    ) -> Event:
        """``wait_for`` for a thread that runs no event loop (a script, a sync test)."""
        done = threading.Event()
        box: list[Event] = []

        def notify(event: Event) -> None:
            box.append(event)
            done.set()

        waiter = self._register(predicate, notify, since)
        if isinstance(waiter, Event):
            return waiter
        try:
            if not done.wait(timeout):
                raise TimeoutError(f"no matching event within {timeout} s")
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return box[0]

    def of(self, agent_id: str | None = None, kind: str | None = None) -> list[Event]:
        return [
            e
            for e in list(self.events)
            if (agent_id is None or e.agent_id == agent_id) and (kind is None or e.kind == kind)
        ]
