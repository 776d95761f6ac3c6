"""Stand up what a benchmark needs with the project's own specs, and always take it down again.

Postgres (pg_cron + http) and Dovecot come from `infra.containers` / `infra.dovecot` through
`infra.docker_local`, labelled with one environment name so that `close()` removes exactly what
this run created. The sync function is the real ASGI app under uvicorn, wrapped so that every
`/functions/v1/auto-sync` request is stamped with its arrival time.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from infra import containers, dbsettings, docker_local, migrations
from infra.dovecot import DovecotConfig, dovecot_container, dovecot_image
from sync_function.main import create_app
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.postgres import free_port, unique_name
from tests.fixtures.service import make_settings, run_uvicorn

AUTO_SYNC_PATH = "/functions/v1/auto-sync"

Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


@dataclass
class Arrivals:
    """Wall-clock arrival times (epoch seconds) of auto-sync requests at the function."""

    times: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def since(self, start: float) -> list[float]:
        with self.lock:
            return [t for t in self.times if t >= start]

    def clear(self) -> None:
        with self.lock:
            self.times.clear()


def stamped(app: Asgi, arrivals: Arrivals) -> Asgi:
    """ASGI middleware: stamp before the app sees the request, so the figure is pg_cron's delay only."""

    async def wrapper(scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http" and scope["path"] == AUTO_SYNC_PATH:
            now = time.time()
            with arrivals.lock:
                arrivals.times.append(now)
        await app(scope, receive, send)

    return wrapper


class BenchEnv:
    """Postgres + Dovecot (+ the function on demand) for one benchmark run."""

    def __init__(self) -> None:
        self.engine = docker_local.client()
        self.env_name = unique_name("autosync-bench")
        self._stack = contextlib.ExitStack()
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

    def start_dovecot(self) -> DovecotServer:
        tag = docker_local.ensure_image(self.engine, dovecot_image())
        config = DovecotConfig(name=f"{self.env_name}-dovecot", imap_port=free_port(), imaps_port=free_port())
        container = docker_local.run(self.engine, dovecot_container(config), env_name=self.env_name, image_tag=tag)
        docker_local.wait_healthy(container, timeout_s=60)
        self.dovecot = DovecotServer(self.engine, container, config)
        return self.dovecot

    def start_function(self) -> str:
        """The real sync function on a free port; pg_cron's trigger is pointed at it."""
        settings = make_settings(self.database_url)
        app = create_app(settings)
        server, thread = run_uvicorn(stamped(app, self.arrivals), free_port())  # type: ignore[arg-type]

        def stop() -> None:
            server.should_exit = True
            thread.join(timeout=10)

        self._stack.callback(stop)
        port = server.config.port
        self.function_url = f"http://127.0.0.1:{port}"
        dbsettings.configure(
            self.database_url, function_url=self.function_url, service_key=settings.service_key.get_secret_value()
        )
        return self.function_url

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)


def new_users(conn: psycopg.Connection[Any], count: int, *, enabled: bool = True, interval: int = 5) -> list[uuid.UUID]:
    """`count` rows in auth.users with auto-sync settings, inserted in one round trip."""
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
