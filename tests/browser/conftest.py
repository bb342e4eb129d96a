"""The phone page in a real Chromium (Debian's; Playwright downloads no browser).

Playwright's sync API keeps its own event loop running on the test's thread for as long as
it is started, which has two consequences here:

- blockbuster would see every call the test makes as a call on an event loop, so it is
  scoped to this project's code (as in ``tests/server``) and lets the test's own thread
  block: a test waits there by design (Playwright's sync calls wait there too). A blocking
  call on the conductor's and the hub's loop threads still raises.
- a ``Conductor`` first used on this thread would run its agents on Playwright's loop
  (a conductor binds to the loop running where it is first used), so agents are started
  from a short-lived thread of their own: ``start(loop, ...)``; and so is ``close``.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import blockbuster_ctx
from playwright.sync_api import Browser, Playwright, expect, sync_playwright

import conductloop_jupyter as cl
from conductloop_jupyter.hub.server import stop_embedded
from conductloop_jupyter.testing import EventRecorder
from tests._guard import allow_first_imports
from tests.browser._support import Agents, Lab

expect.set_options(timeout=10_000)

PROFILES = ["Pixel 7", "iPhone 13"]


@pytest.fixture(autouse=True)
def _no_blocking_on_event_loops() -> Iterator[None]:
    """blockbuster for this project's code, on every thread but the test's own."""
    with blockbuster_ctx("conductloop_jupyter") as blockbuster:
        allow_first_imports(blockbuster)
        for function in blockbuster.functions.values():
            # frames that exist only on the test's thread: the test body and its fixtures
            function.can_block_in("_pytest/python.py", "pytest_pyfunc_call")
            function.can_block_in(
                "_pytest/fixtures.py", {"call_fixture_func", "_teardown_yield_fixture"}
            )
        yield


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("the browser tests need Debian's chromium (apt-get install chromium)")
    launched = playwright.chromium.launch(executable_path=executable)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def conductor(own_home: Path) -> Iterator[tuple[cl.Conductor, EventRecorder]]:
    """A conductor in this process with its own home, so its embedded hub is this test's."""
    loop = cl.Conductor(name="phone-test")
    recorder = EventRecorder()
    loop.attach(recorder)
    try:
        yield loop, recorder
    finally:
        try:
            # on a thread of its own: ``close`` finishes the conductor's loop with
            # ``run_until_complete``, which fails where another loop runs (Playwright's)
            off_thread(loop.close)
        finally:
            stop_embedded()


def off_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a fresh thread where no event loop runs; its result (or error)."""
    box: list[Any] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            box.append(fn(*args))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=call, name="test-start")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


@pytest.fixture
def start() -> Callable[..., cl.AgentRun]:
    """``start(loop, name, *args)``: ``loop.start`` where the conductor cannot bind to
    Playwright's loop (see the module's docstring)."""

    def start_agent(loop: cl.Conductor, name: str, *args: Any) -> cl.AgentRun:
        run: cl.AgentRun = off_thread(loop.start, name, *args)
        return run

    return start_agent


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def lab(
    conductor: tuple[cl.Conductor, EventRecorder],
    start: Callable[..., cl.AgentRun],
    playwright: Playwright,
    browser: Browser,
    profile: str,
) -> Iterator[Lab]:
    """The test's conductor with ``Agents`` registered; phones pair with its hub."""
    loop, recorder = conductor
    agents = Agents()
    agents.register(loop)
    lab = Lab(loop, recorder, agents, playwright, browser, profile, start)
    try:
        yield lab
    finally:
        for context in lab.contexts:
            context.close()
