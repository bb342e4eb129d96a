"""The example notebooks, executed top to bottom in a real IPython kernel with nbclient.

Each notebook ends with ``assert`` cells on what it produced, so running it is a test of the
package as a user meets it. On top of that these tests check the outputs a reader should
see (the report, the plotly figures, the live dashboard, the phone's QR code), that the
committed files carry no outputs, and that the hub's secret never lands in an executed
notebook. The kernel inherits this process's environment: ``CONDUCTLOOP_HOME`` is a fresh
folder and no hub is configured, so each notebook starts an embedded hub of its own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["quickstart", "steering", "cost"]
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"


@dataclass
class Executed:
    notebook: NotebookNode
    secrets: set[str]  # every hub secret seen in the home folder during and after the run

    def cell(self, starts_with: str) -> NotebookNode:
        """The one code cell whose source starts with ``starts_with``."""
        found = [
            c
            for c in self.notebook.cells
            if c.cell_type == "code" and c.source.startswith(starts_with)
        ]
        assert len(found) == 1, f"{len(found)} code cells start with {starts_with!r}"
        return found[0]

    def data(self, starts_with: str) -> list[dict[str, Any]]:
        """The rich outputs (``execute_result``, ``display_data``) of that cell."""
        outputs = self.cell(starts_with).outputs
        return [o["data"] for o in outputs if o.output_type in ("execute_result", "display_data")]

    def stdout(self, starts_with: str) -> str:
        outputs = self.cell(starts_with).outputs
        return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")


def _hub_secrets(home: Path) -> set[str]:
    """The secrets a hub keeps in ``home``: ``hub.json`` while it runs, ``hub.secret`` always."""
    found = set()
    with contextlib.suppress(OSError, ValueError, KeyError):
        found.add(json.loads((home / "hub.json").read_text())["secret"])
    with contextlib.suppress(OSError):
        found.add((home / "hub.secret").read_text().strip())
    return {secret for secret in found if secret}


@pytest.fixture
def execute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Executed]:
    """``execute(name)``: run ``notebooks/<name>.ipynb`` in a fresh kernel; fail on any error."""
    home = tmp_path / "conductloop-home"
    for name in ("CONDUCTLOOP_HUB", "CONDUCTLOOP_HUB_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONDUCTLOOP_HOME", str(home))
    for name, folder in (("IPYTHONDIR", "ipython"), ("JUPYTER_RUNTIME_DIR", "runtime")):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(name, str(tmp_path / folder))
    workdir = tmp_path / "work"
    workdir.mkdir()

    def run(name: str) -> Executed:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        secrets: set[str] = set()

        def after_cell(**_: Any) -> None:  # hub.json goes away when the kernel's hub stops
            secrets.update(_hub_secrets(home))

        client = NotebookClient(
            notebook,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
            on_cell_executed=after_cell,
        )
        client.execute()  # raises CellExecutionError, with the traceback, on a failing cell
        secrets.update(_hub_secrets(home))
        return Executed(notebook, secrets)

    return run


def _check_common(executed: Executed) -> None:
    errors = [
        o
        for c in executed.notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr")
    ]
    assert errors == [], errors
    assert executed.secrets, "the notebook ran without a hub: no secret in CONDUCTLOOP_HOME"
    saved = nbformat.writes(executed.notebook)
    for secret in executed.secrets:
        assert secret not in saved, "the hub's secret is in the executed notebook"


def test_quickstart_routes_fans_out_hands_off_and_supervises(
    execute: Callable[[str], Executed],
) -> None:
    executed = execute("quickstart")
    _check_common(executed)
    assert executed.stdout("report = await research") == "A short report on agent orchestration.\n"
    stopped = executed.stdout("try:\n    await code")
    assert "the coder was stopped" in stopped
    agents = executed.data("agents = loop.agents()")
    (table,) = (a["text/html"] for a in agents)
    assert "summarizer" in table
    assert "stopped" in table
    (timeline,) = executed.data("loop.plot_timeline()")
    assert timeline[PLOTLY]["data"]


def test_steering_from_later_cells(execute: Callable[[str], Executed]) -> None:
    executed = execute("steering")
    _check_common(executed)
    (dashboard,) = executed.data("loop = cl.Conductor(")
    assert dashboard[WIDGET]["model_id"]
    asked = executed.stdout("await until(lambda: request_of(mail")
    assert "Email the summary to 40 people?" in asked
    (sent,) = executed.data("assert loop.approve(approval.id")
    assert sent["text/plain"].startswith("'sent: ")
    (sections,) = executed.data("loop.approve(budget.id)")
    assert sections["text/plain"] == "['Section 1.', 'Section 2.', 'Section 3.']"
    assert "stopped:" in executed.stdout("loop.stop(reading.agent_id)")
    (phone,) = executed.data("link = loop.phone(")
    assert "image/png" in phone or '<img alt="pairing QR code"' in phone.get("text/html", "")
    assert "http://127.0.0.1:" in phone["text/plain"]
    assert "#" not in phone["text/plain"], "the one-time pairing code is in the repr"
    (devices,) = executed.data("loop.devices()")
    assert "Empty DataFrame" in devices["text/plain"]


def test_cost_analysis_with_pandas(execute: Callable[[str], Executed]) -> None:
    executed = execute("cost")
    _check_common(executed)
    (by_model,) = executed.data('by_model = loop.spend(by="model")')
    assert "my-local-llama" in by_model["text/html"]
    assert "unpriced_calls" in by_model["text/html"]
    (tool_times,) = executed.data("finished = events[")
    assert tool_times["text/plain"].split()[:3] == ["count", "mean", "max"]
    (spend,) = executed.data('loop.plot_spend(by="model")')
    assert spend[PLOTLY]["data"]
    (timeline,) = executed.data("loop.plot_timeline()")
    assert timeline[PLOTLY]["data"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_have_no_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code, "a notebook with no code"
    for cell in code:
        assert cell.outputs == [], cell.source[:60]
        assert cell.execution_count is None, cell.source[:60]
    assert notebook.metadata.kernelspec.name == "python3"
    assert "widgets" not in notebook.metadata  # no saved widget state either


def test_notebooks_use_the_public_api_only() -> None:
    """``import conductloop_jupyter as cl`` and the shipped test doubles, nothing private."""
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        source = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
        imports = {line.strip() for line in source.splitlines() if "conductloop_jupyter" in line}
        assert imports == {
            "import conductloop_jupyter as cl",
            "from conductloop_jupyter.testing import Reply, ScriptedLLM",
        }, imports
        assert "._" not in source.replace("._repr", ""), f"{name} reaches into private names"
