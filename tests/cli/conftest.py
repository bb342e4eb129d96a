"""CLI tests run the real commands, each against a hub home folder of its own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def own_home(own_home: Path) -> Path:
    """Every CLI test has a home of its own (``own_home`` of tests/conftest.py)."""
    return own_home
