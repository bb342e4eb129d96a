"""Every HTTP endpoint of the hub, each one function, declared once in ``ROUTES``.

    path (hub listener, Jupyter)      phone      method  offered to
    /conductloop/api/agents                      GET     secret, jupyter
    /conductloop/api/pending                     GET     secret, jupyter
    /conductloop/api/status                      GET     secret, jupyter
    /conductloop/api/events                      GET     secret, jupyter
    /conductloop/api/commands         /api/command  POST  secret, jupyter, device
    /conductloop/api/phone                       POST    secret
    /conductloop/api/phone/code                  GET     secret
    /conductloop/api/devices                     GET     secret
    /conductloop/api/devices/revoke              POST    secret
    /conductloop/api/handover                    POST    secret
                                      /api/state    GET   device
                                      /api/events   GET   device
                                      /pair         POST  pairing

How each policy is checked is in ``routes.py``; the WebSockets are in ``app.py`` and
``phone.py``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from ..core.errors import PairingError
from ..core.payloads import is_text
from .protocol import MAX_CODE_WAIT, ErrorCode, ProtocolError
from .routes import Answer, Call, Route
from .rows import request_row

API = "/conductloop/api"


async def agents(call: Call) -> Any:
    return {"agents": [a.row() for a in call.hub.view.agents.values()]}


async def pending(call: Call) -> Any:
    return {"pending": [request_row(r) for r in call.hub.view.pending()]}


async def status(call: Call) -> Any:
    hub = call.hub
    states: dict[str, int] = {}
    for agent in hub.view.agents.values():
        states[agent.state.value] = states.get(agent.state.value, 0) + 1
    return {
        "runtimes": hub.runtime_rows(),
        "agents": states,
        "pending": len(hub.view.pending()),
        "spend_usd": hub.view.total_cost_usd,
        "last_id": hub.last_id,
    }


async def events(call: Call) -> Any:
    """``?after=<id>&limit=<n>&agent_id=<id>``: a page of stored events."""
    try:
        after, limit = int(call.arg("after", "0")), int(call.arg("limit", "1000"))
    except ValueError:
        raise ProtocolError("bad_message", "after and limit are integers") from None
    if after < 0 or not 1 <= limit <= 10_000:
        raise ProtocolError("bad_message", "after must be >= 0 and limit within 1..10000")
    page = await call.hub.events_page(after, limit, call.arg("agent_id") or None)
    return {"events": page, "last_id": call.hub.last_id}


async def commands(call: Call) -> Any:
    """``{"op": ..., ...}``: steer; the runtime that owns the agent decides."""
    return {"ok": True, "result": await call.hub.command(call.json(), call.who)}


async def phone_open(call: Call) -> Any:
    """Open the phone listener (if it is not yet) and make a one-time pairing URL."""
    body = call.json()
    host, port, tls, ttl = (body.get(k) for k in ("host", "port", "tls", "ttl"))
    _check_phone_options(host, port, ttl)
    phone = call.hub.phone
    if phone is None:
        raise ProtocolError("usage", "this hub has no phone service")
    if not phone.open:
        await phone.start(host, port or 0, bool(tls))
    elif (host and host != phone.host) or (port and port != phone.port):
        raise ProtocolError("usage", f"the phone listener is already open at {phone.base_url}")
    elif tls and not phone.tls:
        # Not switched over: that would cut off the phones using the plain page now and
        # move its address. Say why, and how to get HTTPS (never a plain link instead).
        raise ProtocolError(
            "usage",
            f"tls=True: the phone listener is already open without TLS at {phone.base_url}, "
            "and one hub has one listener; restart the hub and ask for tls=True first, or "
            "pair over the plain one with tls=False",
        )
    url, code_id, expires = phone.pair_url(ttl)
    return {
        "url": url,
        "code_id": code_id,
        "expires": expires,
        "host": phone.host,
        "port": phone.port,
        "tls": phone.tls,
        "fingerprint": phone.fingerprint,
        "note": phone.note,
    }


def _check_phone_options(host: Any, port: Any, ttl: Any) -> None:
    if host is not None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ProtocolError(
                "bad_message", f"host must be an IP address of this machine, not {host!r}"
            ) from None
    if port is not None and (not isinstance(port, int) or not 0 <= port < 65536):
        raise ProtocolError("bad_message", f"port must be 0..65535, not {port!r}")
    if ttl is not None and not (isinstance(ttl, (int, float)) and 10 <= ttl <= 86_400):
        raise ProtocolError("bad_message", "ttl must be 10..86400 seconds")


async def pairing_code(call: Call) -> Any:
    """``?id=<code_id>&wait=<seconds>``: whether a pairing code was used, is waiting or
    expired. With ``wait`` (at most 60), a waiting code's answer comes when it is claimed
    or expires, or when the wait is over: the notebook replaces a used QR code at once."""
    id_ = call.arg("id")
    try:
        wait = float(call.arg("wait", "0"))
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_CODE_WAIT:  # also refuses nan
        raise ProtocolError("bad_message", f"wait must be 0..{MAX_CODE_WAIT:g} seconds")
    phone = call.hub.phone
    found = await phone.code_status(id_, wait) if phone is not None and id_ else None
    if found is None:
        raise ProtocolError("unknown_code", f"no pairing code {id_[:40]!r}")
    return found.public()


async def devices(call: Call) -> Any:
    phone = call.hub.phone
    if phone is not None and not phone.open:
        await asyncio.to_thread(phone.pairing.load)
    return {"devices": [d.public() for d in phone.pairing.devices.values()] if phone else []}


async def revoke(call: Call) -> Any:
    device_id = call.json().get("device_id")
    if not isinstance(device_id, str):
        raise ProtocolError("bad_message", "field 'device_id' must be a string")
    phone = call.hub.phone
    if phone is None or not await phone.revoke(device_id):
        raise ProtocolError("bad_message", f"no device {device_id!r}")
    return {"ok": True}


async def handover(call: Call) -> Any:
    """A long-lived hub asks this (embedded) one for the home: see ``server.py``."""
    hand_over = call.settings.get("conductloop_handover")
    if hand_over is None:
        raise ProtocolError("usage", "this hub is long-lived: it does not hand its home over")
    return Answer({"handing_over": True}, 202, after=hand_over)


async def phone_state(call: Call) -> Any:
    """The paired phone's first look: who it is, its CSRF token, the hub's snapshot."""
    phone, device = call.hub.phone, call.device
    if phone is None or device is None:  # the device policy lets neither through
        raise ProtocolError("unauthorized", "this phone is not paired (or was signed out)")
    return {
        "device": device.public(),
        "csrf": phone.pairing.csrf(device),
        "snapshot": call.hub.snapshot(),
    }


async def agent_events(call: Call) -> Any:
    """``?agent_id=<id>``: an agent's last 50 events, for its detail on the phone."""
    agent_id = call.arg("agent_id")
    if agent_id not in call.hub.view.agents:
        raise ProtocolError("unknown_agent", f"no agent {agent_id!r}")
    return {"events": await call.hub.recent_events(agent_id, 50)}


async def pair(call: Call) -> Any:
    """``{"code", "name"}`` from the page the QR code opened: claims the code, answers the
    device (its cookie set by the phone listener) and its CSRF token."""
    phone = call.hub.phone
    if phone is None:  # pragma: no cover - only the phone listener mounts this
        raise ProtocolError("usage", "this hub has no phone service")
    body = call.json()
    code, name = body.get("code"), body.get("name")
    if not isinstance(code, str):
        raise ProtocolError("bad_message", "field 'code' must be a string")
    if name is not None and not is_text(name):
        raise ProtocolError("bad_message", "field 'name' must be text")
    try:
        device, token = await phone.pairing.pair(  # claims and saves, or neither
            code,
            name=name or "",
            user_agent=call.headers.get("User-Agent", ""),
            address=call.remote_ip,
        )
    except PairingError as error:
        why: ErrorCode = "pairing_locked" if "too many" in str(error) else "pairing"
        raise ProtocolError(why, str(error), retry_after=error.retry_after) from None
    phone.claimed()
    return Answer({"device": device.public(), "csrf": phone.pairing.csrf(device)}, cookie=token)


_SECRET: Any = frozenset({"secret"})
_CLIENTS: Any = frozenset({"secret", "jupyter"})

ROUTES: list[Route] = [
    Route(f"{API}/agents", "GET", agents, _CLIENTS),
    Route(f"{API}/pending", "GET", pending, _CLIENTS),
    Route(f"{API}/status", "GET", status, _CLIENTS),
    Route(f"{API}/events", "GET", events, _CLIENTS),
    Route(f"{API}/commands", "POST", commands, _CLIENTS | {"device"}, "/api/command"),
    Route(f"{API}/phone", "POST", phone_open, _SECRET),
    Route(f"{API}/phone/code", "GET", pairing_code, _SECRET),
    Route(f"{API}/devices", "GET", devices, _SECRET),
    Route(f"{API}/devices/revoke", "POST", revoke, _SECRET),
    Route(f"{API}/handover", "POST", handover, _SECRET),
    Route("", "GET", phone_state, frozenset({"device"}), "/api/state"),
    Route("", "GET", agent_events, frozenset({"device"}), "/api/events"),
    Route("", "POST", pair, frozenset({"pairing"}), "/pair"),
]
