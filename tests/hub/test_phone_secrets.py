"""The phone listener's secrets stay secret: none reaches a log line, the device cookie is
HttpOnly and SameSite=Strict (and Secure over TLS), and a TLS link carries the certificate's
SHA-256 fingerprint.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import logging
import re
import ssl
import stat
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

import conductloop_jupyter as cl
from conductloop_jupyter.hub.phone import COOKIE
from conductloop_jupyter.hub.server import stop_embedded
from tests.hub._phone_support import Device, PhoneHub

# -- secrets stay out of logs ----------------------------------------------------------------


async def test_no_secret_reaches_any_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="conductloop")
    caplog.set_level(logging.DEBUG, logger="tornado")
    jupyter_token = "f" * 48
    phone = await asyncio.to_thread(PhoneHub, tmp_path / "hub")
    try:
        code = await asyncio.to_thread(phone.code)
        wrong = code[::-1]
        assert (await asyncio.to_thread(phone.claim, wrong)).status == 403
        paired = await asyncio.to_thread(phone.claim, code)
        assert paired.status == 200
        device = Device.paired_by(paired)
        await asyncio.to_thread(phone.claim, code)  # used
        for path in ("/api/state", f"/api/state?token={jupyter_token}", "/api/events?agent_id=x"):
            await asyncio.to_thread(phone.fetch, "GET", path, token=device.token)
        await asyncio.to_thread(phone.command, device, {"op": "stop_all"})
        await asyncio.to_thread(phone.command, device, {"op": "stop", "agent_id": code})
        async with phone.socket(device) as ws:
            await ws.send({"type": "subscribe", "after": 0})
            await ws.recv()
            await ws.send({"type": "command", "id": "c1", "command": {"op": "stop_all"}})
            await ws.recv()
            await asyncio.to_thread(phone.client.revoke, device.id)
            assert await ws.closed() == 4001
        await asyncio.to_thread(phone.fetch, "GET", "/api/state", token=device.token)
    finally:
        await asyncio.to_thread(phone.stop)
    out, err = await asyncio.to_thread(capfd.readouterr)  # file I/O: off the loop
    logged = caplog.text + out + err
    assert "POST /pair" in caplog.text  # the listener's log was captured
    secrets = {
        "pairing code": code,
        "wrong code": wrong,
        "device token": device.token,
        "CSRF token": device.csrf,
        "hub secret": phone.address.secret,
        "jupyter token": jupyter_token,
    }
    assert [name for name, value in secrets.items() if value in logged] == []


# -- the cookie, and TLS -------------------------------------------------------------------


def test_the_device_cookie_is_httponly_samesite_strict_and_not_secure_over_http(
    phone: PhoneHub,
) -> None:
    reply = phone.claim(phone.code())
    assert reply.status == 200
    cookie = reply.cookie()
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert not cookie["secure"]
    assert cookie["expires"]  # kept across browser restarts
    assert reply.cookie().value not in reply.body.decode()  # the page's script never sees it


def test_with_tls_the_link_carries_a_sha256_fingerprint_and_the_cookie_is_secure(
    own_home: Path,
) -> None:
    loop = cl.Conductor(name="tls")  # its embedded hub lives in the test's own home
    try:
        link = loop.phone(host="127.0.0.1", tls=True)
        assert link.tls
        assert link.url.startswith(f"https://127.0.0.1:{link.port}/#pair=")
        assert link.fingerprint is not None
        assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", link.fingerprint)
        key = own_home / "phone-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # self-signed: the fingerprint is the check
        connection = http.client.HTTPSConnection(
            "127.0.0.1", link.port, timeout=10, context=context
        )
        try:
            connection.request("GET", "/")
            page = connection.getresponse()
            assert (page.status, page.read()[:15]) == (200, b"<!doctype html>")
            assert connection.sock is not None
            der = connection.sock.getpeercert(binary_form=True)
            assert der is not None
            served = hashlib.sha256(der).hexdigest().upper()
            assert link.fingerprint.replace(":", "") == served

            origin = f"https://127.0.0.1:{link.port}"
            code = link.url.split("#pair=", 1)[1]
            body = json.dumps({"code": code})
            headers = {"Origin": origin, "Content-Type": "application/json"}
            connection.request("POST", "/pair", body=body, headers=headers)
            paired = connection.getresponse()
            paired.read()
            assert paired.status == 200
            cookie = SimpleCookie(paired.headers["Set-Cookie"])[COOKIE]
            assert cookie["secure"] is True
            assert cookie["httponly"] is True
            assert cookie["samesite"] == "Strict"
        finally:
            connection.close()
        assert len(loop.devices()) == 1
    finally:
        try:
            loop.close()
        finally:
            stop_embedded()
