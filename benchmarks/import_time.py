"""Start-up: what ``import conductloop_jupyter`` costs a script, and what it loads.

Every figure is the wall time of a fresh ``python`` process, from spawn to exit, the best of
``--repeat`` runs (20; 8 with ``--quick``), the subjects taken in turn so that other load
falls on all of them alike:

- ``python -c pass``: the interpreter's own start, the baseline;
- ``python -c "import asyncio"``: the floor of an asyncio runtime (the core runs on it);
- ``python -c "import conductloop_jupyter"``: the package, whose target is 0.15 s (issue
  10: it was 0.5 s, loading pandas, plotly, tornado, sqlite3, qrcode and PIL);
- a script that makes a ``Conductor(hub=False)``, runs one agent (``ctx.status``,
  ``ctx.log``) to its result and closes the conductor;
- ``conductloop --version`` (the installed command, else ``python -m
  conductloop_jupyter.cli``).

Each subject also runs once with ``PYTHONPROFILEIMPORTTIME=1``, and the table says which of
the heavy dependencies it loaded; none should be, since each loads with the first use of
what needs it (a frame, a plot, a hub, a QR code, the widget, a price).
``tests/unit/test_import_cost.py`` holds that as a test; the timing is only here.

    python benchmarks/import_time.py [--quick] [--repeat N]

Prints a table and a final ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _figures import Figure, best, load_average, print_table
from _harness import child_env, machine

IMPORT_S = 0.15
#: what ``import conductloop_jupyter`` and a ``hub=False`` script must not load
HEAVY = (
    "pandas",
    "numpy",
    "plotly",
    "tornado",
    "sqlite3",
    "qrcode",
    "PIL",
    "ipywidgets",
    "anywidget",
    "genai_prices",
)
SCRIPT = """\
import conductloop_jupyter as cl

loop = cl.Conductor(name="startup", hub=False)


@loop.agent
async def hello(ctx: cl.Context) -> str:
    ctx.status("saying hello")
    ctx.log("hello")
    return "done"


assert loop.start("hello").result(timeout=30) == "done"
loop.close()
"""


@dataclass
class Subject:
    key: str
    what: str
    command: list[str]


def cli_command() -> list[str]:
    """The ``conductloop`` console script beside this interpreter, else ``-m``."""
    installed = Path(sys.executable).with_name("conductloop")
    if installed.exists():
        return [str(installed), "--version"]
    found = shutil.which("conductloop")
    command = [found] if found else [sys.executable, "-m", "conductloop_jupyter.cli"]
    return [*command, "--version"]


def subjects() -> list[Subject]:
    python = sys.executable
    return [
        Subject("pass", "python -c pass", [python, "-c", "pass"]),
        Subject("asyncio", "python -c 'import asyncio'", [python, "-c", "import asyncio"]),
        Subject(
            "import",
            "python -c 'import conductloop_jupyter'",
            [python, "-c", "import conductloop_jupyter"],
        ),
        Subject(
            "script",
            "a hub=False script: Conductor, one agent run, close",
            [python, "-c", SCRIPT],
        ),
        Subject("cli", "conductloop --version", cli_command()),
    ]


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[-1][:60]!r} failed:\n{done.stderr[-3000:]}")
    return done.stderr


def heavy_loaded(command: list[str], env: dict[str, str]) -> list[str]:
    """Which of ``HEAVY`` the command imports (``-X importtime`` lines on stderr)."""
    stderr = run(command, env | {"PYTHONPROFILEIMPORTTIME": "1"})
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    return [name for name in HEAVY if name in names]


def measure(repeat: int, env: dict[str, str]) -> tuple[dict[str, float], dict[str, list[str]]]:
    cases = subjects()
    for case in cases:  # once each: byte-code written, files in the page cache
        run(case.command, env)
    rounds = max(1, repeat // 4)
    seconds = {case.key: float("inf") for case in cases}
    for _ in range(rounds):
        for case in cases:
            took, _ = best(max(1, repeat // rounds), lambda c=case: run(c.command, env))
            seconds[case.key] = min(seconds[case.key], took)
    heavy = {case.key: heavy_loaded(case.command, env) for case in cases[2:]}
    return seconds, heavy


def report(
    quick: bool, repeat: int, seconds: dict[str, float], heavy: dict[str, list[str]]
) -> dict[str, Any]:
    base = seconds["pass"]
    lean = seconds["import"] <= IMPORT_S
    checks = {
        "import": lean,
        "nothing_heavy": not any(heavy.values()),
    }
    by_key = {case.key: case for case in subjects()}

    def row(key: str, target: str = "", ok: bool | None = None) -> Figure:
        loaded = f"; loads {', '.join(heavy[key])}" if heavy.get(key) else ""
        return Figure(
            by_key[key].what,
            f"{seconds[key]:.3f} s (+{(seconds[key] - base) * 1e3:.0f} ms){loaded}",
            f"{base:.3f} s" if key != "pass" else "",
            f"x{seconds[key] / base:.1f}" if key != "pass" else "",
            target,
            ok,
        )

    rows = [
        row("pass"),
        row("asyncio"),
        row("import", f"<= {IMPORT_S:g} s, nothing heavy", lean and not heavy["import"]),
        row("script", "nothing heavy", not heavy["script"]),
        row("cli", "nothing heavy", not heavy["cli"]),
    ]
    print_table(f"Start-up: fresh processes, best of {repeat}", rows)
    print(f"heavy: {', '.join(HEAVY)}")
    load = load_average()
    return {
        "benchmark": "import_time",
        "quick": quick,
        "repeat": repeat,
        "machine": machine(),
        "load_average": load,
        "pass": all(checks.values()),
        "checks": checks,
        "seconds": seconds,
        "heavy_loaded": heavy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    parser.add_argument("--repeat", type=int, help="runs of each subject (best); 20, quick 8")
    args = parser.parse_args()
    repeat = max(1, args.repeat or (8 if args.quick else 20))
    with tempfile.TemporaryDirectory(prefix="conductloop-import-") as home:
        env = child_env(Path(home))
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # the byte-code cache is the normal case
        seconds, heavy = measure(repeat, env)
    result = report(args.quick, repeat, seconds, heavy)
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
