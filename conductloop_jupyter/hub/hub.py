"""The hub's brain: one live view of every runtime, command routing, and fan-out.

It knows nothing of HTTP: connections are objects with ``send(message)`` and ``close()``,
so the same ``Hub`` serves the Jupyter server extension, ``conductloop serve`` and the
embedded hub, and the tornado handlers in ``app.py`` stay thin.

- **Ingest.** A runtime's events are de-duplicated by ``(runtime, seq)`` (a replay after
  a reconnect repeats what the hub may already have), given a hub-wide store ``id``,
  applied to the view, handed to the store (group commit on its own thread), and fanned
  out to clients at once. The runtime gets an ``ack`` only once they are committed, so an
  event is either durable or still in the runtime's replay buffer; a batch whose commit
  failed is stored again later (``durability.py``).
- **Commands** (``commands.py``) go to the runtime that owns the agent or request, which
  decides (first answer wins there); the hub waits for its reply.
- **Restarts.** The view is saved in the store now and then and on a clean stop
  (``saved_view.py``); a restart restores it and replays only the events after it, so it
  takes about as long whatever the length of history.
- **Lost runtimes.** A runtime whose connection closes and does not come back within
  ``lost_after`` seconds has its live agents marked ``lost`` and its open requests
  withdrawn, by events the hub emits under its own runtime id ``hub``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..core.clock import Clock, SystemClock
from ..core.events import Event, EventKind
from ..core.payloads import field_of
from ..core.payloads import problem as payload_problem
from ..core.states import AgentState
from ..core.view import View
from . import saved_view
from .commands import CommandRouting
from .durability import TASK_PREFIX, Durability
from .protocol import ProtocolError, bad_event, dumps
from .rows import client_event, request_row
from .sendqueue import SEND_LIMIT
from .store import EventStore, StoreError

_log = logging.getLogger("conductloop.hub")

if TYPE_CHECKING:
    from .phone import PhoneService

HUB_RUNTIME = "hub"
RECENT = 50_000  # events kept in memory for clients catching up


CATCH_UP_PAGE = 5000  # events per message while a client catches up


class Connection(Protocol):
    def send(self, message: dict[str, Any] | str) -> None:
        """Queue a message (a dict, or JSON text already encoded); never blocks."""

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...

    async def drained(self) -> bool:
        """Once everything sent so far has left for the socket: ``True``; ``False`` if the
        connection closed (or was dropped) instead."""
        ...


class RuntimeLink:
    """What the hub knows of one runtime's connection."""

    def __init__(self, runtime: str, info: dict[str, Any]) -> None:
        self.runtime = runtime
        self.info = info
        self.connection: Connection | None = None
        self.lost_timer: asyncio.Task[None] | None = None  # see Hub._lost_later


class Hub(CommandRouting):
    def __init__(
        self,
        store: EventStore,
        *,
        lost_after: float = 3.0,
        command_timeout: float = 10.0,
        clock: Clock | None = None,
        recent: int = RECENT,
        save_every: int = saved_view.SAVE_EVERY,
        save_interval: float = saved_view.SAVE_INTERVAL,
    ) -> None:
        if recent < 1 or save_every < 1:
            raise ValueError("recent and save_every must be at least 1")
        super().__init__()
        self.store = store
        self.view = View()
        self.lost_after = lost_after
        self.command_timeout = command_timeout
        self._clock = clock or SystemClock()
        self.runtimes: dict[str, RuntimeLink] = {}
        self._lost_timers: set[asyncio.Task[None]] = set()  # every link's, even cancelled
        self._accepted: dict[str, int] = {}  # runtime -> highest seq applied to the view
        self._refusals: dict[str, int] = {}  # runtime -> events refused at the door
        #: what is stored of each runtime, and so what it is acked (durability.py)
        self.durability = Durability(store, self._clock)
        self._ids = itertools.count(1)
        self.last_id = 0
        self._recent: deque[tuple[int, Event]] = deque(maxlen=recent)
        self.save_every = save_every
        self.save_interval = save_interval
        #: the store id up to which the last start restored a saved view (0: none)
        self.restored_at = 0
        self._saved_id = 0  # the last event the last saved view covers
        self._next_save = float("-inf")  # no save while events come in before (clock.now())
        self.clients: set[Connection] = set()  # subscribed to live events
        #: what each client socket may leave unread before it is dropped (``SendQueue``)
        self.send_limit = SEND_LIMIT
        #: every open WebSocket (runtimes and clients), each with a future done on close
        self.connections: dict[Connection, asyncio.Future[None]] = {}
        self._outbox: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.phone: PhoneService | None = None  # set by the host (HubServer)
        self.stopping = False

    # -- starting: rebuild from the store ---------------------------------------------

    async def start(self) -> None:
        """Open the store and rebuild the view from it (off the loop thread)."""
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._rebuild)
        except BaseException:
            await asyncio.to_thread(self.store.close)
            raise
        self._ids = itertools.count(self.last_id + 1)
        for runtime in list(self._accepted):
            if runtime != HUB_RUNTIME and self._live_agents(runtime):
                # it may come back: give it time to reconnect before calling it lost
                self._lose_later(self._link(runtime, {}), max(self.lost_after, 10.0))

    def _rebuild(self) -> None:
        self.store.open()
        self.view, covered, self.last_id = saved_view.rebuild(self.store, self._recent)
        if self.view.skipped:  # stored by an older hub that did not check: left out
            _log.warning(
                "%d stored event(s) do not fit their kind's schema; the view leaves them out",
                self.view.skipped,
            )
        stored = self.store.last_seqs()
        assert self._loop is not None
        self.durability.start(self._loop, stored)
        self._accepted = dict(stored)
        self.restored_at = self._saved_id = covered
        if self.last_id - covered >= self.save_every:
            self._save_view()  # a crash before the next save must not replay all that again

    def _save_view(self) -> None:
        """Hand the view to the store to save (see saved_view.py); never blocks."""
        if not self._recent or self._recent[-1][0] != self.last_id:
            return  # no event yet (the recent ring holds the last one)
        started = self._clock.now()
        state = saved_view.capture(self.view, self._recent[-1])
        try:
            self.store.save_state(saved_view.KEY, state)
        except StoreError:
            return  # the store stopped: the next append or close reports it
        self._saved_id = self.last_id
        now = self._clock.now()
        # capture() copies the whole view on the loop: however large the view grows, the
        # saves made while events come in take at most about 1% of the loop's time
        self._next_save = now + max(self.save_interval, 100 * (now - started))

    def opened(self, connection: Connection) -> None:
        assert self._loop is not None
        self.connections[connection] = self._loop.create_future()

    def closed(self, connection: Connection) -> None:
        self.unsubscribe(connection)
        done = self.connections.pop(connection, None)
        if done is not None and not done.done():
            done.set_result(None)

    async def close_connections(self, timeout: float = 5.0) -> None:
        """Close every WebSocket (1001) and wait for them to end: runtimes will replay."""
        pending = list(self.connections.values())
        for connection in list(self.connections):
            connection.close(1001, "the hub is stopping")
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def shutdown(self) -> None:
        """Stop timers and pending commands, and save the view (the caller then closes the
        store, which writes it)."""
        self.stopping = True  # from now on ``ingest`` refuses: what comes is replayed later
        if self.last_id != self._saved_id:
            self._save_view()
        for timer in self._lost_timers:
            timer.cancel()
        for future in self._replies.values():
            future.cancel()
        self.durability.cancel()

    async def settled(self) -> None:
        """After ``shutdown``: return once its cancelled timers have ended."""
        timers = [*self._lost_timers, *self.durability.retries]
        await asyncio.gather(*timers, return_exceptions=True)

    # -- runtimes ----------------------------------------------------------------------

    def _link(self, runtime: str, info: dict[str, Any]) -> RuntimeLink:
        link = self.runtimes.get(runtime)
        if link is None:
            link = self.runtimes[runtime] = RuntimeLink(runtime, info)
        elif info:
            link.info = info
        return link

    def runtime_hello(self, connection: Connection, hello: dict[str, Any]) -> dict[str, Any]:
        """A runtime (re)connected; the welcome tells it where to replay from."""
        runtime = hello["runtime"]
        if runtime == HUB_RUNTIME:
            raise ProtocolError("bad_message", f"runtime id {HUB_RUNTIME!r} is the hub's own")
        info = {k: hello.get(k) for k in ("name", "pid", "host")}
        link = self._link(runtime, info)
        if link.connection is not None and link.connection is not connection:
            link.connection.close(4000, "replaced by a newer connection of the same runtime")
        link.connection = connection
        if link.lost_timer is not None:
            link.lost_timer.cancel()
            link.lost_timer = None
        return {
            "type": "welcome",
            "v": 1,
            "hub": HUB_RUNTIME,
            "acked": self.durability.acked(runtime),
        }

    def runtime_closed(self, runtime: str, connection: Connection) -> None:
        link = self.runtimes.get(runtime)
        if link is None or link.connection is not connection:
            return
        link.connection = None
        for command_id, future in list(self._replies.items()):
            if command_id.startswith(runtime + "/") and not future.done():
                future.set_exception(
                    ProtocolError("runtime_gone", f"runtime {runtime} disconnected")
                )
        self._lose_later(link, self.lost_after)

    def _live_agents(self, runtime: str) -> list[str]:
        return [
            a.agent_id
            for a in self.view.agents.values()
            if a.runtime == runtime and not a.state.final
        ]

    def _lose_later(self, link: RuntimeLink, delay: float) -> None:
        """Mark ``link``'s runtime lost after ``delay`` seconds of the hub's clock, unless
        it comes back (``runtime_hello`` cancels the timer)."""
        assert self._loop is not None
        if link.lost_timer is not None:
            link.lost_timer.cancel()
        lost = self._lost_later(link.runtime, delay)
        link.lost_timer = timer = self._loop.create_task(lost, name=f"{TASK_PREFIX}lost")
        self._lost_timers.add(timer)
        timer.add_done_callback(self._lost_timers.discard)

    async def _lost_later(self, runtime: str, delay: float) -> None:
        await self._clock.sleep(delay)
        self._mark_lost(runtime)

    def _mark_lost(self, runtime: str) -> None:
        link = self.runtimes.get(runtime)
        if link is not None:
            link.lost_timer = None
            if link.connection is not None:
                return
        reason = f"runtime {runtime} disconnected and did not come back"
        for request in self.view.pending():
            if request.runtime == runtime:
                self._emit_own(request.agent_id, "request.decided", {
                    "request_id": request.id, "decision": "withdrawn", "by": "hub",
                })  # fmt: skip
        for agent_id in self._live_agents(runtime):
            self._emit_own(
                agent_id, "agent.state", {"state": AgentState.LOST.value, "reason": reason}
            )

    def _emit_own(self, agent_id: str | None, kind: EventKind, data: dict[str, Any]) -> None:
        seq = self._accepted.get(HUB_RUNTIME, 0) + 1
        self.ingest(
            HUB_RUNTIME, [Event(seq, self._clock.wall(), HUB_RUNTIME, agent_id, kind, data)]
        )

    # -- events ------------------------------------------------------------------------

    def ingest(
        self,
        runtime: str,
        events: list[Event],
        acked: Callable[[int], None] | None = None,
        refused: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Apply, store and fan out a runtime's events; ``acked(seq)`` once committed.

        An event whose data breaks its kind's schema is refused alone, before the view or
        the store see it: the rest is kept, and its seq counts as had, so the runtime stops
        sending it. ``refused``: the batch's events whose envelope the parser refused (the
        same holds for those whose seq it could read). Returns every ``bad_event`` error.
        """
        if self.stopping:
            raise StoreError("the hub is stopping")
        strangers = {e.runtime for e in events if e.runtime != runtime}
        if strangers:
            raise ProtocolError(
                "bad_message", f"runtime {runtime} sent events of runtime(s) {sorted(strangers)}"
            )
        accepted = self._accepted.get(runtime, 0)
        fresh: list[tuple[int, Event]] = []
        refused = list(refused or ())
        skipped = [r["seq"] for r in refused if r["seq"] is not None and r["seq"] > accepted]
        for event in events:
            if event.seq <= accepted:
                continue  # a replay of what the hub already has
            accepted = event.seq
            problem = payload_problem(event.kind, event.data)
            if problem is not None:
                refused.append(bad_event(event.seq, field_of(problem), problem))
                skipped.append(event.seq)
                continue
            fresh.append((next(self._ids), event))
        if skipped:
            accepted = max(accepted, *skipped)
            self.durability.skip(runtime, skipped)
        if refused:
            self._report_refused(runtime, refused)
        if not fresh:
            self._accepted[runtime] = accepted
            if acked is not None:
                acked(self.durability.acked(runtime))
            return refused
        # the store first: if it has failed, this raises before anything is applied, so
        # the runtime keeps these events and replays them (nothing is acked, nothing lost)
        self.durability.save(runtime, fresh, acked)
        self._accepted[runtime] = accepted
        for _, event in fresh:
            self.view.apply(event)
        self.last_id = fresh[-1][0]
        self._recent.extend(fresh)
        if (
            self.last_id - self._saved_id >= self.save_every
            and self._clock.now() >= self._next_save
        ):
            self._save_view()
        if self.clients:  # with nobody listening, building their message is wasted work;
            # a client that subscribes later catches up from the recent ring
            self._publish({"type": "events", "events": [client_event(i, e) for i, e in fresh]})
        return refused

    def _report_refused(self, runtime: str, refused: list[dict[str, Any]]) -> None:
        """Log a runtime's first refused event, then every 1,000th: a runtime that keeps
        sending bad events must not fill the log."""
        before = self._refusals.get(runtime, 0)
        after = self._refusals[runtime] = before + len(refused)
        if before == 0 or before // 1000 != after // 1000:
            _log.warning(
                "runtime %s: %d event(s) refused so far; the latest: %s",
                runtime,
                after,
                refused[-1]["message"],
            )

    # -- clients -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "last_id": self.last_id,
            "agents": [a.row() for a in self.view.agents.values()],
            "pending": [request_row(r) for r in self.view.pending()],
            "runtimes": self.runtime_rows(),
        }

    def runtime_rows(self) -> list[dict[str, Any]]:
        return [
            {"runtime": r.runtime, "connected": r.connection is not None, **r.info}
            for r in self.runtimes.values()
        ]

    async def subscribe(self, client: Connection, after: int) -> None:
        """Send ``client`` what it missed since store id ``after`` (or a snapshot), then live.

        No gap and no duplicate, however far back ``after`` is and however fast events
        come: a client more than a page behind is sent a page at a time, from the recent
        ring if it still holds the next event, else from the store, each page once the
        client's socket has taken the one before (so a catch-up never piles up in the
        hub's memory). Where the ring begins is looked up again after every wait, since
        it moves on while events keep coming. Within a page of the newest event, the rest
        is sent from the ring with no await in between: queued fan-out is flushed, the
        rest is sent, and the client joins the live stream. (The ring holds what the
        store may not have committed yet; the store holds what left the ring, unless it
        failed to commit it: then those events reach a client only once stored.)
        """
        cursor = after
        near = min(CATCH_UP_PAGE, self._recent.maxlen or CATCH_UP_PAGE)
        if after > 0:
            while self.last_id - cursor > near:
                page = self._recent_after(cursor, CATCH_UP_PAGE)
                if page is None:  # the ring has moved past it: from the store
                    page = await asyncio.to_thread(self.store.page, cursor, CATCH_UP_PAGE)
                if not page:
                    break
                client.send({"type": "events", "events": [client_event(i, e) for i, e in page]})
                cursor = page[-1][0]
                if not await client.drained():
                    return  # it went away (closed() unsubscribed it, if it ever was)
        self._flush()  # what is queued now goes to the current clients only
        if after <= 0:
            client.send(self.snapshot())
        else:
            while page := self._recent_after(cursor, CATCH_UP_PAGE) or []:
                client.send({"type": "events", "events": [client_event(i, e) for i, e in page]})
                cursor = page[-1][0]
        self.clients.add(client)

    def _recent_after(self, cursor: int, limit: int) -> list[tuple[int, Event]] | None:
        """Up to ``limit`` events of the ring with id > ``cursor``; ``None`` if the ring
        no longer holds the event right after ``cursor`` (it is only in the store)."""
        ring = self._recent
        if not ring or ring[0][0] > cursor + 1:
            return None if cursor < self.last_id else []
        low, high = 0, len(ring)  # ids rise along the ring: the first one above cursor
        while low < high:
            middle = (low + high) // 2
            if ring[middle][0] <= cursor:
                low = middle + 1
            else:
                high = middle
        return list(itertools.islice(ring, low, low + limit))

    def unsubscribe(self, client: Connection) -> None:
        self.clients.discard(client)

    def _publish(self, message: dict[str, Any]) -> None:
        """Coalesce what happens in one loop turn into one message per client."""
        if not self._outbox:
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if not messages or not self.clients:
            return
        events = [e for m in messages for e in m["events"]]
        text = dumps({"type": "events", "events": events})  # once, whatever the clients
        for client in list(self.clients):
            client.send(text)

    async def recent_events(self, agent_id: str, limit: int) -> list[dict[str, Any]]:
        """The agent's last ``limit`` events still in memory (the newest ``RECENT``)."""
        found: list[dict[str, Any]] = []
        for store_id, event in reversed(self._recent):
            if event.agent_id == agent_id:
                found.append(client_event(store_id, event))
                if len(found) == limit:
                    break
        return found[::-1]

    async def events_page(
        self, after: int, limit: int, agent_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Events with store id > ``after``, oldest first (recent ones from memory)."""
        oldest_recent = self._recent[0][0] if self._recent else self.last_id + 1
        if after + 1 >= oldest_recent:
            found = [
                client_event(i, e)
                for i, e in self._recent
                if i > after and (agent_id is None or e.agent_id == agent_id)
            ]
            return found[:limit]
        page = await asyncio.to_thread(self.store.page, after, limit, agent_id=agent_id)
        return [client_event(i, e) for i, e in page]
