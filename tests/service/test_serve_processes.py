"""`autosync serve --processes N`: N server processes on one port, each answering with its own pool."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.ports import free_port
from harness.service import Service, make_config, worker_env
from tests.support.cli import AUTOSYNC
from tests.support.users import users


def _children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_serve_runs_the_requested_processes_and_stops_them(database_url: str) -> None:
    config = make_config(database_url)
    port = free_port()
    env = {**worker_env(config), "AUTOSYNC_PORT": str(port)}
    server = subprocess.Popen([*AUTOSYNC, "serve", "--processes", "2"], env=env, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, timeout=5) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                assert time.monotonic() < deadline, "autosync serve --processes 2 did not become ready"
                time.sleep(0.2)
            # uvicorn's supervisor and its two server processes (a multiprocessing helper may be there too).
            workers = [c for c in _children(server.pid) if b"multiprocessing.spawn" in _cmdline(c)]
            assert len(workers) == 2
            with users(database_url) as [user]:
                service = Service(url=url, config=config, client=client)
                for _ in range(6):  # connections are spread over both processes: every one answers
                    response = client.get("/api/settings/load-auto-sync", headers=service.as_user(user))
                    assert response.status_code == 200
                    assert response.json()["settings"] == {"enabled": False, "interval_minutes": 60}
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
    assert server.returncode == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_serve_refuses_a_process_count_below_one() -> None:
    result = subprocess.run(
        [*AUTOSYNC, "serve", "--processes", "0"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert result.returncode == 2
    assert "--processes" in result.stderr


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_server_process_freezes_its_startup_heap(database_url: str) -> None:
    """Each `serve` process builds its app with `app_from_environment`; full collections then skip it."""
    probe = (
        "import gc; from sync_function.main import app_from_environment; "
        "before = gc.get_freeze_count(); app_from_environment(); print(before, gc.get_freeze_count())"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=worker_env(make_config(database_url)),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    before, after = map(int, result.stdout.split())
    # Modules, routes and models: tens of thousands of objects, none of them frozen before.
    assert (before, after > 20_000) == (0, True), result.stdout
