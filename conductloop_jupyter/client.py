"""``cl.connect()``: a client of a running hub, for every agent of every runtime on it."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pandas as pd

from .core.errors import ConductLoopError, UsageError
from .core.events import Event
from .core.view import Request
from .hub.discovery import HubAddress, find, read_hub_file, resolve_home
from .notebook.frames import agents_frame, events_frame
from .notebook.phone import PhoneLink
from .notebook.plot_methods import PlotMethods

_USAGE_STATUSES = {400, 404, 409}


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

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
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
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {error.code}"
            kind = UsageError if error.code in _USAGE_STATUSES else ConductLoopError
            raise kind(message) from None
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
        )

    def devices(self) -> pd.DataFrame:
        """Paired phones: ``id, name, user_agent, address, created, last_seen``."""
        rows = self._call("GET", "/conductloop/api/devices")["devices"]
        columns = ["id", "name", "user_agent", "address", "created", "last_seen"]
        frame = pd.DataFrame(rows, columns=columns)
        for column in ("created", "last_seen"):
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    def revoke(self, device_id: str) -> None:
        """Sign a phone out at once; ``UsageError`` if there is no such device."""
        self._call("POST", "/conductloop/api/devices/revoke", {"device_id": device_id})

    # -- steering ----------------------------------------------------------------------

    def approve(self, request_id: str, note: str | None = None) -> bool:
        return bool(self._command("approve", request_id=request_id, note=note, by=self.by))

    def reject(self, request_id: str, note: str | None = None) -> bool:
        return bool(self._command("reject", request_id=request_id, note=note, by=self.by))

    def answer(self, request_id: str, text: str) -> bool:
        return bool(self._command("answer", request_id=request_id, text=text, by=self.by))

    def pause(self, agent_id: str) -> None:
        self._command("pause", agent_id=agent_id, by=self.by)

    def resume(self, agent_id: str) -> None:
        self._command("resume", agent_id=agent_id, by=self.by)

    def stop(self, agent_id: str) -> None:
        self._command("stop", agent_id=agent_id, by=self.by)

    def stop_all(self) -> int:
        return int(self._command("stop_all", by=self.by))

    def redirect(self, agent_id: str, text: str) -> None:
        self._command("redirect", agent_id=agent_id, text=text, by=self.by)


def connect(
    hub: str | None = None, home: str | os.PathLike[str] | None = None, *, by: str = "python"
) -> Hub:
    """A client of the hub: the one named, else ``$CONDUCTLOOP_HUB``, else ``hub.json``.

    >>> hub = cl.connect()
    >>> hub.agents()
    """
    where = resolve_home(home)
    target = find(hub, where)
    if isinstance(target, HubAddress):
        return Hub(target, by=by)
    if target is False:
        raise UsageError("$CONDUCTLOOP_HUB is 'off': there is no hub to connect to")
    found = read_hub_file(where)
    if found is None:
        raise UsageError(
            f"no hub is running for {where}: start one with `conductloop serve`, "
            "or run a Conductor (it starts one)"
        )
    return Hub(found[0], by=by)
