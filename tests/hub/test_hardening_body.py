"""The hub listener checks its secret before it reads a request's body, and reads at most
64 KiB of one (issue 12, point 10); raw sockets to a real hub.

Each request here sends its headers and only the first kilobyte of a 10 MB body: the
answer must come at once (the hub did not wait for the rest), and then the connection
ends (the hub will not read it either).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from conductloop_jupyter.hub.discovery import HubAddress
from conductloop_jupyter.hub.protocol import MAX_CLIENT_MESSAGE
from tests.hub._support import bearer, command, running_hub

BIG = 10_000_000


@asynccontextmanager
async def raw(
    address: HubAddress,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = address.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()


async def answer_to_a_start(
    address: HubAddress, head: str, headers: dict[str, str], body: bytes = b"x" * 1024
) -> tuple[int, dict[str, object], bytes]:
    """Send ``head`` and ``headers`` and the start of a body; the status, JSON answer and
    whatever the hub sent until it closed the connection."""
    host = address.url.removeprefix("http://")
    async with raw(address) as (reader, writer):
        lines = [head, f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)  # to the end: the hub closed it
    status_line, _, rest = response.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    answer = json.loads(payload) if payload.startswith(b"{") else {}
    return int(status_line.split()[1]), answer, header_block


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "commands"),
        ("POST", "phone"),
        ("POST", "devices/revoke"),
        ("GET", "agents"),  # a body on a GET is read by tornado too, unless streamed
        ("PUT", "nothing-here"),  # and on a path that does not exist
    ],
)
async def test_a_big_body_without_the_secret_is_refused_401_before_it_is_read(
    tmp_path: Path, method: str, path: str
) -> None:
    async with running_hub(tmp_path) as (_server, address):
        head = f"{method} /conductloop/api/{path} HTTP/1.1"
        for headers in (
            {"Content-Length": str(BIG)},
            {"Content-Length": str(BIG), "Authorization": "Bearer wrong"},
            {"Transfer-Encoding": "chunked"},
        ):
            status, answer, _ = await answer_to_a_start(address, head, headers)
            assert status == 401, headers
            assert answer["error"] == {
                "code": "unauthorized",
                "message": "this hub needs its secret",
            }


@pytest.mark.parametrize("path", ["/conductloop/runtime", "/conductloop/api/ws"])
async def test_a_websocket_handshake_with_a_body_and_no_secret_is_refused_before_it_is_read(
    tmp_path: Path, path: str
) -> None:
    async with running_hub(tmp_path) as (_server, address):
        headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Content-Length": str(BIG),
        }
        status, _, _ = await answer_to_a_start(address, f"GET {path} HTTP/1.1", headers)
        assert status == 401
        status, _, _ = await answer_to_a_start(
            address, f"GET {path} HTTP/1.1", {**headers, **bearer(address.secret)}
        )
        assert status == 413  # with the secret, a handshake still has no body


async def test_with_the_secret_a_body_over_64_kib_is_refused_413_and_one_at_the_limit_served(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as (_server, address):
        head = "POST /conductloop/api/commands HTTP/1.1"
        status, answer, _ = await answer_to_a_start(
            address, head, {"Content-Length": str(BIG), **bearer(address.secret)}
        )
        assert (status, answer["error"]["code"]) == (413, "too_large")  # type: ignore[index]
        # chunked, with no length said: cut off once past the limit, never read whole
        chunk = b"x" * 4096
        chunks = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * (
            MAX_CLIENT_MESSAGE // 4096 + 2
        )
        status, _, _ = await answer_to_a_start(
            address, head, {"Transfer-Encoding": "chunked", **bearer(address.secret)}, chunks
        )
        assert status == 400
        # at the limit: read and answered as always
        body = {"op": "stop_all", "note": ""}
        body["note"] = "n" * (MAX_CLIENT_MESSAGE - len(json.dumps(body)))
        assert len(json.dumps(body)) == MAX_CLIENT_MESSAGE
        assert await command(address, body) == (200, {"ok": True, "result": 0})
        assert await command(address, {"op": "stop_all"}) == (200, {"ok": True, "result": 0})
