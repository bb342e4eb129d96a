"""The Jupyter server extension: the hub inside the Jupyter server, for every kernel it starts.

Installing the package enables it (``jupyter-config/``). On load it binds the hub's own
loopback listener and exports ``CONDUCTLOOP_HUB`` and ``CONDUCTLOOP_HUB_SECRET``, which
every kernel the server starts afterwards inherits, so a Conductor in a notebook connects
with no set-up. Browsers (the JupyterLab panel) use the same API under the server's
``base_url``, behind Jupyter's own authentication and ``@authorized`` (resource
``conductloop``); the hub's secret never reaches a browser.

Settings (``jupyter server --ConductLoopApp.home=...`` or ``jupyter_server_config.py``):
``home`` (the hub's data folder), ``lost_after`` (seconds before a vanished runtime's agents
are marked lost), ``phone_host`` / ``phone_port`` (for the phone listener).
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import ensure_async
from tornado import web, websocket
from traitlets import Bool, Float, Int, Unicode

from .hub.app import ClientSocketMixin
from .hub.discovery import HUB_ENV, SECRET_ENV, resolve_home
from .hub.endpoints import ROUTES
from .hub.routes import Call, Endpoints, mount
from .hub.server import HubBusy, HubServer

RESOURCE = "conductloop"


class _LabMixin:
    auth_resource = RESOURCE
    current_user: Any

    def who(self) -> str:
        user = self.current_user
        return f"jupyterlab:{getattr(user, 'username', 'user')}"


class LabEndpoint(_LabMixin, Endpoints, APIHandler):
    """An endpoint under the Jupyter server: its login, then ``@authorized``."""

    @web.authenticated
    @authorized
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.dispatch("GET")

    @web.authenticated
    @authorized
    async def post(self, *args: Any, **kwargs: Any) -> None:
        await self.dispatch("POST")

    def call(self) -> Call:
        request = self.request
        return Call(
            self.settings["conductloop_hub"],
            self.who(),
            request.query_arguments,
            request.body,
            request.headers,
            request.remote_ip or "",
        )


class LabSocket(_LabMixin, ClientSocketMixin, JupyterHandler, websocket.WebSocketHandler):
    async def prepare(self) -> None:  # type: ignore[override]
        # an API socket: refuse with 403 instead of redirecting to the login page
        await JupyterHandler.prepare(self, _redirect_to_login=False)

    async def pre_get(self) -> None:
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "execute", RESOURCE)
        )
        if not allowed:
            raise web.HTTPError(403)

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.pre_get()
        await websocket.WebSocketHandler.get(self, *args, **kwargs)


class ConductLoopApp(ExtensionApp):
    """ConductLoop's hub, hosted by the Jupyter server."""

    name = "conductloop_jupyter"
    home = Unicode("", config=True, help="The hub's data folder (default: $CONDUCTLOOP_HOME).")
    lost_after = Float(3.0, config=True, help="Seconds before a vanished runtime is lost.")
    phone = Bool(False, config=True, help="Open the phone listener when the server starts.")
    phone_host = Unicode("", config=True, help="Address the phone listener binds (LAN).")
    phone_port = Int(0, config=True, help="Port of the phone listener (0: any free port).")

    hub_server: HubServer | None = None

    def initialize_settings(self) -> None:
        self.hub_server = HubServer(
            resolve_home(self.home or None), lost_after=self.lost_after, kind="jupyter"
        )
        try:
            address = self.hub_server.bind()
        except HubBusy as busy:
            self.log.warning("ConductLoop: %s; this server's kernels will use that hub", busy)
            self.hub_server = None
            return
        # kernels started from now on inherit these and connect with no set-up
        os.environ[HUB_ENV] = address.url
        os.environ[SECRET_ENV] = address.secret
        self.log.info(
            "ConductLoop hub listening at %s (home %s)", address.url, self.hub_server.home
        )
        for pid in self.hub_server.took_over_from:
            self.log.info("ConductLoop took the home over from the embedded hub of pid %d", pid)

    def initialize_handlers(self) -> None:
        self.handlers.extend(
            [*mount(ROUTES, "jupyter", LabEndpoint), ("/conductloop/api/ws", LabSocket)]
        )

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.hub_server is None:
            return
        await self.hub_server.start()
        hub = self.hub_server.hub
        serverapp.web_app.settings["conductloop_hub"] = hub
        if self.phone and hub is not None and hub.phone is not None:
            await hub.phone.start(self.phone_host or None, self.phone_port, tls=False)
            self.log.info(
                "ConductLoop phone page at %s (pair with loop.phone())", hub.phone.base_url
            )

    async def stop_extension(self) -> None:
        if self.hub_server is not None:
            await self.hub_server.stop()


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "conductloop_jupyter.serverext", "app": ConductLoopApp}]
