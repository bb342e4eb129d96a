"""Whether a pairing code was used: what the notebook asks to replace a used QR code.

``Pairing.status`` on its own with a ``ManualClock``; the hub's
``GET /conductloop/api/phone/code`` on a real embedded hub whose phone listener is open on
127.0.0.1, with the code claimed over HTTP as the phone page claims it. A long poll is
woken by the claim itself, not by its wait running out: the waits asked for here are far
longer than the bound the test allows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest

from conductloop_jupyter.core.errors import ConductLoopError, PairingError, UsageError
from conductloop_jupyter.hub.pairing import KEEP_OUTCOMES, Pairing, code_id, digest
from conductloop_jupyter.notebook.phone import PhoneLink
from conductloop_jupyter.testing import ManualClock
from tests.hub._phone_support import PhoneHub, Reply

BOUND = 30.0  # seconds a woken long poll may take before the test calls it stuck


# -- Pairing.status ------------------------------------------------------------------------


def test_a_code_is_waiting_then_paired_with_the_device_that_claimed_it(tmp_path: Path) -> None:
    book = Pairing(tmp_path, clock=ManualClock())
    code, expires = book.new_code()
    status = book.status(code_id(code))
    assert status is not None
    assert (status.state, status.expires) == ("waiting", expires)
    device, _ = book.claim(code, name="Pixel 7", user_agent="", address="10.0.0.2")
    after = book.status(code_id(code))
    assert after is not None
    assert after.state == "paired"
    assert after.device == device
    assert after.public() == {
        "id": code_id(code),
        "state": "paired",
        "expires": expires,
        "device": {"id": device.id, "name": "Pixel 7"},
    }


def test_an_unclaimed_code_is_expired_once_its_time_is_up(tmp_path: Path) -> None:
    clock = ManualClock()
    book = Pairing(tmp_path, ttl=60.0, clock=clock)
    code, _ = book.new_code()
    clock.advance(59.9)
    assert getattr(book.status(code_id(code)), "state", None) == "waiting"
    clock.advance(0.1)
    assert getattr(book.status(code_id(code)), "state", None) == "expired"


def test_outcomes_outlive_newer_codes_for_an_hour_and_a_used_code_stays_refused(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    book = Pairing(tmp_path, ttl=60.0, clock=clock)
    used, _ = book.new_code()
    book.claim(used, name="", user_agent="", address="10.0.0.2")
    book.new_code()  # making codes prunes old ones: not an outcome still worth telling
    assert getattr(book.status(code_id(used)), "state", None) == "paired"
    with pytest.raises(PairingError, match="already used"):
        book.claim(used, name="", user_agent="", address="10.0.0.3")
    clock.advance(60.0 + KEEP_OUTCOMES)
    book.new_code()
    assert book.status(code_id(used)) is None


def test_a_code_id_names_the_code_without_revealing_it(tmp_path: Path) -> None:
    book = Pairing(tmp_path)
    code, _ = book.new_code()
    assert code_id(code) == digest(code)[:16]
    assert code not in code_id(code)
    assert book.status("0" * 16) is None
    assert book.status("") is None


# -- the hub's API, on a real embedded hub ------------------------------------------------


def claim(phone: PhoneHub, link: PhoneLink, name: str = "Test Pixel") -> dict[str, Any]:
    """POST /pair as the phone page does, naming the device."""
    code = link.url.split("#pair=", 1)[1]
    reply = phone.fetch("POST", "/pair", body={"code": code, "name": name}, origin=phone.origin)
    assert reply.status == 200, reply.body
    answer: dict[str, Any] = reply.json()
    return answer


def code_status(phone: PhoneHub, query: str, secret: str | None) -> Reply:
    headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
    return phone.hub_fetch("GET", f"/conductloop/api/phone/code?{query}", headers)


def waiting_on_hub(phone: PhoneHub, id_: str, wait: float) -> concurrent.futures.Future[Any]:
    """``PhoneService.code_status(id_, wait)`` running on the hub's own loop."""
    coroutine = phone.service.code_status(id_, wait)
    return asyncio.run_coroutine_threadsafe(coroutine, phone.embedded.loop)


def test_phone_returns_the_code_id_and_the_hub_says_it_is_waiting(phone: PhoneHub) -> None:
    link = phone.link
    assert link.code_id == code_id(link.url.split("#pair=", 1)[1])
    status = phone.client._code_status(link.code_id)
    assert status == {"id": link.code_id, "state": "waiting", "expires": link.expires,
                      "device": None}  # fmt: skip
    assert link.url.split("#pair=", 1)[1] not in repr(link)  # the secret stays out of reprs


def test_a_long_poll_is_answered_by_the_claim_with_the_device(phone: PhoneHub) -> None:
    waiting = waiting_on_hub(phone, phone.link.code_id, wait=3600.0)
    assert not waiting.done()  # expires in 5 minutes, asked to wait an hour: it waits
    device = claim(phone, phone.link)["device"]
    status = waiting.result(timeout=BOUND)
    assert (status.state, status.device.id, status.device.name) == (
        "paired", device["id"], "Test Pixel"
    )  # fmt: skip
    answer = phone.client._code_status(phone.link.code_id, wait=60.0)  # paired: answers at once
    assert answer["state"] == "paired"
    assert answer["device"] == {"id": device["id"], "name": "Test Pixel"}


def test_wait_in_a_script_returns_when_the_phone_pairs(phone: PhoneHub) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(phone.link.wait)
        claim(phone, phone.link, name="Kitchen tablet")
        found = outcome.result(timeout=BOUND)
    assert found["state"] == "paired"
    assert found["device"]["name"] == "Kitchen tablet"
    assert phone.client.phone(host="127.0.0.1").wait(timeout=0)["state"] == "waiting"


def test_an_expired_code_is_reported_expired(phone: PhoneHub) -> None:
    clock = ManualClock(wall_start=phone.link.expires - 1.0)
    phone.service.pairing.clock = clock  # the hub's own clock, moved past the expiry
    clock.advance(1.0)
    assert phone.client._code_status(phone.link.code_id, wait=60.0)["state"] == "expired"
    assert phone.link.wait()["state"] == "expired"


def test_stopping_the_hub_answers_a_waiting_long_poll_and_then_the_link_is_unavailable(
    phone: PhoneHub,
) -> None:
    waiting = waiting_on_hub(phone, phone.link.code_id, wait=3600.0)
    assert not waiting.done()
    phone.stop()
    assert waiting.result(timeout=BOUND).state == "waiting"
    outcome = phone.link.wait()
    assert outcome["state"] == "unavailable"
    assert "does not answer" in outcome["error"]
    with pytest.raises(ConductLoopError):
        phone.client._code_status(phone.link.code_id)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("id=0123456789abcdef", 404, "unknown_code"),
        ("id=", 404, "unknown_code"),
        ("", 404, "unknown_code"),
        ("id=X&wait=abc", 400, "bad_message"),
        ("id=X&wait=-1", 400, "bad_message"),
        ("id=X&wait=61", 400, "bad_message"),
        ("id=X&wait=nan", 400, "bad_message"),
    ],
)
def test_unknown_codes_and_bad_waits_get_clear_errors(
    phone: PhoneHub, query: str, status: int, code: str
) -> None:
    reply = code_status(phone, query, phone.address.secret)
    assert (reply.status, reply.error) == (status, code)
    assert reply.json()["error"]["message"]


def test_the_code_status_needs_the_hubs_secret(phone: PhoneHub) -> None:
    for secret in (None, "wrong"):
        reply = code_status(phone, f"id={phone.link.code_id}", secret)
        assert (reply.status, reply.error) == (401, "unauthorized")


def test_following_a_link_not_made_by_a_hub_is_a_usage_error() -> None:
    link = PhoneLink("http://127.0.0.1:1/#pair=x", 0.0, "127.0.0.1", 1)
    with pytest.raises(UsageError, match="not made by a hub"):
        link.wait()
