"""pytest plugin: a fresh autosync environment for another project's test suite.

Installed with the `harness` extra, pytest loads it by itself (entry point `pytest11`). Nothing
starts until a test asks for a fixture:

- `autosync_env` (session): the running environment — API URL, database URL, a way to create users
  and mint their tokens, an HTTP client. Under `autosync env test` it is the environment that command
  stood up (the `AUTOSYNC_E2E_*` variables); otherwise a new one on the Docker engine, on free
  loopback ports, removed when the session ends however it ends.
- `autosync_mailbox` (per test): a new user on a session-wide Dovecot, with a way to deliver mail.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import jwt
import psycopg
import pytest

if TYPE_CHECKING:  # the harness modules import the Docker SDK: load them only when a fixture runs
    from harness.dovecot import DovecotServer


@dataclass
class AutosyncEnv:
    """A running environment, as a consumer's tests see it."""

    api_url: str
    database_url: str = field(repr=False)
    service_key: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    client: httpx.Client = field(repr=False)

    def new_user(self, email: str | None = None) -> uuid.UUID:
        """A row in `auth.users` (what a sign-up creates); its data goes when the user is deleted."""
        user_id = uuid.uuid4()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO auth.users (id, email) VALUES (%s, %s)",
                (user_id, email or f"{user_id.hex[:12]}@example.test"),
            )
        return user_id

    def delete_user(self, user_id: uuid.UUID) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
            conn.execute("DELETE FROM auth.users WHERE id = %s", (user_id,))

    def token(self, user_id: uuid.UUID, *, expires_in: int = 600) -> str:
        """A user JWT the API accepts (HS256 with the environment's secret, role `authenticated`)."""
        claims = {"sub": str(user_id), "role": "authenticated", "exp": int(time.time()) + expires_in}
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def as_user(self, user_id: uuid.UUID) -> dict[str, str]:
        """Headers for a request as `user_id`."""
        return {"Authorization": f"Bearer {self.token(user_id)}"}


@dataclass
class TestMailbox:
    """An IMAP account of its own on a real Dovecot (plain IMAP on loopback)."""

    __test__ = False  # a helper, not a test class, despite its name

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    server: DovecotServer = field(repr=False)
    tls_mode: str = "plain"

    def account(self, mailbox: str = "INBOX") -> dict[str, object]:
        """The body of `POST /api/email-accounts` for this mailbox."""
        return {
            "host": self.host,
            "port": self.port,
            "tls_mode": self.tls_mode,
            "username": self.username,
            "password": self.password,
            "mailbox": mailbox,
        }

    def deliver(self, messages: bytes | Iterable[bytes], mailbox: str = "INBOX") -> int:
        """Put raw RFC 5322 messages into the mailbox (unread); returns how many."""
        return self.server.deliver(self.username, messages, mailbox)


@pytest.fixture(scope="session")
def autosync_env() -> Iterator[AutosyncEnv]:
    """A migrated, configured environment (Postgres with pg_cron + http, API, one worker)."""
    from harness import local_env
    from harness.ports import unique_name

    with contextlib.ExitStack() as stack:
        coordinates = local_env.Coordinates.from_environ(os.environ)
        if coordinates is None:
            try:
                env = stack.enter_context(local_env.ephemeral(unique_name("autosync-pytest")))
            except Exception as exc:  # no engine, a failed build: say what, do not fail every test
                pytest.fail(f"autosync_env: could not stand up an environment: {exc}", pytrace=False)
            coordinates = env.coordinates()
        client = stack.enter_context(httpx.Client(base_url=coordinates.api_url, timeout=30))
        yield AutosyncEnv(
            api_url=coordinates.api_url,
            database_url=coordinates.database_url,
            service_key=coordinates.service_key,
            jwt_secret=coordinates.jwt_secret,
            client=client,
        )


@pytest.fixture(scope="session")
def _autosync_dovecot() -> Iterator[DovecotServer]:
    from harness import docker_local
    from harness.dovecot import running_dovecot

    try:
        engine = docker_local.client()
    except docker_local.HarnessError as exc:
        pytest.skip(f"autosync_mailbox needs a Docker engine: {exc}")
    with contextlib.closing(engine), running_dovecot(engine) as server:
        yield server


@pytest.fixture
def autosync_mailbox(_autosync_dovecot: DovecotServer) -> TestMailbox:
    """A fresh, empty IMAP mailbox for one test."""
    server = _autosync_dovecot
    username, password = server.new_user("mailbox")
    return TestMailbox(
        host=server.host, port=server.port, username=username, password=password, server=server
    )
