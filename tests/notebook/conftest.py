"""A real IPython kernel, driven as a front end drives it, for the dashboard's tests.

``Kernel`` reads every iopub message (comm messages carry the time the kernel sent them),
keeps the state of every widget model as the front end would, and sends ``comm_msg`` on
the shell channel exactly as the JupyterLab widget manager does for a click or an edit.
``SETUP`` runs first in every kernel: it records any error the kernel's loop reports and
turns blockbuster on for this project's code, so a blocking call on the kernel's loop
fails the test.

``only_our_code_guarded``: the mark for a module whose tests start kernels. In the test
process, jupyter_client writes connection files and starts the kernel's process on the
test's loop by design, so there blockbuster guards this project's code only (as in
tests/server); every other test here keeps the guard of tests/conftest.py. ``kernel`` is
not autouse.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from blockbuster import blockbuster_ctx
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

from tests._guard import allow_first_imports

ROOT = Path(__file__).resolve().parents[2]
SCOPED = "only_our_code_guarded"  # the mark: blockbuster for this project's code only
CELL_TIMEOUT = 90.0  # the first cell imports pandas, ipywidgets and the package
WAIT_TIMEOUT = 30.0

SETUP = """
import asyncio
loop_errors = []
asyncio.get_running_loop().set_exception_handler(
    lambda _loop, context: loop_errors.append(repr(context.get("exception") or context))
)
import conductloop_jupyter as cl
from blockbuster import blockbuster_ctx
guard = blockbuster_ctx("conductloop_jupyter")
for function in guard.__enter__().functions.values():
    # display() waits for ipykernel's I/O thread to flush stdout: the kernel's own design
    function.can_block_in("ipykernel/iostream.py", "flush")
    # a module's first import (tornado with the hub link, ipywidgets with %load_ext) runs
    # its top-level code once, in the cell that first needs it: not the code guarded here
    function.can_block_in(
        "<frozen importlib._bootstrap>", {"_find_and_load", "_lock_unlock_module"}
    )
from pathlib import Path
from blockbuster import BlockingError
from conductloop_jupyter.hub.discovery import read_hub_file
Path("guard-check").mkdir()
Path("guard-check/hub.json").write_text("{}")
try:
    read_hub_file(Path("guard-check"))  # our code reading a file on the loop: refused
except BlockingError:
    pass
else:
    raise AssertionError("blockbuster does not guard the kernel's loop")
"""


# -- the guard against blocking calls -----------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{SCOPED}: blockbuster guards only this project's code (kernel tests)"
    )


@pytest.fixture(autouse=True)
def _no_blocking_on_event_loops(request: pytest.FixtureRequest) -> Iterator[None]:
    """Overrides the guard of tests/conftest.py in this folder: the same, everything on any
    event loop's thread, unless the test's module is marked ``only_our_code_guarded``.
    Inside each kernel, ``SETUP`` turns the scoped guard on whatever the mark."""
    scoped = request.node.get_closest_marker(SCOPED) is not None
    with blockbuster_ctx("conductloop_jupyter" if scoped else None) as blockbuster:
        allow_first_imports(blockbuster)
        yield


# -- a kernel, and the front end's side of its comms ---------------------------------------


@dataclass
class Execution:
    reply: dict[str, Any]
    stdout: str


@dataclass
class Kernel:
    manager: AsyncKernelManager
    client: AsyncKernelClient
    iopub: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # comm id -> state
    closed: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def read_iopub(self) -> None:
        while True:
            message = await self.client.get_iopub_msg()
            self.iopub.append(message)
            kind, content = message["msg_type"], message["content"]
            if kind == "comm_open":
                self.models[content["comm_id"]] = dict(content["data"]["state"])
            elif kind == "comm_msg" and content["data"].get("method") in ("update", "echo_update"):
                self.models.setdefault(content["comm_id"], {}).update(content["data"]["state"])
            elif kind == "comm_close":
                self.closed.add(content["comm_id"])
            self.arrived.set()

    async def wait_for(self, check: Callable[[], Any], what: str) -> Any:
        """``check()`` after each message from the kernel, until it is truthy."""
        deadline = asyncio.get_running_loop().time() + WAIT_TIMEOUT
        while True:
            self.arrived.clear()  # before looking, so that no message slips past unseen
            if found := check():
                return found
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {WAIT_TIMEOUT:g} s waiting for {what}")
            with suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def execute(self, code: str, timeout: float = CELL_TIMEOUT) -> Execution:
        msg_id = self.client.execute(code)
        reply = await self.client.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = await self.client.get_shell_msg(timeout=timeout)

        def idle() -> bool:
            return any(
                m["msg_type"] == "status"
                and m["parent_header"].get("msg_id") == msg_id
                and m["content"]["execution_state"] == "idle"
                for m in self.iopub
            )

        await self.wait_for(idle, f"the kernel to finish {code[:60]!r}")
        stdout = "".join(
            m["content"]["text"]
            for m in self.iopub
            if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id
        )
        return Execution(reply["content"], stdout)

    async def run(self, code: str) -> str:
        """Run a cell that must succeed; return what it printed."""
        done = await self.execute(code)
        assert done.reply["status"] == "ok", "".join(done.reply.get("traceback", []))
        return done.stdout

    def widget(self, model: str, **state: Any) -> str | None:
        """The comm id of the open widget of this model whose state has these values."""
        for comm_id, found in self.models.items():
            if comm_id in self.closed or found.get("_model_name") != model:
                continue
            if all(found.get(k) == v for k, v in state.items()):
                return comm_id
        return None

    async def find(self, model: str, **state: Any) -> str:
        found: str = await self.wait_for(lambda: self.widget(model, **state), f"{model} {state}")
        return found

    def send_comm(self, comm_id: str, data: dict[str, Any]) -> None:
        """A ``comm_msg`` on the shell channel, as the JupyterLab widget manager sends it."""
        content = {"comm_id": comm_id, "data": data}
        self.client.shell_channel.send(self.client.session.msg("comm_msg", content))

    def click(self, comm_id: str) -> None:
        self.send_comm(comm_id, {"method": "custom", "content": {"event": "click"}})

    def set_state(self, comm_id: str, **state: Any) -> None:
        self.send_comm(comm_id, {"method": "update", "state": state, "buffer_paths": []})

    def html_containing(self, fragment: str) -> str | None:
        for comm_id, found in self.models.items():
            value = found.get("value")
            is_html = found.get("_model_name") == "HTMLModel" and isinstance(value, str)
            if is_html and fragment in value and comm_id not in self.closed:
                return value
        return None

    def comm_messages(self, since: int = 0) -> list[tuple[float, dict[str, Any]]]:
        """Messages the widgets sent, with the time the kernel sent each."""
        return [
            (m["header"]["date"].timestamp(), m)
            for m in self.iopub[since:]
            if m["msg_type"] in ("comm_open", "comm_msg", "comm_close")
        ]

    def tracebacks(self) -> list[str]:
        return [
            "\n".join(m["content"].get("traceback", []))
            for m in self.iopub
            if m["msg_type"] == "error"
            or (m["msg_type"] == "stream" and "Traceback" in m["content"].get("text", ""))
        ]

    async def check_clean(self) -> None:
        """No traceback on iopub and no error reported by the kernel's loop."""
        assert await self.run("print(loop_errors)") == "[]\n"
        assert self.tracebacks() == []


@asynccontextmanager
async def _kernel(tmp_path: Path, hub: bool) -> AsyncIterator[Kernel]:
    folders = {name: tmp_path / name for name in ("home", "ipython", "jupyter", "runtime")}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "CONDUCTLOOP_HOME": str(folders["home"]),
        "IPYTHONDIR": str(folders["ipython"]),
        "JUPYTER_CONFIG_DIR": str(folders["jupyter"]),
        "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("CONDUCTLOOP_HUB_SECRET", None)
    if hub:
        env.pop("CONDUCTLOOP_HUB", None)  # a Conductor starts an embedded hub in the kernel
    else:
        env["CONDUCTLOOP_HUB"] = "off"
    manager = AsyncKernelManager(kernel_name="python3")
    manager.connection_file = str(folders["runtime"] / f"kernel-{uuid.uuid4().hex}.json")
    await manager.start_kernel(env=env, cwd=str(tmp_path))
    client = manager.client()
    client.start_channels(hb=False)
    session = Kernel(manager, client)
    reader: asyncio.Future[None] | None = None
    try:
        await client.wait_for_ready(timeout=CELL_TIMEOUT)  # reads iopub itself: then ours
        reader = asyncio.ensure_future(session.read_iopub())
        await session.run(SETUP)
        yield session
        await session.check_clean()
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


KernelFactory = Callable[..., AbstractAsyncContextManager[Kernel]]


@pytest.fixture
def kernel(tmp_path: Path) -> KernelFactory:
    """``async with kernel() as k``: a fresh IPython kernel with folders of its own, that
    has run ``SETUP``. ``kernel(hub=True)``: no ``$CONDUCTLOOP_HUB``, so the kernel's first
    Conductor starts an embedded hub (in ``$CONDUCTLOOP_HOME``, a temporary folder).
    Shut down in the end, after checking that the kernel reported no error."""

    def start(*, hub: bool = False) -> AbstractAsyncContextManager[Kernel]:
        return _kernel(tmp_path, hub)

    return start
