"""Guards that hold for every test, and the runner for ``async def`` tests.

- Every ``async def`` test runs on a fresh event loop; when it returns, any task still
  pending on that loop fails the test (a leaked agent, a helper not closed), and so does
  any error the loop reported (an exception in a callback, a never-retrieved result).
- blockbuster is active for every test: a blocking call (sleep, file or socket I/O, a
  contended lock) on *any* thread that runs an event loop raises there.
- A thread started by a test and still alive after it fails the test.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from blockbuster import blockbuster_ctx


def _run(coro: Coroutine[Any, Any, None]) -> None:
    loop = asyncio.new_event_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        loop.run_until_complete(coro)
        leaked = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in leaked:
            task.cancel()
        if leaked:
            loop.run_until_complete(asyncio.gather(*leaked, return_exceptions=True))
            pytest.fail(f"the test left {len(leaked)} task(s) running: {leaked[:5]}")
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    if errors:
        pytest.fail(f"the event loop reported errors: {[e.get('message') for e in errors]}")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    _run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


@pytest.fixture(autouse=True)
def _no_blocking_on_event_loops() -> Iterator[None]:
    with blockbuster_ctx():
        yield


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    started = [t for t in threading.enumerate() if t not in before]
    for thread in started:
        thread.join(timeout=10)  # ends promptly unless it leaked; bounded, never a sleep
    alive = [t.name for t in started if t.is_alive()]
    if alive:
        pytest.fail(f"the test left thread(s) running: {alive}")
