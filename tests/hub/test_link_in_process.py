"""The link hands events to an embedded hub of its own process as objects, not JSON.

The rest of the protocol (hello, welcome, acks after commit, commands) is unchanged, and
what the hub stores is what the socket carries to any other hub, oversized events cut alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.hub.server import stop_embedded
from tests.hub._process_support import Procs, free_port


@pytest.mark.parametrize("path", ["in-process", "socket"])
def test_the_embedded_hub_stores_the_same_events_in_process_as_over_the_socket(
    path: str, home: Path, procs: Procs
) -> None:
    if path == "socket":  # the same home served by `conductloop serve`, another process
        procs.serve(free_port())
    huge = {f"k{i}": [["x" * 2000] * 50] * 50 for i in range(3)}  # megabytes once encoded
    loop = cl.Conductor(name="in-process", home=str(home))

    @loop.agent
    async def worker(ctx: cl.Context, lines: int) -> str:
        for i in range(lines):
            ctx.log(f"line {i}")
            await ctx.checkpoint()
        async with ctx.tool("search", query=huge):
            pass
        return "done"

    try:
        assert loop.run("worker", 200) == "done"
        link = loop.link
        assert link is not None
        loop.close()  # flushes: returns once the hub has acknowledged every event
        assert link.unacked == 0
        stored = cl.connect(home=str(home)).events()
    finally:
        stop_embedded()
    ours = stored[stored["runtime"] == loop.runtime]
    assert list(ours["seq"]) == list(range(1, link.acked + 1))  # every one, once, in order
    assert (ours["kind"] == "log").sum() == 200
    (tool,) = ours[ours["kind"] == "tool.started"]["data"]
    assert tool["truncated"] is True  # cut as the socket path cuts it, keeping what is small
    assert (tool["tool"], tool["span"], tool["args"]["truncated"]) == ("search", 1, True)
    assert tool["bytes"] > 256 * 1024
    assert link.transport == path
