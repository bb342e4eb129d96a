"""Hosting a hub: ``HubServer`` (used by all three hosts) and the embedded hub.

``HubServer`` ties a home folder to a running hub: it takes the home's lock (one hub per
home), opens the store, rebuilds the view, listens on loopback, and writes ``hub.json``.

- ``conductloop serve`` runs one in the foreground;
- the Jupyter server extension runs one on the server's own loop;
- ``start_embedded`` runs one on a daemon thread of the current process: what a runtime
  does when it finds no hub, so a plain ``python script.py`` works with no set-up.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import sys
import threading
from pathlib import Path
from typing import IO

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ..core.clock import Clock
from ..core.errors import ConductLoopError
from .app import make_hub_app
from .discovery import (
    HubAddress,
    private_home,
    read_hub_file,
    remove_hub_file,
    write_hub_file,
)
from .hub import Hub
from .listener import HUB_LIMITS, BoundedHTTPServer
from .phone import PhoneService
from .rows import new_secret
from .store import EventStore

if sys.platform != "win32":
    import fcntl


class HubBusy(ConductLoopError):
    """Another live hub already serves this home folder."""


class HubServer:
    def __init__(
        self,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: str | None = None,
        lost_after: float = 3.0,
        clock: Clock | None = None,
    ) -> None:
        self.home = Path(home)
        self.host = host
        self.port = port
        self.secret = secret or ""  # else read or made by bind(): <home>/hub.secret
        self.lost_after = lost_after
        self.clock = clock  # the hub's (tests pass a ManualClock)
        self.hub: Hub | None = None
        self.address: HubAddress | None = None
        self._sockets: list[socket.socket] = []
        self._server: HTTPServer | None = None
        self._lock: IO[str] | None = None

    def bind(self) -> HubAddress:
        """Take the home's lock and bind the listening socket (no loop needed yet)."""
        if self.address is not None:
            return self.address
        private_home(self.home)  # 0700, and tightened if it was looser
        self._take_lock()
        self.secret = self.secret or _home_secret(self.home)
        try:
            self._sockets = bind_sockets(self.port, self.host, family=socket.AF_INET)
        except OSError:
            self._drop_lock()
            raise
        port = self._sockets[0].getsockname()[1]
        self.address = HubAddress(f"http://{self.host}:{port}", self.secret)
        return self.address

    def _take_lock(self) -> None:
        if sys.platform == "win32":  # no flock: one hub per home is then by convention
            return
        fd = os.open(self.home / "hub.lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        lock = os.fdopen(fd, "a+")  # held for the hub's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            found = read_hub_file(self.home)
            where = f" at {found[0].url} (pid {found[1]})" if found else ""
            raise HubBusy(f"another hub already serves {self.home}{where}") from None
        self._lock = lock

    def _drop_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None

    async def start(self) -> HubAddress:
        """Open the store, rebuild the view, listen, and write ``hub.json``."""
        address = self.address if self.address is not None else await asyncio.to_thread(self.bind)
        store = EventStore(self.home / "events.sqlite3")
        hub = Hub(store, lost_after=self.lost_after, clock=self.clock)
        try:
            await hub.start()
        except BaseException:
            self._close_sockets()
            self._drop_lock()
            raise
        self.hub = hub
        hub.phone = PhoneService(hub, self.home)
        self._server = BoundedHTTPServer(
            make_hub_app(hub, self.secret), limits=HUB_LIMITS, name="hub listener", xheaders=False
        )
        self._server.add_sockets(self._sockets)
        await asyncio.to_thread(write_hub_file, self.home, address, os.getpid())
        return address

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    async def stop_listening(self) -> None:
        """Close the listener and every connection (runtimes will replay to the next hub)."""
        if self.hub is not None and self.hub.phone is not None:
            await self.hub.phone.stop()  # first: its long polls answer while they can
            await self.hub.phone.pairing.flushed()  # last uses and sign-outs reach the file
        if self._server is not None:
            self._server.stop()
            if self.hub is not None:
                await self.hub.close_connections()
            await self._server.close_all_connections()
            self._server = None
        self._close_sockets()
        if self.hub is not None:
            self.hub.shutdown()
            await self.hub.settled()

    def release(self) -> None:
        """Commit and close the store, remove ``hub.json``, free the home. Blocking."""
        if self.hub is not None:
            self.hub.store.close()
            self.hub = None
        remove_hub_file(self.home, os.getpid())
        self._drop_lock()

    async def stop(self) -> None:
        await self.stop_listening()
        await asyncio.to_thread(self.release)


def _home_secret(home: Path) -> str:
    """The home's hub secret, kept in ``<home>/hub.secret`` (0600) so that a restarted hub
    keeps it and runtimes given it by environment reconnect."""
    path = home / "hub.secret"
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = ""
    if len(secret) < 32:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret = new_secret()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secret)
    return secret


class EmbeddedHub:
    """A ``HubServer`` on a daemon thread with its own event loop."""

    def __init__(self, home: Path) -> None:
        self.server = HubServer(home)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="conductloop-hub", daemon=True
        )

    def start(self) -> HubAddress:
        self.server.bind()  # raises HubBusy before any thread starts
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop_listening(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
        self.server.release()  # here, not on the loop: at exit no executor is left


_embedded: dict[Path, EmbeddedHub] = {}
_embedded_lock = threading.Lock()


def start_embedded(home: Path) -> HubAddress | None:
    """This process's embedded hub for ``home`` (started once); ``None`` if another hub
    holds the home (then read its ``hub.json``). Blocking: call it off the event loop."""
    with _embedded_lock:
        running = _embedded.get(home)
        if running is not None and running.server.address is not None:
            return running.server.address
        embedded = EmbeddedHub(home)
        try:
            address = embedded.start()
        except HubBusy:
            return None
        if not _embedded:
            atexit.register(stop_embedded)  # flush the store and remove hub.json on exit
        _embedded[home] = embedded
        return address


def stop_embedded() -> None:
    """Stop every embedded hub of this process (tests, and interpreter exit)."""
    with _embedded_lock:
        for embedded in _embedded.values():
            embedded.stop()
        _embedded.clear()
