"""Finding the hub: ``$CONDUCTLOOP_HUB``, else ``hub.json`` in the home folder.

A running hub writes ``<home>/hub.json`` — its address, its secret and its pid — with file
mode 0600, so that runtimes, ``cl.connect()`` and the CLI of the same user find it. The
Jupyter server extension exports ``CONDUCTLOOP_HUB`` and ``CONDUCTLOOP_HUB_SECRET`` instead,
which kernels started by that server inherit. ``CONDUCTLOOP_HUB=off`` means "no hub".

The home holds the hub's secret, its paired devices and the whole history (prompts, tool
inputs and results), so it is this user's alone: ``private_home`` creates it 0700, whatever
the umask, and tightens one that others could read (to 0700, its files to 0600).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..core.errors import UsageError

HUB_ENV = "CONDUCTLOOP_HUB"
SECRET_ENV = "CONDUCTLOOP_HUB_SECRET"
HOME_ENV = "CONDUCTLOOP_HOME"
HUB_FILE = "hub.json"
log = logging.getLogger("conductloop.hub")


@dataclass(frozen=True)
class HubAddress:
    """Where a hub listens (``http://127.0.0.1:PORT``) and the secret it wants."""

    url: str
    secret: str

    @property
    def runtime_ws(self) -> str:
        return "ws" + self.url[4:] + "/conductloop/runtime"

    @property
    def client_ws(self) -> str:
        return "ws" + self.url[4:] + "/conductloop/api/ws"

    def __repr__(self) -> str:  # never print the secret
        return f"HubAddress({self.url!r})"


def default_home() -> Path:
    """``$CONDUCTLOOP_HOME``, else the platform's user data folder."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "conductloop"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "conductloop"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "conductloop"


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    return Path(home).expanduser() if home is not None else default_home()


def private_home(home: Path) -> Path:
    """Create ``home`` (0700), or tighten an existing one others can read or enter.

    The folder becomes 0700 and every file directly in it that group or others could use
    becomes 0600; what was changed is logged (a warning), once per start. Blocking.
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if sys.platform == "win32":  # no POSIX modes: the user's profile folder protects it
        return home
    changed: list[str] = []
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & 0o077:
        os.chmod(home, 0o700)
        changed.append(f"{home} {mode:03o} -> 700")
    with os.scandir(home) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
            if mode & 0o077:
                os.chmod(entry.path, 0o600)
                changed.append(f"{entry.name} {mode:03o} -> 600")
    if changed:
        log.warning(
            "tightened file modes in the hub's home (it holds the history and secrets): %s",
            ", ".join(changed),
        )
    return home


def check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise UsageError(f"a hub address looks like http://127.0.0.1:8765, not {url!r}")
    return url.rstrip("/")


def from_environment() -> HubAddress | bool | None:
    """The hub the environment names; ``False`` when it says ``off``; ``None`` if unset."""
    url = os.environ.get(HUB_ENV, "").strip()
    if not url:
        return None
    if url.lower() in ("off", "none", "0", "false"):
        return False
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise UsageError(f"${HUB_ENV} is set but ${SECRET_ENV} is not: the hub needs its secret")
    return HubAddress(check_url(url), secret)


#: how a hub is hosted, as ``hub.json`` says: ``embedded`` hubs hand the home over to a
#: long-lived one (``serve``, ``jupyter``), which runtimes wait for while it restarts
EMBEDDED = "embedded"
LONG_LIVED = frozenset({"serve", "jupyter"})


class HubRecord(NamedTuple):
    """What ``hub.json`` says: where the hub listens, its pid, and how it is hosted."""

    address: HubAddress
    pid: int
    kind: str

    @property
    def long_lived(self) -> bool:
        return self.kind in LONG_LIVED


def read_hub_file(home: Path) -> HubRecord | None:
    """What ``<home>/hub.json`` says, or ``None`` if there is none (or it is bad). A file
    without ``kind`` (written before there were kinds) is read as a long-lived hub's."""
    try:
        raw: Any = json.loads((home / HUB_FILE).read_text())
        address = HubAddress(check_url(raw["url"]), str(raw["secret"]))
        return HubRecord(address, int(raw.get("pid", 0)), str(raw.get("kind", "serve")))
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        return None


def write_hub_file(home: Path, address: HubAddress, pid: int, kind: str) -> Path:
    """Write ``hub.json`` readable by this user only (0600), atomically."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / HUB_FILE
    partial = home / f".{HUB_FILE}.{pid}"
    body = json.dumps({"url": address.url, "secret": address.secret, "pid": pid, "kind": kind})
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(body)
    os.chmod(partial, 0o600)
    os.replace(partial, path)
    return path


def remove_hub_file(home: Path, pid: int) -> None:
    """Remove ``hub.json`` if it is still this process's."""
    found = read_hub_file(home)
    if found is not None and found[1] == pid:
        (home / HUB_FILE).unlink(missing_ok=True)


def find(hub: str | bool | None, home: Path) -> HubAddress | bool | None:
    """Where a runtime should connect, before any network check.

    ``HubAddress``: that hub; ``False``: no hub at all; ``None``: look in ``hub.json`` at
    connect time, and start an embedded hub if no hub answers.
    """
    if hub is False:
        return False
    if isinstance(hub, str):
        url = check_url(hub)
        found = read_hub_file(home)
        secret = os.environ.get(SECRET_ENV) or (found[0].secret if found else "")
        if found is not None and found[0].url == url:
            secret = found[0].secret
        if not secret:
            raise UsageError(
                f"no secret for the hub at {url}: set ${SECRET_ENV}, or use the home folder "
                "whose hub.json names it"
            )
        return HubAddress(url, secret)
    if hub is not None:
        raise UsageError(f"hub must be None, False or an address, not {hub!r}")
    return from_environment()
