"""ConductLoop for Jupyter: orchestrate AI agents from notebook cells, and steer them.

>>> import conductloop_jupyter as cl
>>> loop = cl.Conductor(name="research", budget_usd=5.0)
"""

from .client import Hub, connect
from .conductor import Conductor
from .core import (
    AgentFailed,
    AgentRun,
    AgentState,
    AgentStopped,
    BudgetExceeded,
    ConductLoopError,
    Context,
    Decision,
    Event,
    PairingError,
    Request,
    SyncContext,
    UsageError,
    current_context,
)

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext conductloop_jupyter``: the ``%agents``, ``%phone`` and ``%stop_all`` magics."""
    from .notebook.magics import load_ipython_extension as load  # ipywidgets only when asked

    load(ipython)


__all__ = [
    "AgentFailed",
    "AgentRun",
    "AgentState",
    "AgentStopped",
    "BudgetExceeded",
    "ConductLoopError",
    "Conductor",
    "Context",
    "Decision",
    "Event",
    "Hub",
    "PairingError",
    "Request",
    "SyncContext",
    "UsageError",
    "__version__",
    "connect",
    "current_context",
    "load_ipython_extension",
]
