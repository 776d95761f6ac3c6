"""`autosync env test`: an environment for one pytest run, removed however the run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import docker
import httpx
import pytest

from harness import local_env
from infra import containers
from tests.support.cli import AUTOSYNC

pytestmark = pytest.mark.docker

# A pytest run of its own (outside tests/, so none of our conftests load) that uses only the
# coordinates `env test` exports.
COORDINATES_TEST = """
import os, uuid

import httpx, psycopg


def test_coordinates_reach_the_environment():
    api = os.environ["AUTOSYNC_E2E_API_URL"]
    assert httpx.get(api + "/readyz", timeout=5).status_code == 200
    key = os.environ["AUTOSYNC_E2E_SERVICE_KEY"]
    unknown = {"user_id": str(uuid.uuid4())}
    # The right key passes authentication (404: no such user); no key does not.
    assert httpx.post(api + "/functions/v1/auto-sync", json=unknown, headers={"Authorization": "Bearer " + key}).status_code == 404
    assert httpx.post(api + "/functions/v1/auto-sync", json=unknown).status_code == 401
    with psycopg.connect(os.environ["AUTOSYNC_E2E_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT current_setting('app.settings.sync_function_url')").fetchone() == (api,)
    assert len(os.environ["AUTOSYNC_E2E_JWT_SECRET"]) >= 32


def test_deliberately_failing():
    assert False, "this failure must become env test's exit code"
"""

WAITING_TEST = """
import json, os, time


def test_waits_to_be_interrupted():
    coordinates = {k: v for k, v in os.environ.items() if k.startswith("AUTOSYNC_E2E_")}
    with open(MARKER, "w") as handle:
        json.dump(coordinates, handle)
    time.sleep(300)
"""


def _env_test(name: str, test_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*AUTOSYNC, "env", "test", "--name", name, "--", str(test_file), "-q", "-p", "no:cacheprovider"],
        cwd=containers.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_runs_pytest_against_the_environment_and_removes_it(
    function_image: str, env_name: str, tmp_path: Path
) -> None:
    test_file = tmp_path / "test_coordinates.py"
    test_file.write_text(COORDINATES_TEST)
    process = _env_test(env_name, test_file)
    output, _ = process.communicate(timeout=300)
    assert "1 failed, 1 passed" in output, output
    assert process.returncode == 1, output
    assert f"{env_name} removed" in output
    assert local_env.leftovers(env_name) == []
    assert not local_env.state_file(env_name).exists()


def test_sigterm_stops_the_tests_and_removes_the_environment(
    docker_engine: docker.DockerClient, function_image: str, env_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "coordinates.json"
    test_file = tmp_path / "test_waits.py"
    test_file.write_text(f"MARKER = {str(marker)!r}\n" + WAITING_TEST)
    process = _env_test(env_name, test_file)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() or not marker.read_text():
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the environment did not come up"
            time.sleep(0.3)
        coordinates = json.loads(marker.read_text())
        assert coordinates["AUTOSYNC_E2E_ENV_NAME"] == env_name
        assert httpx.get(coordinates["AUTOSYNC_E2E_API_URL"] + "/healthz", timeout=5).status_code == 200
        assert local_env.leftovers(env_name)

        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM" in output and f"{env_name} removed" in output
    assert local_env.leftovers(env_name) == []
    assert not local_env.state_file(env_name).exists()
