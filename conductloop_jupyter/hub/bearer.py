"""The hub listener's own auth: the secret from ``hub.json``, checked before any body.

Every REST handler streams its body (``@web.stream_request_body``), so the secret is
checked as soon as the headers are in: refused, the answer goes out at once and the
connection is closed rather than read on. A body is at most ``MAX_CLIENT_MESSAGE``; a
WebSocket handshake carries none.
"""

from __future__ import annotations

import hmac
from typing import Any

from tornado import web
from tornado.http1connection import HTTP1Connection

from .protocol import MAX_CLIENT_MESSAGE, ErrorCode
from .routes import refuse, refuse_http


def check_bearer(handler: web.RequestHandler, max_body: int = MAX_CLIENT_MESSAGE) -> None:
    """The secret, before a byte of the body is read (every handler that calls this
    streams its body: ``@web.stream_request_body``), then a body of at most ``max_body``.

    Refused, the answer goes out at once and tornado closes the connection rather than
    read the body (a 10 MB body without the secret costs the hub nothing).
    """
    secret: str = handler.settings["conductloop_secret"]
    given = handler.request.headers.get("Authorization", "")
    if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:], secret)):
        _refuse(handler, "unauthorized", "this hub needs its secret")
    length = handler.request.headers.get("Content-Length", "0")
    if not length.isdigit() or int(length) > max_body:
        _refuse(handler, "too_large", f"a request body is at most {max_body} bytes")
    connection = handler.request.connection
    if isinstance(connection, HTTP1Connection):
        connection.set_max_body_size(max_body)  # a chunked body too


def _refuse(handler: web.RequestHandler, code: ErrorCode, message: str) -> None:
    refuse(handler, code, message)
    raise web.Finish()


@web.stream_request_body
class BearerHandler(web.RequestHandler):
    """The hub listener's REST handlers: the secret first, then the body (see
    ``check_bearer``), which the method reads as ``self.request.body`` as usual."""

    def prepare(self) -> None:
        check_bearer(self)

    def data_received(self, chunk: bytes) -> None:
        self.request.body += chunk  # at most MAX_CLIENT_MESSAGE in all

    def who(self) -> str:
        return self.request.headers.get("X-ConductLoop-By", "client")[:64] or "client"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """tornado's own errors (an unknown path) in the table's shape, not an HTML page."""
        refuse_http(self, status_code)


class HubNotFound(BearerHandler):
    """Any other path: 404, to a caller with the secret (and 401 to anyone else)."""

    def prepare(self) -> None:
        super().prepare()
        raise web.HTTPError(404)


@web.stream_request_body
class BearerSocket(web.RequestHandler):
    """A WebSocket handshake on the hub listener: the secret first, and no body at all."""

    def prepare(self) -> None:
        check_bearer(self, max_body=0)

    def data_received(self, chunk: bytes) -> None:  # pragma: no cover - max_body=0
        raise web.HTTPError(413)
