"""``loop.phone(tls=True)`` gives HTTPS or says why not; never a plain link in its place.

A hub has one phone listener. Asked for TLS while a plain one is open, the hub refuses
with ``usage`` (``cl.UsageError``) naming the open listener and what to do; switching the
listener over would cut off the phones on the plain page and move its address. Asked for
a plain link while the listener is on TLS, it gives the HTTPS one: stronger, and nothing
breaks. Each test talks to a real listener over a real socket (TLS included).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.hub.server import EmbeddedHub
from tests.hub._phone_support import COOKIE, PhoneHub, Reply


def post_to_hub(phone: PhoneHub, path: str, body: object) -> Reply:
    """A JSON POST to the hub's own (loopback) listener, with its secret."""
    port = int(phone.address.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {phone.address.secret}"}
        connection.request("POST", path, body=json.dumps(body), headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def test_tls_asked_while_a_plain_listener_is_open_is_refused_with_a_usage_error(
    phone: PhoneHub,
) -> None:
    with pytest.raises(cl.UsageError, match=r"already open without TLS at http://127\.0\.0\.1"):
        phone.client.phone(host="127.0.0.1", tls=True)
    with pytest.raises(cl.UsageError, match="tls=True"):
        phone.client.phone(tls=True)  # whatever host
    raw = post_to_hub(phone, "/conductloop/api/phone", {"tls": True})
    assert raw.status == 409
    assert raw.error == "usage"
    assert "url" not in raw.json()  # no pairing code was made
    # the plain listener goes on as it was
    assert phone.client.phone(host="127.0.0.1").url.startswith(f"http://{phone.host}/#pair=")
    assert phone.pair().id


@pytest.fixture
def tls_hub(tmp_path: Path) -> Iterator[tuple[cl.Hub, EmbeddedHub]]:
    embedded = EmbeddedHub(tmp_path / "hub")
    client = cl.Hub(embedded.start(), by="test")
    try:
        yield client, embedded
    finally:
        embedded.stop()


def test_tls_gives_https_whose_certificate_is_the_one_shown_and_a_secure_cookie(
    tls_hub: tuple[cl.Hub, EmbeddedHub],
) -> None:
    client, _ = tls_hub
    link = client.phone(host="127.0.0.1", tls=True)
    assert link.tls
    assert link.url.startswith(f"https://127.0.0.1:{link.port}/#pair=")
    # a plain ask now gets the TLS listener too: stronger, and nothing is cut off
    plain_ask = client.phone(host="127.0.0.1")
    assert plain_ask.tls
    assert plain_ask.url.startswith("https://")

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed: the user checks the fingerprint
    host = f"127.0.0.1:{link.port}"
    connection = http.client.HTTPSConnection("127.0.0.1", link.port, timeout=10, context=context)
    try:
        code = link.url.split("#pair=", 1)[1]
        headers = {"Host": host, "Origin": f"https://{host}", "Content-Type": "application/json"}
        connection.request("POST", "/pair", body=json.dumps({"code": code}), headers=headers)
        reply = connection.getresponse()
        reply.read()
        assert connection.sock is not None
        der = connection.sock.getpeercert(binary_form=True)
    finally:
        connection.close()
    assert reply.status == 200
    shown = hashlib.sha256(der).hexdigest().upper()
    assert link.fingerprint == ":".join(shown[i : i + 2] for i in range(0, len(shown), 2))
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "Secure" in cookie
    # the plain scheme on the same port is not served
    plain = http.client.HTTPConnection("127.0.0.1", link.port, timeout=10)
    try:
        plain.request("GET", "/", headers={"Host": host})
        assert plain.getresponse().status == 400
    except (ConnectionError, http.client.HTTPException):
        pass  # closed by the TLS side: refused either way
    finally:
        plain.close()
