"""Run every benchmark: ``python benchmarks/run.py`` (``--quick`` for a short run).

Each script prints its own table (figure, the baseline measured in the same run, target,
PASS/MISS) and a final ``RESULT {json}`` line; this runner runs them one after another (so
they do not compete for the two cores), then prints a summary of every PASS and MISS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "import_time.py",
    "agent_step.py",
    "scale.py",
    "phone_latency.py",
    "approve_roundtrip.py",
    "store.py",
    "dashboard.py",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run of every benchmark")
    parser.add_argument("only", nargs="*", help="run only these scripts (e.g. store.py)")
    args = parser.parse_args()
    failed = 0
    summary: list[tuple[str, object]] = []
    for script in args.only or SCRIPTS:
        print(f"\n=== {script} {'(quick)' if args.quick else ''}", flush=True)
        started = time.perf_counter()
        command = [sys.executable, str(HERE / script), *(["--quick"] if args.quick else [])]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        print(done.stdout, end="")
        if done.returncode != 0:
            failed += 1
            print(done.stderr[-3000:], file=sys.stderr)
        results = [line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        summary.append((script, json.loads(results[-1]) if results else f"exit {done.returncode}"))
        print(f"--- {script}: {time.perf_counter() - started:.1f} s", flush=True)
    print("\n=== summary")
    for script, result in summary:
        print(f"{script}: {json.dumps(result)[:400]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
