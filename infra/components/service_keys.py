"""The service keys the function containers accept, as a Pulumi dynamic resource.

`ServiceKeys` comes after the migrations and before the function containers; `DatabaseSettings`
stores the new key after the containers. So on a rotation the containers are first replaced with
AUTOSYNC_SERVICE_KEY=NEW and AUTOSYNC_SERVICE_KEY_PREVIOUS=<the key the database holds>, then the
database gets NEW, and every pg_cron run in between presents a key the function accepts. The next
`pulumi up` sees that the database holds NEW and drops the previous key (the containers are replaced
once more); until then `autosync doctor` reports it. The decision is `infra.service_keys.previous_key`.

The keys stay in this resource's secret state only.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic


class ServiceKeysProvider(pulumi.dynamic.ResourceProvider):
    """Computes the previous key from what the database holds (`infra.service_keys`)."""

    def _keys(self, props: dict[str, Any]) -> dict[str, Any]:
        from infra import service_keys

        return {
            "database_url": props["database_url"],
            "current": props["current"],
            "previous": service_keys.previous_key(props["database_url"], props["current"]),
        }

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=f"service-keys-{secrets.token_hex(8)}", outs=self._keys(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = [key for key in ("database_url", "current") if olds.get(key) != news.get(key)]
        if not changed and olds.get("previous"):
            # A previous key is still accepted: drop it once the database holds the current key.
            # Only then; a database that cannot be asked keeps it (the safe side) until the next up.
            import psycopg

            from infra import service_keys

            try:
                previous = service_keys.previous_key(str(news["database_url"]), str(news["current"]))
            except psycopg.Error:
                previous = olds["previous"]
            if previous != olds["previous"]:
                changed.append("previous")
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(outs=self._keys(news))

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        return pulumi.dynamic.ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


@dataclass
class ServiceKeysArgs:
    """Arguments of `ServiceKeys`: the database whose stored key counts, and the stack's key."""

    database_url: pulumi.Input[str]
    current: pulumi.Input[str]


class ServiceKeys(pulumi.dynamic.Resource, module="autosync", name="ServiceKeys"):
    """`previous`: the function's AUTOSYNC_SERVICE_KEY_PREVIOUS ('' when no rotation is under way)."""

    previous: pulumi.Output[str]

    def __init__(self, name: str, args: ServiceKeysArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "database_url": pulumi.Output.secret(args.database_url),
            "current": pulumi.Output.secret(args.current),
            "previous": None,
        }
        super().__init__(
            ServiceKeysProvider(),
            name,
            props,
            pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(additional_secret_outputs=["database_url", "current", "previous"]),
            ),
        )
