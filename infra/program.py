"""The autosync Pulumi program: read the stack config, compose the components, export.

Run by the root `__main__.py` (Pulumi.yaml explains why it lives there). Order: database healthy →
its password applied → migrations → encryption and service keys → function containers → database
settings (function URL, the service key pg_cron sends) and stored secrets re-encrypted. Each step
depends on the previous one explicitly where it does not consume an output of it that would imply it.
"""

from __future__ import annotations

import pulumi

from infra import stack_config
from infra.components.database_settings import DatabaseSettings, DatabaseSettingsArgs
from infra.components.encryption import EncryptionKeys, EncryptionKeysArgs, StoredSecrets, StoredSecretsArgs
from infra.components.migrations import Migrations, MigrationsArgs
from infra.components.postgres import Postgres, PostgresArgs
from infra.components.secrets import Secrets, SecretsArgs
from infra.components.service_keys import ServiceKeys, ServiceKeysArgs
from infra.components.sync_function import SyncFunction, SyncFunctionArgs


def main() -> None:
    """Declare the stack's resources and exports."""
    config = stack_config.from_pulumi(stack=pulumi.get_stack())
    prefix = config.name_prefix

    needed = {"service_key"}
    if config.creates_postgres:
        needed.add("database_password")
    if config.creates_function:
        needed.update({"jwt_secret", "encryption_key"})
    secrets = Secrets(
        "secrets",
        SecretsArgs(
            database_password=config.database_password,
            service_key=config.service_key,
            jwt_secret=config.jwt_secret,
            encryption_key=config.encryption_key,
            needed=frozenset(needed),
        ),
    )

    database_ready: list[pulumi.Resource] = []
    if config.database_url is None:
        assert secrets.database_password is not None
        postgres = Postgres(
            "postgres",
            PostgresArgs(
                container_name=f"{prefix}-postgres",
                password=secrets.database_password,
                port=config.postgres_port,
                database=config.database_name,
                user=config.database_user,
                image_tag=config.postgres_image_tag,
                env_label=prefix,
            ),
        )
        database_url = postgres.url  # an output of the password resource: it waits for the server
        database_ready.append(postgres.container)
    else:
        database_url = pulumi.Output.secret(config.database_url)

    migrations = Migrations(
        "migrations",
        MigrationsArgs(database_url=database_url),
        pulumi.ResourceOptions(depends_on=database_ready),
    )
    assert secrets.service_key is not None
    # The database stores the service key after the containers that accept it are up (a rotation
    # then refuses no pg_cron run: infra/components/service_keys.py).
    settings_after: list[pulumi.Resource] = [migrations]

    if config.creates_function:
        assert secrets.jwt_secret is not None and secrets.encryption_key is not None
        keys = EncryptionKeys(
            "encryption-keys",
            EncryptionKeysArgs(database_url=database_url, configured=secrets.encryption_key),
            pulumi.ResourceOptions(depends_on=[migrations]),
        )
        service_keys = ServiceKeys(
            "service-keys",
            ServiceKeysArgs(database_url=database_url, current=secrets.service_key),
            pulumi.ResourceOptions(depends_on=[migrations]),
        )
        function = SyncFunction(
            "sync-function",
            SyncFunctionArgs(
                name_prefix=f"{prefix}-function",
                database_url=database_url,
                service_key=secrets.service_key,
                service_key_previous=service_keys.previous,
                jwt_secret=secrets.jwt_secret,
                encryption_key=keys.keys,
                port=config.function_port,
                workers=config.workers,
                worker_metrics_port=config.worker_metrics_port,
                api_processes=config.api_processes,
                image_tag=config.function_image_tag,
                build_args=dict(config.function_build_args),
                env_label=prefix,
            ),
            pulumi.ResourceOptions(depends_on=[migrations, keys, service_keys]),
        )
        settings_after.append(function)
        # Only once every container runs with the new key list: a container still on the old key
        # alone could not read what this rewrites.
        StoredSecrets(
            "stored-secrets",
            StoredSecretsArgs(database_url=database_url, keys=keys.keys),
            pulumi.ResourceOptions(depends_on=[function]),
        )

    DatabaseSettings(
        "database-settings",
        DatabaseSettingsArgs(
            database_url=database_url,
            function_url=config.sync_function_url,
            service_key=secrets.service_key,
            scheduling_mode=config.scheduling_mode,
        ),
        pulumi.ResourceOptions(depends_on=settings_after),
    )

    pulumi.export("functionUrl", config.sync_function_url)
    pulumi.export("databaseUrl", database_url)
    pulumi.export("migrationRevision", migrations.revision)
