"""A real Jupyter server with the ConductLoop extension, started on the test's own loop.

pytest-jupyter's fixtures build the server on a loop of their own (``jp_asyncio_loop``)
and run tests on it with their own ``pytest_pyfunc_call``; here every ``async def`` test
runs on a fresh loop created by the runner in ``tests/conftest.py``. So the server is
started *inside* the test: ``async with jupyter() as server:``.

Start-up follows ``jupyter server``: ``ServerApp.initialize()`` runs where no event loop
is running (as it does before ``start_ioloop``; a worker thread whose current loop is the
test's loop, so tornado's ``IOLoop.current()`` is the test's loop), then the HTTP server
is added on the loop and the extensions are started, as ``ServerApp._post_start`` does.
Token authentication is on, ``allow_unauthenticated_access`` is off, kernels are real
IPython kernels started by the server.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jupyter_core.paths
import pytest
from blockbuster import blockbuster_ctx
from jupyter_server.serverapp import ServerApp
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.websocket import WebSocketClientConnection, websocket_connect
from traitlets.config import Config

from conductloop_jupyter.hub.discovery import HOME_ENV, HUB_ENV, SECRET_ENV

BASE_URL = "/jp-base/"
EXTENSION = "conductloop_jupyter.serverext"


@pytest.fixture(autouse=True)
def _no_blocking_on_event_loops() -> Iterator[None]:
    """blockbuster, scoped to this project's code.

    Overrides the guard of ``tests/conftest.py`` for these tests: the Jupyter server runs on
    the test's loop and does blocking file and process I/O there by its own design (kernel
    connection files, ``Popen``, its runtime files), which is not this project's to fix.
    A blocking call with any ``conductloop_jupyter`` frame on the stack of an event-loop
    thread (the extension's handlers, start and stop, the hub) still raises.
    """
    with blockbuster_ctx("conductloop_jupyter"):
        yield


@dataclass
class Response:
    code: int
    body: bytes
    headers: Any

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RunningServer:
    """A started ``ServerApp`` and clients for it and for its hub listener."""

    app: ServerApp
    port: int
    token: str
    base_url: str
    home: Path
    http: AsyncHTTPClient
    bodies: list[bytes] = field(default_factory=list)  # every body the server sent us
    cookies: dict[str, str] = field(default_factory=dict)

    def url(self, path: str, params: dict[str, Any] | None = None, scheme: str = "http") -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{scheme}://127.0.0.1:{self.port}{self.base_url}{path.lstrip('/')}{query}"

    def _headers(self, token: bool, cookies: bool, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if token:
            headers.setdefault("Authorization", f"token {self.token}")
        if cookies and self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

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
        """A request to the Jupyter server (token auth unless ``token=False``); never raises
        for an HTTP error status and never follows a redirect."""
        data = body if body is None or isinstance(body, (str, bytes)) else json.dumps(body)
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        request = HTTPRequest(
            self.url(path, params),
            method=method,
            body=data,
            headers=self._headers(token, cookies, headers),
            follow_redirects=False,
            request_timeout=30,
            allow_nonstandard_methods=True,
        )
        response = await self.http.fetch(request, raise_error=False)
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
        """A WebSocket to the Jupyter server; a refused handshake raises ``HTTPClientError``."""
        request = HTTPRequest(
            self.url(path, scheme="ws"),
            headers=self._headers(token, False, headers),
            connect_timeout=30,
            request_timeout=30,
        )
        return await websocket_connect(request)

    async def hub_fetch(self, url: str, authorization: str | None) -> HTTPResponse:
        """A request straight to a hub listener with the given ``Authorization`` header."""
        headers = {"Authorization": authorization} if authorization is not None else {}
        request = HTTPRequest(url, headers=headers, request_timeout=30)
        return await self.http.fetch(request, raise_error=False)


def _server_config(token: str, root: Path, hub_home: Path) -> Config:
    config = Config()
    config.ServerApp.jpserver_extensions = {EXTENSION: True}
    config.ServerApp.allow_unauthenticated_access = False
    config.ServerApp.reraise_server_extension_failures = True
    config.ServerApp.root_dir = str(root)
    config.ServerApp.open_browser = False
    config.ServerApp.allow_root = True
    config.IdentityProvider.token = token
    config.NotebookNotary.db_file = ":memory:"
    config.ConductLoopApp.home = str(hub_home)
    return config


def _bind_loopback() -> tuple[list[socket.socket], int]:
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    return sockets, sockets[0].getsockname()[1]


def _initialize(app: ServerApp, loop: asyncio.AbstractEventLoop) -> None:
    """What ``jupyter server`` does before its loop runs (no loop runs in this thread)."""
    asyncio.set_event_loop(loop)  # tornado's IOLoop.current() here is the test's loop
    try:
        app.initialize(argv=[], find_extensions=False, new_httpserver=False)
        app.start_app()  # logs, writes the server's runtime files; no loop needed
    finally:
        asyncio.set_event_loop(None)


@pytest.fixture
def jupyter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], AbstractAsyncContextManager[RunningServer]]:
    """``async with jupyter() as server``: a real Jupyter server with the extension on.

    The environment is the test's own: the extension's ``CONDUCTLOOP_HUB`` and
    ``CONDUCTLOOP_HUB_SECRET`` are undone afterwards, and Jupyter's and IPython's folders
    are temporary, so no user or system configuration takes part.
    """
    for name in (HUB_ENV, SECRET_ENV):
        monkeypatch.setenv(name, "")  # recorded, so the extension's value is undone after
        monkeypatch.delenv(name)
    folders = {n: tmp_path / n for n in ("home", "config", "data", "runtime", "ipython", "root")}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.setenv("HOME", str(folders["home"]))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(folders["config"]))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(folders["data"]))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(folders["runtime"]))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(folders["ipython"]))
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "runtime-home"))  # never the user's own
    for name in (
        "SYSTEM_JUPYTER_PATH",
        "ENV_JUPYTER_PATH",
        "SYSTEM_CONFIG_PATH",
        "ENV_CONFIG_PATH",
    ):
        monkeypatch.setattr(jupyter_core.paths, name, [])
    hub_home = tmp_path / "hub-home"

    @asynccontextmanager
    async def serve() -> AsyncIterator[RunningServer]:
        token = secrets.token_hex(24)
        ServerApp.clear_instance()
        config = _server_config(token, folders["root"], hub_home)
        sockets, port = await asyncio.to_thread(_bind_loopback)
        app = ServerApp.instance(config=config, port=port, port_retries=0, base_url=BASE_URL)
        app.init_signal = lambda: None  # type: ignore[method-assign]  # main thread only
        loop = asyncio.get_running_loop()
        http_server: HTTPServer | None = None
        client = AsyncHTTPClient(force_instance=True)
        try:
            await asyncio.to_thread(_initialize, app, loop)
            http_server = HTTPServer(app.web_app, xheaders=False)
            http_server.add_sockets(sockets)
            # what ServerApp._post_start does once the loop runs (errors are re-raised)
            await app.extension_manager.start_all_extensions()  # type: ignore[no-untyped-call]
            yield RunningServer(app, port, token, BASE_URL, hub_home, client)
        finally:
            client.close()
            if http_server is not None:
                http_server.stop()
                await asyncio.wait_for(http_server.close_all_connections(), 30)
            else:
                for sock in sockets:
                    sock.close()
            await app._cleanup()  # extensions, kernels, kernel websockets, runtime files
            if getattr(app, "kernel_manager", None) is not None:
                app.kernel_manager.context.destroy()
            ServerApp.clear_instance()

    return serve
