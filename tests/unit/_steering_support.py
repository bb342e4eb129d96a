"""Helpers shared by the steering tests (``test_steering_*.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import conductloop_jupyter as cl
from conductloop_jupyter.testing import EventRecorder, match


@asynccontextmanager
async def conductor(**kwargs: Any) -> AsyncIterator[tuple[cl.Conductor, EventRecorder]]:
    async with cl.Conductor("steer", **kwargs) as loop:
        recorder = EventRecorder()
        loop.attach(recorder)
        yield loop, recorder


async def opened(recorder: EventRecorder, run: cl.AgentRun) -> str:
    event = await recorder.wait_for(match("request.opened", agent_id=run.agent_id))
    return str(event.data["request_id"])


async def state(recorder: EventRecorder, run: cl.AgentRun, name: str) -> None:
    await recorder.wait_for(match("agent.state", agent_id=run.agent_id, state=name))
