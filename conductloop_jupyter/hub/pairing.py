"""Pairing phones: one-time codes, device tokens, revocation, and back-off on failures.

- A **pairing code** is a random 256-bit secret that lives a few minutes (``ttl``) and can
  be claimed once: of two concurrent claims exactly one wins. It travels only in the URL's
  fragment (``#pair=...``), which browsers never send to a server or put in a Referer.
- Claiming it gives the phone a **device token** (another random secret) that the page
  keeps in an ``HttpOnly; SameSite=Strict`` cookie. The hub stores only its SHA-256, in
  ``devices.json`` (mode 0600) in its home folder, so a copy of the file pairs nothing.
- Failed claims from one address back off exponentially (``retry_after``).
- ``revoke`` forgets a device; the phone listener closes its connections at once.

Pure logic plus a small JSON file: every method runs on the hub's loop and returns at once,
except ``load``/``save``, which callers run in a thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..core.clock import Clock, SystemClock
from ..core.errors import PairingError

DEVICES_FILE = "devices.json"


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
    last_seen: float
    token_hash: str = field(repr=False)

    def public(self) -> dict[str, Any]:
        row = asdict(self)
        del row["token_hash"]
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


class Pairing:
    def __init__(self, home: Path, *, ttl: float = 300.0, clock: Clock | None = None) -> None:
        self.path = home / DEVICES_FILE
        self.ttl = ttl
        self.clock = clock or SystemClock()
        self._codes: dict[str, _Code] = {}  # digest of the code -> its state
        self.devices: dict[str, Device] = {}
        self._by_token: dict[str, Device] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, locked until)
        #: a key for values derived per device (the CSRF token), new each hub start
        self.key = secrets.token_bytes(32)

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

    def claim(self, code: str, *, name: str, user_agent: str, address: str) -> tuple[Device, str]:
        """Exchange a code for a new device and its token; ``PairingError`` if refused."""
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
        )
        entry.device = device  # single use: decided here, on the hub's one loop thread
        self._add(device)
        return device, token

    # -- devices -----------------------------------------------------------------------

    def _add(self, device: Device) -> None:
        self.devices[device.id] = device
        self._by_token[device.token_hash] = device

    def device(self, token: str | None) -> Device | None:
        """The device this token belongs to, or ``None``."""
        if not token:
            return None
        found = self._by_token.get(digest(token))
        # the lookup is by hash; compare again in constant time all the same
        if found is None or not hmac.compare_digest(found.token_hash, digest(token)):
            return None
        return found

    def seen(self, device: Device, address: str) -> None:
        device.last_seen = self.clock.wall()
        device.address = address

    def revoke(self, device_id: str) -> Device | None:
        device = self.devices.pop(device_id, None)
        if device is not None:
            self._by_token.pop(device.token_hash, None)
        return device

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
                self._add(Device(**row))
            except TypeError:
                continue

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump([asdict(d) for d in self.devices.values()], file)
        os.replace(partial, self.path)


def _guess_name(user_agent: str) -> str:
    for marker in ("iPhone", "iPad", "Pixel", "Android", "Mac OS", "Windows", "Linux"):
        if marker in user_agent:
            return marker
    return "phone"
