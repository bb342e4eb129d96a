"""Idle and slow connections cannot take the hub's listeners away from the people using them.

``BoundedHTTPServer`` (``hub/listener.py``) caps open HTTP connections, lets a new one take
the place of the longest idle one, and gives headers and bodies deadlines. Tested on a
real listener with small limits, then on a real ``conductloop serve`` with 256 file
descriptors, the phone listener open: 300 idle connections to each listener, and a paired
phone and ``/conductloop/api/status`` still answer. Every socket is on loopback, every wait
bounded, and every socket is closed by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import select
import socket
import time
from collections.abc import Iterator

from tornado import web

from conductloop_jupyter.hub.listener import HUB_LIMITS, PHONE_LIMITS, BoundedHTTPServer, Limits
from conductloop_jupyter.hub.phone import COOKIE
from tests.hub._process_support import CLI, Procs, free_port

IDLE = 300


def open_idle(port: int, count: int, *, half_headers: bool = False) -> list[socket.socket]:
    """``count`` connections that send nothing (or, ``half_headers``, a request line and
    part of the headers, slowloris-style). Blocking; the caller closes them."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            opened.append(sock)
            if half_headers:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    except BaseException:
        close_all(opened)
        raise
    return opened


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


@contextlib.contextmanager
def idle_sockets(port: int, count: int, *, half_headers: bool = False) -> Iterator[None]:
    opened = open_idle(port, count, half_headers=half_headers)
    try:
        yield
    finally:
        close_all(opened)


def closed_by_server(sockets: list[socket.socket], at_least: int, within: float) -> int:
    """How many of ``sockets`` the server has closed (EOF or reset), waiting up to
    ``within`` seconds for ``at_least`` of them."""
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + within
    while len(closed) < at_least and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([s for s in sockets if s not in closed], [], [], left)
        for sock in readable:
            try:
                if sock.recv(1) == b"":
                    closed.add(sock)
            except ConnectionError:
                closed.add(sock)
    return len(closed)


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- the listener on its own, with small limits ----------------------------------------------


class Slow(web.RequestHandler):
    async def get(self) -> None:
        if self.get_argument("wait", ""):
            self.settings["entered"].set()
            await self.settings["release"].wait()
        self.finish("ok")


def small_listener(header_timeout: float) -> tuple[BoundedHTTPServer, int, asyncio.Event]:
    entered, release = asyncio.Event(), asyncio.Event()
    server = BoundedHTTPServer(
        web.Application([(r"/", Slow)], entered=entered, release=release),
        limits=Limits(max_connections=8, header_timeout=header_timeout, body_timeout=30),
        name="test listener",
    )
    port = free_port()
    server.listen(port, "127.0.0.1")
    return server, port, entered


async def test_at_the_cap_new_connections_replace_idle_ones_never_a_busy_one() -> None:
    server, port, entered = small_listener(header_timeout=30)
    opened: list[socket.socket] = []
    try:
        busy = asyncio.create_task(asyncio.to_thread(get, port, "/?wait=1", {}))
        await asyncio.wait_for(entered.wait(), 10)  # the busy request is in its handler
        opened += await asyncio.to_thread(open_idle, port, 40)
        opened += await asyncio.to_thread(open_idle, port, 40, half_headers=True)

        assert await asyncio.to_thread(get, port, "/", {}) == (200, b"ok")
        kept = 8 - 1  # the cap, less the busy request
        assert (
            await asyncio.to_thread(closed_by_server, opened, len(opened) - kept, 5)
            >= len(opened) - kept
        )
        assert not busy.done()  # the request in progress was never the one evicted
        server.request_callback.settings["release"].set()  # type: ignore[attr-defined]
        assert await asyncio.wait_for(busy, 10) == (200, b"ok")
    finally:
        server.request_callback.settings["release"].set()  # type: ignore[attr-defined]
        close_all(opened)
        server.stop()
        await server.close_all_connections()


async def test_headers_that_do_not_arrive_in_time_close_the_connection() -> None:
    server, port, _ = small_listener(header_timeout=0.5)
    opened: list[socket.socket] = []
    try:
        opened += await asyncio.to_thread(open_idle, port, 1)
        opened += await asyncio.to_thread(open_idle, port, 1, half_headers=True)
        assert await asyncio.to_thread(closed_by_server, opened, 2, 5) == 2
    finally:
        close_all(opened)
        server.stop()
        await server.close_all_connections()


def test_the_limits_are_sized_for_a_person_and_kept_under_256_descriptors() -> None:
    assert PHONE_LIMITS.max_connections + HUB_LIMITS.max_connections < 256 - 40
    assert PHONE_LIMITS.header_timeout <= 10
    assert HUB_LIMITS.header_timeout <= 10


# -- a real hub process with few file descriptors -------------------------------------------


def test_300_idle_connections_to_each_listener_stop_neither_a_paired_phone_nor_the_hub(
    procs: Procs,
) -> None:
    command = [*CLI, "serve", "--home", str(procs.home), "--port", str(free_port())]
    command += ["--phone", "--phone-host", "127.0.0.1"]
    hub = procs.start("hub", ["/bin/sh", "-c", 'ulimit -n 256 && exec "$@"', "sh", *command])
    hub_url = hub.expect("conductloop hub at", timeout=30)[0]
    words = hub.expect("Scan it, or open", timeout=30)
    url = next(w for w in words if w.startswith("http://"))
    phone_port = int(url.split("/")[2].rsplit(":", 1)[1])
    phone_host = f"127.0.0.1:{phone_port}"
    hub_port = int(hub_url.rsplit(":", 1)[1])
    secret = json.loads((procs.home / "hub.json").read_text())["secret"]

    with (
        idle_sockets(phone_port, IDLE // 2),
        idle_sockets(phone_port, IDLE // 2, half_headers=True),
        idle_sockets(hub_port, IDLE),
    ):
        # a phone pairs and loads its page
        connection = http.client.HTTPConnection("127.0.0.1", phone_port, timeout=10)
        try:
            headers = {"Host": phone_host, "Origin": f"http://{phone_host}"}
            code = url.split("#pair=", 1)[1]
            connection.request("POST", "/pair", body=json.dumps({"code": code}), headers=headers)
            reply = connection.getresponse()
            reply.read()
        finally:
            connection.close()
        assert reply.status == 200
        token = reply.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
        cookie = {"Host": phone_host, "Cookie": f"{COOKIE}={token}"}
        assert get(phone_port, "/api/state", cookie)[0] == 200
        # and the hub's own API answers
        status, body = get(
            hub_port, "/conductloop/api/status", {"Authorization": f"Bearer {secret}"}
        )
        assert status == 200, body
        # still, after every idle socket had its turn
        assert get(phone_port, "/api/state", cookie)[0] == 200
    assert hub.popen.poll() is None, hub.stderr()
    assert "Too many open files" not in hub.stderr()
    assert hub.stderr().count("\n") < 50  # a warning a minute, not a line per connection
