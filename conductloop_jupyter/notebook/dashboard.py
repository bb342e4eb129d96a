"""``loop.dashboard()``: a live ipywidgets view of the agents, with a "Needs you" inbox.

Every change of a widget's trait is one comm message to the front end, and an unthrottled
widget sends thousands a second while agents emit events. So the dashboard never writes
on an event. Events only mark it dirty; a timer on the source's loop refreshes it, and a
``MessageBudget`` caps what a refresh may send:

- the totals and the agents table are ONE ``HTML`` value: one message per refresh, at
  most every 0.25 s (longer when rendering gets slow), and once a second while agents run
  so that elapsed times move;
- the inbox's buttons are rebuilt only when the set of open requests changes, card by
  card as the budget allows; every widget shares one layout and one style per kind, so a
  new widget costs exactly one message, and a removed one is closed later from what is
  left of the budget;
- the agent picker changes only when the live agents on the page change, at most once a
  second, and a status line says what a click did (errors are shown, never raised).

Together that stays under ``MESSAGES_PER_SECOND`` (18) in any one-second window, which
leaves room under 20 for the echo of the user's own edits. Showing the dashboard costs a
fixed ~30 messages once.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..client import Hub
from ..conductor import Conductor
from ..core.errors import ConductLoopError
from . import dashboard_html as text
from .dashboard_source import ConductorSource, HubSource
from .dashboard_widgets import Card, Kit, MessageBudget, card_cost, make_card

MESSAGES_PER_SECOND = 18
MIN_INTERVAL = 0.25  # seconds between refreshes of the table, at the least
CLOCK_INTERVAL = 1.0  # elapsed times move once a second while agents are live
MAX_CARDS = 5  # open requests shown with buttons at once, oldest first
PICK_HINT = "Pick an agent above to pause, resume, stop or redirect it."
_INBOX_KINDS = frozenset({"request.opened", "request.decided", "snapshot"})

Source = ConductorSource | HubSource


class Dashboard:
    """A live view of agents that stays current while you work in other cells.

    >>> loop.dashboard()               # the agents of one Conductor
    >>> cl.connect().dashboard()       # every agent of every runtime on the hub

    It shows a "Needs you" inbox (Approve / Reject, a question's choices or an answer box),
    the totals (running, waiting, spend against budget) and a table of agents (live first,
    children under their parent, 50 a page) with a stalled marker, cost and elapsed time;
    pick an agent to pause, resume, stop or redirect it. ``dashboard.widget`` is the
    ipywidgets ``VBox`` to put in a layout of your own; ``close()`` stops it.
    """

    def __init__(
        self,
        source: Conductor | Hub | Callable[[], Hub],
        *,
        per_second: int = MESSAGES_PER_SECOND,
    ) -> None:
        if isinstance(source, Conductor):
            self._source: Source = ConductorSource(source)
        elif isinstance(source, Hub) or callable(source):
            self._source = HubSource(source)
        else:
            raise TypeError(f"a dashboard shows a Conductor or a Hub, not {source!r}")
        self._loop = self._source.loop
        self._budget = MessageBudget(per_second)
        self._kit = kit = Kit()
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slow = False
        self._interval = MIN_INTERVAL
        self._table_dirty = self._inbox_dirty = True
        self._table_sent = 0.0
        self._picker_sent = 0.0
        self._page = 0
        self._page_live: list[tuple[str, str]] = []
        self._wanted_options: list[tuple[str, str]] = []
        self._cards: list[Card] = []
        self._graveyard: list[Any] = []
        self._status: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

        self._inbox_title = kit.html(text.inbox_title(0, 0))
        self._inbox = widgets.VBox([], layout=kit.column)
        self._hide_ended = widgets.ToggleButton(
            description="Hide ended", layout=kit.plain, tooltip="show live agents only"
        )
        self._table = kit.html(self._render()[0] if self._on_loop() else "")
        self._prev = kit.button("◀ Prev", tooltip="previous page")
        self._next = kit.button("Next ▶", tooltip="next page")
        self._picker = kit.dropdown([], "Agent")
        self._pause = kit.button("Pause", "warning")
        self._resume = kit.button("Resume")
        self._stop = kit.button("Stop", "danger")
        self._instruction = kit.text("focus on 2025 papers", "New instruction", grow=True)
        self._redirect = kit.button("Redirect", "info")
        # the picker starts on no agent (a Stop must never hit one the user did not choose)
        self._status_line = kit.html(text.esc(PICK_HINT, 400))
        self._prev.on_click(functools.partial(self._turn, -1))
        self._next.on_click(functools.partial(self._turn, 1))
        self._hide_ended.observe(self._refilter, names="value")
        for button, op in ((self._pause, "pause"), (self._resume, "resume"), (self._stop, "stop")):
            button.on_click(functools.partial(self._steer, op))
        self._redirect.on_click(self._send_redirect)
        self.widget = widgets.VBox(
            [
                self._inbox_title,
                self._inbox,
                self._table,
                widgets.HBox([self._prev, self._next, self._hide_ended], layout=kit.row),
                widgets.HBox([self._picker, self._pause, self._resume, self._stop], layout=kit.row),
                widgets.HBox([self._instruction, self._redirect], layout=kit.row),
                self._status_line,
            ],
            layout=kit.column,
        )
        self.widget.add_class("conductloop-dashboard")
        self._call(self._start)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<conductloop Dashboard of {self._source.title}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop updating, let go of the source, and close every widget."""
        if self._closed:
            return
        self._closed = True
        self._call(self._stop_updating)
        for card in self._cards:
            self._graveyard.extend(card.parts)
        self._cards = []
        boxes = [w for w in self.widget.children if isinstance(w, widgets.HBox)]
        parts = [self.widget, *self.widget.children, *(c for b in boxes for c in b.children)]
        extra = [self._hide_ended.style]  # the one widget with a style of its own
        for widget in [*self._graveyard, *parts, *extra, *self._kit.shared()]:
            widget.close()
        self._graveyard = []

    # -- on the source's loop ----------------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the source's loop thread: now if this is it, else soon."""
        if self._on_loop():
            fn()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _start(self) -> None:
        if self._closed:
            return
        self._source.start(self._changed)
        self._schedule(0.0)

    def _stop_updating(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._tasks:
            task.cancel()
        self._source.close()

    def _changed(self, kind: str) -> None:
        """Called for every event: mark what is stale and make sure a refresh is due."""
        self._table_dirty = True
        if kind in _INBOX_KINDS:
            self._inbox_dirty = True
        if self._timer is None or self._timer_slow:
            self._schedule()

    def _schedule(self, delay: float | None = None, slow: bool = False) -> None:
        if self._closed or self._loop.is_closed():
            return
        if delay is None:
            delay = max(self._interval - (self._loop.time() - self._table_sent), 0.0)
        if self._timer is not None:
            if slow or not self._timer_slow:
                return  # a refresh is already due no later than this one would be
            self._timer.cancel()
        self._timer = self._loop.call_later(max(delay, self._budget.wait()), self._tick)
        self._timer_slow = slow

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        started = time.perf_counter()
        self._send_status()
        self._sync_inbox()
        live = any(not a.state.final for a in self._source.view.agents.values())
        clock_due = live and self._loop.time() - self._table_sent >= CLOCK_INTERVAL
        if self._table_dirty or clock_due:
            self._send_table()
        self._sync_picker()
        self._bury()
        self._budget.settle()
        # rendering may take at most a tenth of the loop's time, however many agents
        self._interval = max(MIN_INTERVAL, 10 * (time.perf_counter() - started))
        if self._status is not None or self._inbox_dirty or self._table_dirty:
            self._schedule()
        elif self._graveyard or self._picker_stale():
            self._schedule(CLOCK_INTERVAL / 2)
        elif live or self._source.problem:
            self._schedule(CLOCK_INTERVAL, slow=True)

    def _spend(self, count: int) -> bool:
        if self._budget.available() < count:
            return False
        self._budget.spend(count)
        return True

    # -- what a refresh sends ------------------------------------------------------------

    def _render(self) -> tuple[str, list[tuple[str, str]]]:
        """The totals and the table as one HTML value, and the live agents of the page."""
        view, source = self._source.view, self._source
        head = text.totals(
            view.agents.values(), view.total_cost_usd, source.budget_usd(), source.title,
            source.problem,
        )  # fmt: skip
        rows = text.ordered(view.agents.values(), hide_ended=self._hide_ended.value)
        page = text.page_of(rows, self._page)
        self._page = page.number
        live = [
            (f"{agent.name} ({agent.agent_id})", agent.agent_id)
            for agent, _ in page.rows
            if not agent.state.final
        ]
        return head + text.table(page, view.agents, source.now()), live

    def _send_table(self) -> None:
        value, live = self._render()
        if value != self._table.value:
            if not self._spend(1):
                return
            self._table.value = value
        self._table_dirty = False
        self._table_sent = self._loop.time()
        self._page_live = live

    def _send_status(self) -> None:
        if self._status is not None and self._spend(1):
            self._status_line.value = self._status
            self._status = None

    def _picker_stale(self) -> bool:
        options = list(self._page_live)
        chosen = self._picker.value
        if chosen is not None and chosen not in {v for _, v in options}:
            agent = self._source.view.agents.get(chosen)
            if agent is not None and not agent.state.final:
                options.insert(0, (f"{agent.name} ({agent.agent_id})", chosen))
        self._wanted_options = options
        return tuple(options) != tuple(self._picker.options)

    def _sync_picker(self) -> None:
        if not self._picker_stale() or self._loop.time() - self._picker_sent < CLOCK_INTERVAL:
            return
        if not self._spend(1):
            return
        chosen = self._picker.value
        with self._picker.hold_sync():
            self._picker.options = self._wanted_options
            ids = {v for _, v in self._wanted_options}
            self._picker.value = chosen if chosen in ids else None
        self._picker_sent = self._loop.time()

    def _sync_inbox(self) -> None:
        if not self._inbox_dirty:
            return
        pending = self._source.view.pending()
        wanted = pending[:MAX_CARDS]
        have = {c.request_id: c for c in self._cards}
        missing = [r for r in wanted if r.id not in have]
        title = text.inbox_title(len(pending), len(wanted))
        title_cost = int(title != self._inbox_title.value)
        fixed = title_cost + 1  # the title, and the list of cards
        room = self._budget.available() - fixed
        if room < 0:
            return
        complete = True
        for request in missing:
            cost = card_cost(request)
            if cost > room:
                complete = False  # the rest next time, oldest first
                break
            room -= cost
            self._budget.spend(cost)
            agent = self._source.view.agents.get(request.agent_id)
            have[request.id] = make_card(self._kit, request, agent, self._decide, self._answer_from)
        cards = [have[r.id] for r in wanted if r.id in have]
        if [c.box for c in cards] != list(self._inbox.children):
            self._budget.spend(1)
            self._inbox.children = tuple(c.box for c in cards)
        if title_cost:
            self._budget.spend(1)
            self._inbox_title.value = title
        shown = {c.request_id for c in cards}
        for card in self._cards:
            if card.request_id not in shown:
                self._graveyard.extend(card.parts)
        self._cards = cards
        self._inbox_dirty = not complete

    def _bury(self) -> None:
        """Close the widgets of decided requests with what is left of the budget."""
        count = min(len(self._graveyard), max(self._budget.available(), 0))
        for widget in self._graveyard[:count]:
            widget.close()
        self._budget.spend(count)
        del self._graveyard[:count]

    # -- clicks (on the kernel's thread: the source's loop in a notebook) ----------------

    def _decide(self, request_id: str, op: str, answer: str | None, note_box: Any = None) -> None:
        fields: dict[str, Any] = {"request_id": request_id}
        if answer is not None:
            fields["text"] = answer
        note = getattr(note_box, "value", None)
        if isinstance(note, str) and note.strip():
            fields["note"] = note.strip()  # reaches the agent: Decision.note
        self._act(op, fields)

    def _answer_from(self, request_id: str, box: Any) -> None:
        value = box.value
        if not isinstance(value, str) or not value.strip():
            self._say("Type an answer first.")
            return
        self._act("answer", {"request_id": request_id, "text": value})

    def _steer(self, op: str, _button: Any) -> None:
        agent_id = self._picker.value
        if not agent_id:
            self._say("Pick an agent first, in the Agent list.")
            return
        self._act(op, {"agent_id": agent_id})

    def _send_redirect(self, _button: Any) -> None:
        agent_id, instruction = self._picker.value, self._instruction.value
        if not agent_id:
            self._say("Pick an agent first, in the Agent list.")
        elif not instruction.strip():
            self._say("Type the new instruction first.")
        else:
            self._act("redirect", {"agent_id": agent_id, "text": instruction})

    def _turn(self, delta: int, _button: Any) -> None:
        self._page = max(0, self._page + delta)
        self._refilter()

    def _refilter(self, _change: Any = None) -> None:
        self._call(self._changed_now)

    def _changed_now(self) -> None:
        self._table_dirty = True
        self._schedule(0.0)

    def _say(self, message: str) -> None:
        self._status = f'<span class="conductloop-status">{text.esc(message, 400)}</span>'
        self._call(self._changed_now)

    def _act(self, op: str, fields: dict[str, Any]) -> None:
        def launch() -> None:
            if self._closed:
                return
            task = self._loop.create_task(self._carry_out(op, fields))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._call(launch)

    async def _carry_out(self, op: str, fields: dict[str, Any]) -> None:
        what = fields.get("request_id") or fields.get("agent_id")
        try:
            result = await self._source.command(op, **fields)
        except ConductLoopError as error:  # UsageError too: shown, not raised
            self._say(f"⚠ {error}")
            return
        except Exception as error:  # a callback must not raise into the kernel
            self._say(f"⚠ {op} failed: {type(error).__name__}: {error}")
            return
        if op in ("approve", "reject", "answer") and result is False:
            request = self._source.view.requests.get(str(what))
            who = f" by {request.decided_by}" if request and request.decided_by else ""
            self._say(f"{what} was already decided{who}: the first answer wins.")
            return
        done = {
            "approve": "Approved",
            "reject": "Rejected",
            "answer": "Answered",
            "pause": "Paused",
            "resume": "Resumed",
            "stop": "Stopped",
            "redirect": "Sent the new instruction to",
        }[op]
        self._say(f"{done} {what}.")
