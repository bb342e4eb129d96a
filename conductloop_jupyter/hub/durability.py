"""What the hub has stored of each runtime, and so what it may tell the runtime to forget.

A runtime keeps every event it sent until the hub acks it (``ack`` carries a seq: every
event up to it is stored). The hub applies a batch to its view and shows it to clients
before the store commits it; ``Durability.save`` hands the batch to the store and acks
once it is committed. If the store's transaction fails (a full disk, a lock held too long),
the batch is handed over again later with the same ids (the view and the clients have it
already, so the store must hold it under those ids too), after 0.5 s, then 1, 2, ... up to
30 s between tries. Until it is stored, acks stop just before its first event, even when
later batches are stored first, so the runtime keeps it too.

Events refused at the door (``bad_event``) are never stored; they are acked as soon as
everything before them is, so the runtime forgets them instead of sending them forever.

A limit: if the hub stops before the store recovers, a restarted hub knows only the highest
seq stored of each runtime and takes what comes after it, so a refused batch followed by
stored ones is not stored then, although its runtime still holds it.

Runs on the hub's loop; the store's callbacks come from its writer thread and are moved
onto the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Literal

from ..core.clock import Clock
from ..core.events import Event
from .store import EventStore, StoreError

RETRY_FIRST, RETRY_MOST = 0.5, 30.0  # seconds before a failed batch is stored again
TASK_PREFIX = "conductloop-hub:"  # the name of every task the hub keeps running itself

Batch = list[tuple[int, Event]]  # (store id, event), the events of one runtime in seq order
Acked = Callable[[int], None]
#: what the store did with a batch: stored (runtime, first seq, last seq, acked), or failed
#: (runtime, the batch, acked, attempt)
Outcome = (
    tuple[Literal["stored"], str, int, int, Acked | None]
    | tuple[Literal["failed"], str, Batch, Acked | None, int]
)


class Durability:
    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stored: dict[str, int] = {}  # runtime -> highest seq committed
        #: runtime -> the first seq of each batch whose commit failed and is tried again
        self._unstored: dict[str, set[int]] = {}
        self.retries: set[asyncio.Task[None]] = set()
        #: what the store did with each batch, for ``_drain`` on the hub's loop
        self._outcomes: deque[Outcome] = deque()
        self._lock = threading.Lock()
        self._draining = False
        #: runtime -> seqs of events refused at the door: never stored, yet the runtime may
        #: forget them once everything before them is stored
        self._refused: dict[str, set[int]] = {}

    def start(self, loop: asyncio.AbstractEventLoop, stored: dict[str, int]) -> None:
        """From the store's highest seq of each runtime (read off the loop)."""
        self._loop = loop
        self._stored = dict(stored)

    def acked(self, runtime: str) -> int:
        """What the runtime may forget: every event up to this seq is stored. That is
        what is committed, unless a batch waits to be stored again: then just before it.
        (A batch that fails always comes after what was acked, so acks never go back.)"""
        unstored = self._unstored.get(runtime)
        if unstored:
            return min(unstored) - 1
        done = self._stored.get(runtime, 0)
        refused = self._refused.get(runtime)
        if refused:
            while done + 1 in refused:
                done += 1
            refused.difference_update([seq for seq in refused if seq <= done])
            self._stored[runtime] = done  # had: stored, or refused at the door for good
        return done

    def skip(self, runtime: str, seqs: list[int]) -> None:
        """Events refused at the door: acked as soon as everything before them is stored,
        so that the runtime stops sending them (they are never stored)."""
        self._refused.setdefault(runtime, set()).update(seqs)

    def save(self, runtime: str, batch: Batch, acked: Acked | None, attempt: int = 0) -> None:
        """Hand ``batch`` to the store; ``acked(seq)`` once it is committed.

        Raises ``StoreError`` if the store has failed since it was last asked (nothing is
        queued then: the caller must not apply the batch, and the runtime replays it).
        """
        loop = self._loop
        assert loop is not None
        first, last = batch[0][1].seq, batch[-1][1].seq

        def committed() -> None:  # these two on the store's writer thread, in commit order
            self._report(loop, ("stored", runtime, first, last, acked))

        def failed() -> None:
            self._report(loop, ("failed", runtime, batch, acked, attempt))

        self.store.append(batch, committed, failed)

    def cancel(self) -> None:
        """Stop trying again (the hub stops): the runtimes still hold those events."""
        for retry in self.retries:
            retry.cancel()

    def _failed(self, runtime: str, batch: Batch, acked: Acked | None, attempt: int) -> None:
        assert self._loop is not None
        self._unstored.setdefault(runtime, set()).add(batch[0][1].seq)
        later = self._later(runtime, batch, acked, attempt)
        retry = self._loop.create_task(later, name=f"{TASK_PREFIX}store-again")
        self.retries.add(retry)
        retry.add_done_callback(self.retries.discard)

    async def _later(self, runtime: str, batch: Batch, acked: Acked | None, attempt: int) -> None:
        await self._clock.sleep(min(RETRY_FIRST * 2**attempt, RETRY_MOST))
        try:
            self.save(runtime, batch, acked, attempt + 1)
        except StoreError:  # still failing (and reported once): try again, later
            self._failed(runtime, batch, acked, attempt + 1)

    def _report(self, loop: asyncio.AbstractEventLoop, outcome: Outcome) -> None:
        """From the writer: queue a batch's outcome; wake the hub's loop once for them all."""
        self._outcomes.append(outcome)
        with self._lock:
            if self._draining:
                return
            self._draining = True
        loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """Every outcome since the last call, in commit order, in one turn of the hub's
        loop; then one ack per runtime (acks are cumulative), not one per batch: under
        load a runtime sends hundreds of batches a second."""
        with self._lock:
            self._draining = False
        last_ack: dict[str, Acked] = {}
        while self._outcomes:
            outcome = self._outcomes.popleft()
            if outcome[0] == "stored":
                _, runtime, first, last, acked = outcome
                self._stored[runtime] = max(self._stored.get(runtime, 0), last)
                self._unstored.get(runtime, set()).discard(first)  # tried again, now stored
                if acked is not None:
                    last_ack[runtime] = acked  # the latest connection's
            else:
                _, runtime, batch, acked, attempt = outcome
                self._failed(runtime, batch, acked, attempt)
        for runtime, acked in last_ack.items():
            acked(self.acked(runtime))
