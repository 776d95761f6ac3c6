"""Pulumi mocks that record what the program declares, for the offline tests of the Pulumi program.

`RecordingMonitor` keeps, for every registered resource, its type, parent, explicit dependencies and
inputs (with secrets still marked), which the stock `MockMonitor` does not expose. Dynamic resources
are answered by deserialising the provider the way Pulumi's provider host does (`dill.loads`), so
every test also proves the providers pickle; the secret generator really runs, the database
providers return fixed values instead of touching a database.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import dill
import pulumi
from pulumi.runtime import mocks, rpc
from pulumi.runtime.sync_await import _sync_await

from infra.components.database_password import DatabasePasswordProvider
from infra.components.database_settings import DatabaseSettingsProvider
from infra.components.encryption import EncryptionKeysProvider, StoredSecretsProvider
from infra.components.migrations import MigrationsProvider
from infra.components.secrets import GeneratedSecretProvider
from infra.components.service_keys import ServiceKeysProvider
from infra.dbpassword import Login

MOCK_REVISION = "mock-head"
DYNAMIC_TYPE_PREFIX = "pulumi-python:dynamic"
IMAGE = "docker:index/image:Image"
CONTAINER = "docker:index/container:Container"


def mock_image_id(image_name: str) -> str:
    """The image ID the mocks report as an Image's `repoDigest` (a local build's `sha256:…` ID)."""
    return "sha256:" + hashlib.sha256(image_name.encode()).hexdigest()


@dataclass
class Registration:
    """One resource as the program registered it."""

    urn: str
    type: str
    name: str
    parent: str
    dependencies: list[str]
    inputs: dict[str, Any]  # secrets wrapped as {"4dabf18193072939515e22adb298388d": ..., "value": …}
    outputs: dict[str, Any] = field(default_factory=dict)

    def plain(self, key: str) -> Any:
        """An input with secret wrappers removed (recursively)."""
        return unwrap(self.inputs.get(key))

    def is_secret(self, key: str) -> bool:
        return rpc.is_rpc_secret(self.inputs.get(key))


def unwrap(value: Any) -> Any:
    value = rpc.unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


class ProgramMocks(pulumi.runtime.Mocks):
    """Answers resource registrations; dynamic providers are unpickled and dispatched on their class."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = unwrap(dict(args.inputs))
        if args.typ.startswith(DYNAMIC_TYPE_PREFIX):
            provider = dill.loads(base64.b64decode(inputs["__provider"]))  # noqa: S301 - our own provider
            if isinstance(provider, GeneratedSecretProvider):
                result = provider.create(inputs)
                return result.id, {**inputs, **result.outs}
            if isinstance(provider, MigrationsProvider):
                return f"{args.name}-id", {**inputs, "revision": MOCK_REVISION}
            if isinstance(provider, DatabaseSettingsProvider):
                outs = {k: v for k, v in inputs.items() if k != "service_key"}
                return f"{args.name}-id", outs
            if isinstance(provider, DatabasePasswordProvider):
                login = Login(inputs["host"], int(inputs["port"]), inputs["user"], inputs["database"])
                return f"{args.name}-id", {**inputs, "url": login.url(inputs["password"])}
            if isinstance(provider, EncryptionKeysProvider):
                return f"{args.name}-id", {**inputs, "keys": inputs["configured"]}
            if isinstance(provider, ServiceKeysProvider):
                return f"{args.name}-id", {**inputs, "previous": ""}
            if isinstance(provider, StoredSecretsProvider):
                return f"{args.name}-id", {"database_url": inputs["database_url"], "reencrypted": 0}
            raise AssertionError(f"unexpected dynamic provider {type(provider).__name__}")
        outputs = dict(inputs)
        if args.typ == IMAGE:
            outputs["repoDigest"] = mock_image_id(inputs["imageName"])
        if args.typ == CONTAINER:
            outputs.setdefault("name", inputs.get("name"))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


class RecordingMonitor(mocks.MockMonitor):
    """A mock monitor that also records each registration's parent, dependencies and raw inputs."""

    def __init__(self, program_mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(program_mocks)
        self.registrations: dict[str, Registration] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
            self.registrations[response.urn] = Registration(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                dependencies=list(request.dependencies),
                inputs=inputs,
            )
        return response

    def by_name(self, name: str) -> Registration:
        matches = [r for r in self.registrations.values() if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name!r}, got {[r.name for r in matches]}"
        return matches[0]

    def by_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations.values() if r.type == type_]


def resolve(output: Any) -> tuple[Any, bool]:
    """The value of an Output and whether it is secret (outside of an apply; for use after a run)."""
    output = pulumi.Output.from_input(output)
    return _sync_await(output.future()), _sync_await(output.is_secret())


@dataclass
class ProgramRun:
    """What one run of infra/__main__.py declared and exported."""

    monitor: RecordingMonitor
    exports: dict[str, Any]
