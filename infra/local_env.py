"""A named local environment on the Docker engine: what `make up` / `make down` drive.

The containers come from the same specs as the Pulumi program (`infra.containers`); the database is
migrated with the same code (`infra.migrations`). State that must survive between commands (the
generated database password) lives in `.autosync/<name>.env`, outside git.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from infra import containers, docker_local, migrations

STATE_DIR = containers.REPO_ROOT / ".autosync"


@dataclass(frozen=True)
class LocalEnv:
    name: str
    postgres: containers.PostgresConfig
    revision: str | None


def _state_file(name: str) -> Path:
    return STATE_DIR / f"{name}.env"


def _read_state(name: str) -> dict[str, str]:
    path = _state_file(name)
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def _write_state(name: str, values: dict[str, str]) -> None:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    path = _state_file(name)
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)


def up(name: str = "autosync-dev", *, postgres_port: int = 54322) -> LocalEnv:
    """Start (or reuse) the environment's Postgres and migrate it to head. Idempotent."""
    state = _read_state(name)
    config = containers.PostgresConfig(
        name=f"{name}-postgres",
        password=state.get("POSTGRES_PASSWORD") or secrets.token_urlsafe(24),
        port=int(state.get("POSTGRES_PORT", postgres_port)),
    )
    engine = docker_local.client()
    tag = docker_local.ensure_image(engine, containers.postgres_image())
    running = engine.containers.list(filters={"name": f"^{config.name}$", "status": "running"})
    if not running or running[0].image.tags[:1] != [tag]:
        container = docker_local.run(
            engine, containers.postgres_container(config), env_name=name, image_tag=tag
        )
    else:
        container = running[0]
    _write_state(
        name,
        {"POSTGRES_PASSWORD": config.password, "POSTGRES_PORT": str(config.port), "DATABASE_URL": config.url},
    )
    docker_local.wait_healthy(container)
    revision = migrations.upgrade(config.url)
    return LocalEnv(name=name, postgres=config, revision=revision)


def down(name: str = "autosync-dev") -> list[str]:
    """Remove every container and volume of the environment, and its state file."""
    removed = docker_local.remove_environment(docker_local.client(), name)
    _state_file(name).unlink(missing_ok=True)
    return removed
