"""The Pulumi program (infra/__main__.py) run offline under Pulumi's mocks.

Each test runs the real program with a stack config and inspects what it registered: resources,
parents, explicit dependencies, inputs (secrets still marked) and the stack exports.
"""

from __future__ import annotations

import pytest

from infra.components.secrets import GeneratedSecret, generate
from infra.stack_config import StackConfigError
from tests.infra.mocks import MOCK_REVISION, ProgramRun, mock_image_id, resolve

CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/image:Image"
VOLUME = "docker:index/volume:Volume"
MIGRATIONS = "pulumi-python:dynamic/autosync:Migrations"
SETTINGS = "pulumi-python:dynamic/autosync:DatabaseSettings"
GENERATED = f"pulumi-python:{GeneratedSecret._resource_type_name}"
DB_LOGIN = "pulumi-python:dynamic/autosync:DatabasePassword"
KEYS = "pulumi-python:dynamic/autosync:EncryptionKeys"
STORED = "pulumi-python:dynamic/autosync:StoredSecrets"
SERVICE_KEYS = "pulumi-python:dynamic/autosync:ServiceKeys"

KEY = "s" * 48
FERNET_NEW = generate("fernet", 32)
FERNET_OLD = generate("fernet", 32)
EXISTING_DB = "postgresql://app:pw@db.example.com:5432/autosync"


def docker_resources(run: ProgramRun) -> list[str]:
    return sorted(r.name for r in run.monitor.registrations.values() if r.type.startswith("docker:"))


def test_default_stack_declares_the_whole_graph(run_program) -> None:  # type: ignore[no-untyped-def]
    run = run_program()
    monitor = run.monitor
    assert docker_resources(run) == [
        "postgres-container",
        "postgres-image",
        "postgres-volume-autosync-pulumi-dev-postgres-data",
        "sync-function-image",
        "sync-function-serve",
        "sync-function-worker-1",
    ]
    assert sorted(r.name for r in monitor.by_type(GENERATED)) == [
        "secrets-database-password",
        "secrets-encryption-key",
        "secrets-jwt-secret",
        "secrets-service-key",
    ]
    postgres = monitor.by_name("postgres")
    function = monitor.by_name("sync-function")
    assert postgres.type == "autosync:postgres:Postgres"
    assert function.type == "autosync:sync_function:SyncFunction"
    for child in (
        "postgres-image",
        "postgres-container",
        "postgres-volume-autosync-pulumi-dev-postgres-data",
    ):
        assert monitor.by_name(child).parent == postgres.urn
    for child in ("sync-function-image", "sync-function-serve", "sync-function-worker-1"):
        assert monitor.by_name(child).parent == function.urn


def test_order_database_migrations_function_settings(run_program) -> None:  # type: ignore[no-untyped-def]
    monitor = run_program().monitor
    container = monitor.by_name("postgres-container")
    migrations = monitor.by_name("migrations")
    settings = monitor.by_name("database-settings")
    assert container.plain("wait") is True  # created only once healthy
    assert container.urn in migrations.dependencies
    assert migrations.urn in settings.dependencies
    assert migrations.urn in monitor.by_name("sync-function").dependencies
    # The containers themselves wait too, not only their component; and the database gets the
    # service key only once they run (accepting it): a rotation refuses no pg_cron run.
    for name in ("sync-function-serve", "sync-function-worker-1"):
        assert migrations.urn in monitor.by_name(name).dependencies
        assert monitor.by_name(name).urn in settings.dependencies, name


def test_service_keys_before_the_containers(run_program) -> None:  # type: ignore[no-untyped-def]
    monitor = run_program({"serviceKey": KEY}, secret={"serviceKey"}).monitor
    keys = monitor.by_name("service-keys")
    assert keys.type == SERVICE_KEYS
    assert monitor.by_name("migrations").urn in keys.dependencies  # it reads the private store
    assert keys.is_secret("current") and keys.is_secret("database_url")
    assert keys.plain("current") == KEY
    for name in ("sync-function-serve", "sync-function-worker-1"):
        container = monitor.by_name(name)
        assert keys.urn in container.dependencies, name
        env = container.plain("envs")
        assert f"AUTOSYNC_SERVICE_KEY={KEY}" in env
        # The mocks' ServiceKeys answers "no rotation under way": the variable is there, empty.
        assert "AUTOSYNC_SERVICE_KEY_PREVIOUS=" in env
        assert container.is_secret("envs")


def test_existing_function_has_no_service_keys(run_program) -> None:  # type: ignore[no-untyped-def]
    monitor = run_program(
        {"functionUrl": "https://sync.example.com", "serviceKey": KEY}, secret={"serviceKey"}
    ).monitor
    assert monitor.by_type(SERVICE_KEYS) == []
    assert monitor.by_name("migrations").urn in monitor.by_name("database-settings").dependencies


def test_the_image_builds_without_waiting_for_the_database(run_program) -> None:  # type: ignore[no-untyped-def]
    monitor = run_program().monitor
    waits_for = set(monitor.by_name("sync-function-image").dependencies)
    for name in (
        "postgres-container",
        "postgres-password",
        "migrations",
        "database-settings",
        "encryption-keys",
    ):
        assert monitor.by_name(name).urn not in waits_for, name
    assert monitor.by_name("postgres-image").dependencies == []


def test_password_is_applied_before_anything_connects(run_program) -> None:  # type: ignore[no-untyped-def]
    monitor = run_program({"postgresPort": "55432", "databaseUser": "owner"}).monitor
    password = monitor.by_name("postgres-password")
    assert password.type == DB_LOGIN
    assert monitor.by_name("postgres-container").urn in password.dependencies
    assert password.is_secret("password")
    assert {key: password.plain(key) for key in ("host", "port", "user", "database")} == {
        "host": "127.0.0.1",
        "port": 55432,
        "user": "owner",
        "database": "autosync",
    }
    # The URL the migrations, settings and containers use is the password resource's output.
    for name in ("migrations", "database-settings", "encryption-keys", "sync-function-serve"):
        assert password.urn in monitor.by_name(name).dependencies, name
    assert password.plain("password") in monitor.by_name("migrations").plain("database_url")


def test_encryption_keys_before_the_containers_reencryption_after(run_program) -> None:  # type: ignore[no-untyped-def]
    monitor = run_program({"workers": "2"}).monitor
    keys = monitor.by_name("encryption-keys")
    stored = monitor.by_name("stored-secrets")
    generated = monitor.by_name("secrets-encryption-key")
    assert keys.type == KEYS and stored.type == STORED
    assert generated.urn in keys.dependencies and monitor.by_name("migrations").urn in keys.dependencies
    assert keys.is_secret("configured") and stored.is_secret("keys")
    containers = ["sync-function-serve", "sync-function-worker-1", "sync-function-worker-2"]
    for name in containers:
        container = monitor.by_name(name)
        assert keys.urn in container.dependencies, name
        # The containers get the key list, not the configured key alone.
        assert f"AUTOSYNC_ENCRYPTION_KEY={keys.plain('configured')}" in container.plain("envs")
        assert container.urn in stored.dependencies, name


def test_configured_key_list_reaches_the_keyring(run_program) -> None:  # type: ignore[no-untyped-def]
    key_list = f"{FERNET_NEW},{FERNET_OLD}"
    monitor = run_program({"encryptionKey": key_list}, secret={"encryptionKey"}).monitor
    assert monitor.by_name("encryption-keys").plain("configured") == key_list
    assert "secrets-encryption-key" not in {r.name for r in monitor.by_type(GENERATED)}


def test_exports(run_program) -> None:  # type: ignore[no-untyped-def]
    run = run_program({"functionPort": "8080", "postgresPort": "55432"})
    assert set(run.exports) == {"functionUrl", "databaseUrl", "migrationRevision"}
    assert resolve(run.exports["functionUrl"]) == ("http://127.0.0.1:8080", False)
    assert resolve(run.exports["migrationRevision"]) == (MOCK_REVISION, False)
    url, secret = resolve(run.exports["databaseUrl"])
    assert secret, "the database URL carries the password: it must be exported as a secret"
    password = run.monitor.by_name("postgres-container").plain("envs")
    assert url.startswith("postgresql://postgres:") and url.endswith("@127.0.0.1:55432/autosync")
    assert f"POSTGRES_PASSWORD={url.split(':')[2].split('@')[0]}" in password


def test_secrets_stay_secret(run_program) -> None:  # type: ignore[no-untyped-def]
    run = run_program()
    monitor = run.monitor
    settings = monitor.by_name("database-settings")
    service_key = settings.plain("service_key")
    assert len(service_key) >= 32
    assert settings.is_secret("service_key") and settings.is_secret("database_url")
    assert monitor.by_name("migrations").is_secret("database_url")
    # No plain export contains the key; the only secret export is the database URL.
    for name, output in run.exports.items():
        value, secret = resolve(output)
        assert service_key not in str(value), name
        assert secret == (name == "databaseUrl"), name
    # Every container's environment holds secrets, so the whole list is secret.
    for container in monitor.by_type(CONTAINER):
        assert container.is_secret("envs"), container.name
    serve_env = monitor.by_name("sync-function-serve").plain("envs")
    assert f"AUTOSYNC_SERVICE_KEY={service_key}" in serve_env
    assert not any(
        "<set-by-pulumi-secret>" in entry for c in monitor.by_type(CONTAINER) for entry in c.plain("envs")
    )


def test_configured_secrets_are_used_not_generated(run_program) -> None:  # type: ignore[no-untyped-def]
    run = run_program(
        {"serviceKey": KEY, "databasePassword": "p" * 16}, secret={"serviceKey", "databasePassword"}
    )
    monitor = run.monitor
    assert sorted(r.name for r in monitor.by_type(GENERATED)) == [
        "secrets-encryption-key",
        "secrets-jwt-secret",
    ]
    assert monitor.by_name("database-settings").plain("service_key") == KEY
    assert "POSTGRES_PASSWORD=" + "p" * 16 in monitor.by_name("postgres-container").plain("envs")


def test_existing_infrastructure_creates_no_containers(run_program) -> None:  # type: ignore[no-untyped-def]
    run = run_program(
        {"databaseUrl": EXISTING_DB, "functionUrl": "https://fn.example.com/", "serviceKey": KEY},
        secret={"databaseUrl", "serviceKey"},
    )
    monitor = run.monitor
    assert docker_resources(run) == []
    assert monitor.by_type(GENERATED) == []  # nothing left to generate
    migrations = monitor.by_name("migrations")
    settings = monitor.by_name("database-settings")
    assert migrations.plain("database_url") == EXISTING_DB and migrations.dependencies == []
    assert settings.plain("function_url") == "https://fn.example.com"
    assert migrations.urn in settings.dependencies
    assert resolve(run.exports["functionUrl"]) == ("https://fn.example.com", False)
    assert resolve(run.exports["databaseUrl"]) == (EXISTING_DB, True)


def test_existing_database_with_local_function(run_program) -> None:  # type: ignore[no-untyped-def]
    run = run_program({"databaseUrl": EXISTING_DB}, secret={"databaseUrl"})
    monitor = run.monitor
    assert docker_resources(run) == ["sync-function-image", "sync-function-serve", "sync-function-worker-1"]
    assert "secrets-database-password" not in {r.name for r in monitor.by_type(GENERATED)}
    assert f"DATABASE_URL={EXISTING_DB}" in monitor.by_name("sync-function-worker-1").plain("envs")
    # The stack does not own that database's password, so it does not manage it.
    assert monitor.by_type(DB_LOGIN) == []
    assert monitor.by_name("encryption-keys").plain("database_url") == EXISTING_DB


def test_existing_function_with_local_database(run_program) -> None:  # type: ignore[no-untyped-def]
    run = run_program({"functionUrl": "http://10.0.0.5:8000", "serviceKey": KEY}, secret={"serviceKey"})
    assert docker_resources(run) == [
        "postgres-container",
        "postgres-image",
        "postgres-volume-autosync-pulumi-dev-postgres-data",
    ]
    assert run.monitor.by_name("database-settings").plain("function_url") == "http://10.0.0.5:8000"
    # No function container here, so no key list and nothing to re-encrypt from this stack.
    assert run.monitor.by_type(KEYS) == [] and run.monitor.by_type(STORED) == []


@pytest.mark.parametrize("workers", [0, 3])
def test_worker_count(run_program, workers: int) -> None:  # type: ignore[no-untyped-def]
    run = run_program({"workers": str(workers)})
    names = [n for n in docker_resources(run) if n.startswith("sync-function-worker-")]
    assert names == [f"sync-function-worker-{i}" for i in range(1, workers + 1)]


def test_name_prefix_and_labels(run_program) -> None:  # type: ignore[no-untyped-def]
    monitor = run_program({"namePrefix": "acme"}).monitor
    names = sorted(c.plain("name") for c in monitor.by_type(CONTAINER))
    assert names == ["acme-function-serve", "acme-function-worker-1", "acme-postgres"]
    for resource in [*monitor.by_type(CONTAINER), *monitor.by_type(VOLUME)]:
        assert {"label": "autosync.env", "value": "acme"} in resource.plain("labels")


def test_invalid_config_stops_the_program_before_any_resource(run_program) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StackConfigError, match="autosync:postgresPort"):
        run_program({"postgresPort": "not-a-port"})


def test_image_tag_override(run_program) -> None:  # type: ignore[no-untyped-def]
    monitor = run_program({"postgresImageTag": "17-custom", "functionImageTag": "v1"}).monitor
    assert monitor.by_name("postgres-image").plain("imageName") == "autosync-postgres:17-custom"
    assert monitor.by_name("postgres-container").plain("image") == mock_image_id(
        "autosync-postgres:17-custom"
    )
    assert monitor.by_name("sync-function-serve").plain("image") == mock_image_id("autosync-sync-function:v1")


def test_workers_expose_their_metrics_port(run_program) -> None:  # type: ignore[no-untyped-def]
    monitor = run_program({"workers": "2", "workerMetricsPort": "9600"}).monitor
    for index, port in ((1, "9600"), (2, "9601")):
        worker = monitor.by_name(f"sync-function-worker-{index}")
        assert worker.plain("command") == ["worker", "--metrics-port", port]


def test_scheduling_mode_reaches_the_database_settings(run_program) -> None:  # type: ignore[no-untyped-def]
    assert run_program().monitor.by_name("database-settings").plain("scheduling_mode") == "per_user"
    settings = run_program({"schedulingMode": "dispatcher"}).monitor.by_name("database-settings")
    assert settings.plain("scheduling_mode") == "dispatcher"


def test_api_processes_reach_the_serve_container(run_program) -> None:  # type: ignore[no-untyped-def]
    assert not any(
        e.startswith("AUTOSYNC_API_PROCESSES=")
        for e in run_program().monitor.by_name("sync-function-serve").plain("envs")
    )
    serve_env = run_program({"apiProcesses": "3"}).monitor.by_name("sync-function-serve").plain("envs")
    assert "AUTOSYNC_API_PROCESSES=3" in serve_env
