"""``PhoneLink``: what ``loop.phone()`` returns — the pairing URL and its QR code."""

from __future__ import annotations

import base64
import datetime
import html
import io
from dataclasses import dataclass
from typing import Any

import qrcode
import qrcode.image.svg


@dataclass(frozen=True)
class PhoneLink:
    """A one-time pairing link for a phone. Scan ``qr_png()`` (or open ``url``) on the phone.

    ``url`` carries the one-time secret in its fragment (``#pair=...``), which a browser
    never sends to a server. It works once, until ``expires``. ``fingerprint`` is the
    certificate's SHA-256 when the listener uses TLS: check it on the phone. ``note`` says
    when only loopback is possible.
    """

    url: str
    expires: float
    host: str
    port: int
    tls: bool = False
    fingerprint: str | None = None
    note: str = ""

    def __repr__(self) -> str:  # the secret stays out of reprs and logs
        return f"PhoneLink({self.page_url!r}, expires {self._expiry()})"

    @property
    def page_url(self) -> str:
        """The phone page's address, without the secret."""
        return self.url.split("#", 1)[0]

    def _expiry(self) -> str:
        when = datetime.datetime.fromtimestamp(self.expires)
        return when.strftime("%H:%M:%S")

    def _qr(self) -> qrcode.QRCode[Any]:
        code: qrcode.QRCode[Any] = qrcode.QRCode(
            error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=3
        )
        code.add_data(self.url)
        code.make(fit=True)
        return code

    def qr_png(self) -> bytes:
        """The QR code as PNG bytes."""
        buffer = io.BytesIO()
        self._qr().make_image().save(buffer)
        return buffer.getvalue()

    def qr_svg(self) -> str:
        """The QR code as SVG text."""
        buffer = io.BytesIO()
        self._qr().make_image(image_factory=qrcode.image.svg.SvgPathImage).save(buffer)
        return buffer.getvalue().decode()

    def qr_text(self) -> str:
        """The QR code drawn with block characters, for a terminal."""
        buffer = io.StringIO()
        self._qr().print_ascii(out=buffer, invert=True)
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        png = base64.b64encode(self.qr_png()).decode()
        extra = ""
        if self.fingerprint:
            extra += f"<div>certificate SHA-256: <code>{html.escape(self.fingerprint)}</code></div>"
        if self.note:
            extra += f"<div><strong>Note:</strong> {html.escape(self.note)}</div>"
        return (
            '<div class="conductloop-phone">'
            f'<img alt="pairing QR code" width="220" src="data:image/png;base64,{png}">'
            f"<div>Scan with your phone to steer your agents from "
            f"<code>{html.escape(self.page_url)}</code>. One use, until {self._expiry()}.</div>"
            f"{extra}</div>"
        )
