"""The encryption key list and the re-encryption of stored secrets, as two Pulumi dynamic resources.

`EncryptionKeys` comes before the function containers and gives them their AUTOSYNC_ENCRYPTION_KEY
(a key list); `StoredSecrets` comes after them and rewrites every stored secret under the list's
first key. Changing the configured key, or replacing the generated one
(`pulumi up --replace <urn of secrets-encryption-key>`), therefore rotates the key without making
one stored password unreadable. The plain functions they call are in `infra/encryption_keys.py`,
which asks the service's command line (`autosync encryption-keys usage`, `autosync reencrypt`).

The keys stay in these resources' secret state: that is where the previous key is remembered.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic


def keys_digest(keys: str) -> str:
    """A SHA-256 of a key list, to notice a change without keeping the keys a second time."""
    return hashlib.sha256(keys.encode()).hexdigest()


class EncryptionKeysProvider(pulumi.dynamic.ResourceProvider):
    """Computes the key list from the configured key(s) and the previous list (`infra.encryption_keys`)."""

    def _keys(self, props: dict[str, Any], previous: str | None) -> dict[str, Any]:
        from infra import encryption_keys

        keys = encryption_keys.key_list(
            props["database_url"],
            configured=encryption_keys.split_keys(props["configured"]),
            previous=encryption_keys.split_keys(previous) if previous else [],
        )
        return {
            "database_url": props["database_url"],
            "configured": props["configured"],
            "keys": encryption_keys.SEPARATOR.join(keys),
        }

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=f"keys-{secrets.token_hex(8)}", outs=self._keys(props, None))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = [key for key in ("database_url", "configured") if olds.get(key) != news.get(key)]
        # Never replaced: a new resource would not know the previous keys.
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(outs=self._keys(news, olds.get("keys")))

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        return pulumi.dynamic.ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


@dataclass
class EncryptionKeysArgs:
    """Arguments of `EncryptionKeys`: the database whose stored secrets count, and the configured key(s)."""

    database_url: pulumi.Input[str]
    configured: pulumi.Input[str]


class EncryptionKeys(pulumi.dynamic.Resource, module="autosync", name="EncryptionKeys"):
    """`keys`: the AUTOSYNC_ENCRYPTION_KEY of the function containers (configured first, previous after)."""

    keys: pulumi.Output[str]

    def __init__(
        self, name: str, args: EncryptionKeysArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "database_url": pulumi.Output.secret(args.database_url),
            "configured": pulumi.Output.secret(args.configured),
            "keys": None,
        }
        super().__init__(
            EncryptionKeysProvider(),
            name,
            props,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["database_url", "configured", "keys"])
            ),
        )


class StoredSecretsProvider(pulumi.dynamic.ResourceProvider):
    """Rewrites every stored secret under the first key whenever the key list changes."""

    def _reencrypt(self, props: dict[str, Any]) -> dict[str, Any]:
        from infra import encryption_keys

        rewritten = encryption_keys.reencrypt(
            props["database_url"], encryption_keys.split_keys(props["keys"])
        )
        return {
            "database_url": props["database_url"],
            "keys_sha256": keys_digest(props["keys"]),
            "reencrypted": rewritten,
        }

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=f"stored-{secrets.token_hex(8)}", outs=self._reencrypt(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = olds.get("database_url") != news.get("database_url") or olds.get(
            "keys_sha256"
        ) != keys_digest(str(news.get("keys")))
        return pulumi.dynamic.DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(outs=self._reencrypt(news))

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        return pulumi.dynamic.ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Stored secrets stay as they are: they belong to the database, not to this stack.
        return None


@dataclass
class StoredSecretsArgs:
    """Arguments of `StoredSecrets`: the database, and the key list the containers now run with."""

    database_url: pulumi.Input[str]
    keys: pulumi.Input[str]


class StoredSecrets(pulumi.dynamic.Resource, module="autosync", name="StoredSecrets"):
    """Every stored secret of the database at `database_url`, encrypted under the first of `keys`."""

    reencrypted: pulumi.Output[int]

    def __init__(
        self, name: str, args: StoredSecretsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "database_url": pulumi.Output.secret(args.database_url),
            "keys": pulumi.Output.secret(args.keys),
            "keys_sha256": None,
            "reencrypted": None,
        }
        super().__init__(
            StoredSecretsProvider(),
            name,
            props,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["database_url", "keys_sha256"])
            ),
        )
