"""A real hub process, killed with SIGKILL while events stream in and views are saved,
restarts with the view a replay of every stored event builds.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conductloop_jupyter.hub.hub import Hub
from conductloop_jupyter.hub.store import EventStore
from tests.hub._snapshot_support import assert_restarted_like_a_replay, start, stop, story

ROOT = Path(__file__).resolve().parents[2]


# the script: these imports, then story() of _snapshot_support.py, then the rest
KILLED_HUB_PRELUDE = """from __future__ import annotations

import asyncio
import sys

from conductloop_jupyter.core.events import Event
from conductloop_jupyter.hub.hub import Hub
from conductloop_jupyter.hub.store import EventStore
from conductloop_jupyter.testing import ManualClock


"""
KILLED_HUB = """


async def main(path):
    clock = ManualClock()  # standing still: a save is never put off (see start())
    hub = Hub(EventStore(path), recent=30, save_every=200, save_interval=0, clock=clock)
    await hub.start()
    committed = asyncio.Event()
    seq = 0
    while True:  # a stream of batches of 20 until the process is killed
        batch = story("rt-1", seq + 1, seq + 20)
        seq += 20
        hub.ingest("rt-1", batch, lambda acked: acked >= 1340 and committed.set())
        if seq == 1340:
            # committed: 1,340 events, and the views saved after 200, 400, ... 1,200 (each
            # handed to the store before the next batch): the kill comes between two saves
            await committed.wait()
            print("STREAMING", flush=True)
        await asyncio.sleep(0.0005)


asyncio.run(main(sys.argv[1]))
"""


def read_line(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    """The next line of ``proc``'s stdout, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    fd, line, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while not line.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            raise AssertionError(f"no line from the process within {timeout:g} s")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"the process ended (exit {proc.wait(10)})")
        line += chunk
    return line.decode().strip()


@pytest.fixture
def killed_hub(path: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    script = tmp_path / "killed_hub.py"
    script.write_text(KILLED_HUB_PRELUDE + inspect.getsource(story) + KILLED_HUB)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    stderr = (tmp_path / "killed_hub.stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, stderr=stderr, env=env
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
        stderr.close()


def test_a_hub_killed_mid_stream_restarts_with_the_view_a_full_replay_builds(
    path: Path, killed_hub: subprocess.Popen[bytes]
) -> None:
    assert read_line(killed_hub) == "STREAMING"
    killed_hub.send_signal(signal.SIGKILL)  # while events stream in and views are saved
    assert killed_hub.wait(10) == -signal.SIGKILL

    async def restart() -> tuple[Hub, int]:
        hub = await start(path, save_every=200)
        restored_at = hub.restored_at
        await stop(hub, clean=False)
        return hub, restored_at

    hub, restored_at = asyncio.run(restart())
    assert restored_at >= 1200
    assert hub.last_id >= 1340
    assert restored_at % 20 == 0  # a saved view covers whole batches
    asyncio.run(assert_restarted_like_a_replay(hub, path, recent=30))
    with EventStore(path) as store:
        assert hub._accepted == store.last_seqs() == {"rt-1": hub.last_id}
