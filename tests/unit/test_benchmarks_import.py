"""The benchmark scripts still import: a name they use from the package has not moved.

They are not run here (``python benchmarks/run.py`` takes minutes, and timing belongs in
benchmarks, not tests); importing each catches the breakage a refactor can leave behind.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_benchmark_script_imports() -> None:
    names = sorted(p.stem for p in BENCHMARKS.glob("*.py"))
    assert {"agent_step", "store", "run", "_harness"} <= set(names)
    code = "; ".join(f"import {name}" for name in names)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=BENCHMARKS, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
