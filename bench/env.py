"""Stand up what a benchmark needs with the project's own specs, and always take it down again.

Postgres (pg_cron + http) and Dovecot come from `infra.containers` / `harness.dovecot_spec` through
`harness.docker_local`, labelled with one environment name so that `close()` removes exactly what
this run created. The sync function is the real `autosync serve` process; it
stamps each accepted trigger itself (`sync_runs.queued_at`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from harness import docker_local
from harness.dovecot import DovecotServer
from harness.dovecot_spec import DovecotConfig, dovecot_container, dovecot_image
from harness.ports import free_port, unique_name
from harness.processes import stop as stop_processes
from harness.service import make_config
from infra import containers, dbsettings, migrations
from sync_function.config import Config


@dataclass
class Arrivals:
    """When the function took each auto-sync request (epoch seconds).

    Read from `sync_runs.queued_at`, which the function's own transaction stamps when it accepts a
    trigger: the function runs unmodified in its own process (as deployed), and the measuring
    process steals it no CPU or GIL time. `_reset_runs` empties the table between windows.
    """

    database_url: str | None = None

    def since(self, start: float) -> list[float]:
        assert self.database_url is not None, "start_postgres() first"
        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM queued_at) FROM public.sync_runs "
                "WHERE trigger = 'cron' AND queued_at >= to_timestamp(%s)",
                (start,),
            ).fetchall()
        return [float(row[0]) for row in rows]

    def clear(self) -> None:
        """Nothing to forget here: the windows reset sync_runs themselves."""


class BenchEnv:
    """Postgres + Dovecot (+ the function on demand) for one benchmark run."""

    def __init__(self) -> None:
        self.engine = docker_local.client()
        self.env_name = unique_name("autosync-bench")
        self._stack = contextlib.ExitStack()
        self._stack.callback(self.engine.close)
        self._stack.callback(docker_local.remove_environment, self.engine, self.env_name)
        self.postgres: containers.PostgresConfig | None = None
        self.dovecot: DovecotServer | None = None
        self.function_url: str | None = None
        self.arrivals = Arrivals()

    def __enter__(self) -> BenchEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    @property
    def database_url(self) -> str:
        assert self.postgres is not None, "start_postgres() first"
        return self.postgres.url

    def start_postgres(self) -> None:
        tag = docker_local.ensure_image(self.engine, containers.postgres_image())
        config = containers.PostgresConfig(
            name=f"{self.env_name}-postgres", password=secrets.token_urlsafe(16), port=free_port()
        )
        container = docker_local.run(
            self.engine, containers.postgres_container(config), env_name=self.env_name, image_tag=tag
        )
        docker_local.wait_healthy(container)
        migrations.upgrade(config.url)
        self.postgres = config
        self.arrivals.database_url = config.url

    def start_dovecot(self) -> DovecotServer:
        tag = docker_local.ensure_image(self.engine, dovecot_image())
        config = DovecotConfig(name=f"{self.env_name}-dovecot", imap_port=free_port(), imaps_port=free_port())
        container = docker_local.run(self.engine, dovecot_container(config), env_name=self.env_name, image_tag=tag)
        docker_local.wait_healthy(container, timeout_s=60)
        self.dovecot = DovecotServer(self.engine, container, config)
        return self.dovecot

    def ensure_dovecot(self) -> DovecotServer:
        """Dovecot, started on first need: the cron benchmarks do not wait for it."""
        return self.dovecot if self.dovecot is not None else self.start_dovecot()

    def start_function(self, *, processes: int = 1) -> str:
        """The real sync function (`autosync serve`) in its own process; pg_cron's trigger is pointed at it."""
        config = make_config(self.database_url)
        self.function_url = self._stack.enter_context(serve_function(config, processes=processes))
        dbsettings.configure(
            self.database_url, function_url=self.function_url, service_key=config.service_key.get_secret_value()
        )
        return self.function_url

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)


@contextlib.contextmanager
def serve_function(config: Config, *, processes: int = 1, source: Path | None = None) -> Iterator[str]:
    """`autosync serve --processes N` configured like `config`, on a free port, until the block ends.

    `source`: run the server's code from another checkout of the repository (before/after a change).
    """
    assert config.jwt_secret is not None  # make_config always generates one
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": config.database_url.get_secret_value(),
        "AUTOSYNC_SERVICE_KEY": config.service_key.get_secret_value(),
        "AUTOSYNC_JWT_SECRET": config.jwt_secret.get_secret_value(),
        "AUTOSYNC_ENCRYPTION_KEY": config.encryption_key.get_secret_value(),
        "AUTOSYNC_PORT": str(port),
        "AUTOSYNC_LOG_LEVEL": "warning",
    }
    if source is not None:
        env["PYTHONPATH"] = str(source)
    process = subprocess.Popen(
        [sys.executable, "-m", "sync_function.cli", "serve", *(["--processes", str(processes)] if processes > 1 else [])],
        env=env,
        cwd=source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the sync function did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        stop_processes([process])  # uvicorn's supervisor stops its worker processes on SIGTERM


def new_users(conn: psycopg.Connection[Any], count: int, *, enabled: bool = True, interval: int = 5) -> list[uuid.UUID]:
    """`count` rows in auth.users with auto-sync preferences, inserted in one round trip."""
    ids = [uuid.uuid4() for _ in range(count)]
    with conn.transaction():
        conn.execute(
            "INSERT INTO auth.users (id, email) SELECT u, u::text || '@bench.test' FROM unnest(%s::uuid[]) AS u",
            (ids,),
        )
        conn.execute(
            """INSERT INTO public.user_settings (user_id, enabled, interval_minutes)
               SELECT u, %s, %s FROM unnest(%s::uuid[]) AS u""",
            (enabled, interval, ids),
        )
    return ids
