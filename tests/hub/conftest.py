"""Hub tests: each test has a home folder of its own and no hub named by the environment.

``phone``: an embedded hub of the test's own whose phone listener is open on loopback
(see ``_phone_support``). The hub API's tests start their hub inside the test, on the
test's own loop: ``async with running_hub(...)`` from ``_support``.

``procs``: real subprocesses (``conductloop serve``, runtime scripts) on the test's home,
``home``; each one is ended when the test ends (see ``_process_support``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub._phone_support import PhoneHub
from tests.hub._process_support import Procs


@pytest.fixture(autouse=True)
def own_home(own_home: Path) -> Path:
    """Every hub test has a home of its own (``own_home`` of tests/conftest.py)."""
    return own_home


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[PhoneHub]:
    started = PhoneHub(tmp_path / "hub")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def home(own_home: Path) -> Path:
    return own_home


@pytest.fixture
def procs(tmp_path: Path, home: Path) -> Iterator[Procs]:
    started = Procs(tmp_path, home)
    try:
        yield started
    finally:
        started.end_all()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """An event store's file in a home of the test's own."""
    return tmp_path / "home" / "events.sqlite3"
