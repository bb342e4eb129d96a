"""Tasks a test (or a server it started) left running: cancelled, then the test fails."""

from __future__ import annotations

import asyncio

import pytest


def fail_on_new_tasks(
    loop: asyncio.AbstractEventLoop, before: set[asyncio.Task[object]], what: str, *, skip: str = ""
) -> None:
    """Fail if a task of ``loop`` not in ``before`` is still pending (after cancelling it).
    ``skip``: a task name prefix that is someone else's to check."""
    leaked = [
        t
        for t in asyncio.all_tasks(loop) - before
        if not t.done() and not (skip and t.get_name().startswith(skip))
    ]
    for task in leaked:
        task.cancel()
    if leaked:
        loop.run_until_complete(asyncio.gather(*leaked, return_exceptions=True))
        pytest.fail(f"{len(leaked)} task(s) {what}: {leaked[:5]}")
