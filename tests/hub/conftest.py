"""Hub tests: each test has a home folder of its own and no hub named by the environment."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("CONDUCTLOOP_HUB", raising=False)
    monkeypatch.delenv("CONDUCTLOOP_HUB_SECRET", raising=False)
    monkeypatch.setenv("CONDUCTLOOP_HOME", str(tmp_path / "runtime-home"))
    return tmp_path / "runtime-home"
