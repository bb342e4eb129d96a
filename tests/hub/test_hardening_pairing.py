"""Pairing under pressure, on a real phone listener: claims and revokes at once, a save
that fails, and devices that go unused.

Every claim is a real ``POST /pair`` over a socket of its own; the threads are released
together by a barrier so that the hub sees the claims at the same time.
"""

from __future__ import annotations

import hashlib
import json
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from conductloop_jupyter.hub.pairing import DEVICES_FILE, IDLE_ENV
from tests.hub._phone_support import Device, PhoneHub, Reply

T = TypeVar("T")
CLAIMS = 16


def at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run every call on a thread of its own, all released at the same moment."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait(10)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def stored_ids(home: Path) -> list[str]:
    return [row["id"] for row in json.loads((home / DEVICES_FILE).read_text())]


def test_sixteen_concurrent_claims_of_sixteen_codes_all_pair_each_device_once(
    phone: PhoneHub, tmp_path: Path
) -> None:
    codes = [phone.code() for _ in range(CLAIMS)]
    replies = at_once([lambda code=code: phone.claim(code) for code in codes])  # type: ignore[misc]

    assert [r.status for r in replies] == [200] * CLAIMS, [r.body for r in replies]
    devices = [Device.paired_by(r) for r in replies]
    ids = [d.id for d in devices]
    assert len(set(ids)) == CLAIMS
    listed = phone.client.devices()["id"].tolist()
    assert sorted(listed) == sorted(ids)  # each once
    for device in devices:  # each cookie works
        assert phone.fetch("GET", "/api/state", token=device.token).status == 200
    home = tmp_path / "hub"
    assert sorted(stored_ids(home)) == sorted(ids)
    assert stat.S_IMODE((home / DEVICES_FILE).stat().st_mode) == 0o600
    assert not list(home.glob("*.partial")), "a temporary file was left behind"
    # every code is used up by its own claim
    assert [phone.claim(code).status for code in codes[:3]] == [403] * 3


def test_concurrent_revokes_and_claims_all_succeed_and_the_file_keeps_the_rest(
    phone: PhoneHub, tmp_path: Path
) -> None:
    paired = [phone.pair() for _ in range(8)]
    codes = [phone.code() for _ in range(8)]

    def revoke(device: Device) -> Callable[[], str]:
        def call() -> str:
            phone.client.revoke(device.id)
            return "revoked"

        return call

    def claim(code: str) -> Callable[[], Reply]:
        return lambda: phone.claim(code)

    outcomes = at_once([revoke(d) for d in paired] + [claim(c) for c in codes])  # type: ignore[operator]

    assert outcomes[:8] == ["revoked"] * 8
    replies = [o for o in outcomes[8:] if isinstance(o, Reply)]
    assert [r.status for r in replies] == [200] * 8, [r.body for r in replies]
    new = [Device.paired_by(r).id for r in replies]
    assert sorted(phone.client.devices()["id"].tolist()) == sorted(new)
    assert sorted(stored_ids(tmp_path / "hub")) == sorted(new)
    for device in paired:
        assert phone.fetch("GET", "/api/state", token=device.token).status == 401


def test_a_claim_whose_save_fails_pairs_nothing_and_leaves_the_code_usable(
    phone: PhoneHub, tmp_path: Path
) -> None:
    blocker = tmp_path / "hub" / DEVICES_FILE
    blocker.unlink(missing_ok=True)
    blocker.mkdir()  # devices.json cannot be replaced now: every save fails
    code = phone.code()

    refused = phone.claim(code)

    assert refused.status == 403
    assert refused.error == "pairing"
    assert "could not save" in refused.json()["error"]["message"]
    assert "Set-Cookie" not in refused.headers
    assert phone.client.devices().empty
    blocker.rmdir()
    again = phone.claim(code)  # all or nothing: the code was not used up
    assert again.status == 200
    device = Device.paired_by(again)
    assert phone.client.devices()["id"].tolist() == [device.id]
    assert stored_ids(tmp_path / "hub") == [device.id]


# -- idle expiry -------------------------------------------------------------------------


def _stored_device(id_: str, token: str, last_seen: float) -> dict[str, object]:
    return {
        "id": id_,
        "name": id_,
        "user_agent": "Mozilla (iPhone)",
        "address": "192.0.2.7",
        "created": last_seen,
        "last_seen": last_seen,
        "token_hash": hashlib.sha256(token.encode()).hexdigest(),
    }


@pytest.fixture
def aged_home(tmp_path: Path) -> Path:
    """A home whose devices.json holds one device last used 31 days ago, one 29 days ago."""
    home = tmp_path / "hub"
    home.mkdir(mode=0o700)
    now = time.time()
    rows = [
        _stored_device("dstale", "stale-token-" + "s" * 32, now - 31 * 86400),
        _stored_device("dfresh", "fresh-token-" + "f" * 32, now - 29 * 86400),
    ]
    (home / DEVICES_FILE).write_text(json.dumps(rows))
    return home


def test_a_device_unused_for_thirty_days_is_signed_out_and_a_used_one_stays(
    aged_home: Path,
) -> None:
    phone = PhoneHub(aged_home)
    try:
        stale = phone.fetch("GET", "/api/state", token="stale-token-" + "s" * 32)
        fresh = phone.fetch("GET", "/api/state", token="fresh-token-" + "f" * 32)
        assert (stale.status, stale.error) == (401, "unauthorized")
        assert fresh.status == 200
        frame = phone.client.devices()
        assert frame["id"].tolist() == ["dfresh"]
        # its use was just now, and it is good for another 30 days from it
        used = frame["last_seen"].iloc[0].timestamp()
        assert abs(used - time.time()) < 60
        assert abs(frame["expires"].iloc[0].timestamp() - (used + 30 * 86400)) < 1
    finally:
        phone.stop()
    # the use and the sign-out are in the file, for the next hub
    rows = json.loads((aged_home / DEVICES_FILE).read_text())
    assert [r["id"] for r in rows] == ["dfresh"]
    assert abs(rows[0]["last_seen"] - time.time()) < 60


def test_the_idle_expiry_is_set_in_days_by_the_environment(
    aged_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IDLE_ENV, "0")  # never
    phone = PhoneHub(aged_home)
    try:
        assert phone.fetch("GET", "/api/state", token="stale-token-" + "s" * 32).status == 200
        frame = phone.client.devices()
        assert sorted(frame["id"].tolist()) == ["dfresh", "dstale"]
        assert frame["expires"].isna().all()
    finally:
        phone.stop()
    monkeypatch.setenv(IDLE_ENV, "28")
    phone = PhoneHub(aged_home)
    try:
        # dstale was used a moment ago (above); dfresh 29 days ago, past 28
        assert phone.client.devices()["id"].tolist() == ["dstale"]
    finally:
        phone.stop()
