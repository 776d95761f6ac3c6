"""Every dynamic provider through the provider host the engine launches, over gRPC, against a real Postgres.

The mocks tests (test_program.py) see what the program declares; these see what the engine would
get back: the host started from the engine's working directory with its environment
(tests/infra/provider_host.py), the provider unpickled from the `__provider` property, and the
check/diff/create/update/read/delete calls of a preview and an `up`, with unknown inputs where a
preview has them. The engine sends plain values (no secret wrappers) because the host declines
secrets in Configure; the first test pins that.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from cryptography.fernet import Fernet

from infra import dbsettings, migrations
from infra.components.database_password import DatabasePasswordProvider
from infra.components.database_settings import DatabaseSettingsProvider, key_digest
from infra.components.encryption import EncryptionKeysProvider, StoredSecretsProvider
from infra.components.migrations import MigrationsProvider, versions_hash
from infra.components.secrets import GeneratedSecretProvider
from infra.components.service_keys import ServiceKeysProvider
from infra.containers import REPO_ROOT, PostgresConfig
from sync_function import crypto
from tests.infra.provider_host import (
    UNKNOWN,
    ProviderHost,
    program_directory,
    provider_host,
    rpc_error_details,
)
from tests.support.db import new_user


@pytest.fixture(scope="module")
def host() -> Iterator[ProviderHost]:
    with provider_host() as running:
        running.configure()
        yield running


def test_host_runs_where_and_how_the_engine_runs_it(host: ProviderHost) -> None:
    assert host.cwd == program_directory() == REPO_ROOT
    response = host.configure()
    # So the engine strips secret markers before every call, and re-applies them to the outputs.
    assert response.acceptSecrets is False


def test_generated_secret(host: ProviderHost) -> None:
    provider = GeneratedSecretProvider()
    inputs, failures = host.check(provider, {}, {"kind": "token", "nbytes": 48})
    assert failures == [] and inputs == {"kind": "token", "nbytes": 48}
    id_, outs = host.create(provider, {"kind": "token", "nbytes": 48})
    assert id_.startswith("generated-") and len(outs["value"]) == 64
    # Numbers cross the wire as floats; that is no change.
    assert host.diff(provider, id_, outs, {"kind": "token", "nbytes": 48.0}).changes is False
    replaced = host.diff(provider, id_, outs, {"kind": "fernet", "nbytes": 48})
    assert replaced.changes and replaced.replaces == ["kind"]
    assert host.read(provider, id_, outs) == (id_, outs)
    host.delete(provider, id_, outs)


@pytest.mark.docker
def test_migrations(host: ProviderHost, fresh_postgres: PostgresConfig) -> None:
    provider = MigrationsProvider()
    url = fresh_postgres.url
    props = {"database_url": url, "versions_hash": versions_hash(), "target": "head", "revision": None}

    # Preview of a new stack: the URL is not known yet (the password resource has not run).
    inputs, failures = host.check(provider, {}, {**props, "database_url": UNKNOWN})
    assert failures == [] and inputs["database_url"] == UNKNOWN

    id_, outs = host.create(provider, props)
    assert outs["revision"] == migrations.head() == migrations.current(url)

    assert host.diff(provider, id_, outs, {**props, "revision": UNKNOWN}).changes is False
    preview = host.diff(provider, id_, outs, {**props, "database_url": UNKNOWN})
    assert preview.changes and preview.replaces == []
    assert host.diff(provider, id_, outs, {**props, "versions_hash": "new"}).changes

    outs = host.update(provider, id_, outs, {**props, "versions_hash": "new"})
    assert outs["versions_hash"] == "new" and outs["revision"] == migrations.head()

    assert host.read(provider, id_, {**outs, "revision": "stale"})[1]["revision"] == migrations.head()

    host.delete(provider, id_, outs)
    assert migrations.current(url) == migrations.head(), "delete must never downgrade"


@pytest.mark.docker
def test_database_settings(host: ProviderHost, database_url: str) -> None:
    provider = DatabaseSettingsProvider()
    key = "k" * 40
    props = {"database_url": database_url, "function_url": "http://127.0.0.1:8000", "service_key": key}
    try:
        inputs, failures = host.check(provider, {}, {**props, "service_key": UNKNOWN})
        assert failures == [] and inputs["service_key"] == UNKNOWN

        id_, outs = host.create(provider, props)
        assert "service_key" not in outs and outs["service_key_sha256"] == key_digest(key)
        assert dbsettings.function_url(database_url) == "http://127.0.0.1:8000"
        assert dbsettings.service_key_is_set(database_url)

        assert host.diff(provider, id_, outs, props).changes is False
        assert host.diff(
            provider, id_, outs, {**props, "service_key": UNKNOWN}
        ).changes  # a key being generated

        rotated = {**props, "function_url": "http://127.0.0.1:8001", "service_key": "n" * 40}
        outs = host.update(provider, id_, outs, rotated)
        assert outs["service_key_sha256"] == key_digest("n" * 40)
        assert dbsettings.function_url(database_url) == "http://127.0.0.1:8001"
        assert host.read(provider, id_, outs) == (id_, outs)  # `pulumi refresh` keeps the state

        host.delete(provider, id_, outs)
        assert dbsettings.function_url(database_url) is None
        assert not dbsettings.service_key_is_set(database_url)
    finally:
        dbsettings.reset(database_url)


@pytest.mark.docker
def test_service_keys_rotation(host: ProviderHost, database_url: str) -> None:
    """The previous key is whatever the database holds until it holds the stack's key: the function
    accepts it while DatabaseSettings (after the containers) has not stored the new one yet."""
    provider = ServiceKeysProvider()
    old, new = "o" * 40, "n" * 40
    props = {"database_url": database_url, "current": old, "previous": None}
    store = functools.partial(dbsettings.configure, database_url, function_url="http://127.0.0.1:8000")
    try:
        dbsettings.reset(database_url)
        inputs, failures = host.check(provider, {}, {**props, "database_url": UNKNOWN})
        assert failures == [] and inputs["database_url"] == UNKNOWN

        # A new stack: nothing stored yet, nothing else to accept.
        id_, outs = host.create(provider, props)
        assert outs["previous"] == "" and outs["current"] == old
        store(service_key=old)  # DatabaseSettings, after the containers
        assert host.diff(provider, id_, outs, props).changes is False

        # Rotation: a preview while the new key is being generated, then the up.
        assert host.diff(provider, id_, outs, {**props, "current": UNKNOWN}).changes
        rotating = {**props, "current": new}
        assert host.diff(provider, id_, outs, rotating).changes
        outs = host.update(provider, id_, outs, rotating)
        assert (outs["current"], outs["previous"]) == (new, old)
        # The up stopped before the database got the new key: the next up keeps accepting the old one.
        assert host.diff(provider, id_, outs, rotating).changes is False
        # A database that cannot be asked keeps it too (the safe side).
        closed = "postgresql://nobody:nothing@127.0.0.1:9/none?connect_timeout=2"
        assert (
            host.diff(
                provider, id_, {**outs, "database_url": closed}, {**rotating, "database_url": closed}
            ).changes
            is False
        )

        store(service_key=new)
        # The next up drops the old key: the containers are replaced once more, with the new key alone.
        assert host.diff(provider, id_, outs, rotating).changes
        outs = host.update(provider, id_, outs, rotating)
        assert (outs["current"], outs["previous"]) == (new, "")
        assert host.diff(provider, id_, outs, rotating).changes is False
        assert host.read(provider, id_, outs) == (id_, outs)
        host.delete(provider, id_, outs)
        assert dbsettings.service_key_is_set(database_url), "delete leaves the database's key alone"
    finally:
        dbsettings.reset(database_url)


def can_log_in(config: PostgresConfig, password: str) -> bool:
    try:
        with psycopg.connect(
            f"postgresql://{config.user}:{password}@{config.host}:{config.port}/{config.database}"
        ):
            return True
    except psycopg.OperationalError:
        return False


@pytest.mark.docker
def test_database_password_rotates_with_the_current_password(
    host: ProviderHost, fresh_postgres: PostgresConfig
) -> None:
    provider = DatabasePasswordProvider()
    where = {
        "host": fresh_postgres.host,
        "port": fresh_postgres.port,
        "user": fresh_postgres.user,
        "database": fresh_postgres.database,
    }
    current = fresh_postgres.password
    props = {**where, "password": current, "url": None}

    inputs, failures = host.check(provider, {}, {**props, "password": UNKNOWN})
    assert failures == [] and inputs["password"] == UNKNOWN

    # A volume initialised with another password: refused with what to do, nothing created.
    with pytest.raises(grpc.RpcError) as refused:
        host.create(provider, {**props, "password": "not-the-password"})
    assert "POSTGRES_PASSWORD applies only to an empty volume" in rpc_error_details(refused.value)
    assert "not-the-password" not in rpc_error_details(refused.value)

    id_, outs = host.create(provider, props)
    assert outs["url"] == fresh_postgres.url

    new = "rotated-" + uuid.uuid4().hex
    assert host.diff(provider, id_, outs, props).changes is False
    assert host.diff(
        provider, id_, outs, {**props, "password": UNKNOWN}
    ).changes  # a password being generated
    assert host.diff(provider, id_, outs, {**props, "password": new}).replaces == []

    outs = host.update(provider, id_, outs, {**props, "password": new})
    assert can_log_in(fresh_postgres, new) and not can_log_in(fresh_postgres, current)
    assert outs["password"] == new and f":{new}@" in outs["url"]
    # The password went over as a SCRAM verifier, never as text the server could log.
    with psycopg.connect(outs["url"]) as connection:
        row = connection.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (fresh_postgres.user,)
        ).fetchone()
    assert row is not None and str(row[0]).startswith("SCRAM-SHA-256$")

    assert host.read(provider, id_, outs) == (id_, outs)  # Postgres reveals no password to refresh

    # A retried `up` (the state still holds the old password): the new one works already, no-op.
    again = host.update(provider, id_, {**outs, "password": current}, {**props, "password": new})
    assert again["password"] == new and can_log_in(fresh_postgres, new)

    # Neither password logs in: refused, nothing changed.
    with pytest.raises(grpc.RpcError) as lost:
        host.update(
            provider,
            id_,
            {**outs, "password": "lost-" + "x" * 12},
            {**props, "password": "third-" + "y" * 12},
        )
    assert "neither the new password nor the current one" in rpc_error_details(lost.value)
    assert can_log_in(fresh_postgres, new)

    # The role and database are fixed when the volume is initialised: refused at check (preview).
    _, failures = host.check(
        provider, {**props, "password": new}, {**props, "password": new, "user": "other"}
    )
    assert [prop for prop, _ in failures] == ["user"]
    assert "initialised with" in failures[0][1]

    host.delete(provider, id_, outs)
    assert can_log_in(fresh_postgres, new), "delete leaves the role alone"


def new_account(connection: psycopg.Connection, key: str, password: str) -> uuid.UUID:
    user_id = new_user(connection)
    row = connection.execute(
        """
        INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
        VALUES (%s, 'imap.example.com', 993, 'tls', %s, %s) RETURNING id
        """,
        (user_id, f"user-{user_id.hex[:8]}", crypto.encrypt_password(key, password)),
    ).fetchone()
    assert row is not None
    return row[0]


def stored_tokens(url: str) -> dict[uuid.UUID, bytes]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT id, password_encrypted FROM public.email_accounts").fetchall()
    return {row[0]: bytes(row[1]) for row in rows}


@pytest.mark.docker
def test_encryption_key_rotation(host: ProviderHost, fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    migrations.upgrade(url)
    first, second, third, stranger = (Fernet.generate_key().decode() for _ in range(4))
    with psycopg.connect(url, autocommit=True) as connection:
        accounts = {
            new_account(connection, first, f"mailbox-password-{i}"): f"mailbox-password-{i}" for i in range(3)
        }
    keyring, stored = EncryptionKeysProvider(), StoredSecretsProvider()

    # First `up`: the configured key is the whole list; nothing to rewrite.
    keys_props = {"database_url": url, "configured": first, "keys": None}
    keys_id, keys_outs = host.create(keyring, keys_props)
    assert keys_outs["keys"] == first
    stored_id, stored_outs = host.create(stored, {"database_url": url, "keys": first})
    assert stored_outs["reencrypted"] == 0

    # Preview of a rotation (the new generated key is not known yet): both show a change.
    assert host.diff(keyring, keys_id, keys_outs, {**keys_props, "configured": UNKNOWN}).changes
    assert host.diff(stored, stored_id, stored_outs, {"database_url": url, "keys": UNKNOWN}).changes
    assert host.diff(keyring, keys_id, keys_outs, keys_props).changes is False
    assert host.diff(stored, stored_id, stored_outs, {"database_url": url, "keys": first}).changes is False

    # The rotation: the containers get NEW,OLD; after them, everything is rewritten under NEW.
    keys_outs = host.update(keyring, keys_id, keys_outs, {**keys_props, "configured": second})
    assert keys_outs["keys"] == f"{second},{first}"
    news = {"database_url": url, "keys": keys_outs["keys"]}
    assert host.diff(stored, stored_id, stored_outs, news).changes
    stored_outs = host.update(stored, stored_id, stored_outs, news)
    assert stored_outs["reencrypted"] == 3
    for account, token in stored_tokens(url).items():
        assert crypto.decrypt_password(second, token) == accounts[account]  # the new key alone reads it

    assert host.read(keyring, keys_id, keys_outs) == (keys_id, keys_outs)
    assert host.read(stored, stored_id, stored_outs) == (stored_id, stored_outs)

    # The next rotation drops the first key: nothing needs it any more.
    keys_outs = host.update(keyring, keys_id, keys_outs, {**keys_props, "configured": third})
    assert keys_outs["keys"] == f"{third},{second}"

    # A key that reads nothing stored (state lost, a key set by hand): refused, nothing changed.
    before = stored_tokens(url)
    with pytest.raises(grpc.RpcError) as refused:
        host.create(keyring, {**keys_props, "configured": stranger})
    assert "cannot be decrypted with the stack's encryption keys" in rpc_error_details(refused.value)
    with pytest.raises(grpc.RpcError) as refused_again:
        host.update(stored, stored_id, stored_outs, {"database_url": url, "keys": stranger})
    assert "3 stored secret(s)" in rpc_error_details(refused_again.value)
    assert stored_tokens(url) == before
    # Naming the old key after the new one is the way out.
    _, recovered = host.create(keyring, {**keys_props, "configured": f"{stranger},{second}"})
    assert recovered["keys"] == f"{stranger},{second}"
    for secret in (first, second, third, stranger):
        assert secret not in rpc_error_details(refused.value) + rpc_error_details(refused_again.value)

    host.delete(stored, stored_id, stored_outs)
    host.delete(keyring, keys_id, keys_outs)
    assert stored_tokens(url) == before, "delete leaves stored secrets as they are"
