"""Alembic migrations as a Pulumi dynamic resource: `pulumi up` upgrades the schema.

The provider only calls `infra.migrations` (the same code the harness and the CLI use). It runs
again whenever the set of revisions changes (`versions_hash`, a hash of alembic/versions), the
target revision changes, or the database changes. Deleting the resource does not downgrade: the
schema holds user data, and `pulumi destroy` of a stack that uses an existing database must leave
it intact (when the stack owns the database, destroying the container and volume removes it).

Dill pickles this provider by reference (module + class name), so the process that runs it must
be able to import `infra`: the repo is installed into the project's virtualenv (`pip install -e`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

from infra import migrations as schema
from infra.containers import REPO_ROOT, context_hash

VERSIONS_DIR = REPO_ROOT / "alembic" / "versions"

# What a change of forces a new `upgrade`.
_RERUN_ON = ("database_url", "versions_hash", "target")


def versions_hash() -> str:
    """A hash of every revision file: a new or edited revision changes it."""
    return context_hash(VERSIONS_DIR)


class MigrationsProvider(pulumi.dynamic.ResourceProvider):
    """create/update run `alembic upgrade <target>`; read reports the current revision; delete is a no-op."""

    def _upgrade(self, props: dict[str, Any]) -> dict[str, Any]:
        revision = schema.upgrade(props["database_url"], props["target"])
        return {
            "database_url": props["database_url"],
            "versions_hash": props["versions_hash"],
            "target": props["target"],
            "revision": revision,
        }

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(
            id_=f"migrations-{secrets.token_hex(8)}", outs=self._upgrade(props)
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = [key for key in _RERUN_ON if olds.get(key) != news.get(key)]
        # Updated in place: a new database URL (e.g. a rotated password) is the same database.
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(outs=self._upgrade(news))

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        # `pulumi refresh`: someone may have migrated by hand; report what the database says.
        return pulumi.dynamic.ReadResult(
            id_=id_, outs={**props, "revision": schema.current(props["database_url"])}
        )

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Deliberately nothing: never downgrade a schema that holds user data (see module docstring).
        return None


@dataclass
class MigrationsArgs:
    """Arguments of `Migrations`; `versions_hash` defaults to the hash of alembic/versions now."""

    database_url: pulumi.Input[str]
    target: pulumi.Input[str] = "head"
    versions_hash: pulumi.Input[str] | None = None


class Migrations(pulumi.dynamic.Resource, module="autosync", name="Migrations"):
    """The schema of the database at `database_url`, upgraded to `target`; `revision` is the result."""

    revision: pulumi.Output[str]

    def __init__(self, name: str, args: MigrationsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "database_url": pulumi.Output.secret(args.database_url),
            "target": args.target,
            "versions_hash": args.versions_hash if args.versions_hash is not None else versions_hash(),
            "revision": None,
        }
        super().__init__(
            MigrationsProvider(),
            name,
            props,
            # The outputs repeat the URL (delete/diff get outputs, not inputs): keep it secret there too.
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["database_url"])
            ),
        )
