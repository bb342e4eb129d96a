"""The IPython extension: ``%load_ext conductloop_jupyter`` gives every cell the controls.

- ``%agents``: the dashboard of every agent on the hub (all runtimes), as
  ``cl.connect().dashboard()`` shows it;
- ``%phone [--host H] [--port N] [--tls]``: the pairing QR code for your phone;
- ``%stop_all``: says what it would stop and how to confirm; ``%stop_all --yes`` stops
  every agent on the hub.

No variable needs to be in scope. In a kernel a magic runs on the kernel's event loop, so
nothing here blocks it: finding the hub (reading ``hub.json``) and calling it happen on a
worker thread, and the answer replaces a placeholder in the cell's output when it comes.
Blocking would also deadlock: a command for an agent of this very kernel is carried out
by its link, on that loop.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import shlex
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import IPython.display

from ..client import Hub, connect
from ..core.errors import ConductLoopError, UsageError
from ..core.states import FINAL_STATES
from ..hub.discovery import from_environment
from .dashboard import Dashboard
from .phone import PhoneLink

T = TypeVar("T")
BY = "notebook"
_running: set[asyncio.Task[None]] = set()  # keeps the magics' background work alive
display: Callable[..., Any] = IPython.display.display  # IPython's is untyped
_dashboard: Dashboard | None = None


class Note:
    """A short message for a cell's output, as text and as escaped HTML."""

    def __init__(self, message: str, *, warning: bool = False) -> None:
        self.message = message
        self.warning = warning

    def __repr__(self) -> str:
        return self.message

    def _repr_html_(self) -> str:
        colour = "#b91c1c" if self.warning else "inherit"
        body = html.escape(self.message).replace("\n", "<br>")
        return f'<div class="conductloop-note" style="color:{colour}">{body}</div>'


def _hub() -> Hub:
    return connect(by=BY)


def answer_later(work: Callable[[], T], waiting: str, show: Callable[[T], object]) -> None:
    """Show ``show(work())`` in this cell without blocking the running loop.

    ``work`` runs on a worker thread; a placeholder saying ``waiting`` is replaced by the
    result (or by the error) when it is done. With no loop running (a terminal IPython),
    it simply runs.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        try:
            display(show(work()))
        except ConductLoopError as error:
            display(Note(f"⚠ {error}", warning=True))
        return
    handle = display(Note(waiting), display_id=True)

    async def finish() -> None:
        try:
            shown: object = show(await asyncio.to_thread(work))
        except ConductLoopError as error:
            shown = Note(f"⚠ {error}", warning=True)
        except Exception as error:  # nobody awaits this task: show what went wrong
            shown = Note(f"⚠ {type(error).__name__}: {error}", warning=True)
        if isinstance(shown, PhoneLink):
            shown.show(handle)  # in place of the placeholder, replaced in turn once used
        elif handle is not None:
            handle.update(shown)

    task = loop.create_task(finish(), name="conductloop:magic")
    _running.add(task)
    task.add_done_callback(_running.discard)


def _stop_all_preview() -> tuple[str, list[str]]:
    hub = _hub()
    frame = hub.agents()
    live = frame[~frame["state"].isin([s.value for s in FINAL_STATES])]
    return hub.address.url, [
        f"{n} ({a})" for n, a in zip(live["name"], live["agent_id"], strict=True)
    ]


def _describe_preview(found: tuple[str, list[str]]) -> Note:
    url, live = found
    if not live:
        return Note(f"No agent is running on the hub at {url}: nothing to stop.")
    shown = ", ".join(live[:10]) + (f", and {len(live) - 10} more" if len(live) > 10 else "")
    return Note(
        f"%stop_all would stop {len(live)} agent(s) on the hub at {url}: {shown}.\n"
        "Nothing was stopped. To stop them all, run: %stop_all --yes"
    )


def _stopped(count: int) -> Note:
    return Note(f"Stopped {count} agent(s) on the hub.")


def agents(line: str = "") -> None:
    """``%agents``: the dashboard of every agent on the hub, live."""
    _no_arguments("agents", line)
    if from_environment() is False:
        display(Note("$CONDUCTLOOP_HUB is 'off': there is no hub to show.", warning=True))
        return
    global _dashboard
    if _dashboard is None or _dashboard.closed:
        try:
            _dashboard = Dashboard(_hub)  # finds the hub on a worker thread, stays live
        except ConductLoopError as error:
            display(Note(f"⚠ {error}", warning=True))
            return
    display(_dashboard)  # one dashboard per kernel, shown again: one connection to the hub


def phone(line: str = "") -> None:
    """``%phone [--host H] [--port N] [--tls]``: a one-time pairing QR code for your phone.

    ``--host``: the address your phone reaches this machine at (default: its LAN address);
    ``--port``: the phone listener's port; ``--tls``: HTTPS with a self-signed certificate.
    """
    args = _PHONE.parse(line)
    answer_later(
        lambda: _hub().phone(args.host, args.port, tls=args.tls),
        "Opening the hub's phone listener…",
        lambda link: link,
    )


def stop_all(line: str = "") -> None:
    """``%stop_all --yes``: stop every agent on the hub. Without ``--yes``: what it would stop."""
    args = _STOP_ALL.parse(line)
    if args.yes:
        answer_later(lambda: _hub().stop_all(), "Stopping every agent…", _stopped)
    else:
        answer_later(_stop_all_preview, "Looking at the hub…", _describe_preview)


class _Arguments(argparse.ArgumentParser):
    """A magic's arguments; a mistake raises ``UsageError`` (IPython shows it) instead of
    exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage()}")

    def parse(self, line: str) -> argparse.Namespace:
        return self.parse_args(shlex.split(line))


def _no_arguments(name: str, line: str) -> None:
    if line.strip():
        raise UsageError(f"%{name} takes no arguments")


_PHONE = _Arguments(prog="%phone", add_help=False)
_PHONE.add_argument("--host", help="the address the phone reaches")
_PHONE.add_argument("--port", type=int, help="the phone listener's port")
_PHONE.add_argument("--tls", action="store_true", help="HTTPS, self-signed")
_STOP_ALL = _Arguments(prog="%stop_all", add_help=False)
_STOP_ALL.add_argument("--yes", action="store_true", help="confirm: stop every agent")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext conductloop_jupyter``: register ``%agents``, ``%phone``, ``%stop_all``."""
    for magic in (agents, phone, stop_all):
        ipython.register_magic_function(magic, "line", magic.__name__)
