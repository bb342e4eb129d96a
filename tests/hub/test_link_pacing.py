"""How the link paces chatter to a hub in another process: at once while it sends fewer
than ``messages_per_s`` messages a second (a bucket of ``burst`` tokens), then one message
per token. Checked on the bucket with explicit times: no clock is read, nothing sleeps."""

from __future__ import annotations

from pathlib import Path

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.hub.locator import Locator
from conductloop_jupyter.link import HubLink


@pytest.fixture
def link(tmp_path: Path) -> HubLink:
    loop = cl.Conductor("paced", hub=False)
    return HubLink(loop, Locator(None, tmp_path), messages_per_s=1000.0, burst=3)


def test_a_burst_goes_at_once_then_one_message_per_token(link: HubLink) -> None:
    start = 100.0
    assert [link.take_token(start) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert link.take_token(start) == pytest.approx(0.001)  # the next token, in 1 ms
    assert link.take_token(start + 0.0005) == pytest.approx(0.0005)
    assert link.take_token(start + 0.001) == 0.0


def test_a_quiet_link_refills_to_its_burst_and_no_further(link: HubLink) -> None:
    for _ in range(3):
        link.take_token(10.0)
    assert link.take_token(20.0) == 0.0  # ten seconds of quiet: a full bucket again
    assert [link.take_token(20.0) for _ in range(3)][-1] > 0  # but only ``burst`` of them
