"""`make up` / `make down` (`autosync env up|down`) and `harness.local_env` on the real Docker engine."""

from __future__ import annotations

import socket
import stat
import subprocess

import docker
import httpx
import psycopg
import pytest

from harness import docker_local, local_env
from harness.ports import free_ports
from infra import containers, dbsettings
from tests.support.cli import AUTOSYNC

pytestmark = pytest.mark.docker


def _autosync(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AUTOSYNC, *args],
        cwd=containers.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_up_prints_how_to_reach_it_and_down_removes_everything(
    docker_engine: docker.DockerClient, function_image: str, env_name: str
) -> None:
    postgres_port, function_port = free_ports(2)
    ports = ("--postgres-port", str(postgres_port), "--function-port", str(function_port))
    first = _autosync("env", "up", "--name", env_name, "--no-demo", *ports)
    assert first.returncode == 0, first.stderr
    api_url = f"http://127.0.0.1:{function_port}"
    state = f".autosync/{env_name}.env"
    assert f"API:           {api_url}" in first.stdout
    assert f"127.0.0.1:{postgres_port}" in first.stdout
    assert state in first.stdout
    assert f"take it down:  autosync env down --name {env_name}" in first.stdout
    assert "#token=" not in first.stdout  # --no-demo: no demo user, no link

    # The state file: secrets only its owner can read, and enough to run the service by hand.
    path = local_env.state_file(env_name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = local_env.read_state(env_name)
    assert values["AUTOSYNC_API_URL"] == api_url
    assert values["DATABASE_URL"].endswith(f"@127.0.0.1:{postgres_port}/autosync")
    for key in (
        "AUTOSYNC_SERVICE_KEY",
        "AUTOSYNC_JWT_SECRET",
        "AUTOSYNC_ENCRYPTION_KEY",
        "POSTGRES_PASSWORD",
    ):
        assert len(values[key]) >= 32, key

    # Ready, and the database points pg_cron's trigger at this function with this key.
    assert httpx.get(f"{api_url}/readyz", timeout=5).status_code == 200
    assert dbsettings.function_url(values["DATABASE_URL"]) == api_url
    assert dbsettings.service_key_is_set(values["DATABASE_URL"])
    running = {
        c.name: c.id for c in docker_engine.containers.list(filters={"label": f"autosync.env={env_name}"})
    }
    assert set(running) == {
        f"{env_name}-postgres",
        f"{env_name}-function-serve",
        f"{env_name}-function-worker-1",
    }

    assert "scheduling:    per_user" in first.stdout
    assert dbsettings.scheduling_mode(values["DATABASE_URL"]) == "per_user"

    # Again: nothing is replaced, the secrets stay; the scheduling mode is switched.
    second = _autosync("env", "up", "--name", env_name, "--no-demo", "--scheduling", "dispatcher")
    assert second.returncode == 0, second.stderr
    assert "scheduling:    dispatcher" in second.stdout
    assert dbsettings.scheduling_mode(values["DATABASE_URL"]) == "dispatcher"
    again = {
        c.name: c.id for c in docker_engine.containers.list(filters={"label": f"autosync.env={env_name}"})
    }
    assert again == running
    assert local_env.read_state(env_name) == values

    gone = _autosync("env", "down", "--name", env_name)
    assert gone.returncode == 0, gone.stderr
    assert f"environment {env_name} removed" in gone.stdout
    assert local_env.leftovers(env_name) == []
    assert not path.exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api_url}/healthz", timeout=2)


def test_exception_after_up_still_removes_everything(function_image: str, env_name: str) -> None:
    with pytest.raises(RuntimeError, match="simulated"):
        with local_env.ephemeral(env_name) as env:
            assert httpx.get(f"{env.api_url}/readyz", timeout=5).status_code == 200
            assert len(local_env.leftovers(env_name)) == 4  # postgres, its volume, serve, worker
            with psycopg.connect(env.database_url) as connection:
                extensions = connection.execute(
                    "SELECT extname FROM pg_extension WHERE extname IN ('pg_cron', 'http') ORDER BY 1"
                ).fetchall()
            assert extensions == [("http",), ("pg_cron",)]
            raise RuntimeError("simulated failure after up")
    assert local_env.leftovers(env_name) == []
    assert not local_env.state_file(env_name).exists()


def test_up_failing_half_way_leaves_nothing_after_down(function_image: str, env_name: str) -> None:
    """The function cannot bind its port: `up` fails after Postgres started; `down` still finds it all."""
    postgres_port, function_port = free_ports(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", function_port))
        squatter.listen()
        with pytest.raises(docker_local.HarnessError, match="function-serve"):
            local_env.up(env_name, postgres_port=postgres_port, function_port=function_port)
    assert f"container {env_name}-postgres" in local_env.leftovers(env_name)
    local_env.down(env_name)
    assert local_env.leftovers(env_name) == []
    assert not local_env.state_file(env_name).exists()


def test_pip_ca_bundle_choice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    assert local_env.pip_ca_bundle({local_env.PIP_CA_BUNDLE_VAR: str(bundle)}) == bundle
    assert local_env.pip_ca_bundle({local_env.PIP_CA_BUNDLE_VAR: ""}) is None  # explicitly off
    assert local_env.pip_ca_bundle({"SSL_CERT_FILE": str(bundle)}) == bundle
    with pytest.raises(docker_local.HarnessError, match="no such file"):
        local_env.pip_ca_bundle({local_env.PIP_CA_BUNDLE_VAR: str(tmp_path / "missing.pem")})


def test_extra_ca_certs_keeps_only_the_unknown_ones() -> None:
    def pem(body: str) -> str:
        return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----"

    public = pem("QUJD") + "\n" + pem("REVG") + "\n"
    host = pem("REVG") + "\n" + pem("R0hJ\nSktM") + "\n" + pem("QUJD") + "\n"
    assert local_env.extra_ca_certs(host, public) == pem("R0hJ\nSktM") + "\n"
    assert local_env.extra_ca_certs(public, public) == ""
    assert local_env.function_build_args({local_env.PIP_CA_BUNDLE_VAR: ""}) == {}


def test_unknown_scheduling_mode_is_refused_before_anything_starts(env_name: str) -> None:
    failed = _autosync("env", "up", "--name", env_name, "--scheduling", "hourly")
    assert failed.returncode == 1
    assert "scheduling must be one of per_user, dispatcher (got 'hourly')" in failed.stderr
    assert local_env.leftovers(env_name) == []
