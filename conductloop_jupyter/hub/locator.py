"""Finding the hub: the one function runtimes, clients and the notebook use.

In order: the hub named (``hub="http://..."``, else ``$CONDUCTLOOP_HUB``); else the one
``<home>/hub.json`` names, if it answers; else, for a caller that may (a runtime), this
process's embedded hub, started now. Two rules keep one hub per home, in one place
(``docs/protocol.md``, "One hub per home"):

- no embedded hub starts while a long-lived hub holds or is taking the home (its claim,
  see ``server.py``): the caller waits for its ``hub.json`` instead;
- a long-lived hub that stops answering (killed, or restarting) is waited for
  ``RESTART_GRACE`` seconds (``$CONDUCTLOOP_HUB_GRACE``) before a runtime starts an
  embedded hub in its place; a hub stopped on purpose removes ``hub.json``, and then one
  starts at once.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from ..core.errors import UsageError
from .discovery import HubAddress, find, read_hub_file

RESTART_GRACE = 30.0
GRACE_ENV = "CONDUCTLOOP_HUB_GRACE"


def restart_grace() -> float:
    raw = os.environ.get(GRACE_ENV, "").strip()
    if not raw:
        return RESTART_GRACE
    try:
        grace = float(raw)
    except ValueError:
        raise UsageError(f"${GRACE_ENV} is seconds (like 30), not {raw!r}") from None
    if not grace >= 0:
        raise UsageError(f"${GRACE_ENV} is seconds (0 or more), not {raw!r}")
    return grace


class Locator:
    """Where one caller finds its hub, remembering how long a long-lived one has been
    silent (see the module's doc). ``locate`` blocks: call it off an event loop."""

    def __init__(
        self,
        hub: str | bool | None,
        home: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.home = home
        self.target = find(hub, home)
        self.grace = restart_grace()
        self._clock = clock
        self._silent_since: float | None = None

    @property
    def off(self) -> bool:
        """``hub=False`` or ``$CONDUCTLOOP_HUB=off``: no hub at all."""
        return self.target is False

    def locate(self, *, embed: bool) -> HubAddress | None:
        """The hub to connect to now, or ``None`` (none answers, or one is on its way)."""
        if isinstance(self.target, HubAddress):
            return self.target
        if self.target is False:
            raise UsageError("$CONDUCTLOOP_HUB is 'off' (or hub=False): there is no hub")
        found = read_hub_file(self.home)
        if found is not None and answers(found.address):
            self._silent_since = None
            return found.address
        if not embed:
            return None
        if found is not None and found.long_lived:
            now = self._clock()
            if self._silent_since is None:
                self._silent_since = now
            if now - self._silent_since < self.grace:
                return None  # most likely restarting: wait for it, don't take its home
        from .server import start_embedded  # the hub's whole server: only when needed

        return start_embedded(self.home)


def answers(address: HubAddress, timeout: float = 2.0) -> bool:
    """Whether something listens at the hub's address (a stale ``hub.json``'s does not)."""
    host, _, port = address.url.rpartition("//")[2].partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
