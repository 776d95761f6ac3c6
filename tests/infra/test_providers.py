"""The dynamic providers: they pickle the way Pulumi ships them, and they do the right thing.

The first half is offline. The second half (marked `docker`) calls the providers' methods directly
against a real Postgres; test_provider_host.py makes the same calls through the provider host the
engine launches, over gRPC."""

from __future__ import annotations

import base64
import hashlib

import dill
import psycopg
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from infra import dbsettings, migrations
from infra.components.database_password import DatabasePasswordProvider
from infra.components.database_settings import DatabaseSettingsProvider, key_digest
from infra.components.encryption import EncryptionKeysProvider, StoredSecretsProvider
from infra.components.migrations import MigrationsProvider, versions_hash
from infra.components.secrets import GeneratedSecretProvider, generate
from infra.containers import PostgresConfig

PROVIDERS = [
    GeneratedSecretProvider,
    MigrationsProvider,
    DatabaseSettingsProvider,
    DatabasePasswordProvider,
    EncryptionKeysProvider,
    StoredSecretsProvider,
]


@pytest.mark.parametrize("provider_class", PROVIDERS)
def test_provider_round_trips_through_pulumis_serializer(provider_class: type) -> None:
    payload = serialize_provider(provider_class())  # what Pulumi stores in the `__provider` input
    restored = dill.loads(base64.b64decode(payload))  # noqa: S301 - our own payload
    assert type(restored) is provider_class
    # Pickled by reference, not by value: the provider host imports the code from the installed
    # repo, and no value captured at declaration time (a secret) rides along in the state.
    assert provider_class.__module__.encode() in base64.b64decode(payload)
    assert len(payload) < 200


def test_serialization_is_deterministic() -> None:
    # A changing payload would show every dynamic resource as changed on every `pulumi up`.
    assert serialize_provider(MigrationsProvider()) == serialize_provider(MigrationsProvider())


def test_generated_secrets() -> None:
    provider = GeneratedSecretProvider()
    first = provider.create({"kind": "token", "nbytes": 48})
    second = provider.create({"kind": "token", "nbytes": 48})
    assert first.outs["value"] != second.outs["value"] and len(first.outs["value"]) == 64
    assert first.id != second.id
    assert len(base64.urlsafe_b64decode(generate("fernet", 32))) == 32
    same = provider.diff(
        first.id, first.outs, {"kind": "token", "nbytes": 48.0}
    )  # numbers come back as floats
    assert not same.changes
    changed = provider.diff(first.id, first.outs, {"kind": "fernet", "nbytes": 48})
    assert changed.changes and changed.replaces == ["kind"]


def test_migrations_diff_reruns_on_new_revisions() -> None:
    olds = {"database_url": "postgresql://a/b", "versions_hash": "h1", "target": "head", "revision": "0008"}
    provider = MigrationsProvider()
    assert not provider.diff("id", olds, {**olds, "revision": None}).changes
    assert provider.diff("id", olds, {**olds, "versions_hash": "h2"}).changes
    assert provider.diff("id", olds, {**olds, "target": "0007"}).changes
    assert provider.diff("id", olds, {**olds, "versions_hash": "h2"}).replaces == []


def test_versions_hash_tracks_the_revision_files() -> None:
    assert versions_hash() == versions_hash()
    assert len(versions_hash()) == 16


def test_settings_diff_notices_a_rotated_key_without_storing_it() -> None:
    key = "k" * 40
    olds = {
        "database_url": "postgresql://a/b",
        "function_url": "http://127.0.0.1:8000",
        "service_key_sha256": key_digest(key),
    }
    provider = DatabaseSettingsProvider()
    assert not provider.diff("id", olds, {**olds, "service_key": key}).changes
    assert provider.diff("id", olds, {**olds, "service_key": "n" * 40}).changes
    assert provider.diff("id", olds, {**olds, "service_key": key, "function_url": "http://x:1"}).changes
    assert key_digest(key) == hashlib.sha256(key.encode()).hexdigest()
    # No mode recorded (a stack from before the key) is per-user; a new mode is a change.
    assert not provider.diff("id", olds, {**olds, "service_key": key, "scheduling_mode": "per_user"}).changes
    assert provider.diff("id", olds, {**olds, "service_key": key, "scheduling_mode": "dispatcher"}).changes


# --- against a real Postgres -------------------------------------------------------------


def new_session_setting(database_url: str) -> str | None:
    """`app.settings.sync_function_url` as a new session (a pg_cron run) sees it."""
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT current_setting('app.settings.sync_function_url', true)").fetchone()
    return None if row is None or row[0] in (None, "") else str(row[0])


@pytest.mark.docker
def test_migrations_provider_upgrades_a_fresh_database(fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    provider = MigrationsProvider()
    props = {"database_url": url, "versions_hash": versions_hash(), "target": "head"}
    assert migrations.current(url) is None

    created = provider.create(props)
    assert created.outs["revision"] == migrations.head() == migrations.current(url)
    assert created.outs["database_url"] == url  # needed by later diffs; marked secret by the resource

    updated = provider.update(created.id, created.outs, {**props, "versions_hash": "changed"})
    assert updated.outs["revision"] == migrations.head()
    assert updated.outs["versions_hash"] == "changed"

    read = provider.read(created.id, {**created.outs, "revision": "stale"})
    assert read.outs["revision"] == migrations.head()

    provider.delete(created.id, created.outs)
    assert migrations.current(url) == migrations.head(), "delete must never downgrade"


@pytest.mark.docker
def test_settings_provider_configures_updates_and_resets(database_url: str) -> None:
    provider = DatabaseSettingsProvider()
    key = "k" * 40
    props = {"database_url": database_url, "function_url": "http://127.0.0.1:8000", "service_key": key}
    try:
        created = provider.create(props)
        assert "service_key" not in created.outs and key not in repr(created.outs)
        assert created.outs["service_key_sha256"] == key_digest(key)
        assert new_session_setting(database_url) == "http://127.0.0.1:8000"
        assert dbsettings.function_url(database_url) == "http://127.0.0.1:8000"
        assert dbsettings.service_key_is_set(database_url)

        news = {**props, "function_url": "http://127.0.0.1:8001", "service_key": "n" * 40}
        assert provider.diff(created.id, created.outs, news).changes
        updated = provider.update(created.id, created.outs, news)
        assert updated.outs["service_key_sha256"] == key_digest("n" * 40)
        assert new_session_setting(database_url) == "http://127.0.0.1:8001"

        provider.delete(created.id, updated.outs)
        assert new_session_setting(database_url) is None
        assert not dbsettings.service_key_is_set(database_url)
    finally:
        dbsettings.reset(database_url)


@pytest.mark.docker
def test_settings_provider_refuses_a_short_key(database_url: str) -> None:
    provider = DatabaseSettingsProvider()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="at least 32 characters"):
        provider.create(
            {"database_url": database_url, "function_url": "http://127.0.0.1:8000", "service_key": "short"}
        )
    assert not dbsettings.service_key_is_set(database_url)


@pytest.mark.docker
def test_settings_provider_switches_the_scheduling_mode(database_url: str) -> None:
    provider = DatabaseSettingsProvider()
    props = {
        "database_url": database_url,
        "function_url": "http://127.0.0.1:8000",
        "service_key": "k" * 40,
        "scheduling_mode": "dispatcher",
    }

    def dispatcher_jobs() -> int:
        with psycopg.connect(database_url) as connection:
            row = connection.execute(
                "SELECT count(*) FROM cron.job WHERE jobname = 'autosync-dispatcher'"
            ).fetchone()
        assert row is not None
        return int(row[0])

    try:
        created = provider.create(props)
        outs = created.outs
        assert outs is not None and outs["scheduling_mode"] == "dispatcher"
        assert dbsettings.scheduling_mode(database_url) == "dispatcher" and dispatcher_jobs() == 1
        news = {**props, "scheduling_mode": "per_user"}
        assert provider.diff(created.id, outs, news).changes
        provider.update(created.id, outs, news)
        assert dbsettings.scheduling_mode(database_url) == "per_user" and dispatcher_jobs() == 0
        updated = provider.update(created.id, outs, props).outs
        assert updated is not None
        provider.delete(created.id, updated)
        assert dbsettings.scheduling_mode(database_url) == "per_user" and dispatcher_jobs() == 0
    finally:
        dbsettings.reset(database_url)
