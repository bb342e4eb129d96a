"""A real ``jupyter lab`` server in a subprocess, for the dashboard's browser test.

``JupyterLab.start`` runs ``python -m jupyter lab`` as installed: the ConductLoop server
extension (enabled by the package's ``jupyter-config/``) runs the hub inside the server and
exports its address to every kernel the server starts. What the test must not share with
the machine is isolated: the hub's home (``CONDUCTLOOP_HOME``), Jupyter's user config
(lab settings, workspaces) and runtime folders, and IPython's profile. The data path stays
the machine's, where the lab extensions (ipywidgets' widget manager) are installed.

Token authentication is on (``allow_unauthenticated_access`` keeps its default, off): the
page is opened with ``?token=``, as the link a server prints. Readiness is read from the
server's log, which a thread drains into a queue (so the pipe never fills); ``stop`` sends
SIGTERM, on which the server shuts down its kernels and its extensions (the hub), and waits.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

START_TIMEOUT = 60.0  # seconds for the server to print its URL
STOP_TIMEOUT = 30.0  # seconds for it (and its kernels) to exit on SIGTERM
_URL = re.compile(r"(http://127\.0\.0\.1:\d+)/lab\?token=")
_HUB = re.compile(r"ConductLoop hub listening at (http://\S+)")
_EOF = None

# JupyterLab settings for a quiet page: no "news?" toast over the notebook
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


@dataclass
class JupyterLab:
    """A running ``jupyter lab``: its base URL, token, root folder and log."""

    process: subprocess.Popen[str]
    root: Path
    token: str
    url: str = ""
    hub_url: str = ""  # the hub the server extension runs, which its kernels use
    log: list[str] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, base: Path) -> JupyterLab:
        """A server with its folders under ``base``; returns once it printed its URL."""
        root, config = base / "root", base / "config"
        for folder in (root, config, base / "runtime", base / "ipython", base / "home"):
            folder.mkdir(parents=True, exist_ok=True)
        for name, settings in LAB_SETTINGS.items():
            path = config / "lab" / "user-settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTLOOP_")}
        env |= {
            "CONDUCTLOOP_HOME": str(base / "home"),
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
            "IPYTHONDIR": str(base / "ipython"),
            "PYTHONUNBUFFERED": "1",
        }
        token = secrets.token_hex(24)
        command = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",  # the server binds a free port and prints it
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
            "--ServerApp.allow_root=True",  # CI containers run as root
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            env=env,
            cwd=root,
            stdin=subprocess.DEVNULL,  # no tty: SIGINT would not ask to confirm either
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lab = cls(process, root, token)
        lab._reader = threading.Thread(target=lab._read, name="jupyter-lab-log", daemon=True)
        lab._reader.start()
        try:
            lab.url = lab._wait_for_url()
        except BaseException:
            lab.stop()
            raise
        return lab

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(_EOF)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise TimeoutError(
                    f"jupyter lab printed no URL within {START_TIMEOUT} s:\n{self.output()}"
                ) from None
            if line is _EOF:
                raise RuntimeError(f"jupyter lab exited before it was ready:\n{self.output()}")
            self.log.append(line)
            hub = _HUB.search(line)
            if hub:
                self.hub_url = hub.group(1)
            found = _URL.search(line)
            if found:
                return found.group(1)

    def output(self) -> str:
        """Everything the server logged so far (for failure messages)."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not _EOF:
                self.log.append(line)
        return "\n".join(self.log[-80:])

    def page_url(self, path: str) -> str:
        return f"{self.url}/{path}?token={self.token}"

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        """A notebook of code cells in the server's root, for the Python 3 kernel."""
        notebook = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "cells": [
                {
                    "cell_type": "code",
                    "id": f"cell-{number}",
                    "metadata": {},
                    "execution_count": None,
                    "outputs": [],
                    "source": source,
                }
                for number, source in enumerate(cells)
            ],
        }
        path = self.root / name
        path.write_text(json.dumps(notebook, indent=1))
        return path

    def stop(self) -> list[str]:
        """SIGTERM, then wait for the server, its kernels and the log reader to end.

        Returns the names of processes that outlived it (killed then), for the test to fail on.
        """
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        outlived = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            outlived.append(f"jupyter lab (pid {self.process.pid})")
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        _gone, alive = psutil.wait_procs(children, timeout=STOP_TIMEOUT)
        for process in alive:
            outlived.append(f"{process.name()} (pid {process.pid})")
            process.kill()
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)  # the pipe closes with the server
        if self.process.stdout is not None:
            self.process.stdout.close()
        return outlived
