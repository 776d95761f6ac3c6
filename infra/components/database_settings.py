"""The database's autosync settings as a Pulumi dynamic resource.

create/update call `infra.dbsettings.configure` (ALTER DATABASE … SET app.settings.sync_function_url,
the service key into the private store, the scheduling mode through set_auto_sync_mode); delete
calls `infra.dbsettings.reset` (which also goes back to per-user scheduling). The same
functions serve the harness and the tests, so what `pulumi up` does is tested without Pulumi.

The service key never goes into this resource's outputs, only a SHA-256 of it (to notice a
rotation); it stays in the (secret) inputs. Like every dynamic provider here, the class is pickled
by reference, so the provider process imports `infra` from the project's virtualenv.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic


def key_digest(service_key: str) -> str:
    return hashlib.sha256(service_key.encode()).hexdigest()


class DatabaseSettingsProvider(pulumi.dynamic.ResourceProvider):
    """Configures the function URL and service key of one database."""

    def _configure(self, props: dict[str, Any]) -> dict[str, Any]:
        # Imported where used: the provider process needs psycopg, the program that declares the
        # resource does not.
        from infra import dbsettings

        mode = props.get("scheduling_mode") or "per_user"
        dbsettings.configure(
            props["database_url"],
            function_url=props["function_url"],
            service_key=props["service_key"],
            scheduling_mode=mode,
        )
        return {
            "database_url": props["database_url"],
            "function_url": props["function_url"],
            "service_key_sha256": key_digest(props["service_key"]),
            "scheduling_mode": mode,
        }

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(
            id_=f"settings-{secrets.token_hex(8)}", outs=self._configure(props)
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = [key for key in ("database_url", "function_url") if olds.get(key) != news.get(key)]
        if (olds.get("scheduling_mode") or "per_user") != (news.get("scheduling_mode") or "per_user"):
            changed.append("scheduling_mode")
        if olds.get("service_key_sha256") != key_digest(str(news.get("service_key"))):
            changed.append("service_key")
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(outs=self._configure(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        from infra import dbsettings

        # Leaves no URL to call and no key behind in a database this stack stops managing.
        dbsettings.reset(props["database_url"])


@dataclass
class DatabaseSettingsArgs:
    """Arguments of `DatabaseSettings`."""

    database_url: pulumi.Input[str]
    function_url: pulumi.Input[str]
    service_key: pulumi.Input[str]
    # 'per_user' (one pg_cron job per user) or 'dispatcher' (one job for all): set_auto_sync_mode.
    scheduling_mode: pulumi.Input[str] = "per_user"


class DatabaseSettings(pulumi.dynamic.Resource, module="autosync", name="DatabaseSettings"):
    """`app.settings.sync_function_url` and the service key of the database at `database_url`."""

    function_url: pulumi.Output[str]

    def __init__(
        self, name: str, args: DatabaseSettingsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "database_url": pulumi.Output.secret(args.database_url),
            "function_url": args.function_url,
            "service_key": pulumi.Output.secret(args.service_key),
            "service_key_sha256": None,
            "scheduling_mode": args.scheduling_mode,
        }
        super().__init__(
            DatabaseSettingsProvider(),
            name,
            props,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["database_url", "service_key_sha256"])
            ),
        )
