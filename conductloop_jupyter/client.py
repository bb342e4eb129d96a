"""``cl.connect()``: a client of a running hub, for every agent of every runtime on it."""

from __future__ import annotations

import functools
import json
import os
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.errors import ConductLoopError, UsageError
from .core.events import Event
from .core.view import Request
from .hub.discovery import HubAddress, resolve_home
from .hub.locator import Locator
from .hub.protocol import exception_for
from .local import conductors, owner
from .notebook.plot_methods import PlotMethods

# pandas, urllib.request, the hub's server and the QR code are imported by the methods that
# use them: ``import conductloop_jupyter`` imports this module, and a script that never
# talks to a hub must not pay for them (issue 10, ``benchmarks/import_time.py``)
if TYPE_CHECKING:
    import pandas as pd

    from .notebook.dashboard import Dashboard
    from .notebook.phone import PhoneLink


class Hub(PlotMethods):
    """Sees and steers every agent of every runtime on a hub.

    >>> hub = cl.connect()
    >>> hub.agents()                      # a DataFrame: all runtimes, all agents
    >>> for request in hub.pending():
    ...     hub.approve(request.id)       # the runtime that owns it decides
    """

    def __init__(self, address: HubAddress, *, by: str = "python", timeout: float = 15.0) -> None:
        self.address = address
        self.by = by
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<conductloop Hub {self.address.url}>"

    def _now(self) -> float:
        return time.time()

    # -- HTTP --------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            self.address.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.address.secret}",
                "Content-Type": "application/json",
                "X-ConductLoop-By": self.by,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                found = json.loads(error.read())["error"]
                code, message = str(found["code"]), str(found["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "", f"HTTP {error.code}"
            raise exception_for(code, message) from None
        except (urllib.error.URLError, OSError) as error:
            raise ConductLoopError(
                f"the hub at {self.address.url} does not answer: {error}"
            ) from None

    def _command(self, op: str, **fields: Any) -> Any:
        body = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
        return self._call("POST", "/conductloop/api/commands", body)["result"]

    # -- seeing ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Runtimes, agent counts by state, open requests and total spend."""
        status: dict[str, Any] = self._call("GET", "/conductloop/api/status")
        return status

    def agents(self) -> pd.DataFrame:
        """One row per agent of every runtime on the hub."""
        from .notebook.frames import agents_frame

        rows = self._call("GET", "/conductloop/api/agents")["agents"]
        return agents_frame(rows, time.time())

    def pending(self) -> list[Request]:
        """Open requests of every runtime, oldest first."""
        return [
            Request(
                id=r["id"],
                agent_id=r["agent_id"],
                kind=r["kind"],
                prompt=r["prompt"],
                choices=tuple(r["choices"]) if r.get("choices") else None,
                details=r.get("details") or {},
                opened=r["opened"],
                runtime=r.get("runtime", ""),
            )
            for r in self._call("GET", "/conductloop/api/pending")["pending"]
        ]

    def events(self, after: int = 0, agent_id: str | None = None) -> pd.DataFrame:
        """Every event on the hub (page by page), with its store ``id``."""
        from .notebook.frames import events_frame

        rows: list[dict[str, Any]] = []
        while True:
            query = {"after": after, "limit": 10_000} | ({"agent_id": agent_id} if agent_id else {})
            page = self._call("GET", "/conductloop/api/events?" + urllib.parse.urlencode(query))
            rows.extend(page["events"])
            if len(page["events"]) < 10_000:
                break
            after = page["events"][-1]["id"]
        frame = events_frame(Event.from_wire(row) for row in rows)
        frame.insert(0, "id", [row["id"] for row in rows])
        return frame

    def dashboard(self) -> Dashboard:
        """A live widget: what needs you (with its buttons), every agent, spend; steer here.

        >>> loop.dashboard()       # in a notebook cell
        """
        # imported here: ipywidgets is only needed in a notebook, and costs every import
        from .notebook.dashboard import Dashboard

        return Dashboard(self)

    # -- the phone ----------------------------------------------------------------------

    def phone(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        tls: bool = False,
        ttl: float | None = None,
    ) -> PhoneLink:
        """Open the hub's phone listener (if needed) and return a one-time pairing link."""
        from .notebook.phone import PhoneLink

        body = {"host": host, "port": port, "tls": tls, "ttl": ttl}
        found = self._call("POST", "/conductloop/api/phone", body)
        return PhoneLink(
            url=found["url"],
            expires=found["expires"],
            host=found["host"],
            port=found["port"],
            tls=found["tls"],
            fingerprint=found.get("fingerprint"),
            note=found.get("note", ""),
            code_id=found["code_id"],
            status=functools.partial(self._code_status, found["code_id"]),
        )

    def _code_status(self, code_id: str, wait: float = 0.0) -> dict[str, Any]:
        """A pairing code's state (``waiting``, ``paired``, ``expired``), waiting up to
        ``wait`` seconds for a waiting code to be claimed or to expire."""
        query = urllib.parse.urlencode({"id": code_id, "wait": f"{wait:.3f}"})
        path = f"/conductloop/api/phone/code?{query}"
        status: dict[str, Any] = self._call("GET", path, timeout=wait + self.timeout)
        return status

    def devices(self) -> pd.DataFrame:
        """Paired phones: ``id, name, user_agent, address, created, last_seen, expires``.

        ``last_seen`` is the device's last use; ``expires`` is when it is signed out unless
        used before (``NaT``: never; see ``$CONDUCTLOOP_DEVICE_IDLE_DAYS``)."""
        import pandas as pd

        rows = self._call("GET", "/conductloop/api/devices")["devices"]
        columns = ["id", "name", "user_agent", "address", "created", "last_seen", "expires"]
        frame = pd.DataFrame(rows, columns=columns)
        for column in ("created", "last_seen", "expires"):
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    def revoke(self, device_id: str) -> None:
        """Sign a phone out at once; ``UsageError`` if there is no such device."""
        self._call("POST", "/conductloop/api/devices/revoke", {"device_id": device_id})

    # -- steering ----------------------------------------------------------------------

    def _steer(self, op: str, item_id: str, *args: object) -> object:
        """Steer this process's own agents directly (see ``local.py``), others via the hub."""
        mine = owner(item_id)
        if mine is not None:
            return getattr(mine, op)(item_id, *args, by=self.by)
        key = "request_id" if op in ("approve", "reject", "answer") else "agent_id"
        extra = "text" if op in ("answer", "redirect") else "note"
        fields = {extra: args[0]} if args else {}
        return self._command(op, **{key: item_id}, **fields, by=self.by)

    def approve(
        self,
        request_id: str,
        note: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> bool:
        """Approve a request; ``note`` and edited ``args`` reach the agent (``Decision``)."""
        mine = owner(request_id)
        if mine is not None:
            return bool(mine.approve(request_id, note, args, by=self.by))
        edited = dict(args) if args is not None else None
        return bool(
            self._command("approve", request_id=request_id, note=note, args=edited, by=self.by)
        )

    def reject(self, request_id: str, note: str | None = None) -> bool:
        return bool(self._steer("reject", request_id, note))

    def answer(self, request_id: str, text: str) -> bool:
        return bool(self._steer("answer", request_id, text))

    def pause(self, agent_id: str) -> None:
        self._steer("pause", agent_id)

    def resume(self, agent_id: str) -> None:
        self._steer("resume", agent_id)

    def stop(self, agent_id: str) -> None:
        self._steer("stop", agent_id)

    def stop_all(self) -> int:
        """Stop every agent of every runtime on the hub; return how many were running."""
        mine = conductors()
        stopped = sum(c.stop_all(by=self.by) for c in mine)
        skip = [c.runtime for c in mine]  # done here: the hub must not wait on them
        return stopped + int(self._command("stop_all", skip=skip, by=self.by))

    def redirect(self, agent_id: str, text: str) -> None:
        self._steer("redirect", agent_id, text)


def _embeds(conductor: object, home: Path) -> bool:
    """Whether this conductor falls back to an embedded hub in ``home``."""
    return getattr(conductor, "home", None) == home and getattr(conductor, "_target", 0) is None


def connect(
    hub: str | None = None, home: str | os.PathLike[str] | None = None, *, by: str = "python"
) -> Hub:
    """A client of the hub: the one named, else ``$CONDUCTLOOP_HUB``, else ``hub.json``.

    >>> hub = cl.connect()
    >>> hub.agents()
    """
    where = resolve_home(home)
    locator = Locator(hub, where)
    if locator.off:
        raise UsageError("$CONDUCTLOOP_HUB is 'off': there is no hub to connect to")
    # a Conductor of this process starts the embedded hub as soon as its loop gets a
    # turn; in the same cell that turn has not come yet: start it now (idempotent)
    address = locator.locate(embed=any(_embeds(c, where) for c in conductors()))
    if address is None:
        raise UsageError(
            f"no hub is running for {where}: start one with `conductloop serve`, "
            "or run a Conductor (it starts one)"
        )
    return Hub(address, by=by)
