"""The handover in one process: a long-lived hub takes the home from an embedded one.

A real embedded hub (its thread, its listener) and a real ``HubServer`` binding the same
home: the embedded hub hands over and stops, ``hub.json`` names the new hub, and no
embedded hub starts while the home is claimed. A long-lived hub refuses to hand over.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conductloop_jupyter.hub.discovery import read_hub_file
from conductloop_jupyter.hub.server import (
    HubBusy,
    HubServer,
    in_process,
    start_embedded,
    stop_embedded,
)
from tests.hub._support import api, running_hub


def test_a_long_lived_hub_takes_the_home_from_an_embedded_one_and_none_starts_meanwhile(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    try:
        embedded = start_embedded(home)
        assert embedded is not None
        assert in_process(embedded) is not None
        assert (found := read_hub_file(home)) is not None
        assert found.kind == "embedded"

        served = HubServer(home, kind="serve")
        address = served.bind()  # asks the embedded hub, waits for the home
        try:
            assert served.took_over_from == [found.pid]
            assert in_process(embedded) is None  # stopped, and forgotten
            assert start_embedded(home) is None  # claimed: no embedded hub now
            with pytest.raises(HubBusy, match="another hub already serves"):
                HubServer(home, kind="jupyter").bind()  # a second long-lived hub
            asyncio.run(served.start())
            record = read_hub_file(home)
            assert record is not None
            assert (record.address, record.kind) == (address, "serve")
        finally:
            asyncio.run(served.stop())
        assert read_hub_file(home) is None  # stopped on purpose: hub.json goes
        again = start_embedded(home)  # unclaimed again: a script may embed one
        assert again is not None
        assert again != address
    finally:
        stop_embedded()


async def test_a_long_lived_hub_refuses_to_hand_over_and_keeps_serving(home: Path) -> None:
    async with running_hub(home) as (_, address):
        status, body = await api(address, "handover", body={})
        assert status == 409
        assert body["error"]["code"] == "usage"
        assert "long-lived" in body["error"]["message"]
        status, body = await api(address, "handover", body={}, headers={})
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, _ = await api(address, "status")
        assert status == 200
