"""A pairing QR code in a real kernel does not outlive its use.

The kernel shows ``loop.phone()`` or ``%phone``; the test reads the QR code from the
cell's output with zxing-cpp and claims its code over HTTP, as a phone does. The kernel
must then replace the QR code in that same output (an ``update_display_data`` for its
``display_id``) with who paired; an unused code's QR code is replaced once it expires.
The last output of each then holds no pairing secret, so a saved notebook keeps none.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import re
from typing import TYPE_CHECKING, Any

import pytest
import zxingcpp
from PIL import Image

if TYPE_CHECKING:
    from tests.notebook.conftest import Kernel, KernelFactory

Message = dict[str, Any]
#: ``loop.phone()`` asks the hub and waits for its answer, as any synchronous call in a cell
#: does; the kernel's guard (``SETUP``) refuses every blocking call of ours on the kernel's
#: loop, so the cells make that call on a thread and show the link on the loop
LINK = "link = await asyncio.to_thread"

pytestmark = pytest.mark.only_our_code_guarded  # jupyter_client blocks on the test's loop


def outputs(k: Kernel, display_id: str) -> list[Message]:
    """Every display and update of the output named ``display_id``, in order."""
    return [
        m
        for m in k.iopub
        if m["msg_type"] in ("display_data", "update_display_data")
        and m["content"].get("transient", {}).get("display_id") == display_id
    ]


async def shown_qr(k: Kernel, since: int) -> tuple[str, str]:
    """The display id of the first QR code shown after iopub message ``since``, and the
    URL its image holds."""

    def found() -> Message | None:
        for m in k.iopub[since:]:
            html = m["content"].get("data", {}).get("text/html", "")
            if m["msg_type"] in ("display_data", "update_display_data") and "<img" in html:
                return m
        return None

    message: Message = await k.wait_for(found, "the pairing QR code")
    png = re.search(
        r"data:image/png;base64,([A-Za-z0-9+/=]+)", message["content"]["data"]["text/html"]
    )
    assert png is not None
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(base64.b64decode(png.group(1)))))
    assert len(decoded) == 1
    return message["content"]["transient"]["display_id"], decoded[0].text


def claim(url: str, name: str) -> Message:
    """POST /pair as the phone page does, with the code from the URL's fragment."""
    page, code = url.split("#pair=", 1)
    host = page.split("//", 1)[1].rstrip("/")
    connection = http.client.HTTPConnection(host, timeout=10)
    try:
        body = json.dumps({"code": code, "name": name})
        connection.request("POST", "/pair", body, {"Host": host, "Origin": f"http://{host}"})
        response = connection.getresponse()
        answer: Message = json.loads(response.read())
        assert response.status == 200, answer
        return answer
    finally:
        connection.close()


async def replaced(k: Kernel, display_id: str, words: str, url: str) -> Message:
    """The update that replaced the QR code by a text saying ``words``; it is the output's
    last, and it holds no secret."""

    def found() -> Message | None:
        for m in outputs(k, display_id):
            text = m["content"]["data"].get("text/plain", "")
            if m["msg_type"] == "update_display_data" and words in text:
                return m
        return None

    update: Message = await k.wait_for(found, f"the QR code replaced by {words!r}")
    assert outputs(k, display_id)[-1] is update
    assert "<img" not in update["content"]["data"]["text/html"]
    assert url.split("#pair=", 1)[1] not in json.dumps(update["content"])
    return update


async def test_loop_phone_qr_is_replaced_by_who_paired_and_an_unused_one_when_it_expires(
    kernel: KernelFactory,
) -> None:
    async with kernel(hub=True) as k:
        await k.run("import conductloop_jupyter as cl\nloop = cl.Conductor(name='qr')")
        since = len(k.iopub)
        await k.run(f"{LINK}(loop.phone, host='127.0.0.1', ttl=10)\nlink")  # never claimed
        unused, unused_url = await shown_qr(k, since)
        since = len(k.iopub)
        await k.run(f"{LINK}(loop.phone, host='127.0.0.1')\nlink")
        used, url = await shown_qr(k, since)
        assert used != unused

        device = (await asyncio.to_thread(claim, url, "Test Pixel"))["device"]
        update = await replaced(k, used, "Paired with Test Pixel", url)
        assert device["id"] in update["content"]["data"]["text/plain"]
        await replaced(k, unused, "expired", unused_url)  # its 10 s run out meanwhile
        await k.run("loop.close()")


async def test_percent_phone_replaces_its_placeholder_then_its_qr_code_once_used(
    kernel: KernelFactory,
) -> None:
    async with kernel(hub=True) as k:
        await k.run("%load_ext conductloop_jupyter")
        await k.run("import conductloop_jupyter as cl\nloop = cl.Conductor(name='qr')")
        since = len(k.iopub)
        await k.run("%phone --host 127.0.0.1")
        display_id, url = await shown_qr(k, since)
        first = outputs(k, display_id)[0]["content"]["data"]["text/plain"]
        assert "Opening the hub's phone listener" in first  # the placeholder, then the QR

        await asyncio.to_thread(claim, url, "Kitchen tablet")
        await replaced(k, display_id, "Paired with Kitchen tablet", url)
        await k.run("loop.close()")
