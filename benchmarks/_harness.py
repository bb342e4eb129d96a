"""What the benchmarks share: a hub in its own process, paired phones, a lean WebSocket
client, the bare-tornado baseline server and percentiles.

Clock: every timestamp is ``now_ns()``. On Linux that is ``perf_counter_ns``, which is
``clock_gettime(CLOCK_MONOTONIC)``: one clock for every process on the machine, so a time
taken in one process can be subtracted from one taken in another. Elsewhere it falls back
to the wall clock (``time_ns``).

Run as a script, this module is the baseline server: ``python _harness.py baseline``.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

HUB_CMD = os.environ.get("BENCH_HUB_CMD", "-m conductloop_jupyter.cli").split()
_MONOTONIC = "CLOCK_MONOTONIC" in time.get_clock_info("perf_counter").implementation
now_ns: Callable[[], int] = time.perf_counter_ns if _MONOTONIC else time.time_ns
CLOCK = "CLOCK_MONOTONIC (shared by all processes)" if _MONOTONIC else "wall clock (time_ns)"


def child_env(home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTLOOP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if home is not None:
        env["CONDUCTLOOP_HOME"] = str(home)
    return env


# -- the hub, in its own process -------------------------------------------------------------


@dataclass
class PhoneDevice:
    token: str
    csrf: str
    id: str


@dataclass
class HubProcess:
    """``python -m conductloop_jupyter.cli serve --home HOME`` with its phone listener open."""

    home: Path
    proc: subprocess.Popen[bytes] = field(init=False)
    url: str = field(init=False)
    secret: str = field(init=False)
    phone_port: int = field(init=False)

    def start(self) -> HubProcess:
        from conductloop_jupyter.client import Hub
        from conductloop_jupyter.hub.discovery import read_hub_file

        self.proc = subprocess.Popen(
            [sys.executable, *HUB_CMD, "serve", "--home", str(self.home)],
            env=child_env(self.home),
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while (found := read_hub_file(self.home)) is None or found[1] != self.proc.pid:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the hub process did not start")
            time.sleep(0.05)
        self.url, self.secret = found[0].url, found[0].secret
        self.client = Hub(found[0], by="benchmark")
        self.phone_port = self.client.phone(host="127.0.0.1").port
        return self

    @property
    def phone_host(self) -> str:
        return f"127.0.0.1:{self.phone_port}"

    @property
    def origin(self) -> str:
        return f"http://{self.phone_host}"

    def pair(self) -> PhoneDevice:
        """Pair one phone as the page does: POST /pair (same origin) with a fresh code."""
        code = self.client.phone(host="127.0.0.1").url.split("#pair=", 1)[1]
        connection = http.client.HTTPConnection("127.0.0.1", self.phone_port, timeout=10)
        try:
            connection.request(
                "POST",
                "/pair",
                body=json.dumps({"code": code, "name": "bench"}),
                headers={"Host": self.phone_host, "Origin": self.origin,
                         "Content-Type": "application/json"},
            )  # fmt: skip
            response = connection.getresponse()
            body = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"pairing refused: {body}")
            token = SimpleCookie(response.headers["Set-Cookie"])["conductloop_device"].value
        finally:
            connection.close()
        return PhoneDevice(token, body["csrf"], body["device"]["id"])

    def phone_headers(self, device: PhoneDevice) -> dict[str, str]:
        return {
            "Host": self.phone_host,
            "Origin": self.origin,
            "Cookie": f"conductloop_device={device.token}",
        }

    def cpu(self) -> float:
        """CPU seconds (user + system, every thread) the hub process has used so far."""
        return process_cpu(self.proc.pid)

    def loop_cpu(self) -> float:
        """CPU seconds of the hub's main thread: its event loop (ingest and fan-out), not
        the store's writer thread (whose WAL checkpoints make the total noisy)."""
        return thread_cpu(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)


def process_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def thread_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (its id is the process id on Linux)."""
    for thread in psutil.Process(pid).threads():
        if thread.id == pid:
            return float(thread.user_time + thread.system_time)
    return process_cpu(pid)


def set_nodelay(ws: Any) -> None:
    """``TCP_NODELAY`` on a tornado client WebSocket (see ``baseline_main``)."""
    assert ws.protocol is not None
    ws.protocol.set_nodelay(True)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class BaselineProcess:
    """The bare tornado server of ``baseline_main`` in its own process."""

    proc: subprocess.Popen[bytes] = field(init=False)
    port: int = field(init=False)

    def start(self) -> BaselineProcess:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "baseline"], env=child_env(), stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the baseline server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def cpu(self) -> float:
        return process_cpu(self.proc.pid)

    def loop_cpu(self) -> float:
        return thread_cpu(self.proc.pid)  # one thread: the same as cpu()

    def stop(self) -> None:
        stop_process(self.proc)


# -- a lean WebSocket client: stamps each frame's arrival, parses nothing ------------------


class LeanSocket(asyncio.Protocol):
    """A minimal RFC 6455 client. Each text frame is kept as ``(arrival_ns, payload)``,
    stamped when the read that completed it returned; JSON is parsed after the run, so
    the client's own cost (and queueing behind it) stays out of the latency. Answers pings.
    """

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self.first_frame = asyncio.Event()

    @classmethod
    async def connect(cls, port: int, path: str, headers: dict[str, str]) -> LeanSocket:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(cls, "127.0.0.1", port)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        lines = [f"GET {path} HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]  # fmt: skip
        headers = {"Host": f"127.0.0.1:{port}", **headers}
        lines += [f"{k}: {v}" for k, v in headers.items()]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await asyncio.wait_for(protocol.upgraded, 10)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))

    def data_received(self, data: bytes) -> None:
        arrival = now_ns()
        buffer = self._buffer
        buffer += data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " not in status:
                self.upgraded.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.upgraded.set_result(None)
        at = 0
        size = len(buffer)
        while size - at >= 2:
            opcode, length, offset = buffer[at] & 0x0F, buffer[at + 1] & 0x7F, at + 2
            if length == 126:
                if size - at < 4:
                    break
                length, offset = int.from_bytes(buffer[at + 2 : at + 4]), at + 4
            elif length == 127:
                if size - at < 10:
                    break
                length, offset = int.from_bytes(buffer[at + 2 : at + 10]), at + 10
            if size < offset + length:
                break
            payload = bytes(buffer[offset : offset + length])
            at = offset + length
            if opcode in (0x1, 0x2):
                self.frames.append((arrival, payload))
                self.first_frame.set()
            elif opcode == 0x9:
                self._write_frame(0xA, payload)
            elif opcode == 0x8 and self._transport is not None:
                self._transport.close()
        if at:
            del buffer[:at]

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        assert self._transport is not None
        mask = secrets.token_bytes(4)
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += n.to_bytes(2)
        else:
            header.append(0x80 | 127)
            header += n.to_bytes(8)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))  # client messages are tiny
        self._transport.write(bytes(header) + mask + body)

    def send(self, message: dict[str, Any]) -> None:
        self._write_frame(0x1, json.dumps(message).encode())

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._write_frame(0x8, (1000).to_bytes(2))
            self._transport.close()


# -- statistics and the table --------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(ns: float) -> float:
    return ns / 1e6


def machine() -> dict[str, Any]:
    import platform

    import tornado

    return {
        "cpus": psutil.cpu_count(),
        "python": platform.python_version(),
        "tornado": tornado.version,
        "platform": platform.platform(),
        "clock": CLOCK,
    }


def system_busy(before: Any, after: Any) -> float:
    """Cores busy (of ``psutil.cpu_count()``) between two ``psutil.cpu_times()``."""
    total = sum(after) - sum(before)
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0) - getattr(before, "iowait", 0))
    return (1 - idle / total) * (psutil.cpu_count() or 1) if total > 0 else math.nan


# -- the baseline: a bare tornado WebSocket server -------------------------------------------


def baseline_main() -> None:
    """A bare tornado server: what a producer sends on /producer goes to every client on
    /ws as it is (broadcast); what a client sends on /ws goes to the producer (relay).
    No parsing, no store, no auth: the floor a tornado WebSocket hop sets on this machine.
    Every socket has ``TCP_NODELAY`` (see ``hub/app.py``): without it Nagle's algorithm and
    delayed ACKs, not the code, set the latency."""
    from tornado import web, websocket
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    clients: set[websocket.WebSocketHandler] = set()
    producers: set[websocket.WebSocketHandler] = set()

    class Producer(websocket.WebSocketHandler):
        def open(self, *args: str, **kwargs: str) -> None:
            self.set_nodelay(True)
            producers.add(self)

        def on_message(self, message: str | bytes) -> None:
            for client in clients:
                client.write_message(message)

        def on_close(self) -> None:
            producers.discard(self)

    class Client(websocket.WebSocketHandler):
        def check_origin(self, origin: str) -> bool:
            return True

        def open(self, *args: str, **kwargs: str) -> None:
            self.set_nodelay(True)
            clients.add(self)
            self.write_message('{"type":"snapshot"}')

        def on_message(self, message: str | bytes) -> None:
            for producer in producers:
                producer.write_message(message)

        def on_close(self) -> None:
            clients.discard(self)

    async def main() -> None:
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(web.Application([("/producer", Producer), ("/ws", Client)]))
        server.add_sockets(sockets)
        print(f"PORT {sockets[0].getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()

    asyncio.run(main())


if __name__ == "__main__" and sys.argv[1:] == ["baseline"]:
    baseline_main()
