"""The stack's secrets: taken from the stack config when set, otherwise generated once per stack.

Why a dynamic resource rather than `pulumi_random`: the random provider is a plugin binary that no
registry reachable here carries (the same reason `pulumi up` cannot run here), and a stack should
not need a plugin download just to make a password. A dynamic resource generates the value in
`create`, Pulumi stores it in the stack state (encrypted, as a secret output), and every later
`pulumi up` reads it back instead of generating a new one. It changes only when the resource is
replaced (its `kind`/`nbytes` change) or the stack is destroyed; to rotate one, set the config key
or `pulumi up --replace <urn>`.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi.dynamic

Kind = Literal["token", "fernet"]


def generate(kind: str, nbytes: int) -> str:
    """A fresh secret: URL-safe text (`token`), or URL-safe base64 of exactly 32 bytes (`fernet`,
    usable as a Fernet key and as an AES-256 key)."""
    if kind == "token":
        return secrets.token_urlsafe(nbytes)
    if kind == "fernet":
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
    raise ValueError(f"unknown secret kind {kind!r}: expected 'token' or 'fernet'")


class GeneratedSecretProvider(pulumi.dynamic.ResourceProvider):
    """Generates the value on create; any change of its inputs replaces it (a new value)."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        value = generate(props["kind"], int(props["nbytes"]))
        return pulumi.dynamic.CreateResult(
            id_=f"generated-{secrets.token_hex(8)}",
            outs={"kind": props["kind"], "nbytes": props["nbytes"], "value": value},
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = [key for key in ("kind", "nbytes") if olds.get(key) != news.get(key)]
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)


class GeneratedSecret(pulumi.dynamic.Resource, module="autosync", name="GeneratedSecret"):
    """A secret generated once per stack and kept in its state."""

    value: pulumi.Output[str]

    def __init__(self, name: str, kind: Kind, nbytes: int = 48, opts: pulumi.ResourceOptions | None = None):
        super().__init__(
            GeneratedSecretProvider(),
            name,
            {"kind": kind, "nbytes": nbytes, "value": None},
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["value"])),
        )


SECRET_NAMES = ("database_password", "service_key", "jwt_secret", "encryption_key")


@dataclass
class SecretsArgs:
    """Secrets from the stack config. A secret that is None and named in `needed` is generated;
    one that is None and not needed stays None (existing-infrastructure mode needs fewer)."""

    database_password: pulumi.Input[str] | None = None
    service_key: pulumi.Input[str] | None = None
    jwt_secret: pulumi.Input[str] | None = None
    encryption_key: pulumi.Input[str] | None = None
    needed: frozenset[str] = frozenset(SECRET_NAMES)


class Secrets(pulumi.ComponentResource):
    """Every secret of the stack, as Pulumi secrets (configured or generated); None when not needed."""

    database_password: pulumi.Output[str] | None
    service_key: pulumi.Output[str] | None
    jwt_secret: pulumi.Output[str] | None
    encryption_key: pulumi.Output[str] | None

    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("autosync:secrets:Secrets", name, None, opts)
        unknown = set(args.needed) - set(SECRET_NAMES)
        if unknown:
            raise ValueError(f"unknown secrets {sorted(unknown)}; known: {', '.join(SECRET_NAMES)}")
        self._needed = args.needed
        # token_urlsafe(n) yields ~1.3 n characters: 24 → 32 characters, URL-safe, so the password
        # needs no quoting in a database URL; the service key (48 → 64) clears the schema's 32 minimum.
        self.database_password = self._secret(name, "database_password", args.database_password, "token", 24)
        self.service_key = self._secret(name, "service_key", args.service_key, "token", 48)
        self.jwt_secret = self._secret(name, "jwt_secret", args.jwt_secret, "token", 48)
        self.encryption_key = self._secret(name, "encryption_key", args.encryption_key, "fernet", 32)
        self.register_outputs({})  # nothing to export: the values are read through the attributes

    def _secret(
        self, name: str, secret: str, configured: pulumi.Input[str] | None, kind: Kind, nbytes: int
    ) -> pulumi.Output[str] | None:
        if configured is not None:
            return pulumi.Output.secret(configured)
        if secret not in self._needed:
            return None
        suffix = secret.replace("_", "-")
        generated = GeneratedSecret(f"{name}-{suffix}", kind, nbytes, pulumi.ResourceOptions(parent=self))
        return pulumi.Output.secret(generated.value)
