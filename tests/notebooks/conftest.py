"""blockbuster, scoped to this project's code, for the notebook tests.

Overrides the guard of ``tests/conftest.py`` (as ``tests/server/conftest.py`` does): nbclient
runs its own event loop in the test thread, and jupyter_client starts the kernel's process
and writes its connection file on that loop by design, which is not this project's to fix.
A blocking call with a ``conductloop_jupyter`` frame on the stack of an event-loop thread
of this process still raises.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import blockbuster_ctx

from tests._guard import allow_first_imports


@pytest.fixture(autouse=True)
def _no_blocking_on_event_loops() -> Iterator[None]:
    with blockbuster_ctx("conductloop_jupyter") as blockbuster:
        allow_first_imports(blockbuster)
        yield
