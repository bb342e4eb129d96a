"""``SendQueue``: what one hub connection was given to send, bounded.

A client that stops reading must not grow the hub's memory, nor slow anyone else: its
socket is dropped once ``limit`` bytes wait unwritten, and it reconnects and catches up by
id (``Hub.subscribe``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

_log = logging.getLogger("conductloop.hub")

#: bytes a client's socket may leave unsent before the hub drops it (``SendQueue``)
SEND_LIMIT = 4 * 1024 * 1024
#: the close code of a client dropped for reading too slowly (RFC 6455: "try again later")
TOO_SLOW = 1013


class SendQueue:
    """What one connection was given to send and its socket has not taken yet, bounded.

    ``write(text)`` hands a message to the transport and returns a future done once it
    has been written to the socket (tornado's ``write_message``), or ``None`` when the
    connection is closed. Everything unwritten counts against ``limit`` (bytes, of JSON
    text, which is ASCII): a message is taken while less than ``limit`` waits, so at most
    ``limit`` plus one message is held for a client; past it, the client is dropped with
    ``close(TOO_SLOW, ...)`` and sent nothing more. It reconnects and catches up by id
    (``Hub.subscribe``), and nobody else waits for it: fan-out never blocks, agents are
    never slowed. A write that fails because the peer went away is expected, and quiet.
    """

    def __init__(
        self,
        write: Callable[[str], asyncio.Future[None] | None],
        close: Callable[[int, str], None],
        limit: int = SEND_LIMIT,
    ) -> None:
        self._write = write
        self._close = close
        self.limit = limit
        self.pending = 0  # bytes handed to the transport and not yet written
        self.peak = 0  # the most that ever waited (tests and benchmarks read it)
        self.ended = False  # closed, or dropped for being too slow
        self.dropped = False
        self._last: asyncio.Future[None] | None = None

    def send(self, text: str) -> None:
        if self.ended:
            return
        if self.pending >= self.limit:
            self.dropped = self.ended = True
            _log.warning(
                "a client left %d bytes unread; dropped (%d), it may reconnect and catch up",
                self.pending,
                TOO_SLOW,
            )
            self._close(TOO_SLOW, "this client reads too slowly; reconnect to catch up")
            return
        future = self._write(text)
        if future is None:
            self.ended = True
            return
        size = len(text)
        self.pending += size
        self.peak = max(self.peak, self.pending)
        self._last = future
        future.add_done_callback(lambda done: self._written(done, size))

    def _written(self, future: asyncio.Future[None], size: int) -> None:
        self.pending -= size
        if not future.cancelled() and future.exception() is not None:
            self.ended = True  # the peer went away: retrieved here, so nothing is logged

    async def drained(self) -> bool:
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([last])  # writes finish in order: the last one is the end
        return not self.ended

    def closed(self) -> None:
        self.ended = True
