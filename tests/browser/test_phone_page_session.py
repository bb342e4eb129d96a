"""The phone page's session in a real Chromium emulating phones: paired from the QR code
(the secret leaves the address bar), signed out at once when revoked, offline when its
connection drops and caught up without duplicates when it comes back.

Each test has a conductor of its own (and so an embedded hub of its own, in a temporary
home) whose phone listener is bound to loopback only; see ``conftest.py``. Waits are on
events (``EventRecorder``) and on Playwright's auto-waiting ``expect``; nothing sleeps.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import zxingcpp
from PIL import Image
from playwright.sync_api import expect

from conductloop_jupyter.testing import match
from tests.browser._support import Lab, device_name

# Every WebSocket the page opens, so a test can drop its connection as a lost network does.
TRACK_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = function (...args) {
    const socket = new Native(...args);
    window.__sockets.push(socket);
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
})();"""


# -- pairing -----------------------------------------------------------------------------


def test_the_qr_code_pairs_the_phone_and_the_secret_leaves_the_address_bar(lab: Lab) -> None:
    lab.start("worker")
    link = lab.loop.phone(host="127.0.0.1")
    assert (link.host, link.tls) == ("127.0.0.1", False)

    [found] = zxingcpp.read_barcodes(Image.open(io.BytesIO(link.qr_png())))
    assert found.format == zxingcpp.BarcodeFormat.QRCode
    assert found.text == link.url
    svg = ET.fromstring(link.qr_svg())
    assert svg.tag.endswith("svg")
    assert [p for p in svg.iter() if p.tag.endswith("path") and p.get("d")]

    phone = lab.new_page()
    phone.page.goto(found.text)
    expect(phone.needs).to_be_visible()
    expect(phone.agents).to_be_visible()
    expect(phone.agent("worker")).to_contain_text("running")
    assert "pair=" not in phone.page.url
    assert phone.page.url == link.page_url
    phone.shot("paired")

    devices = lab.loop.devices()
    assert len(devices) == 1
    assert devices["name"][0] == device_name(lab)
    assert devices["user_agent"][0] == lab.playwright.devices[lab.profile]["user_agent"]

    # the link is spent: another phone that opens it is not paired
    other = lab.new_page()
    other.page.goto(link.url)
    expect(other.page.get_by_role("heading", name="Not paired")).to_be_visible()
    expect(other.page.get_by_text("already used")).to_be_visible()
    assert "pair=" not in other.page.url
    assert len(lab.loop.devices()) == 1


# -- signed out, offline -----------------------------------------------------------------


def test_a_revoked_phone_shows_it_is_signed_out_at_once_and_after_a_reload(lab: Lab) -> None:
    lab.start("worker")
    phone = lab.paired()
    expect(phone.agent("worker")).to_be_visible()
    [device_id] = lab.loop.devices()["id"]

    lab.loop.revoke(device_id)
    signed_out = phone.page.get_by_role("heading", name="Signed out")
    expect(signed_out).to_be_visible()
    expect(phone.needs).to_be_hidden()
    expect(phone.agents).to_be_hidden()
    phone.shot("signed-out")

    phone.page.reload()
    expect(signed_out).to_be_visible()
    expect(phone.needs).to_be_hidden()
    assert lab.loop.devices().empty


def test_a_dropped_connection_shows_offline_then_catches_up_without_duplicates(
    lab: Lab,
) -> None:
    worker, deploy = lab.start("worker"), lab.start("deploy", "api")
    request_id = lab.request_of(deploy)
    phone = lab.paired(init_script=TRACK_SOCKETS)
    expect(phone.agent("worker")).to_contain_text("working")
    expect(phone.request("Deploy api?")).to_be_visible()
    banner = phone.page.get_by_role("alert")
    expect(banner).to_be_hidden()

    phone.context.set_offline(True)  # new connections fail; the open one is dropped:
    phone.page.evaluate("window.__sockets.forEach((socket) => socket.close())")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Offline")
    phone.shot("offline")

    lab.loop.redirect(worker.agent_id, "now on step two")
    lab.recorder.wait_for_sync(
        match("agent.status", agent_id=worker.agent_id, text="now on step two")
    )
    assert lab.loop.approve(request_id) is True
    assert deploy.result(timeout=10) is True
    expect(phone.agent("worker")).to_contain_text("working")  # it cannot have heard yet
    expect(banner).to_be_visible()

    phone.context.set_offline(False)
    expect(banner).to_be_hidden()
    expect(phone.agent("worker")).to_contain_text("now on step two")
    expect(phone.agent("deploy")).to_contain_text("done")
    expect(phone.needs.get_by_role("article")).to_have_count(0)
    expect(phone.page).to_have_title("ConductLoop")
    expect(phone.agents.get_by_role("listitem")).to_have_count(2)
    expect(phone.agent("worker")).to_have_count(1)
    expect(phone.agent("deploy")).to_have_count(1)
