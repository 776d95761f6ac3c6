"""The sync function in-process: the real ASGI app under uvicorn on loopback, and a real worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import uvicorn
from cryptography.fernet import Fernet

from harness.ports import free_port
from harness.tokens import user_token
from sync_function import queue
from sync_function.config import Config
from sync_function.main import create_app


def make_config(database_url: str, **overrides: object) -> Config:
    values: dict[str, object] = {
        "DATABASE_URL": database_url,
        "service_key": secrets.token_urlsafe(40),
        "jwt_secret": secrets.token_urlsafe(64),
        "encryption_key": Fernet.generate_key().decode(),
        "retry_base_seconds": 0.5,
        "max_attempts": 3,
        "imap_timeout_seconds": 5.0,
        # The test OAuth2 provider (harness.oauth_provider) is plain http on loopback.
        "oauth_allow_loopback_http": True,
        # The test Dovecot listens on 127.0.0.1: allowed explicitly, as an operator would.
        "imap_allowed_networks": "127.0.0.0/8,::1/128",
    }
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


@dataclass
class Service:
    url: str
    config: Config
    client: httpx.Client

    def token(self, user_id: uuid.UUID, *, expires_in: int = 300, **claims: object) -> str:
        assert self.config.jwt_secret is not None, "tokens are signed with the HS256 secret"
        return user_token(self.config.jwt_secret.get_secret_value(), user_id, expires_in=expires_in, **claims)

    def as_user(self, user_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id)}"}

    @property
    def as_service(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.service_key.get_secret_value()}"}


def run_uvicorn(app: object, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread


class WorkerThread:
    """A procrastinate worker in its own thread and event loop, stoppable from the test."""

    def __init__(self, config: Config, ssl_context: object, *, concurrency: int = 2) -> None:
        self.loop = asyncio.new_event_loop()
        # Created before the thread starts (the loop is not running yet), so `stop` always has it.
        self.task: asyncio.Task[None] = self.loop.create_task(
            queue.run_worker(config, concurrency=concurrency, ssl_context=ssl_context)  # type: ignore[arg-type]
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # The Runner's exit is asyncio.run's cleanup: cancel what is left, stop async generators and the
        # default executor, close the loop. Without it the loop's self-pipe (an AF_UNIX socketpair)
        # stays open for the whole session: asgiref's executor thread keeps a reference to the loop.
        with asyncio.Runner(loop_factory=lambda: self.loop) as runner:
            asyncio.set_event_loop(runner.get_loop())
            try:
                self.loop.run_until_complete(self.task)
            except asyncio.CancelledError:
                pass
            except BaseException as exc:
                self.error = exc
            finally:
                asyncio.set_event_loop(None)

    def stop(self) -> None:
        if not self.loop.is_closed():
            # The loop may close between the check and the call once the worker has ended by itself.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            raise RuntimeError("the worker thread did not stop within 30 s")


@contextlib.contextmanager
def running_service(config: Config, *, imap_ssl_context: ssl.SSLContext | None = None) -> Iterator[Service]:
    """The API on a free loopback port until the block ends."""
    port = free_port()
    server, thread = run_uvicorn(create_app(config, imap_ssl_context=imap_ssl_context), port)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield Service(url=url, config=config, client=client)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def worker_env(config: Config) -> dict[str, str]:
    """The environment of an `autosync worker` process configured like `config`."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": config.database_url.get_secret_value(),
        "AUTOSYNC_SERVICE_KEY": config.service_key.get_secret_value(),
        "AUTOSYNC_ENCRYPTION_KEY": config.encryption_key.get_secret_value(),
        "AUTOSYNC_WORKER_CONCURRENCY": "1",
        "AUTOSYNC_LOG_LEVEL": "warning",
        "AUTOSYNC_IMAP_ALLOWED_NETWORKS": config.imap_allowed_networks,
    }
    if config.jwt_secret is not None:
        env["AUTOSYNC_JWT_SECRET"] = config.jwt_secret.get_secret_value()
    if config.jwt_jwks_url is not None:
        env["AUTOSYNC_JWT_JWKS_URL"] = str(config.jwt_jwks_url)
    return env
