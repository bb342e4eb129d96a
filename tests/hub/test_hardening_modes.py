"""The home is this user's alone: a real ``conductloop serve`` under umask 022 creates it
0700 and every file in it 0600 (the SQLite history, its -wal and -shm included), and
tightens a home left looser by an older version, saying so in its log.
"""

from __future__ import annotations

import http.client
import json
import os
import stat
from pathlib import Path

import conductloop_jupyter as cl
from tests.hub._process_support import CLI, Proc, Procs, free_port, until

FILES = ["events.sqlite3", "events.sqlite3-wal", "events.sqlite3-shm", "hub.json", "hub.secret"]


def serve_under_umask_022(procs: Procs, name: str = "hub") -> tuple[Proc, str]:
    """``conductloop serve`` started by a shell whose umask is 022, as a login shell's is."""
    command = [*CLI, "serve", "--home", str(procs.home), "--port", str(free_port())]
    hub = procs.start(name, ["/bin/sh", "-c", 'umask 022 && exec "$@"', "sh", *command])
    return hub, hub.expect("conductloop hub at", timeout=30)[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pair_a_phone(home: Path) -> None:
    """Open the phone listener through the hub's API and pair one phone: devices.json."""
    link = cl.connect(home=home).phone(host="127.0.0.1")
    code = link.url.split("#pair=", 1)[1]
    host = f"127.0.0.1:{link.port}"
    connection = http.client.HTTPConnection("127.0.0.1", link.port, timeout=10)
    try:
        headers = {"Host": host, "Origin": f"http://{host}", "Content-Type": "application/json"}
        connection.request("POST", "/pair", body=json.dumps({"code": code}), headers=headers)
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_a_new_home_is_0700_and_its_files_0600_under_umask_022(procs: Procs) -> None:
    home = procs.home
    assert not home.exists()
    serve_under_umask_022(procs)
    pair_a_phone(home)
    until(lambda: all((home / f).exists() for f in FILES), "the hub's files")

    assert mode(home) == 0o700
    files = {p.name: mode(p) for p in home.iterdir()}
    assert "devices.json" in files
    assert set(FILES) <= set(files)
    assert {name: m for name, m in files.items() if m & 0o077} == {}, files


def test_an_existing_looser_home_is_tightened_on_start_and_the_log_says_so(
    procs: Procs,
) -> None:
    home = procs.home
    first, _ = serve_under_umask_022(procs, "first")
    pair_a_phone(home)
    first.end()  # a clean stop: the history is committed
    # as an older version (or a hand-made folder) left it
    os.chmod(home, 0o755)
    (home / "events.sqlite3-wal").touch()
    for path in home.iterdir():
        if path.is_file():
            os.chmod(path, 0o644)

    second, _ = serve_under_umask_022(procs, "second")

    assert mode(home) == 0o700
    loose = {p.name: oct(mode(p)) for p in home.iterdir() if p.is_file() and mode(p) & 0o077}
    assert loose == {}
    log = until(lambda: "tightened file modes" in second.stderr() and second.stderr(), "log")
    line = next(line for line in log.splitlines() if "tightened file modes" in line)
    assert "755 -> 700" in line
    assert "events.sqlite3 644 -> 600" in line
    assert "devices.json 644 -> 600" in line
    # and the hub works on its history as before
    assert cl.connect(home=home).agents().empty
