"""Throw-away Postgres servers (pg_cron + http) on free loopback ports."""

from __future__ import annotations

import secrets

import docker

from harness import docker_local
from harness.ports import free_port, unique_name
from infra import containers


def start_postgres(engine: docker.DockerClient, image_tag: str) -> tuple[containers.PostgresConfig, str]:
    """Start a fresh Postgres container; returns its config and environment name (for cleanup)."""
    env_name = unique_name("autosync-test")
    config = containers.PostgresConfig(
        name=f"{env_name}-postgres", password=secrets.token_urlsafe(16), port=free_port()
    )
    container = docker_local.run(
        engine, containers.postgres_container(config), env_name=env_name, image_tag=image_tag
    )
    docker_local.wait_healthy(container)
    return config, env_name
