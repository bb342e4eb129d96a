"""Pairing a phone: one-time codes with a time to live, back-off after wrong codes, device
tokens stored only as hashes, a CSRF token per device.

``Pairing`` (codes, tokens, back-off) is tested on its own with a ``ManualClock``, so expiry
needs no waiting; then over HTTP on a real phone listener bound to loopback.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import stat
import threading
from pathlib import Path

import conductloop_jupyter as cl
from conductloop_jupyter.hub.pairing import DEVICES_FILE, Pairing, digest
from conductloop_jupyter.testing import ManualClock
from tests.hub._phone_support import PhoneHub

# -- pairing: the Pairing book on its own ------------------------------------------------


def pairing(tmp_path: Path, ttl: float = 300.0) -> tuple[Pairing, ManualClock]:
    clock = ManualClock()
    return Pairing(tmp_path, ttl=ttl, clock=clock), clock


def claim(
    book: Pairing, code: str, address: str = "192.0.2.7"
) -> tuple[cl.PairingError | None, str]:
    """``(error, token)`` of one claim."""
    try:
        _, token = book.claim(code, name="", user_agent="Mozilla (iPhone)", address=address)
    except cl.PairingError as error:
        return error, ""
    return None, token


def test_a_code_pairs_until_its_ttl_and_is_refused_as_expired_after(tmp_path: Path) -> None:
    book, clock = pairing(tmp_path, ttl=60)
    early, late = book.new_code()[0], book.new_code()[0]
    short, expires = book.new_code(ttl=10)
    assert expires == clock.wall() + 10
    clock.advance(59)
    assert claim(book, early)[0] is None
    error, _ = claim(book, short)
    assert error is not None
    assert "expired" in str(error)
    clock.advance(1)
    error, _ = claim(book, late)
    assert error is not None
    assert "expired" in str(error)


def test_a_code_pairs_once_and_a_second_claim_is_refused_as_used(tmp_path: Path) -> None:
    book, _ = pairing(tmp_path)
    code, _ = book.new_code()
    first, token = claim(book, code)
    assert first is None
    assert book.device(token) is not None
    second, _ = claim(book, code, address="192.0.2.8")
    assert second is not None
    assert "already used" in str(second)
    assert len(book.devices) == 1


def test_an_unknown_code_is_refused(tmp_path: Path) -> None:
    book, _ = pairing(tmp_path)
    code, _ = book.new_code()
    for wrong in ("", "nope", code[:-1], code + "x", code.upper()):
        error, _ = claim(book, wrong, address=f"192.0.2.{len(wrong)}")
        assert error is not None, wrong
        assert "not known" in str(error), wrong
    assert book.devices == {}


def test_repeated_failures_from_one_address_back_off_exponentially_and_a_success_resets(
    tmp_path: Path,
) -> None:
    book, clock = pairing(tmp_path, ttl=86_400)
    code, _ = book.new_code()
    waits = []
    for _ in range(12):
        error, _ = claim(book, "wrong")
        assert error is not None
        waits.append(error.retry_after)
        # while locked out every claim is refused, even with a good code, which stays good
        if error.retry_after:
            locked, _ = claim(book, code)
            assert locked is not None
            assert "too many" in str(locked)
            assert 0 < locked.retry_after <= error.retry_after
        clock.advance(error.retry_after)
    assert waits[:2] == [0, 0]
    assert all(b > a for a, b in itertools.pairwise(waits[2:10]))  # grows
    assert waits[2:5] == [4, 8, 16]
    assert max(waits) == 300  # capped
    elsewhere, _ = claim(book, "wrong", address="192.0.2.99")  # another address: no wait
    assert elsewhere is not None
    assert elsewhere.retry_after == 0

    assert claim(book, code)[0] is None  # after the wait, the good code pairs
    error, _ = claim(book, "wrong")
    assert error is not None
    assert error.retry_after == 0


def test_a_revoked_device_token_identifies_nothing(tmp_path: Path) -> None:
    book, _ = pairing(tmp_path)
    _, token = claim(book, book.new_code()[0])
    _, other = claim(book, book.new_code()[0])
    device = book.device(token)
    assert device is not None
    assert book.revoke(device.id) is device
    assert book.device(token) is None
    assert book.device(other) is not None
    assert book.revoke(device.id) is None
    assert book.revoke("d-unknown") is None


def test_devices_json_holds_only_sha256_of_tokens_and_is_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    book, _ = pairing(tmp_path)
    code = book.new_code()[0]
    _, token = claim(book, code)
    device = book.device(token)
    assert device is not None
    book.save()
    path = tmp_path / DEVICES_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert token not in text
    assert code not in text
    assert book.csrf(device) not in text
    [row] = json.loads(text)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest() == digest(token)

    # a restarted hub knows the phone by its token (on the same clock: unused for 30 days,
    # a device is signed out)
    again = Pairing(tmp_path, clock=book.clock)
    again.load()
    found = again.device(token)
    assert found is not None
    assert found.id == device.id


def test_the_csrf_token_belongs_to_one_device(tmp_path: Path) -> None:
    book, _ = pairing(tmp_path)
    one = book.device(claim(book, book.new_code()[0])[1])
    two = book.device(claim(book, book.new_code()[0])[1])
    assert one is not None
    assert two is not None
    assert book.check_csrf(one, book.csrf(one))
    for wrong in (None, "", book.csrf(two), book.csrf(one)[:-1]):
        assert not book.check_csrf(one, wrong), wrong


# -- pairing over HTTP -------------------------------------------------------------------


def test_a_used_or_wrong_code_is_refused_over_http_with_403_pairing(phone: PhoneHub) -> None:
    code = phone.code()
    assert phone.claim(code).status == 200
    used = phone.claim(code)
    assert (used.status, used.error) == (403, "pairing")
    assert "already used" in used.json()["error"]["message"]
    assert "Set-Cookie" not in used.headers
    wrong = phone.claim(code[:-1] + ("A" if code[-1] != "A" else "B"))
    assert (wrong.status, wrong.error) == (403, "pairing")
    assert "Set-Cookie" not in wrong.headers
    assert len(phone.client.devices()) == 1


def test_an_expired_code_is_refused_over_http_with_403_pairing(phone: PhoneHub) -> None:
    clock = ManualClock()
    phone.service.pairing = Pairing(phone.service.home, clock=clock)
    code = phone.code(ttl=10)
    clock.advance(10)
    expired = phone.claim(code)
    assert (expired.status, expired.error) == (403, "pairing")
    assert "expired" in expired.json()["error"]["message"]
    assert phone.client.devices().empty


def test_repeated_wrong_codes_over_http_are_locked_out_with_429_and_retry_after(
    phone: PhoneHub,
) -> None:
    clock = ManualClock()
    phone.service.pairing = Pairing(phone.service.home, clock=clock)
    code = phone.code()
    statuses = [phone.claim("wrong").status for _ in range(3)]
    assert statuses == [403, 403, 403]
    locked = phone.claim(code)  # even the right code, while locked out
    assert (locked.status, locked.error) == (429, "pairing_locked")
    assert int(locked.headers["Retry-After"]) >= 4
    assert locked.json()["error"]["retry_after"] == 4
    clock.advance(4)
    assert phone.claim(code).status == 200


def test_two_concurrent_claims_of_one_code_pair_exactly_one_phone(phone: PhoneHub) -> None:
    code = phone.code()
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def race() -> None:
        barrier.wait(10)
        statuses.append(phone.claim(code).status)

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 403]
    assert len(phone.client.devices()) == 1
