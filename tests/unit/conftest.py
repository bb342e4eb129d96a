"""Unit tests exercise the core in one process: no hub unless a test asks for one."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("CONDUCTLOOP_HUB", "off")
    monkeypatch.setenv("CONDUCTLOOP_HOME", str(tmp_path_factory.mktemp("home")))
