"""The sync function image (sync_function/Dockerfile) on the real Docker engine."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from cryptography.fernet import Fernet
from docker.utils import exclude_paths

from harness import docker_local
from harness.ports import free_port, unique_name
from infra import containers, migrations
from infra.function_specs import (
    FUNCTION_SOURCES,
    PIP_CA_BUILD_ARG,
    SyncFunctionConfig,
    sync_function_container,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def function_env(docker_engine: docker.DockerClient) -> Iterator[str]:
    name = unique_name("autosync-imagetest")
    try:
        yield name
    finally:
        docker_local.remove_environment(docker_engine, name)


def _config(name: str, database_url: str) -> SyncFunctionConfig:
    return SyncFunctionConfig(
        name=f"{name}-function",
        database_url=database_url,
        service_key=secrets.token_urlsafe(40),
        jwt_secret=secrets.token_urlsafe(40),
        encryption_key=Fernet.generate_key().decode(),
        port=free_port(),
    )


def test_serve_answers_healthz_and_readyz_after_migrations(
    docker_engine: docker.DockerClient,
    function_image: str,
    fresh_postgres: containers.PostgresConfig,
    function_env: str,
) -> None:
    config = _config(function_env, fresh_postgres.url)
    serve = docker_local.run(
        docker_engine,
        sync_function_container(config, role="serve"),
        env_name=function_env,
        image_tag=function_image,
    )
    # Docker's own verdict, from the spec's probe (the same GET /healthz the image declares).
    docker_local.wait_healthy(serve, timeout_s=60)
    assert httpx.get(f"{config.url}/healthz", timeout=5).status_code == 200

    not_migrated = httpx.get(f"{config.url}/readyz", timeout=5)
    assert not_migrated.status_code == 503, not_migrated.text

    migrations.upgrade(fresh_postgres.url)
    ready = httpx.get(f"{config.url}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"

    # A worker from the same image: it serves no HTTP, and the image's health check knows that.
    worker = docker_local.run(
        docker_engine,
        sync_function_container(config, role="worker", index=1),
        env_name=function_env,
        image_tag=function_image,
    )
    assert sync_function_container(config, role="worker").healthcheck is None  # the image's check applies
    docker_local.wait_healthy(worker, timeout_s=30)
    serve.reload()
    assert serve.attrs["State"]["Health"]["Status"] == "healthy"


def test_image_runs_debian_python_as_non_root(
    docker_engine: docker.DockerClient, function_image: str
) -> None:
    image = docker_engine.images.get(function_image)
    config = image.attrs["Config"]
    assert config["Entrypoint"] == ["autosync"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == "autosync:autosync"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    output = docker_engine.containers.run(
        function_image,
        entrypoint=["python3", "-c"],
        command=["import os, sys, sync_function; print(sys.version_info[:2], os.getuid(), sys.prefix)"],
        remove=True,
    )
    assert output.decode().strip() == "(3, 13) 10001 /opt/autosync"


def test_pip_ca_stays_out_of_the_image(docker_engine: docker.DockerClient, function_image: str) -> None:
    """The CA handed to pip is used in the build stage only: no layer of the image mentions it."""
    image = docker_engine.images.get(function_image)
    history = " ".join(str(layer.get("CreatedBy", "")) for layer in image.history())
    assert "BEGIN CERTIFICATE" not in history
    assert PIP_CA_BUILD_ARG not in history
    assert not any(PIP_CA_BUILD_ARG in entry for entry in image.attrs["Config"].get("Env") or [])


def test_dockerignore_keeps_the_context_small() -> None:
    """The build context is the repo root: .venv, .git, tests and state must not be sent."""
    root = containers.REPO_ROOT
    patterns = [
        line.strip()
        for line in (root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    started = time.monotonic()
    included = exclude_paths(str(root), patterns)
    assert time.monotonic() - started < 10
    top = {Path(path).parts[0] for path in included}
    assert not top & {".venv", ".git", "tests", ".autosync", ".pytest_cache", ".hypothesis"}
    assert not any("__pycache__" in path for path in included)
    for source in FUNCTION_SOURCES:
        assert source in top, f"{source} is copied by the Dockerfile but excluded from the context"
