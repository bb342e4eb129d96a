"""Guards that hold for every test, and the runner for ``async def`` tests.

- Every ``async def`` test runs on a fresh event loop; when it returns, any task still
  pending on that loop fails the test (a leaked agent, a helper not closed), and so does
  any error the loop reported (an exception in a callback, a never-retrieved result).
- A test that uses pytest-jupyter's fixtures (``jp_serverapp``, ``jp_fetch``, ...; its
  closure includes ``jp_asyncio_loop``, where they built the server) runs on that loop
  instead, with the same checks: a task the test started and left pending fails it (the
  server's own tasks, started before the test, are not the test's), and so does any error
  the loop reported while the test ran. pytest-jupyter's plugin is not registered (it
  would run every ``async def`` test with its own ``pytest_pyfunc_call`` and add its
  autouse fixtures to every test); ``tests/server/conftest.py`` imports its fixtures.
- blockbuster is active for every test: a blocking call (sleep, file or socket I/O, a
  contended lock) on *any* thread that runs an event loop raises there.
- A thread started by a test and still alive after it fails the test.

``own_home`` (not autouse): a hub home folder of the test's own, and no hub named by the
environment, so a ``Conductor`` or a command the test starts finds or makes its own hub.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import blockbuster_ctx

from conductloop_jupyter.hub.hub import TASK_PREFIX
from tests._guard import allow_first_imports
from tests._leaks import fail_on_new_tasks

JP_LOOP = "jp_asyncio_loop"  # pytest-jupyter's loop fixture


def _errors_of(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """From now on, what ``loop`` reports (an exception in a callback, ...) is collected."""
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    return errors


def _fail_on(errors: list[dict[str, Any]]) -> None:
    if errors:
        pytest.fail(f"the event loop reported errors: {[e.get('message') for e in errors]}")


def _run_no_leaks(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], *, server: bool = False
) -> None:
    """Run ``coro`` on ``loop``; a task pending after it that was not pending before it
    started fails the test (cancelled first). ``server``: a hub runs on ``loop`` and
    outlives the test; its own tasks (a runtime's lost timer) are checked when the
    extension stops (``jp_serverapp`` in tests/server), not here."""
    before = asyncio.all_tasks(loop)
    loop.run_until_complete(coro)
    skip = TASK_PREFIX if server else ""
    fail_on_new_tasks(loop, before, "left running by the test", skip=skip)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """On a fresh loop, closed after it."""
    loop = asyncio.new_event_loop()
    errors = _errors_of(loop)
    try:
        _run_no_leaks(loop, coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    _fail_on(errors)


def _run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
    """On a loop that fixtures made and will close (the tasks already on it are theirs)."""
    previous = loop.get_exception_handler()
    errors = _errors_of(loop)
    try:
        _run_no_leaks(loop, coro, server=True)
    finally:
        loop.set_exception_handler(previous)
    _fail_on(errors)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    coro = pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names})
    if JP_LOOP in pyfuncitem._fixtureinfo.names_closure:
        # pytest-jupyter's server lives on this loop; its fixtures close it afterwards
        loop = pyfuncitem.funcargs[JP_LOOP]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        _run_on(loop, coro)
    else:
        _run(coro)
    return True


@pytest.fixture(autouse=True)
def _no_blocking_on_event_loops() -> Iterator[None]:
    with blockbuster_ctx() as blockbuster:
        allow_first_imports(blockbuster)
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


@pytest.fixture
def own_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("CONDUCTLOOP_HUB", raising=False)
    monkeypatch.delenv("CONDUCTLOOP_HUB_SECRET", raising=False)
    monkeypatch.setenv("CONDUCTLOOP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
