"""End-to-end fuzz (hypothesis) of the three ways in: the phone WebSocket, the hub's client
API (its WebSocket and REST commands) and the runtime channel, over real sockets to a real
hub. Whatever is sent, every answer is a typed error (a code of the error table) or a
normal reply, never a 500 or a dropped connection; afterwards the hub still serves, and
still stores a runtime's events."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conductloop_jupyter.hub.phone import COOKIE
from conductloop_jupyter.hub.protocol import ERROR_CODES
from tests.hub._phone_support import Device, PhoneHub

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ODD_TEXT = st.sampled_from(["", "\ud800", "a\udfffb", "x" * 300, "é", "null", "0"])
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | ODD_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
OPS = st.sampled_from(
    ["approve", "reject", "answer", "pause", "resume", "stop", "redirect", "format_disk", 5]
)
COMMANDS = st.fixed_dictionaries(
    {"op": OPS},
    optional={
        "agent_id": VALUES,
        "request_id": VALUES,
        "text": VALUES,
        "note": VALUES,
        "args": VALUES,
        "by": VALUES,
    },
)
CLIENT_MESSAGES = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["command", "hello", "subscribe", "ping", 7])},
        optional={"id": VALUES, "command": COMMANDS | VALUES, "after": VALUES},
    ),
)
EVENTS = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, "1"]),
        "seq": st.integers(min_value=-1, max_value=2**64),
        "ts": st.floats(allow_nan=False, allow_infinity=False) | VALUES,
        "runtime": st.sampled_from(["rt-fuzz", "rt-other", "", 5]),
        "agent_id": st.sampled_from(["f-1", None, 3, "\ud800"]),
        "kind": st.sampled_from(["agent.started", "usage", "log", "agent.state", "Bad!", "x.y"]),
        "data": st.dictionaries(
            st.sampled_from(["name", "state", "input_tokens", "message", "model", "text"]),
            VALUES,
        )
        | VALUES,
    }
)
RUNTIME_MESSAGES = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["events", "reply", "hello", "ack"])},
        optional={"events": st.lists(EVENTS | VALUES, max_size=4) | VALUES, "id": VALUES},
    ),
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PhoneHub, Device]]:
    started = PhoneHub(Path(tmp_path_factory.mktemp("fuzz")) / "hub")
    try:
        yield started, started.pair()
    finally:
        started.stop()


def _well_formed(answer: Any) -> None:
    assert isinstance(answer, dict), answer
    if answer.get("type") == "error":
        assert answer["code"] in ERROR_CODES, answer


def _until_sentinel(ws: websocket.WebSocket, sentinel: str) -> None:
    """Read until the sentinel's reply; every message before it must be well formed."""
    while True:
        answer = json.loads(ws.recv())
        _well_formed(answer)
        if answer.get("id") == sentinel:
            return


def _send_json(ws: websocket.WebSocket, message: Any) -> None:
    ws.send(json.dumps(message))  # ASCII JSON: a lone surrogate goes as its \\u escape


def _phone_socket(phone: PhoneHub, device: Device) -> websocket.WebSocket:
    return websocket.create_connection(
        f"ws://{phone.host}/ws",
        header=[f"Cookie: {COOKIE}={device.token}"],
        origin=phone.origin,
        host=phone.host,
        timeout=10,
    )


def _hub_socket(phone: PhoneHub, path: str) -> websocket.WebSocket:
    url = phone.address.url.replace("http", "ws", 1) + path
    return websocket.create_connection(
        url, header=[f"Authorization: Bearer {phone.address.secret}"], timeout=10
    )


def _runtime_socket(phone: PhoneHub, runtime: str) -> websocket.WebSocket:
    """The runtime channel, welcomed after its hello."""
    ws = _hub_socket(phone, "/conductloop/runtime")
    _send_json(ws, {"type": "hello", "v": 1, "runtime": runtime, "name": runtime, "pid": 1})
    assert json.loads(ws.recv())["type"] == "welcome"
    return ws


def _started(runtime: str, agent_id: str) -> dict[str, Any]:
    return {
        "v": 1,
        "seq": 1,
        "ts": 1.0,
        "runtime": runtime,
        "agent_id": agent_id,
        "kind": "agent.started",
        "data": {"name": agent_id},
    }


SENTINEL = {"op": "pause", "agent_id": "no-such-agent"}  # always a typed error, harmlessly


@SETTINGS
@given(message=CLIENT_MESSAGES)
def test_the_phone_websocket_answers_anything_with_a_typed_error_or_a_reply(
    hub: tuple[PhoneHub, Device], message: Any
) -> None:
    phone, device = hub
    ws = _phone_socket(phone, device)
    try:
        _send_json(ws, message)
        _send_json(ws, {"type": "command", "id": "sentinel", "command": SENTINEL})
        _until_sentinel(ws, "sentinel")
    finally:
        ws.close()


@SETTINGS
@given(message=CLIENT_MESSAGES, command=COMMANDS | VALUES)
def test_the_client_api_answers_anything_with_a_typed_error_or_a_reply(
    hub: tuple[PhoneHub, Device], message: Any, command: Any
) -> None:
    phone, _ = hub
    ws = _hub_socket(phone, "/conductloop/api/ws")
    try:
        _send_json(ws, message)
        _send_json(ws, {"type": "command", "id": "sentinel", "command": SENTINEL})
        _until_sentinel(ws, "sentinel")
    finally:
        ws.close()
    host, port = phone.address.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(
            "POST",
            "/conductloop/api/commands",
            body=json.dumps(command),
            headers={"Authorization": f"Bearer {phone.address.secret}"},
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.status < 500 or answer["error"]["code"] in ("runtime_gone", "timeout")
    if response.status >= 400:
        assert answer["error"]["code"] in ERROR_CODES, answer


@SETTINGS
@given(message=RUNTIME_MESSAGES)
def test_the_runtime_channel_answers_anything_with_a_typed_error_or_an_ack(
    hub: tuple[PhoneHub, Device], message: Any
) -> None:
    phone, _ = hub
    ws = _runtime_socket(phone, "rt-fuzz")
    try:
        _send_json(ws, message)
        _send_json(ws, {"type": "events", "events": [_started("rt-fuzz", "f-1")]})
        while True:  # the sentinel batch's ack (seq 1 may be a replay: acked all the same)
            answer = json.loads(ws.recv())
            _well_formed(answer)
            if answer.get("type") == "ack":
                break
    finally:
        ws.close()


def test_after_the_fuzz_the_hub_still_serves_and_stores(hub: tuple[PhoneHub, Device]) -> None:
    phone, device = hub
    assert phone.fetch("GET", "/api/state", token=device.token).status == 200
    ws = _runtime_socket(phone, "rt-after")
    try:
        _send_json(ws, {"type": "events", "events": [_started("rt-after", "after-1")]})
        assert json.loads(ws.recv()) == {"type": "ack", "seq": 1}
    finally:
        ws.close()
    assert "after-1" in set(phone.client.agents()["agent_id"])
