"""Hosting a hub: ``HubServer`` (used by all three hosts) and the embedded hub.

``HubServer`` ties a home folder to a running hub: it takes the home's lock (one hub per
home), opens the store, rebuilds the view, listens on loopback, and writes ``hub.json``.

- ``conductloop serve`` runs one in the foreground;
- the Jupyter server extension runs one on the server's own loop;
- ``start_embedded`` runs one on a daemon thread of the current process: what a runtime
  does when it finds no hub, so a plain ``python script.py`` works with no set-up.

One hub per home, and it stays put (the rules are in ``docs/protocol.md``): the first two
are *long-lived*. A long-lived hub holds ``hub.claim`` for its whole life, from before it
takes the home; an embedded hub is never started while someone holds it. A long-lived hub
that finds an embedded one holding the home asks it to hand over (``POST
/conductloop/api/handover``): the embedded hub closes its connections, commits and closes
its store and frees the home, which the long-lived one then takes; the runtimes replay to
it what was not yet committed, and the hub de-duplicates by ``(runtime, seq)``.
"""

from __future__ import annotations

import asyncio
import atexit
import http.client
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ..core.clock import Clock
from ..core.errors import ConductLoopError
from ..core.events import Event
from .app import make_hub_app
from .discovery import (
    EMBEDDED,
    LONG_LIVED,
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
from .store import EventStore, StoreError

if sys.platform != "win32":
    import fcntl

#: how long a long-lived hub waits for an embedded one to hand the home over
TAKEOVER_TIMEOUT = 30.0


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
        kind: str = "serve",
    ) -> None:
        if kind != EMBEDDED and kind not in LONG_LIVED:
            raise ValueError(f"a hub is {EMBEDDED} or one of {sorted(LONG_LIVED)}, not {kind!r}")
        self.home = Path(home)
        self.kind = kind
        #: an embedded hub's host sets this: called (on the hub's loop) when a long-lived
        #: hub asks for the home
        self.on_handover: Callable[[], None] | None = None
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
        self._claim: IO[str] | None = None  # a long-lived hub's, see the module's doc
        self.took_over_from: list[int] = []  # pids of the embedded hubs that handed over

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
        if self.kind != EMBEDDED:
            self._claim = try_flock(self.home / CLAIM_FILE)
            if self._claim is None:
                raise HubBusy(f"another hub already serves {self.home}{self._where()}")
        lock = try_flock(self.home / LOCK_FILE)
        if lock is None and self.kind != EMBEDDED:
            lock = self._take_over()
        if lock is None:
            self._drop_lock()
            raise HubBusy(f"another hub already serves {self.home}{self._where()}")
        self._lock = lock

    def _where(self) -> str:
        found = read_hub_file(self.home)
        return f" at {found.address.url} (pid {found.pid})" if found else ""

    def _take_over(self) -> IO[str] | None:
        """Ask the embedded hub that holds the home to hand it over, and take it when it is
        free (``None`` if that did not happen within ``TAKEOVER_TIMEOUT``). Blocking.

        The claim is this hub's, so no other long-lived hub holds the home, and no embedded
        hub starts while we wait: the holder is an embedded hub (or one of an older version,
        which answers 404 and is left alone).
        """
        deadline = time.monotonic() + TAKEOVER_TIMEOUT
        asked: set[int] = set()
        while time.monotonic() < deadline:
            found = read_hub_file(self.home)
            if found is not None and found.pid not in asked:
                answer = _ask_handover(found.address)
                if answer == "refused":
                    return None
                asked.add(found.pid)
            lock = try_flock(self.home / LOCK_FILE)
            if lock is not None:
                self.took_over_from = sorted(asked)  # the host says so (serve, Jupyter)
                return lock
            time.sleep(0.02)  # the holder is closing its store: a short poll, then again
        return None

    def _drop_lock(self) -> None:
        for held in (self._lock, self._claim):
            if held is not None:
                held.close()  # closing releases the flock
        self._lock = self._claim = None

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
        app = make_hub_app(hub, self.secret, handover=self.on_handover)
        self._server = BoundedHTTPServer(
            app, limits=HUB_LIMITS, name="hub listener", xheaders=False
        )
        self._server.add_sockets(self._sockets)
        await asyncio.to_thread(write_hub_file, self.home, address, os.getpid(), self.kind)
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


LOCK_FILE = "hub.lock"  # held by the hub that serves the home
CLAIM_FILE = "hub.claim"  # held by a long-lived hub, from before it takes the home


def try_flock(path: Path) -> IO[str] | None:
    """``path`` opened and exclusively locked (held until closed), or ``None`` if another
    process holds it. POSIX only."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    held = os.fdopen(fd, "a+")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        held.close()
        return None
    return held


def claimed(home: Path) -> bool:
    """Whether a long-lived hub holds (or is taking) ``home``: then no embedded hub starts."""
    if sys.platform == "win32" or not (home / CLAIM_FILE).exists():
        return False
    held = try_flock(home / CLAIM_FILE)
    if held is None:
        return True
    held.close()
    return False


def _ask_handover(address: HubAddress) -> str:
    """``accepted``, ``refused`` (a long-lived hub: it does not hand over) or ``silent``."""
    host, _, port = address.url.rpartition("//")[2].partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request(
            "POST",
            "/conductloop/api/handover",
            body=b"{}",
            headers={"Authorization": f"Bearer {address.secret}"},
        )
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return "silent"  # gone already, or closed as it handed over
    finally:
        connection.close()
    return "accepted" if status == 202 else "refused" if status == 409 else "silent"


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


@dataclass(frozen=True)
class Replies:
    """What an in-process hub answers a batch with (see ``EmbeddedHub.deliver``)."""

    ack: Callable[[int], None]  # the runtime's events up to this seq are committed
    error: Callable[[dict[str, Any]], None]  # an ``error`` message: a refused event
    failed: Callable[[], None]  # the store failed or the hub stopped: reconnect and replay


class EmbeddedHub:
    """A ``HubServer`` on a daemon thread with its own event loop."""

    def __init__(self, home: Path) -> None:
        self.server = HubServer(home, kind=EMBEDDED)
        self.server.on_handover = self._hand_over
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="conductloop-hub", daemon=True)
        self._stopping = threading.Lock()

    def _run(self) -> None:
        self.loop.run_forever()

    def start(self) -> HubAddress:
        self.server.bind()  # raises HubBusy before any thread starts
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def deliver(self, runtime: str, events: list[Event], replies: Replies) -> None:
        """Hand a runtime's events to this hub from any thread, as a batch on its socket
        would be (the rest of the protocol goes over the socket): ``replies`` are called
        on this hub's loop. Raises ``ConnectionError`` once the hub has stopped."""
        try:
            self.loop.call_soon_threadsafe(self._ingest, runtime, events, replies)
        except RuntimeError:  # its loop has closed
            raise ConnectionError("the embedded hub has stopped") from None

    def _ingest(self, runtime: str, events: list[Event], replies: Replies) -> None:
        hub = self.server.hub
        try:
            if hub is None:
                raise StoreError("the hub has stopped")
            refused = hub.ingest(runtime, events, replies.ack)
        except StoreError:  # as with a socket: the runtime reconnects, then replays
            replies.failed()
            return
        for error in refused:
            replies.error(error)

    def stop(self) -> None:
        with self._stopping:
            if not self.thread.is_alive():
                return
            future = asyncio.run_coroutine_threadsafe(self.server.stop_listening(), self.loop)
            future.result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()
            self.server.release()  # here, not on the loop: at exit no executor is left

    def _hand_over(self) -> None:
        """A long-lived hub asks for the home (on this hub's loop): stop serving, and free
        the home from another thread (``stop`` joins this one)."""
        forget(self)
        threading.Thread(target=self.stop, name="conductloop-handover", daemon=True).start()


_embedded: dict[Path, EmbeddedHub] = {}
_embedded_lock = threading.Lock()


def forget(embedded: EmbeddedHub) -> None:
    with _embedded_lock:
        if _embedded.get(embedded.server.home) is embedded:
            del _embedded[embedded.server.home]


def in_process(address: HubAddress) -> EmbeddedHub | None:
    """This process's embedded hub at ``address``, if it is one and still serves."""
    with _embedded_lock:
        for embedded in _embedded.values():
            if embedded.server.address == address and embedded.server.hub is not None:
                return embedded
    return None


def start_embedded(home: Path) -> HubAddress | None:
    """This process's embedded hub for ``home`` (started once); ``None`` if another hub
    holds the home, or a long-lived one is taking it (then read its ``hub.json``).
    Blocking: call it off the event loop."""
    with _embedded_lock:
        running = _embedded.get(home)
        if running is not None and running.server.address is not None:
            return running.server.address
        if claimed(home):
            return None
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
