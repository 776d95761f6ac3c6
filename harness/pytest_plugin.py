"""pytest plugin: a fresh autosync environment for another project's test suite.

Installed with the `harness` extra, pytest loads it by itself (entry point `pytest11`). Nothing
starts until a test asks for a fixture:

- `autosync_env` (session): the running environment — API URL, database URL, a way to create users
  and mint their tokens, an HTTP client. Under `autosync env test` it is the environment that command
  stood up (the `AUTOSYNC_E2E_*` variables); otherwise a new one on the Docker engine, on free
  loopback ports, removed when the session ends however it ends.
- `autosync_mailbox` (per test): a new user on a session-wide Dovecot, with a way to deliver mail.

Only usable from a checkout of this repository (an editable install): the environment builds the
function image from the checkout's files.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest

from harness.tokens import user_token

if TYPE_CHECKING:  # the harness modules import the Docker SDK: load them only when a fixture is used
    from harness import local_env
    from harness.dovecot import DovecotServer


# The fixtures this plugin provides: a session that uses one of them gets the harness imported early.
FIXTURES = ("autosync_env", "autosync_mailbox")


@dataclass
class AutosyncEnv:
    """A running environment, as a consumer's tests see it."""

    # The environment's name: its containers and volumes carry the label `autosync.env=<name>`
    # (empty when `autosync env test` exported coordinates without one).
    name: str
    api_url: str
    database_url: str = field(repr=False)
    service_key: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    client: httpx.Client = field(repr=False)
    # True when this session stood the environment up, and so removes it at the end.
    owned: bool = False

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
        return user_token(self.jwt_secret, user_id, expires_in=expires_in)

    def as_user(self, user_id: uuid.UUID) -> dict[str, str]:
        """Headers for a request as `user_id`."""
        return {"Authorization": f"Bearer {self.token(user_id)}"}

    def as_service(self) -> dict[str, str]:
        """Headers for `/functions/v1/…`, which take the service key (what pg_cron's trigger sends)."""
        return {"Authorization": f"Bearer {self.service_key}"}


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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Import the harness now, before any test runs, when a collected test uses these fixtures.

    pytest rewrites the asserts of every module of a distribution that registers a `pytest11`
    plugin, as the module is first imported. Installed as a package, that is all of `harness`,
    `infra` and `sync_function`; imported lazily inside a fixture, they would be parsed mid-session.
    On CPython 3.11.7, a garbage collection during that parse can run a leaked object's finalizer
    whose ResourceWarning (an error under `filterwarnings = error`) formats a traceback, which parses
    again and corrupts the parser's recursion bookkeeping: `SystemError: AST constructor recursion
    depth mismatch` (python/cpython#106905). At collection's end no test has left garbage behind yet.
    Not at import: the plugin loads wherever autosync is installed, the Docker SDK (harness extra)
    may be missing, and most sessions use none of this.
    """
    if any(name in getattr(item, "fixturenames", ()) for item in session.items for name in FIXTURES):
        import harness.dovecot
        import harness.local_env  # noqa: F401


def _given_coordinates(environ: Mapping[str, str]) -> local_env.Coordinates | None:
    """The environment `autosync env test` exported, or None; half of the variables is an error."""
    from harness import local_env

    needed = (
        local_env.E2E_API_URL,
        local_env.E2E_DATABASE_URL,
        local_env.E2E_SERVICE_KEY,
        local_env.E2E_JWT_SECRET,
    )
    missing = [key for key in needed if not environ.get(key)]
    if missing and len(missing) < len(needed):
        pytest.fail(
            f"autosync_env: {', '.join(missing)} not set (set all of {', '.join(needed)}, or none "
            "for a fresh environment)",
            pytrace=False,
        )
    return local_env.Coordinates.from_environ(environ)


@pytest.fixture(scope="session")
def autosync_env() -> Iterator[AutosyncEnv]:
    """A migrated, configured environment (Postgres with pg_cron + http, API, one worker)."""
    from harness import local_env
    from harness.ports import unique_name

    with contextlib.ExitStack() as stack:
        coordinates = _given_coordinates(os.environ)
        owned = coordinates is None
        if coordinates is None:
            name = unique_name("autosync-pytest")
            try:
                env = stack.enter_context(local_env.ephemeral(name))
            except Exception as exc:  # no engine, a failed build: say what, once, for every test
                pytest.fail(f"autosync_env: could not stand up environment {name}: {exc}", pytrace=False)
            coordinates = env.coordinates()
        client = stack.enter_context(httpx.Client(base_url=coordinates.api_url, timeout=60))
        yield AutosyncEnv(
            name=coordinates.name,
            api_url=coordinates.api_url,
            database_url=coordinates.database_url,
            service_key=coordinates.service_key,
            jwt_secret=coordinates.jwt_secret,
            client=client,
            owned=owned,
        )


@pytest.fixture(scope="session")
def _autosync_dovecot() -> Iterator[DovecotServer]:
    from harness import docker_local
    from harness.dovecot import running_dovecot

    try:
        engine = docker_local.client()
    except docker_local.HarnessError as exc:  # as autosync_env does: asked for, so a missing engine fails
        pytest.fail(f"autosync_mailbox: {exc}", pytrace=False)
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
