"""Helpers shared by the ctx.parallel and ctx.handoff tests (``test_fanout_*.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match


@asynccontextmanager
async def conductor() -> AsyncIterator[tuple[cl.Conductor, EventRecorder]]:
    async with cl.Conductor("fanout", hub=False) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        yield loop, recorder


async def ended(recorder: EventRecorder, agent_id: str, state: str) -> None:
    await recorder.wait_for(match("agent.state", agent_id=agent_id, state=state))


async def wait_for_many(
    recorder: EventRecorder, predicate: Callable[[cl.Event], bool], count: int
) -> list[cl.Event]:
    """The first ``count`` recorded events that match ``predicate``, waiting for them."""
    found: list[cl.Event] = []
    since = 0
    while len(found) < count:
        event = await recorder.wait_for(predicate, since=since)
        found.append(event)
        since = next(i for i, e in enumerate(recorder.events) if e is event) + 1
    return found


def rows(loop: cl.Conductor, name: str) -> list[dict[str, Any]]:
    frame = loop.agents()
    return frame[frame["name"] == name].to_dict("records")


def states_by_id(loop: cl.Conductor) -> dict[str, str]:
    frame = loop.agents()
    return dict(zip(frame["agent_id"], frame["state"], strict=True))
