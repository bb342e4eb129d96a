"""The code stays lint- and type-clean: ruff and mypy run as part of every test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing_in_the_package_and_tests() -> None:
    lint = _run("ruff", "check", "conductloop_jupyter", "tests")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    form = _run("ruff", "format", "--check", "conductloop_jupyter", "tests")
    assert form.returncode == 0, form.stdout + form.stderr


def test_mypy_strict_passes_on_the_package() -> None:
    typed = _run("mypy")
    assert typed.returncode == 0, typed.stdout + typed.stderr
