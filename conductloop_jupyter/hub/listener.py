"""``BoundedHTTPServer``: a tornado ``HTTPServer`` that idle connections cannot fill up.

Both of the hub's listeners use it: the loopback one (runtimes, clients) and the phone
listener, which anyone on the LAN can reach. Each is sized for one person: a few phones
(a browser opens at most six connections to a host), a few notebooks and scripts.

- **A cap on open HTTP connections** (``max_connections``). At the cap, a new connection
  takes the place of the one that has waited longest for its next request (an idle
  keep-alive, or a client that connected and sent nothing or half its headers); when every
  connection is in the middle of a request, the new one is closed at once. So connections
  that do nothing cannot keep out one that asks something, and the process never runs out
  of file descriptors on them. A WebSocket leaves the count once upgraded; only a paired
  phone (or a runtime with the hub's secret) gets that far.
- **Deadlines**: a request's line and headers must arrive within ``header_timeout``
  seconds of the connection being ready for it (tornado's ``idle_connection_timeout``,
  which also closes a keep-alive connection idle that long), its body within
  ``body_timeout``.

Evictions and refusals are logged as one warning a minute at most, with their count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tornado import httputil, iostream
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer

log = logging.getLogger("conductloop.hub")


@dataclass(frozen=True)
class Limits:
    """How many HTTP connections a listener keeps open, and its deadlines (seconds)."""

    max_connections: int
    header_timeout: float
    body_timeout: float


#: the phone listener: a person's few phones, from the LAN
PHONE_LIMITS = Limits(max_connections=64, header_timeout=10.0, body_timeout=10.0)
#: the hub's loopback listener: REST calls of this user's notebooks, scripts and CLI
HUB_LIMITS = Limits(max_connections=128, header_timeout=10.0, body_timeout=30.0)


class BoundedHTTPServer(HTTPServer):
    """``HTTPServer(app, limits=..., name=..., **options)``: see the module docstring."""

    def initialize(  # type: ignore[override]
        self, request_callback: Any, *, limits: Limits, name: str, **options: Any
    ) -> None:
        super().initialize(
            request_callback,
            idle_connection_timeout=limits.header_timeout,
            body_timeout=limits.body_timeout,
            **options,
        )
        self.limits = limits
        self.name = name
        #: connections waiting for their next request's headers, longest waiting first
        self._waiting: dict[HTTP1ServerConnection, None] = {}
        self._dropped = 0
        self._reported = -60.0

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        if len(self._connections) >= self.limits.max_connections:
            if not self._waiting:  # every one is busy with a request: this one waits not
                self._drop()
                stream.close()
                return
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self._drop()
            oldest.stream.close()  # its request loop ends and calls on_close
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        conn: Any = server_conn
        self._waiting.pop(conn, None)
        self._waiting[conn] = None  # ready for a request: last in the line to be evicted
        delegate = super().start_request(server_conn, request_conn)
        return _Started(delegate, lambda: self._waiting.pop(conn, None))

    def on_close(self, server_conn: object) -> None:
        self._waiting.pop(server_conn, None)  # type: ignore[call-overload]
        super().on_close(server_conn)

    def _drop(self) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._reported >= 60.0:
            log.warning(
                "%s: %d connection(s) closed at the cap of %d open connections",
                self.name,
                self._dropped,
                self.limits.max_connections,
            )
            self._dropped, self._reported = 0, now


class _Started(httputil.HTTPMessageDelegate):
    """Passes a request on, and says when its headers are in (the connection is busy)."""

    def __init__(self, delegate: httputil.HTTPMessageDelegate, busy: Callable[[], object]) -> None:
        self.delegate = delegate
        self.busy = busy

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self.busy()
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()
