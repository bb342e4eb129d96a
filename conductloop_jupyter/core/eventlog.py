"""A bounded in-memory event log: what ``loop.events()`` reads when there is no hub.

When full, the oldest events go; ``dropped`` counts them and the first drop is announced
(by the conductor, as a warning event), so overflow is never silent and memory never grows
without limit. The live view is kept separately, so agents, spend and requests stay exact.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from .errors import UsageError
from .events import Event


class EventLog:
    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise UsageError(f"the event log must hold at least one event, not {maxlen}")
        self.maxlen = maxlen
        self.dropped = 0
        self._events: deque[Event] = deque(maxlen=maxlen)

    def append(self, event: Event) -> bool:
        """Add ``event``; return ``True`` when this append was the first to drop one."""
        if len(self._events) == self.maxlen:
            self.dropped += 1
            self._events.append(event)
            return self.dropped == 1
        self._events.append(event)
        return False

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def snapshot(self) -> list[Event]:
        return list(self._events)
