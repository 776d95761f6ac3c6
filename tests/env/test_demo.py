"""`make up`'s demo: a Dovecot with a demo mailbox, a demo user syncing it, a link that signs in, mail arriving."""

from __future__ import annotations

import subprocess
import time
import uuid

import docker
import httpx
import jwt
import pytest

from harness import demo, local_env
from harness.ports import free_ports
from infra import containers
from tests.support.cli import AUTOSYNC

pytestmark = pytest.mark.docker


def _mailbox_count(engine: docker.DockerClient, env_name: str) -> int:
    container = engine.containers.get(f"{env_name}-dovecot")
    result = container.exec_run(
        ["doveadm", "mailbox", "status", "-u", demo.DEMO_MAILBOX_USER, "messages", "INBOX"]
    )
    assert result.exit_code == 0, result.output
    return int(result.output.decode().strip().split("=", 1)[1])


def test_up_runs_a_demo_that_syncs_and_down_removes_it(
    docker_engine: docker.DockerClient, function_image: str, env_name: str
) -> None:
    postgres_port, function_port = free_ports(2)
    up = subprocess.run(
        [
            *AUTOSYNC,
            "env",
            "up",
            "--name",
            env_name,
            "--postgres-port",
            str(postgres_port),
            "--function-port",
            str(function_port),
            "--demo-mail-every",
            "2",
        ],
        cwd=containers.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    api_url = f"http://127.0.0.1:{function_port}"
    link = up.stdout.strip().splitlines()[-1].strip()
    assert link.startswith(f"{api_url}/app/#token=")
    token = link.split("#token=", 1)[1]
    headers = {"Authorization": f"Bearer {token}"}

    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        assert client.get("/app/").status_code == 200
        loaded = client.get("/api/settings/load-auto-sync").json()
        assert loaded["settings"] == {"enabled": True, "interval_minutes": 5}
        assert client.get("/api/settings/next-run").json()["next_run"] is not None
        (account,) = client.get("/api/email-accounts").json()["accounts"]
        assert (account["host"], account["username"]) == ("127.0.0.1", demo.DEMO_MAILBOX_USER)

        # The demo user's mail syncs through the environment's own worker.
        run_id = client.post("/api/sync/now").json()["run_id"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            runs = {r["id"]: r for r in client.get("/api/sync/history").json()["runs"]}
            if runs[run_id]["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.5)
        run = runs[run_id]
        assert (run["status"], run["error"]) == ("succeeded", None)
        assert run["messages_imported"] >= demo.DEMO_MESSAGES
        assert run["progress_done"] == run["progress_total"] >= demo.DEMO_MESSAGES

    # New mail arrives by itself (every 2 s here).
    before = _mailbox_count(docker_engine, env_name)
    deadline = time.monotonic() + 30
    while _mailbox_count(docker_engine, env_name) <= before and time.monotonic() < deadline:
        time.sleep(1)
    assert _mailbox_count(docker_engine, env_name) > before

    # A second `up` reuses the demo: same user, same Dovecot, one account, one mail loop.
    dovecot_id = docker_engine.containers.get(f"{env_name}-dovecot").id
    again = subprocess.run(
        [*AUTOSYNC, "env", "up", "--name", env_name],
        cwd=containers.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert docker_engine.containers.get(f"{env_name}-dovecot").id == dovecot_id
    user = uuid.UUID(str(jwt.decode(token, options={"verify_signature": False})["sub"]))
    assert f"user {user}" in again.stdout
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        assert len(client.get("/api/email-accounts").json()["accounts"]) == 1
    top = docker_engine.containers.get(f"{env_name}-dovecot").top()
    command = top["Titles"].index("CMD")
    assert sum(1 for process in top["Processes"] if "arrivals" in process[command]) == 1

    local_env.down(env_name)
    assert local_env.leftovers(env_name) == []
