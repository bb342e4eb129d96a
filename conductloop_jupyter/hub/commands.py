"""Steering commands: the hub routes each to the runtime that owns its agent or request.

The runtime decides (first answer wins there) and the hub waits for its reply, up to
``command_timeout``. A command about something that has already ended is answered here,
by the runtime's own rules, so it holds even when that runtime is gone.
``serve_client_message`` is one message of a client socket (the hub's, JupyterLab's or the
phone's): a subscription, or a command answered with a reply.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.view import View
from .protocol import ProtocolError, client_message_id, load, parse_client_message, parse_command

if TYPE_CHECKING:
    from .hub import Connection, Hub, RuntimeLink


class CommandRouting:
    """The part of ``Hub`` that routes commands (a mixin: it uses the hub's view and
    runtimes)."""

    view: View
    runtimes: dict[str, RuntimeLink]
    command_timeout: float
    _loop: asyncio.AbstractEventLoop | None

    def __init__(self) -> None:
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._command_ids = itertools.count(1)

    def owner(self, command: dict[str, Any]) -> str:
        """The runtime a command must go to (``UsageError``-like ``ProtocolError`` if none)."""
        if "agent_id" in command:
            agent = self.view.agents.get(command["agent_id"])
            if agent is None:
                raise ProtocolError(
                    "unknown_agent", f"no agent {command['agent_id']!r} on this hub"
                )
            return agent.runtime
        request = self.view.requests.get(command["request_id"])
        if request is None:
            raise ProtocolError(
                "unknown_request", f"no request {command['request_id']!r} on this hub"
            )
        return request.runtime

    async def command(self, command: Any, by: str) -> Any:
        """Route a steering command to its runtime and return that runtime's answer."""
        command = dict(parse_command(command))
        command["by"] = by
        if command["op"] == "stop_all":
            skip = command.get("skip") or []  # runtimes the caller stopped itself
            if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
                raise ProtocolError("bad_message", "field 'skip' must be a list of runtime ids")
            connected = [
                r
                for r in self.runtimes.values()
                if r.connection is not None and r.runtime not in skip
            ]
            results = await asyncio.gather(*(self._send(r.runtime, command) for r in connected))
            return sum(int(n) for n in results)
        runtime = self.owner(command)
        settled = self._settled(command)
        if settled is not None:
            return settled[0]
        return await self._send(runtime, command)

    def _settled(self, command: dict[str, Any]) -> tuple[Any] | None:
        """The answer for a command about something that has already ended, given here
        with the runtime's own rules, so it holds even when that runtime is gone:
        a decided request -> ``False`` (first answer wins); ``stop`` of an ended agent ->
        nothing (idempotent); pause/resume/redirect of an ended agent -> ``usage``."""
        op = command["op"]
        if "request_id" in command:
            request = self.view.requests[command["request_id"]]
            if request.open:
                return None
            verbs = {"question": ("answer", "reject")}.get(request.kind, ("approve", "reject"))
            if op not in verbs:
                raise ProtocolError(
                    "usage", f"request {request.id} is a {request.kind}: use {' or '.join(verbs)}"
                )
            return (False,)
        agent = self.view.agents[command["agent_id"]]
        if not agent.state.final:
            return None
        if op == "stop":
            return (None,)
        done = {"pause": "paused", "resume": "resumed", "redirect": "redirected"}.get(op, op)
        raise ProtocolError(
            "usage",
            f"agent {agent.agent_id} has already ended ({agent.state.value}), "
            f"so it cannot be {done}",
        )

    async def _send(self, runtime: str, command: dict[str, Any]) -> Any:
        link = self.runtimes.get(runtime)
        if link is None or link.connection is None:
            raise ProtocolError("runtime_gone", f"runtime {runtime} is not connected to this hub")
        assert self._loop is not None
        command_id = f"{runtime}/{next(self._command_ids)}"
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._replies[command_id] = future
        link.connection.send({"type": "command", "id": command_id, "command": command})
        try:
            reply = await asyncio.wait_for(future, self.command_timeout)
        except TimeoutError:
            raise ProtocolError(
                "timeout", f"runtime {runtime} did not answer within {self.command_timeout:g} s"
            ) from None
        finally:
            self._replies.pop(command_id, None)
        if not reply["ok"]:
            error = reply.get("error") or {}
            raise ProtocolError("usage", str(error.get("message", "the runtime refused")))
        return reply.get("result")

    def runtime_reply(self, reply: dict[str, Any]) -> None:
        future = self._replies.get(reply["id"])
        if future is not None and not future.done():
            future.set_result(reply)


async def serve_client_message(
    hub: Hub,
    client: Connection,
    raw: str | bytes,
    by: str,
    may_command: Callable[[], bool] = lambda: True,
) -> None:
    """One message from a client socket: subscribe, or a command answered with a reply.

    Every refusal is an ``error`` carrying the message's ``id``; the socket keeps serving.
    ``may_command`` is a rate limit (the phone's): ``False`` refuses with ``rate_limited``.
    """
    request_id = None
    try:
        message = load(raw)
        request_id = client_message_id(message)
        message = parse_client_message(message)
        if message["type"] == "subscribe":
            await hub.subscribe(client, message["after"])
            return
        if not may_command():
            raise ProtocolError("rate_limited", "too many commands; slow down")
        result = await hub.command(message["command"], by)
    except ProtocolError as error:
        client.send(error.to_wire(request_id))
        return
    client.send({"type": "reply", "id": request_id, "ok": True, "result": result})
