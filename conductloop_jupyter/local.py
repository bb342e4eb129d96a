"""The Conductors of this process, so that a Hub client steers them directly.

A Hub client's steering call goes over HTTP to the hub, which hands it to the runtime that
owns the agent. When that runtime lives in this process and runs on the calling thread's
loop (a notebook cell steering the kernel's own agents through ``cl.connect()``), the
blocking call would hold the very loop the runtime needs to answer: it would wait for
itself. So commands for this process's own agents are carried out in-process instead.
Agent and request ids end with their runtime's tag (``researcher-3-a1b2c3``,
``r7-a1b2c3``), which is how the owner is found.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conductor import Conductor

_CONDUCTORS: weakref.WeakValueDictionary[str, Conductor] = weakref.WeakValueDictionary()


def register(conductor: Conductor) -> None:
    _CONDUCTORS[conductor.tag] = conductor


def owner(item_id: object) -> Conductor | None:
    """The conductor of this process that owns an agent or request id, if any."""
    if not isinstance(item_id, str) or "-" not in item_id:
        return None
    return _CONDUCTORS.get(item_id.rsplit("-", 1)[1])


def conductors() -> list[Conductor]:
    return list(_CONDUCTORS.values())
