"""CLI tests run the real commands, each against a hub home folder of its own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("CONDUCTLOOP_HUB", raising=False)
    monkeypatch.delenv("CONDUCTLOOP_HUB_SECRET", raising=False)
    monkeypatch.setenv("CONDUCTLOOP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
