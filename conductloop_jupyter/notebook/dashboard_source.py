"""Where a dashboard's agents come from: a Conductor in this process, or a hub.

Both sources keep a ``View`` (``core/view.py``) that the dashboard reads on the source's
event loop thread only, call ``changed(kind)`` on that thread whenever it may have changed,
and carry out steering commands with ``await source.command(op, **fields)``.

- ``ConductorSource``: the conductor's own view, read in place; an ``EventSink`` attached
  to the conductor reports each event (on its loop: in a notebook, the kernel's loop).
  Commands go to ``Conductor.handle_command``, which is quick on the loop thread.
- ``HubSource``: a local ``View`` seeded from the hub's snapshot and kept current by its
  live events, over the hub's client WebSocket on the running (kernel's) loop. Commands
  go over the same socket and are awaited, never blocking the loop: a blocking call there
  would also deadlock when the agent's runtime is this very kernel, whose link needs the
  loop to carry the command out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketError, websocket_connect

from ..core.errors import ConductLoopError, UsageError
from ..core.events import Event
from ..core.states import AgentState
from ..core.view import AgentView, View

if TYPE_CHECKING:
    from ..client import Hub
    from ..conductor import Conductor

Changed = Callable[[str], None]

#: error codes of the hub that mean "you asked for something that cannot be done"
_USAGE_CODES = {"usage", "unknown_agent", "unknown_request", "bad_message"}
COMMAND_TIMEOUT = 15.0  # the hub waits up to 10 s for the runtime's answer
BACKOFF_MAX = 5.0


def _ignore(kind: str) -> None:
    """What ``changed`` is until a dashboard starts the source."""


class ConductorSource:
    """The agents of one Conductor, read in place on its loop."""

    def __init__(self, conductor: Conductor, *, by: str = "notebook") -> None:
        self._conductor = conductor
        self.by = by
        # binds the conductor to the running loop (a kernel's) as its first start would
        core = conductor.core
        self.loop = core.host.ensure(can_rebind=not core.records)
        self.view: View = core.view
        self.title = f"conductor {conductor.name}"
        self.problem = ""  # a source that is always connected
        self._changed: Changed = _ignore

    def start(self, changed: Changed) -> None:
        self._changed = changed
        self._conductor.attach(self)

    def emit(self, event: Event) -> None:  # the EventSink, on the conductor's loop
        self._changed(event.kind)

    def close(self) -> None:
        self._changed = _ignore
        if self.loop.is_closed():
            return
        with contextlib.suppress(ValueError):  # not attached: closed twice
            self._conductor.detach(self)

    def budget_usd(self) -> float | None:
        limit: float | None = self._conductor.budget_usd
        return limit

    def now(self) -> float:
        return self._conductor.core.clock.wall()

    async def command(self, op: str, **fields: Any) -> Any:
        return self._conductor.handle_command({"op": op, "by": self.by, **fields})


class HubSource:
    """Every agent of every runtime on a hub, live over its client WebSocket.

    ``hub`` may be a callable that finds the hub (``cl.connect``): it runs on a worker
    thread, since finding the hub reads ``hub.json``, and is retried until a hub answers.
    Runs on the running loop; reconnects with back-off and re-reads the snapshot.
    """

    def __init__(self, hub: Hub | Callable[[], Hub]) -> None:
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            raise UsageError(
                "a hub's dashboard runs on a running event loop: show it in a notebook"
            ) from None
        self._hub: Hub | None = None if callable(hub) else hub
        self._find: Callable[[], Hub] | None = hub if callable(hub) else None
        self.view = View()
        self.title = f"hub {self._hub.address.url}" if self._hub is not None else "hub"
        self.problem = "connecting to the hub…"
        self._changed: Changed = _ignore
        self._task: asyncio.Task[None] | None = None
        self._ws: WebSocketClientConnection | None = None
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    def start(self, changed: Changed) -> None:
        self._changed = changed
        self._task = self.loop.create_task(self._run(), name="conductloop:dashboard-hub")

    def close(self) -> None:
        self._changed = _ignore
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._ws is not None:
            self._ws.close()
        self._fail_replies("the dashboard was closed")

    def budget_usd(self) -> float | None:
        return None  # each runtime has its own budget

    def now(self) -> float:
        return time.time()

    async def command(self, op: str, **fields: Any) -> Any:
        ws = self._ws
        if ws is None:
            raise ConductLoopError(self.problem or "not connected to the hub")
        command_id = f"dashboard-{next(self._ids)}"
        reply: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self._replies[command_id] = reply
        try:
            message = {"type": "command", "id": command_id, "command": {"op": op, **fields}}
            await ws.write_message(json.dumps(message))
            answer = await asyncio.wait_for(reply, COMMAND_TIMEOUT)
        except TimeoutError:
            raise ConductLoopError(f"the hub did not answer within {COMMAND_TIMEOUT:g} s") from None
        except WebSocketError as error:
            raise ConductLoopError(f"the hub connection closed: {error}") from None
        finally:
            self._replies.pop(command_id, None)
        if answer.get("type") == "error":
            kind = UsageError if answer.get("code") in _USAGE_CODES else ConductLoopError
            raise kind(str(answer.get("message", "the hub refused")))
        return answer.get("result")

    # -- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                hub = await self._locate()
                await self._session(hub)
                delay = 0.1
                self.problem = "the hub closed the connection; reconnecting…"
            except ConductLoopError as error:  # no hub yet (UsageError is one too)
                self.problem = f"{error} (retrying)"
            except (OSError, HTTPClientError, WebSocketError, ValueError) as error:
                self.problem = f"the hub does not answer ({error}); reconnecting…"
            self._ws = None
            if self._find is not None:
                self._hub = None  # find it again: a restarted hub may listen elsewhere
            self._fail_replies(self.problem)
            self._changed("connection")
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _locate(self) -> Hub:
        if self._hub is None:
            assert self._find is not None
            self._hub = await asyncio.to_thread(self._find)
            self.title = f"hub {self._hub.address.url}"
        return self._hub

    async def _session(self, hub: Hub) -> None:
        request = HTTPRequest(
            hub.address.client_ws,
            headers={
                "Authorization": f"Bearer {hub.address.secret}",
                "X-ConductLoop-By": hub.by,
            },
            connect_timeout=5,
            request_timeout=5,
        )
        ws = await websocket_connect(request, ping_interval=10, ping_timeout=10)
        self._ws = ws
        try:
            # a fresh snapshot on every connection: the view is derived, so it is rebuilt
            await ws.write_message(json.dumps({"type": "subscribe", "after": 0}))
            while True:
                raw = await ws.read_message()
                if raw is None:
                    return
                self._receive(json.loads(raw))
        finally:
            ws.close()

    def _receive(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "snapshot":
            self.view = view_from_snapshot(message)
            self.problem = ""
            self._changed("snapshot")
        elif kind == "events":
            for raw in message.get("events", ()):
                try:
                    event = Event.from_wire(raw)
                except ValueError:
                    continue  # a kind this version does not know: readers ignore it
                self.view.apply(event)
                self._changed(event.kind)
        elif kind in ("reply", "error"):
            reply = self._replies.get(str(message.get("id")))
            if reply is not None and not reply.done():
                reply.set_result(message)

    def _fail_replies(self, why: str) -> None:
        for reply in self._replies.values():
            if not reply.done():
                reply.set_result({"type": "error", "code": "runtime_gone", "message": why})


# -- a View from the hub's snapshot --------------------------------------------------------


def agent_from_row(row: dict[str, Any]) -> AgentView:
    """An ``AgentView`` from a row of the hub's snapshot (``AgentView.row()``)."""
    return AgentView(
        agent_id=row["agent_id"],
        name=row["name"],
        runtime=row.get("runtime", ""),
        parent=row.get("parent"),
        model=row.get("model"),
        budget_usd=None,
        input="",
        started=float(row["started"]),
        state=AgentState(row["state"]),
        activity=row.get("activity") or "",
        stalled=bool(row.get("stalled")),
        cost_usd=float(row.get("cost_usd") or 0.0),
        unpriced_calls=int(row.get("unpriced_calls") or 0),
        input_tokens=int(row.get("input_tokens") or 0),
        output_tokens=int(row.get("output_tokens") or 0),
        tool=row.get("tool"),
        request=row.get("request_id"),
        ended=row.get("ended"),
        last_event=float(row["started"]),
        error=row.get("error"),
    )


def view_from_snapshot(snapshot: dict[str, Any]) -> View:
    """The hub's live view as a client rebuilds it: agents from their rows, and each open
    request replayed as the ``request.opened`` event it came from."""
    view = View()
    for row in snapshot.get("agents", ()):
        agent = agent_from_row(row)
        view.agents[agent.agent_id] = agent
        view.total_cost_usd += agent.cost_usd
    for request in snapshot.get("pending", ()):
        data = {
            "request_id": request["id"],
            "kind": request["kind"],
            "prompt": request["prompt"],
            "choices": request.get("choices"),
            "details": request.get("details") or {},
        }
        runtime = request.get("runtime") or "hub"
        view.apply(
            Event(1, request["opened"], runtime, request["agent_id"], "request.opened", data)
        )
    return view
