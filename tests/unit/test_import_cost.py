"""A script pays only for what it uses: the heavy dependencies load when first needed.

``import conductloop_jupyter``, a ``Conductor(hub=False)`` running an agent, and the
command's ``--version`` and ``--help`` load none of them (issue 10: the import took 0.5 s,
loading them all). Each case runs in a fresh interpreter; a failure names the line of ours
that imported each one first. How long it takes is measured by
``benchmarks/import_time.py``, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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

# Installed first in the child: when a heavy package is first looked for, note the import
# lines of this package on the stack, outermost first ("conductloop_jupyter:7 > ...").
_PROBE = f"""
import json, sys

HEAVY = {HEAVY!r}
first = {{}}


class _Probe:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in first:
            ours, frame = [], sys._getframe(1)
            while frame:
                module = frame.f_globals.get("__name__", "")
                if module.startswith("conductloop_jupyter"):
                    ours.insert(0, f"{{module}}:{{frame.f_lineno}}")
                frame = frame.f_back
            first[top] = " > ".join(ours) or "?"
        return None


sys.meta_path.insert(0, _Probe())
"""
_REPORT = """
print(json.dumps({name: first.get(name, "?") for name in HEAVY if name in sys.modules}))
"""

SCRIPT = """
import conductloop_jupyter as cl

loop = cl.Conductor(name="lean", hub=False)


@loop.agent
async def hello(ctx: cl.Context) -> str:
    ctx.status("saying hello")
    ctx.log("hello")
    return "done"


assert loop.start("hello").result(timeout=30) == "done"
loop.close()
"""

COMMAND = """
import contextlib
from conductloop_jupyter.cli import main

with contextlib.suppress(SystemExit):
    main([{flag!r}])
"""


def heavy_loaded(code: str) -> dict[str, str]:
    """The heavy modules ``code`` loaded in a fresh interpreter, each with the chain of
    our ``module:line`` that imported it first."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE + code + _REPORT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_the_probe_names_the_line_that_imported_a_heavy_module() -> None:
    loaded = heavy_loaded("import conductloop_jupyter.notebook.plots")
    assert loaded["plotly"].startswith("conductloop_jupyter.notebook.plots:")  # the only one
    assert {"pandas", "numpy", "plotly"} <= loaded.keys()


def test_importing_the_package_loads_no_heavy_dependency() -> None:
    assert heavy_loaded("import conductloop_jupyter") == {}


def test_a_script_without_a_hub_runs_and_closes_an_agent_loading_no_heavy_dependency() -> None:
    assert heavy_loaded(SCRIPT) == {}


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_the_command_answers_version_and_help_loading_no_heavy_dependency(flag: str) -> None:
    assert heavy_loaded(COMMAND.format(flag=flag)) == {}
