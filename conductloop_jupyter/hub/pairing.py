"""Pairing phones: one-time codes, device tokens, revocation, and back-off on failures.

- A **pairing code** is a random 256-bit secret that lives a few minutes (``ttl``) and can
  be claimed once: of two concurrent claims exactly one wins. It travels only in the URL's
  fragment (``#pair=...``), which browsers never send to a server or put in a Referer.
- Claiming it gives the phone a **device token** (another random secret) that the page
  keeps in an ``HttpOnly; SameSite=Strict`` cookie. The hub stores only its SHA-256, in
  ``devices.json`` (mode 0600) in its home folder, so a copy of the file pairs nothing.
- Failed claims from one address back off exponentially (``retry_after``).
- ``revoke`` forgets a device; the phone listener closes its connections at once.
- A device not used for ``idle_expiry`` seconds (30 days by default; set
  ``$CONDUCTLOOP_DEVICE_IDLE_DAYS``, ``0`` for never) is signed out: its token no longer
  works and it leaves the list. ``last_seen`` (its last use) is kept in ``devices.json``,
  to the hour, so a restarted hub knows it too.

Pure logic plus a small JSON file: every method runs on the hub's loop and returns at once,
except ``load``/``save``, which callers run in a thread, and ``pair``, which awaits its save.
Saves are safe to run at once from several threads: each writes the latest devices to a
temporary file of its own and renames it over ``devices.json``, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..core.clock import Clock, SystemClock
from ..core.errors import PairingError

DEVICES_FILE = "devices.json"
IDLE_ENV = "CONDUCTLOOP_DEVICE_IDLE_DAYS"
#: a device unused this long (seconds) is signed out, unless ``$CONDUCTLOOP_DEVICE_IDLE_DAYS``
IDLE_EXPIRY = 30 * 86400.0
#: ``last_seen`` is written to ``devices.json`` when it has moved on by this much
SEEN_PERSIST = 3600.0
log = logging.getLogger("conductloop.phone")


def idle_expiry_from_environment() -> float | None:
    """Seconds a device may go unused, from ``$CONDUCTLOOP_DEVICE_IDLE_DAYS`` (``0``:
    never expires); ``IDLE_EXPIRY`` when unset or not a number."""
    raw = os.environ.get(IDLE_ENV, "").strip()
    if not raw:
        return IDLE_EXPIRY
    try:
        days = float(raw)
    except ValueError:
        log.warning("$%s=%r is not a number of days; using 30", IDLE_ENV, raw)
        return IDLE_EXPIRY
    return None if days <= 0 or days != days else days * 86400.0


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Device:
    """A paired phone, as ``loop.devices()`` shows it."""

    id: str
    name: str
    user_agent: str
    address: str
    created: float
    last_seen: float  # its last use: pairing, a page load, an API call or a WebSocket
    token_hash: str = field(repr=False)
    #: when it is signed out unless used before (``None``: never); not stored
    expires: float | None = field(default=None, compare=False)

    def public(self) -> dict[str, Any]:
        row = asdict(self)
        del row["token_hash"]
        return row

    def stored(self) -> dict[str, Any]:
        row = asdict(self)
        del row["expires"]
        return row


@dataclass
class _Code:
    id: str
    expires: float
    device: Device | None = None  # who claimed it

    @property
    def claimed(self) -> bool:
        return self.device is not None


@dataclass(frozen=True)
class CodeStatus:
    """Where a pairing code stands: ``waiting`` (open), ``paired`` (claimed by ``device``)
    or ``expired`` (never claimed)."""

    id: str
    state: Literal["waiting", "paired", "expired"]
    expires: float
    device: Device | None

    def public(self) -> dict[str, Any]:
        device = None if self.device is None else {"id": self.device.id, "name": self.device.name}
        return {"id": self.id, "state": self.state, "expires": self.expires, "device": device}


def code_id(code: str) -> str:
    """A code's public name: the start of its SHA-256, which says nothing of the code."""
    return digest(code)[:16]


#: how long the outcome of a used or expired code is kept, so that ``status`` can say it
KEEP_OUTCOMES = 3600.0


_UNSET: Any = object()


class Pairing:
    def __init__(
        self,
        home: Path,
        *,
        ttl: float = 300.0,
        clock: Clock | None = None,
        idle_expiry: float | None = _UNSET,
    ) -> None:
        self.path = home / DEVICES_FILE
        self.ttl = ttl
        self.clock = clock or SystemClock()
        #: seconds a device may go unused before it is signed out (``None``: never)
        self.idle_expiry = idle_expiry_from_environment() if idle_expiry is _UNSET else idle_expiry
        self._codes: dict[str, _Code] = {}  # digest of the code -> its state
        self._devices: dict[str, Device] = {}
        self._by_token: dict[str, Device] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, locked until)
        #: a key for values derived per device (the CSRF token), new each hub start
        self.key = secrets.token_bytes(32)
        self._save_lock = threading.Lock()  # one writer at a time; each writes the latest
        self._saved_seen: dict[str, float] = {}  # device id -> last_seen as last saved
        self._saving: set[asyncio.Task[None]] = set()

    # -- codes -------------------------------------------------------------------------

    def new_code(self, ttl: float | None = None) -> tuple[str, float]:
        """A fresh one-time code and when it expires (seconds since the epoch)."""
        now = self.clock.wall()
        self._codes = {h: c for h, c in self._codes.items() if c.expires + KEEP_OUTCOMES > now}
        code = secrets.token_urlsafe(32)
        expires = now + (self.ttl if ttl is None else ttl)
        self._codes[digest(code)] = _Code(code_id(code), expires)
        return code, expires

    def status(self, id_: str) -> CodeStatus | None:
        """Where the code named ``id_`` (see ``code_id``) stands; ``None`` if unknown."""
        for entry in self._codes.values():
            if entry.id == id_:  # not a secret: a plain comparison is fine
                if entry.device is not None:
                    state: Literal["waiting", "paired", "expired"] = "paired"
                elif entry.expires <= self.clock.wall():
                    state = "expired"
                else:
                    state = "waiting"
                return CodeStatus(entry.id, state, entry.expires, entry.device)
        return None

    async def pair(
        self, code: str, *, name: str, user_agent: str, address: str
    ) -> tuple[Device, str]:
        """``claim``, then save ``devices.json``: all or nothing. If the save fails, the
        device is forgotten and the code can be used again (``PairingError``)."""
        device, token = self.claim(code, name=name, user_agent=user_agent, address=address)
        try:
            await asyncio.to_thread(self.save)
        except OSError as error:
            self._unclaim(code, device)
            log.warning("could not save %s: %s", self.path, error.strerror or error)
            raise PairingError("the hub could not save this phone's pairing; try again") from None
        return device, token

    def _unclaim(self, code: str, device: Device) -> None:
        self._devices.pop(device.id, None)
        self._by_token.pop(device.token_hash, None)
        entry = self._codes.get(digest(code))
        if entry is not None and entry.device is device:
            entry.device = None

    def claim(self, code: str, *, name: str, user_agent: str, address: str) -> tuple[Device, str]:
        """Exchange a code for a new device and its token; ``PairingError`` if refused.

        The device is not saved yet: ``pair`` claims and saves."""
        now = self.clock.wall()
        count, locked_until = self._failures.get(address, (0, 0.0))
        if locked_until > now:
            raise PairingError("too many failed pairing attempts; wait", locked_until - now)
        entry = self._codes.get(digest(code)) if isinstance(code, str) else None
        reason = None
        if entry is None:
            reason = "this pairing code is not known: make a new one with loop.phone()"
        elif entry.claimed:
            reason = "this pairing code was already used: make a new one with loop.phone()"
        elif entry.expires <= now:
            reason = "this pairing code has expired: make a new one with loop.phone()"
        if reason is not None:
            count += 1
            wait = min(2.0 ** (count - 1), 300.0) if count >= 3 else 0.0
            self._failures[address] = (count, now + wait)
            raise PairingError(reason, wait)
        assert entry is not None
        self._failures.pop(address, None)
        token = secrets.token_urlsafe(32)
        device = Device(
            id=f"d{secrets.token_hex(4)}",
            name=(name or _guess_name(user_agent))[:60],
            user_agent=user_agent[:300],
            address=address,
            created=now,
            last_seen=now,
            token_hash=digest(token),
            expires=self._expiry_of(now),
        )
        entry.device = device  # single use: decided here, on the hub's one loop thread
        self._add(device)
        return device, token

    # -- devices -----------------------------------------------------------------------

    def _expiry_of(self, last_seen: float) -> float | None:
        return None if self.idle_expiry is None else last_seen + self.idle_expiry

    def _add(self, device: Device) -> None:
        device.expires = self._expiry_of(device.last_seen)
        self._devices[device.id] = device
        self._by_token[device.token_hash] = device
        self._saved_seen[device.id] = device.last_seen

    @property
    def devices(self) -> dict[str, Device]:
        """The paired devices by id; those unused for ``idle_expiry`` are signed out first."""
        now = self.clock.wall()
        idle = [d for d in self._devices.values() if d.expires is not None and d.expires <= now]
        for device in idle:
            days = (now - device.last_seen) / 86400
            log.info("device %s was not used for %.0f days: signed out", device.id, days)
            self.revoke(device.id)
        if idle:
            self._save_soon()
        return self._devices

    def device(self, token: str | None) -> Device | None:
        """The device this token belongs to, or ``None`` (unknown, revoked or expired)."""
        if not token:
            return None
        found = self._by_token.get(digest(token))
        # the lookup is by hash; compare again in constant time all the same
        if found is None or not hmac.compare_digest(found.token_hash, digest(token)):
            return None
        if found.id not in self.devices:  # signed out for being idle just now
            return None
        return found

    def seen(self, device: Device, address: str) -> None:
        """``device`` was just used from ``address``: it stays paired another ``idle_expiry``."""
        device.last_seen = self.clock.wall()
        device.expires = self._expiry_of(device.last_seen)
        device.address = address
        if device.last_seen - self._saved_seen.get(device.id, 0.0) >= SEEN_PERSIST:
            self._saved_seen[device.id] = device.last_seen
            self._save_soon()

    def revoke(self, device_id: str) -> Device | None:
        device = self._devices.pop(device_id, None)
        if device is not None:
            self._by_token.pop(device.token_hash, None)
            self._saved_seen.pop(device_id, None)
        return device

    def _save_soon(self) -> None:
        """Save in a worker thread, if there is a running loop (the hub's)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test of the book alone): the next save writes it
        task = loop.create_task(self._save_quietly())
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def flushed(self) -> None:
        """Wait for the saves ``_save_soon`` started (the hub awaits this when it stops)."""
        while self._saving:
            await asyncio.wait(set(self._saving))

    async def _save_quietly(self) -> None:
        try:
            await asyncio.to_thread(self.save)
        except OSError as error:
            log.warning("could not save %s: %s", self.path, error.strerror or error)

    def csrf(self, device: Device) -> str:
        """The CSRF token a page must echo in ``X-CSRF-Token`` on state-changing requests."""
        return hmac.new(self.key, device.id.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, device: Device, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf(device), given or "")

    # -- persistence (blocking: run in a thread) ---------------------------------------

    def load(self) -> None:
        try:
            rows = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            return  # unreadable: start with no devices rather than refuse to start
        for row in rows if isinstance(rows, list) else []:
            try:
                row.pop("expires", None)
                device = Device(**row)
            except (TypeError, AttributeError):
                continue
            if device.id not in self._devices:  # a device this hub already knows stays
                self._add(device)

    def save(self) -> None:
        """Write the devices to ``devices.json`` (0600) atomically.

        Any number of threads may save at once: one writes at a time, each the devices as
        they are when its turn comes, to a temporary file of its own that then replaces
        ``devices.json``; a reader sees the old file or the new one, never a part."""
        with self._save_lock:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            rows = [d.stored() for d in list(self._devices.values())]
            fd, partial = tempfile.mkstemp(
                prefix=f".{DEVICES_FILE}.", suffix=".partial", dir=self.path.parent
            )  # mode 0600, a name no other save uses
            try:
                with os.fdopen(fd, "w") as file:
                    json.dump(rows, file)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(partial, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise


def _guess_name(user_agent: str) -> str:
    for marker in ("iPhone", "iPad", "Pixel", "Android", "Mac OS", "Windows", "Linux"):
        if marker in user_agent:
            return marker
    return "phone"
