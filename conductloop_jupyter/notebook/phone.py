"""``PhoneLink``: what ``loop.phone()`` returns — the pairing URL and its QR code.

Shown in a notebook, the QR code does not outlive its use: a worker thread waits on the
hub (a long poll) until the code is claimed or expires, then replaces the QR code in the
cell's output with who paired, or with "expired". A saved notebook then keeps no live
pairing secret.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..core.errors import ConductLoopError, UsageError

if TYPE_CHECKING:  # qrcode (and PIL with it) load with the first QR code drawn
    import qrcode


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
    #: the code's public id on the hub (not a secret)
    code_id: str = ""
    #: asks the hub where the code stands, waiting up to the given seconds
    status: Callable[[float], dict[str, Any]] | None = field(
        default=None, repr=False, compare=False
    )

    def __repr__(self) -> str:  # the secret stays out of reprs and logs
        return f"PhoneLink({self.page_url!r}, expires {self._expiry()})"

    @property
    def page_url(self) -> str:
        """The phone page's address, without the secret."""
        return self.url.split("#", 1)[0]

    def _expiry(self) -> str:
        return _clock(self.expires)

    def _qr(self) -> qrcode.QRCode[Any]:
        import qrcode

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
        import qrcode.image.svg

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

    # -- after the scan ----------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until a phone uses the code, or it expires, or ``timeout`` seconds pass.

        Returns ``{"state": ..., "device": ...}``: ``state`` is ``paired`` (``device`` is
        ``{"id", "name"}``), ``expired``, ``waiting`` (``timeout`` passed first) or
        ``unavailable`` (the hub stopped, so the code no longer works; ``error`` says why).

        >>> loop.phone().wait()["state"]   # in a script: block until the phone pairs
        'paired'
        """
        if self.status is None:
            raise UsageError("this link was not made by a hub, so it cannot be followed")
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            try:
                found = self.status(min(left, _LONG_POLL))
            except ConductLoopError as error:  # the hub is gone, and its codes with it
                return {"state": "unavailable", "device": None, "error": str(error)}
            if found["state"] != "waiting" or left <= 0:
                return found

    def show(self, handle: DisplayHandle | None = None) -> None:
        """Show the QR code in the cell's output (in place of ``handle``'s output, if given).

        In a kernel, the QR code is replaced once the code is used or has expired.
        """
        # imported here: a script that never shows a QR code does not pay for IPython
        from IPython.core.getipython import get_ipython
        from IPython.display import display

        bundle = {"text/plain": repr(self), "text/html": self._repr_html_()}
        if handle is None:
            handle = display(bundle, raw=True, display_id=True)  # type: ignore[no-untyped-call, unused-ignore]
        else:
            handle.update(bundle, raw=True)
        in_kernel = getattr(get_ipython(), "kernel", None) is not None  # type: ignore[no-untyped-call, unused-ignore]
        if handle is not None and self.status is not None and in_kernel:
            threading.Thread(
                target=self._replace_when_used,
                args=(handle,),
                name=f"conductloop-pairing-{self.code_id}",
                daemon=True,  # a kernel shutting down does not wait for a phone
            ).start()

    def _ipython_display_(self) -> None:
        self.show()

    def _replace_when_used(self, handle: DisplayHandle) -> None:
        try:
            outcome = self.wait()
            handle.update(_outcome(outcome), raw=True)
        except Exception:  # nobody joins this thread: a failure goes to the log, not stderr
            log.debug("could not replace a used pairing QR code", exc_info=True)


_LONG_POLL = 50.0  # seconds per request, under the hub's limit of 60
log = logging.getLogger("conductloop.phone")


class DisplayHandle(Protocol):
    """IPython's ``DisplayHandle``: what ``display(..., display_id=True)`` returns."""

    def update(self, obj: Any, **kwargs: Any) -> None: ...


def _clock(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def _outcome(status: dict[str, Any]) -> dict[str, str]:
    """What replaces a QR code once its code is used up, as text and HTML."""
    state = status["state"]
    if state == "paired":
        device = status.get("device") or {}
        name = str(device.get("name") or "a phone")
        text = (
            f"Paired with {name} (device {device.get('id', '?')}). The pairing code is used "
            "up, so its QR code was removed. loop.devices() lists paired phones and "
            "loop.revoke(id) signs one out."
        )
    elif state == "expired":
        text = (
            f"This pairing code expired at {_clock(status['expires'])} without being used, "
            "so its QR code was removed. Run loop.phone() for a new one."
        )
    else:
        text = (
            "The hub stopped, so this pairing code no longer works and its QR code was "
            "removed. Run loop.phone() for a new one."
        )
    return {
        "text/plain": text,
        "text/html": f'<div class="conductloop-phone">{html.escape(text)}</div>',
    }
