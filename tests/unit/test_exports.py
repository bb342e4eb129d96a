"""The public surface: ``__all__`` lists, the DESIGN's names and signatures, a pure core."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import conductloop_jupyter as cl
import conductloop_jupyter.core as core

PACKAGE = Path(cl.__file__).resolve().parent
CORE_FILES = sorted((PACKAGE / "core").rglob("*.py"))


def _isort_style(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps ``__all__`` in: CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


@pytest.mark.parametrize("module", [cl, core], ids=lambda m: m.__name__)
def test_all_is_sorted(module: types.ModuleType) -> None:
    assert module.__all__ == sorted(module.__all__, key=_isort_style)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("module", [cl, core], ids=lambda m: m.__name__)
def test_all_lists_every_public_name_and_only_names_that_exist(module: types.ModuleType) -> None:
    missing = _public_names(module) - set(module.__all__)
    assert not missing, f"public but not in __all__: {sorted(missing)}"
    absent = [name for name in module.__all__ if not hasattr(module, name)]
    assert not absent, f"in __all__ but not defined: {absent}"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from conductloop_jupyter import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(cl.__all__)


@pytest.mark.parametrize(
    "name",
    [
        "Conductor",
        "Context",
        "AgentRun",
        "Request",
        "UsageError",
        "AgentStopped",
        "BudgetExceeded",
        "ConductLoopError",
    ],
)
def test_design_contract_name_is_exported(name: str) -> None:
    assert name in cl.__all__
    assert inspect.isclass(getattr(cl, name))


def test_exceptions_form_the_design_hierarchy() -> None:
    assert issubclass(cl.ConductLoopError, Exception)
    for error in (cl.UsageError, cl.AgentStopped, cl.BudgetExceeded, cl.AgentFailed):
        assert issubclass(error, cl.ConductLoopError)
    assert issubclass(cl.BudgetExceeded, cl.AgentStopped)
    # usage mistakes are kept apart from run failures
    assert not issubclass(cl.UsageError, cl.AgentStopped)
    assert not issubclass(cl.AgentStopped, cl.UsageError)


def test_conductor_signature_matches_the_design() -> None:
    params = inspect.signature(cl.Conductor).parameters
    expected = {
        "name": (inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
        "budget_usd": (inspect.Parameter.KEYWORD_ONLY, None),
        "stall_after": (inspect.Parameter.KEYWORD_ONLY, 120.0),
        "hub": (inspect.Parameter.KEYWORD_ONLY, None),
        "home": (inspect.Parameter.KEYWORD_ONLY, None),
    }
    assert list(params)[:5] == list(expected)
    for name, (kind, default) in expected.items():
        assert params[name].kind is kind, name
        assert params[name].default == default, name
    assert type(params["stall_after"].default) is float


# -- the core does no I/O and imports no UI or server code ---------------------------------

FORBIDDEN_IN_CORE = {
    "tornado",
    "jupyter_server",
    "ipywidgets",
    "plotly",
    "IPython",
    "pandas",
    "socket",
    "sqlite3",
    "urllib",
    "http",
    "requests",
}
FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes"}


def _imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _file_calls(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in FILE_CALLS:
                lines.append(node.lineno)
    return lines


def test_core_has_modules_to_check() -> None:
    names = {path.name for path in CORE_FILES}
    assert {"__init__.py", "events.py", "states.py", "runtime.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_module_imports_no_ui_server_or_network_code(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert not _imported_roots(tree) & FORBIDDEN_IN_CORE


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_module_opens_no_files(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert _file_calls(tree) == [], f"{path.name} opens files"


def test_the_static_checks_catch_what_they_look_for() -> None:
    sample = ast.parse("import pandas as pd\nfrom http.client import X\nopen('f')\np.read_text()")
    assert _imported_roots(sample) == {"pandas", "http"}
    assert _file_calls(sample) == [3, 4]


def test_importing_core_alone_loads_no_ui_server_or_dataframe_library() -> None:
    # Load ``conductloop_jupyter.core`` without running the package's own __init__ (which
    # imports pandas for the frames), in a fresh interpreter, and look at what came in.
    script = f"""
import sys, types
package = types.ModuleType("conductloop_jupyter")
package.__path__ = [{str(PACKAGE)!r}]
sys.modules["conductloop_jupyter"] = package
import conductloop_jupyter.core
heavy = {{"tornado", "jupyter_server", "ipywidgets", "plotly", "IPython", "pandas"}}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
assert not loaded, loaded
print("core ok", len(conductloop_jupyter.core.__all__))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"core ok \d+\n", done.stdout)
