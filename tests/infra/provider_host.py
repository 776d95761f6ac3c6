"""Pulumi's dynamic-provider host, started the way the engine starts it, driven over gRPC.

What the engine does (pulumi/pulumi, read at the 3.27x line):

- working directory: the program's directory, which is `main` when that is a folder, the folder of
  `main` when it is a file, and the project root (Pulumi.yaml's folder) when it is unset
  (pkg/engine/project.go, getPwdMain);
- environment: its own, plus `PULUMI_RUNTIME_<OPTION>` for each runtime option of Pulumi.yaml
  (`virtualenv` → PULUMI_RUNTIME_VIRTUALENV), PULUMI_PROJECT and PULUMI_CONFIG
  (pkg/resource/plugin/provider_plugin.go, NewProvider);
- command: the `pulumi-resource-pulumi-python` launch script with the engine's address. The script
  makes a relative PULUMI_RUNTIME_VIRTUALENV absolute against its working directory and runs that
  virtualenv's `python -u -m pulumi.dynamic` (sdk/python/dist/pulumi-resource-pulumi-python). The
  host prints its port on the first line of stdout and serves the ResourceProvider gRPC service.

Where the launch script is installed (with the CLI), it is what runs here; otherwise the same
command it would run. The program's side, for comparison, resolves `virtualenv` against the
project root (sdk/python/toolchain/pip.go, resolveVirtualEnvironmentPath).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import struct_pb2
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from harness.processes import stop as stop_processes
from infra.containers import REPO_ROOT

LAUNCH_SCRIPT = "pulumi-resource-pulumi-python"
PROVIDER_KEY = "__provider"
UNKNOWN = rpc.UNKNOWN  # how the engine sends a value that is not known yet (a preview)
# The engine passes its own address; the dynamic host never calls it, so nothing listens there.
ENGINE_ADDRESS = "127.0.0.1:1"
RPC_TIMEOUT_S = 120


def project_file(root: Path = REPO_ROOT) -> dict[str, Any]:
    return yaml.safe_load((root / "Pulumi.yaml").read_text())


def program_directory(root: Path = REPO_ROOT) -> Path:
    """Where the engine runs the program and its plugins (getPwdMain)."""
    main = project_file(root).get("main")
    if not main:
        return root
    path = (root / main).resolve()
    return path if path.is_dir() else path.parent


def runtime_options(root: Path = REPO_ROOT) -> dict[str, Any]:
    runtime = project_file(root)["runtime"]
    return dict(runtime.get("options") or {}) if isinstance(runtime, dict) else {}


def engine_environment(root: Path = REPO_ROOT) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in runtime_options(root).items():
        env[f"PULUMI_RUNTIME_{key.upper()}"] = str(value)
    env["PULUMI_PROJECT"] = str(project_file(root)["name"])
    env["PULUMI_CONFIG"] = json.dumps({})
    return env


def provider_virtualenv(cwd: Path, env: dict[str, str]) -> Path | None:
    """The virtualenv the launch script runs the host from: PULUMI_RUNTIME_VIRTUALENV, made absolute
    against the working directory."""
    option = env.get("PULUMI_RUNTIME_VIRTUALENV")
    if not option:
        return None
    path = Path(option.rstrip("/"))
    return path if path.is_absolute() else cwd / path


def program_virtualenv(root: Path = REPO_ROOT) -> Path | None:
    """The virtualenv the language host runs the program (and `pulumi install` fills) from."""
    option = runtime_options(root).get("virtualenv")
    if not option:
        return None
    path = Path(str(option))
    return path if path.is_absolute() else root / path


def launch_command(cwd: Path, env: dict[str, str]) -> list[str]:
    script = shutil.which(LAUNCH_SCRIPT, path=env.get("PATH"))
    if script is not None:
        return [script, ENGINE_ADDRESS]
    venv = provider_virtualenv(cwd, env)
    python = venv / "bin" / "python" if venv is not None and (venv / "bin" / "python").exists() else None
    # Without the project's virtualenv (a checkout tested from another environment) this
    # interpreter stands in; the layout test checks the virtualenv resolution itself.
    return [str(python or sys.executable), "-u", "-m", "pulumi.dynamic", ENGINE_ADDRESS]


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(props)
    return struct


def _props(struct: struct_pb2.Struct) -> dict[str, Any]:
    props = dict(rpc.deserialize_properties(struct, keep_unknowns=True))
    props.pop(PROVIDER_KEY, None)
    # An unknown comes back as pulumi's Unknown object; compare it as the wire value.
    return {key: UNKNOWN if isinstance(value, Unknown) else value for key, value in props.items()}


@dataclass
class Diff:
    changes: bool
    replaces: list[str]


class ProviderHost:
    """A running `python -m pulumi.dynamic`; each call names the provider as the engine would
    (the serialized provider in the `__provider` property) and takes and returns plain dicts."""

    def __init__(self, stub: provider_pb2_grpc.ResourceProviderStub, command: list[str], cwd: Path) -> None:
        self._stub = stub
        self.command = command
        self.cwd = cwd

    @staticmethod
    def _with_provider(provider: object, props: dict[str, Any]) -> dict[str, Any]:
        return {**props, PROVIDER_KEY: serialize_provider(provider)}

    def configure(self) -> provider_pb2.ConfigureResponse:
        return self._stub.Configure(provider_pb2.ConfigureRequest(args=_struct({})), timeout=RPC_TIMEOUT_S)

    def check(
        self, provider: object, olds: dict[str, Any], news: dict[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        request = provider_pb2.CheckRequest(
            urn="urn:pulumi:test::autosync::test::check",
            olds=_struct(self._with_provider(provider, olds) if olds else {}),
            news=_struct(self._with_provider(provider, news)),
        )
        response = self._stub.Check(request, timeout=RPC_TIMEOUT_S)
        return _props(response.inputs), [(f.property, f.reason) for f in response.failures]

    def diff(self, provider: object, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> Diff:
        request = provider_pb2.DiffRequest(
            id=id_,
            olds=_struct(self._with_provider(provider, olds)),
            news=_struct(self._with_provider(provider, news)),
        )
        response = self._stub.Diff(request, timeout=RPC_TIMEOUT_S)
        if response.changes == provider_pb2.DiffResponse.DIFF_UNKNOWN:
            raise AssertionError("the provider answered DIFF_UNKNOWN")
        return Diff(response.changes == provider_pb2.DiffResponse.DIFF_SOME, list(response.replaces))

    def create(self, provider: object, props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request = provider_pb2.CreateRequest(properties=_struct(self._with_provider(provider, props)))
        response = self._stub.Create(request, timeout=RPC_TIMEOUT_S)
        return response.id, _props(response.properties)

    def update(
        self, provider: object, id_: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        request = provider_pb2.UpdateRequest(
            id=id_,
            olds=_struct(self._with_provider(provider, olds)),
            news=_struct(self._with_provider(provider, news)),
        )
        return _props(self._stub.Update(request, timeout=RPC_TIMEOUT_S).properties)

    def read(self, provider: object, id_: str, props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request = provider_pb2.ReadRequest(id=id_, properties=_struct(self._with_provider(provider, props)))
        response = self._stub.Read(request, timeout=RPC_TIMEOUT_S)
        return response.id, _props(response.properties)

    def delete(self, provider: object, id_: str, props: dict[str, Any]) -> None:
        request = provider_pb2.DeleteRequest(id=id_, properties=_struct(self._with_provider(provider, props)))
        self._stub.Delete(request, timeout=RPC_TIMEOUT_S)


@contextmanager
def provider_host(root: Path = REPO_ROOT) -> Iterator[ProviderHost]:
    """Start the host from the engine's working directory with the engine's environment; stop it after."""
    cwd = program_directory(root)
    env = engine_environment(root)
    command = launch_command(cwd, env)
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr)
        channel = None
        try:
            assert process.stdout is not None
            first_line = process.stdout.readline().decode().strip()
            if not first_line.isdigit():
                process.wait(timeout=30)
                stderr.seek(0)
                raise RuntimeError(
                    f"the provider host did not start ({command} in {cwd}): "
                    f"{first_line!r} {stderr.read().decode(errors='replace')}"
                )
            channel = grpc.insecure_channel(f"127.0.0.1:{first_line}")
            grpc.channel_ready_future(channel).result(timeout=30)
            yield ProviderHost(provider_pb2_grpc.ResourceProviderStub(channel), command, cwd)
        finally:
            if channel is not None:
                channel.close()
            stop_processes([process], grace_s=10)
            if process.stdout is not None:
                process.stdout.close()


def rpc_error_details(error: grpc.RpcError) -> str:
    """The text of a failed call: the provider's traceback, which ends with its exception."""
    details = error.details() if hasattr(error, "details") else str(error)  # type: ignore[attr-defined]
    return str(details)
