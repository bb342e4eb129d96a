"""A real Jupyter server with the ConductLoop extension, from pytest-jupyter's fixtures.

``jp_serverapp`` is a ``ServerApp`` configured by ``jp_server_config`` (the extension on,
token authentication, ``allow_unauthenticated_access`` off), ``jp_fetch`` and ``jp_ws_fetch``
speak to it with the token, and kernels are real IPython kernels started by the server.
The server lives on ``jp_asyncio_loop``; the runner in ``tests/conftest.py`` runs these
tests on that loop, with its checks (tasks left by the test, errors the loop reported).

pytest-jupyter's plugin module is not registered for the suite (its ``pytest_pyfunc_call``
would take over every ``async def`` test, and its autouse ``jp_asyncio_loop`` and
``jp_server_cleanup`` would join every test); its fixtures are imported here, so they
exist for these tests only, autouse ones included.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from jupyter_server.serverapp import ServerApp
from pytest_jupyter import jupyter_server as plugin
from pytest_jupyter.pytest_tornasync import AsyncHTTPServerClient
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect
from traitlets.config import Config

from conductloop_jupyter.hub.discovery import HOME_ENV, HUB_ENV, SECRET_ENV
from tests._guard import allow_first_imports
from tests._leaks import fail_on_new_tasks

EXTENSION = "conductloop_jupyter.serverext"

# pytest-jupyter's fixtures that jp_serverapp, jp_fetch and jp_ws_fetch need, for this folder
# only (two of them autouse: jp_asyncio_loop, jp_server_cleanup); its server plugin module
# holds them all (its own, and those of its jupyter_core and pytest_tornasync modules)
echo_kernel_spec = plugin.echo_kernel_spec
jp_asyncio_loop = plugin.jp_asyncio_loop
jp_config_dir = plugin.jp_config_dir
jp_data_dir = plugin.jp_data_dir
jp_env_config_path = plugin.jp_env_config_path
jp_env_jupyter_path = plugin.jp_env_jupyter_path
jp_environ = plugin.jp_environ
jp_home_dir = plugin.jp_home_dir
jp_kernel_dir = plugin.jp_kernel_dir
jp_runtime_dir = plugin.jp_runtime_dir
jp_system_config_path = plugin.jp_system_config_path
jp_system_jupyter_path = plugin.jp_system_jupyter_path
jp_argv = plugin.jp_argv
jp_auth_header = plugin.jp_auth_header
jp_base_url = plugin.jp_base_url
jp_configurable_serverapp = plugin.jp_configurable_serverapp
jp_fetch = plugin.jp_fetch
jp_http_port = plugin.jp_http_port
jp_logging_stream = plugin.jp_logging_stream
jp_nbconvert_templates = plugin.jp_nbconvert_templates
jp_root_dir = plugin.jp_root_dir
jp_server_cleanup = plugin.jp_server_cleanup
jp_web_app = plugin.jp_web_app
jp_ws_fetch = plugin.jp_ws_fetch
http_server = plugin.http_server
http_server_client = plugin.http_server_client
http_server_port = plugin.http_server_port

Fetch = Callable[..., Any]  # jp_fetch / jp_ws_fetch: (*parts, headers=, params=, **kwargs)


@pytest.fixture(autouse=True)
def _no_blocking_on_event_loops() -> Iterator[BlockBuster]:
    """blockbuster, scoped to this project's code.

    Overrides the guard of ``tests/conftest.py`` for these tests: the Jupyter server runs on
    ``jp_asyncio_loop`` and does blocking file and process I/O there by its own design
    (kernel connection files, ``Popen``, its runtime files), which is not this project's to
    fix. A blocking call with any ``conductloop_jupyter`` frame on the stack of an
    event-loop thread (the extension's handlers, start and stop, the hub) still raises.
    """
    with blockbuster_ctx("conductloop_jupyter") as guard:
        yield allow_first_imports(guard)


@pytest.fixture(autouse=True)
def _no_closed_loop_left_current() -> Iterator[None]:
    """``jp_asyncio_loop`` makes its loop this thread's current one, and closes it after the
    test without unsetting it; unset it, so that no later test finds a closed loop there.
    (The autouse fixtures of one conftest are set up in the order of their names: this one
    before ``jp_asyncio_loop``, and so torn down after it.)"""
    yield
    asyncio.set_event_loop(None)


@pytest.fixture
def hub_home(tmp_path: Path) -> Path:
    """The hub's data folder (``ConductLoopApp.home``)."""
    return tmp_path / "hub-home"


@pytest.fixture
def jp_server_config(hub_home: Path) -> Config:
    config = Config()
    # only this extension (pytest-jupyter would add jupyter_server_terminals otherwise)
    config.ServerApp.jpserver_extensions = {EXTENSION: True, "jupyter_server_terminals": False}
    config.ServerApp.allow_unauthenticated_access = False
    config.ServerApp.reraise_server_extension_failures = True
    config.ConductLoopApp.home = str(hub_home)
    return config


@pytest.fixture
def conductloop_environ(jp_environ: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pytest-jupyter's temporary Jupyter folders, and ConductLoop's environment undone after
    the test: the extension exports ``CONDUCTLOOP_HUB`` and ``CONDUCTLOOP_HUB_SECRET``, and
    ``CONDUCTLOOP_HOME`` is never the user's own."""
    for name in (HUB_ENV, SECRET_ENV):
        monkeypatch.setenv(name, "")  # recorded, so the extension's value is undone after
        monkeypatch.delenv(name)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "runtime-home"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))


@pytest.fixture
def jp_serverapp(
    conductloop_environ: None,
    jp_configurable_serverapp: Callable[..., ServerApp],
    jp_server_config: Config,
    jp_argv: list[str],
    jp_asyncio_loop: asyncio.AbstractEventLoop,
    _no_blocking_on_event_loops: BlockBuster,
) -> Iterator[ServerApp]:
    """pytest-jupyter's ``jp_serverapp``, with its extensions started and stopped.

    The server is made as pytest-jupyter's own ``jp_serverapp`` makes it; then the
    extensions are started as ``jupyter server`` starts them once its loop runs
    (``ServerApp._post_start``, a failure re-raised), and stopped first after the test, as
    ``ServerApp._cleanup`` stops them (it runs again in ``jp_server_cleanup``, which would
    only print a ``RuntimeError``; a second stop does nothing). A task begun since the
    extensions started and still pending once they stopped (the hub's, a kernel's
    connection's) fails the test.

    pytest-jupyter runs ``ServerApp.initialize()`` inside a coroutine on its loop, where
    ``jupyter server`` runs it before its loop starts; there the extension binds the hub's
    listener and reads its secret, blocking by design. blockbuster is paused for that call
    only.
    """
    _no_blocking_on_event_loops.deactivate()
    try:
        app = jp_configurable_serverapp(config=jp_server_config, argv=jp_argv)
    finally:
        _no_blocking_on_event_loops.activate()
    before = asyncio.all_tasks(jp_asyncio_loop)
    manager = app.extension_manager
    jp_asyncio_loop.run_until_complete(manager.start_all_extensions())  # type: ignore[no-untyped-call]
    yield app
    # by now the test has ended and the HTTP server has closed its connections
    jp_asyncio_loop.run_until_complete(manager.stop_all_extensions())  # type: ignore[no-untyped-call]
    fail_on_new_tasks(jp_asyncio_loop, before, "still running after the extensions stopped")


# -- a client for the tests, on jp_fetch and jp_ws_fetch ------------------------------------


@dataclass
class Response:
    code: int
    body: bytes
    headers: Any

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Jupyter:
    """``jp_fetch`` / ``jp_ws_fetch`` that never raise for an HTTP status, never follow a
    redirect, and keep every body the server sent (and its cookies, for a browser session).

    With ``token=False`` a request carries no ``Authorization`` header of the token: then it
    goes through ``http_server_client`` (the client under ``jp_fetch``, which always adds the
    token unless given another ``Authorization``), or, for a WebSocket, straight to the
    server's port.
    """

    app: ServerApp
    jp_fetch: Fetch
    jp_ws_fetch: Fetch
    client: AsyncHTTPServerClient
    base_url: str
    port: int
    home: Path
    bodies: list[bytes] = field(default_factory=list)  # every body the server sent us
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str:
        token = self.app.identity_provider.token
        assert token
        return token

    async def fetch(
        self,
        path: str,
        *,
        method: str = "GET",
        body: Any = None,
        params: dict[str, Any] | None = None,
        token: bool = True,
        cookies: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Response:
        data = body if body is None or isinstance(body, (str, bytes)) else json.dumps(body)
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        headers = dict(headers or {})
        if cookies and self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        options: dict[str, Any] = {
            "method": method,
            "body": data,
            "headers": headers,
            "follow_redirects": False,
            "allow_nonstandard_methods": True,
            "raise_error": False,
        }
        if token or "Authorization" in headers:
            response = await self.jp_fetch(path, params=params, **options)
        else:  # what jp_fetch does, without the token
            query = f"?{urlencode(params)}" if params else ""
            response = await self.client.fetch(f"{self.base_url}{path}{query}", **options)
        if response.code == 599:
            raise response.error or RuntimeError("request failed")
        self.bodies.append(response.body or b"")
        for value in response.headers.get_list("Set-Cookie"):
            for name, morsel in SimpleCookie(value).items():
                self.cookies[name] = morsel.value
        return Response(response.code, response.body or b"", response.headers)

    async def ws(
        self, path: str, *, token: bool = True, headers: dict[str, str] | None = None
    ) -> WebSocketClientConnection:
        """A WebSocket to the server; a refused handshake raises ``HTTPClientError``."""
        headers = dict(headers or {})
        if token or "Authorization" in headers:
            connection: WebSocketClientConnection = await self.jp_ws_fetch(path, headers=headers)
            return connection
        url = f"ws://127.0.0.1:{self.port}{self.base_url}{path}"
        return await websocket_connect(HTTPRequest(url, headers=headers, connect_timeout=30))

    async def hub_fetch(self, url: str, authorization: str | None) -> HTTPResponse:
        """A request straight to a hub listener with the given ``Authorization`` header."""
        headers = {"Authorization": authorization} if authorization is not None else {}
        client = AsyncHTTPClient(force_instance=True)
        try:
            request = HTTPRequest(url, headers=headers, request_timeout=30)
            return await client.fetch(request, raise_error=False)
        finally:
            client.close()


@pytest.fixture
def server(
    jp_serverapp: ServerApp,
    jp_fetch: Fetch,
    jp_ws_fetch: Fetch,
    http_server_client: AsyncHTTPServerClient,
    jp_base_url: str,
    jp_http_port: int,
    hub_home: Path,
) -> Jupyter:
    """The started server and a client for it (see ``Jupyter``)."""
    return Jupyter(
        jp_serverapp,
        jp_fetch,
        jp_ws_fetch,
        http_server_client,
        jp_base_url,
        jp_http_port,
        hub_home,
    )
