"""What each container is, as plain data built from configuration.

This is the one source of truth for containers: the Pulumi program maps these specs onto
pulumi-docker resources, and the test harness / ephemeral environments map the very same specs
onto the Docker engine. Nothing here talks to Docker or Pulumi.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_CONTEXT = REPO_ROOT / "infra" / "images" / "postgres"
DATA_DIR = "/var/lib/postgresql/data"
# Every container and volume of an environment carries it, so one selector finds (and removes) them all.
ENV_LABEL = "autosync.env"
# Docker's own default: what a container gets between its stop signal and SIGKILL unless it says otherwise.
DEFAULT_STOP_GRACE_S = 10
# Postgres's fast shutdown (SIGINT) rolls back open transactions and writes a checkpoint; that takes
# seconds, but a checkpoint after a busy import can take longer. pg_ctl waits 60 s by default too.
POSTGRES_STOP_GRACE_S = 60


@dataclass(frozen=True)
class HealthCheck:
    """A Docker health check; `test` is an exec-form command."""

    test: tuple[str, ...]
    interval_s: float = 2.0
    timeout_s: float = 5.0
    retries: int = 5
    start_period_s: float = 60.0


@dataclass(frozen=True)
class ImageSpec:
    """An image built from a local context; `tag` carries a hash of the context's content."""

    repository: str
    context: Path
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.repository}:{context_hash(self.context, self.build_args)}"


@dataclass(frozen=True)
class ContainerSpec:
    """One container. Host networking only: services bind to loopback on their own port."""

    name: str
    image: ImageSpec
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secret_env: frozenset[str] = frozenset()
    port: int | None = None
    volumes: dict[str, str] = field(default_factory=dict)
    healthcheck: HealthCheck | None = None
    stop_signal: str | None = None
    # Seconds between the stop signal and SIGKILL, whoever stops the container (`docker stop`, the
    # daemon, Pulumi replacing or destroying it).
    stop_grace_s: int = DEFAULT_STOP_GRACE_S


@dataclass(frozen=True)
class PostgresConfig:
    """Configuration of the Postgres container, as a stack or a test would give it."""

    name: str
    password: str
    user: str = "postgres"
    database: str = "autosync"
    port: int = 5432
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"


def context_hash(context: Path, build_args: dict[str, str] | None = None) -> str:
    """A short hash of every file under `context` (names and bytes) and of the build args.

    Images are tagged with it, so a rebuild happens exactly when the inputs change.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(str(path.relative_to(context)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    for key, value in sorted((build_args or {}).items()):
        digest.update(f"{key}={value}\0".encode())
    return digest.hexdigest()[:16]


def postgres_image() -> ImageSpec:
    return ImageSpec(repository="autosync-postgres", context=POSTGRES_CONTEXT)


def postgres_container(config: PostgresConfig) -> ContainerSpec:
    """The Postgres (pg_cron + http) container for `config`."""
    return ContainerSpec(
        name=config.name,
        image=postgres_image(),
        # The official image's convention: extra server settings as `postgres -c key=value`.
        command=("postgres", "-c", f"listen_addresses={config.host}"),
        env={
            "POSTGRES_USER": config.user,
            "POSTGRES_PASSWORD": config.password,
            "POSTGRES_DB": config.database,
            "PGPORT": str(config.port),
        },
        secret_env=frozenset({"POSTGRES_PASSWORD"}),
        port=config.port,
        volumes={f"{config.name}-data": DATA_DIR},
        healthcheck=HealthCheck(test=("CMD", "/usr/local/bin/healthcheck.sh")),
        stop_signal="SIGINT",
        stop_grace_s=POSTGRES_STOP_GRACE_S,
    )
