"""What the hub hands to clients and screens: the row of a request, an event with its id."""

from __future__ import annotations

import secrets
from typing import Any

from ..core.events import Event
from ..core.view import Request


def client_event(store_id: int, event: Event) -> dict[str, Any]:
    """An event as clients get it: its wire form and its ``id`` in the hub's store."""
    wire = event.to_wire()
    wire["id"] = store_id
    return wire


def request_row(request: Request) -> dict[str, Any]:
    """An open request as the REST API, the phone page and the widget show it."""
    return {
        "id": request.id,
        "agent_id": request.agent_id,
        "runtime": request.runtime,
        "kind": request.kind,
        "prompt": request.prompt,
        "choices": list(request.choices) if request.choices else None,
        "details": request.details,
        "opened": request.opened,
    }


def new_secret() -> str:
    """A runtime secret for a new hub (``hub.json``)."""
    return secrets.token_urlsafe(32)
