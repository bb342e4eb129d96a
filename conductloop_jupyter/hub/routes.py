"""The route table's machinery: an endpoint is one function, a listener mounts it.

Every HTTP endpoint of the hub is one async function ``(Call) -> body | Answer``, declared
once in ``endpoints.ROUTES`` with the auth policies it is offered under. Each listener
mounts the routes of the policy it speaks, through one handler class per policy:

    secret    the hub listener (loopback): ``Authorization: Bearer <secret>``  (app.py)
    jupyter   the Jupyter server: Jupyter's login and ``@authorized``          (serverext.py)
    device    the phone listener: a paired device's cookie; a POST also needs a
              same-origin ``Origin``, the CSRF token, and a token of its rate  (phone.py)
    pairing   the phone listener before pairing: a same-origin ``Origin`` only (phone.py)

The handler checks its policy, builds the ``Call`` (who is asking, the query, the body)
and writes what the endpoint returns; a ``ProtocolError`` is answered from the one error
table (``protocol.ERRORS``), so every listener answers an error the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http.client import responses
from typing import TYPE_CHECKING, Any, Literal

from tornado import web

from .protocol import ERRORS, ErrorCode, ProtocolError, dumps, error_body, load

if TYPE_CHECKING:
    from .hub import Hub
    from .pairing import Device

Auth = Literal["secret", "jupyter", "device", "pairing"]
Method = Literal["GET", "POST"]


@dataclass
class Call:
    """One request, as an endpoint sees it: whatever listener it came in on."""

    hub: Hub
    who: str  # the ``by`` of a command: ``jupyterlab:<user>``, ``phone:<name>``, ...
    query: Mapping[str, list[bytes]] = field(default_factory=dict)
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    remote_ip: str = ""
    device: Device | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)  # the listener's

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1].decode("utf-8", "replace") if values else default

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (an empty body is ``{}``), or ``bad_json``."""
        return load(self.body or b"{}")


@dataclass
class Answer:
    """An endpoint's answer when it is more than a 200 with a JSON body."""

    body: Any
    status: int = 200
    cookie: str | None = None  # a paired device's token: the phone listener sets its cookie
    headers: Mapping[str, str] = field(default_factory=dict)
    after: Callable[[], None] | None = None  # called once the answer is written out


Endpoint = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    path: str  # on the hub listener and under Jupyter's base_url
    method: Method
    endpoint: Endpoint
    auth: frozenset[Auth]
    phone_path: str | None = None  # where the phone listener mounts it, if it offers it

    def path_for(self, auth: Auth) -> str:
        if auth in ("device", "pairing"):
            assert self.phone_path is not None
            return self.phone_path
        return self.path


def mount(
    routes: list[Route], auth: Auth, handler: type[web.RequestHandler], prefix: str = ""
) -> list[tuple[str, type[web.RequestHandler], dict[str, Any]]]:
    """The tornado rules for the routes offered under ``auth``, each served by ``handler``
    (a subclass of the listener's base handler and ``Endpoints``)."""
    return [
        (prefix + route.path_for(auth), handler, {"route": route})
        for route in routes
        if auth in route.auth
    ]


class Endpoints:
    """Mixed into each policy's handler class: checks the method, asks the class for the
    ``Call`` (``call()`` checks the policy; ``None``: it refused and answered already),
    runs the route's endpoint and writes its answer."""

    route: Route

    def initialize(self, route: Route) -> None:
        self.route = route

    def get(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        return self.dispatch("GET")

    def post(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        return self.dispatch("POST")

    def call(self) -> Call | None:
        raise NotImplementedError

    async def dispatch(self, method: Method) -> None:
        if method != self.route.method:
            raise web.HTTPError(405)
        call = self.call()
        if call is not None:
            await self.answer(call)

    async def answer(self, call: Call) -> None:
        handler: Any = self
        try:
            result = await self.route.endpoint(call)
        except ProtocolError as error:
            result = Answer(error.body(), error.status, headers=_retry_after(error))
        answer = result if isinstance(result, Answer) else Answer(result)
        handler.set_status(answer.status)
        handler.set_header("Content-Type", "application/json")
        handler.set_header("Cache-Control", "no-store")
        for name, value in answer.headers.items():
            handler.set_header(name, value)
        if answer.cookie is not None:
            self.set_device_cookie(answer.cookie)
        await handler.finish(dumps(answer.body))
        if answer.after is not None:
            answer.after()

    def set_device_cookie(self, token: str) -> None:
        raise web.HTTPError(500)  # only the phone listener's handlers pair a device


def refuse(handler: web.RequestHandler, code: ErrorCode, message: str) -> None:
    """Answer an error from the table, before (or instead of) any endpoint."""
    handler.set_status(ERRORS[code].status)
    handler.set_header("Content-Type", "application/json")
    handler.set_header("Cache-Control", "no-store")
    handler.finish(dumps(error_body(code, message)))


def refuse_http(handler: web.RequestHandler, status: int) -> None:
    """An error tornado raised itself (an unknown path, a wrong method or host), in the
    table's shape rather than tornado's HTML page: for ``write_error``."""
    refuse(handler, http_error_code(status), responses.get(status, "error").lower())


def http_error_code(status: int) -> ErrorCode:
    """The code of an error tornado raised itself (an unknown path, a wrong host)."""
    codes: dict[int, ErrorCode] = {
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "bad_method",
        413: "too_large",
    }
    return codes.get(status, "bad_message")


def _retry_after(error: ProtocolError) -> dict[str, str]:
    wait = error.extra.get("retry_after")
    return {"Retry-After": str(int(wait) + 1)} if wait else {}
