"""The hub's saved view: a restart starts from it and replays only the events after it.

Rebuilding the view by replaying every stored event through ``View.apply`` takes time in
proportion to the history (3 s for a million events). So the hub saves its view in the
store's ``meta`` table (``EventStore.save_state``):

- **What**: ``View.state()``, the store id of the last event it covers, that event's
  ``(runtime, seq)``, and what made it: this format, the package version and the view's
  ``STATE_VERSION``.
- **When**: on a clean stop (``Hub.shutdown``); every ``save_every`` events while
  they come in, but no sooner after the last save than ``save_interval`` seconds or 100
  times what taking it cost (so saves take at most ~1% of the loop, however large the
  view); and at start after a long replay.
- **How**: ``View.state()`` is taken on the loop (a copy, a few ms for thousands of agents)
  and handed to the store, whose writer thread encodes it and writes it in the transaction
  that commits the events it covers, or a later one. A hub killed at any moment leaves
  a saved view and every event it covers, or the previous one; and a store that lost an
  event saves none (the view would hold an event the store does not).
- **Restoring**: only a saved view made by this very version, whose last event the store
  still holds under that id (a store cut back or replaced since does not match). Else the
  hub replays all of history, as before: a warning says so when the saved view is
  unreadable; one from another version is expected after an upgrade.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from ..core.events import Event
from ..core.view import STATE_VERSION, View
from .store import EventStore

__all__ = ["FORMAT", "KEY", "SAVE_EVERY", "SAVE_INTERVAL", "capture", "rebuild", "restore"]

log = logging.getLogger(__name__)

KEY = "hub.view"
FORMAT = 1
#: events between two saves: a restart after a crash replays about this many (~0.2 s)
SAVE_EVERY = 50_000
#: seconds at least between two saves while events come in
SAVE_INTERVAL = 1.0


def _made_by() -> list[Any]:
    from .. import __version__  # here: the package imports this module before defining it

    return [FORMAT, __version__, STATE_VERSION]


def capture(view: View, last: tuple[int, Event]) -> dict[str, Any]:
    """What to save: ``view`` as it is after event ``last`` (its store id and the event)."""
    store_id, event = last
    return {
        "made_by": _made_by(),
        "id": store_id,
        "event": [event.runtime, event.seq],
        "view": view.state(),
    }


def restore(store: EventStore) -> tuple[View, int] | None:
    """The saved view and the store id of the last event it covers; ``None``: there is
    none that can be used, replay all of history. Blocking."""
    try:
        saved = store.load_state(KEY)
        if saved is None:
            return None
        if saved["made_by"] != _made_by():
            log.info(
                "the view saved in %s was made by another version (%s); replaying history",
                store.path,
                saved["made_by"],
            )
            return None
        store_id, (runtime, seq) = saved["id"], saved["event"]
        found = store.page(store_id - 1, 1)
        if not found or (found[0][0], found[0][1].runtime, found[0][1].seq) != (
            store_id,
            runtime,
            seq,
        ):
            log.info(
                "the view saved in %s covers events the store no longer holds (up to id %s);"
                " replaying history",
                store.path,
                store_id,
            )
            return None
        return View.from_state(saved["view"]), store_id
    except (KeyError, TypeError, ValueError) as exc:
        log.warning(
            "the view saved in %s is unreadable (%s); replaying all of history instead",
            store.path,
            exc,
        )
        return None


def rebuild(store: EventStore, recent: deque[tuple[int, Event]]) -> tuple[View, int, int]:
    """The view of every event in ``store``: the saved one and the events after it, or all
    of them replayed; and ``recent`` filled with the last events. Blocking.

    Returns the view, the store id up to which the saved view gave it (0: none) and the
    highest store id.
    """
    restored = restore(store)
    view, covered = restored if restored is not None else (View(), 0)
    last_id = store.last_id()
    # the recent ring is read by id range, never by reading what the saved view covers
    before = min(covered, store.id_before_last(recent.maxlen or 0))
    recent.extend(store.iter_events(before, upto=covered))
    for store_id, event in store.iter_events(covered, upto=last_id):
        view.apply(event)
        recent.append((store_id, event))
    log.info("view restored up to event %d, then %d event(s) replayed", covered, last_id - covered)
    return view, covered, last_id
