"""Ephemeral environments for test runs: stand one up, run pytest against it, always remove it.

Two ways to realise the same specs:

- `PulumiBackend`, where the `pulumi` CLI is installed: the real Pulumi program (`__main__.py`)
  through the Automation API, on a fresh stack in a throw-away local file backend with a passphrase
  secrets provider; the stack is destroyed and removed at the end.
- `DockerBackend`, everywhere else: `harness.local_env` maps the specs onto the Docker engine.

`select_backend()` picks one; `run_tests()` is what `autosync env test` runs. The environment's
coordinates reach the tests as `AUTOSYNC_E2E_*` variables (`harness.local_env.Coordinates`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_urlsafe
from types import FrameType
from typing import Protocol

from harness import docker_local, local_env
from harness.ports import free_ports
from harness.processes import stop as stop_processes
from infra import containers

PULUMI_CLI = "pulumi"


class Backend(Protocol):
    """Something that can stand up a named environment and remove it again."""

    kind: str

    def up(self, name: str) -> local_env.Coordinates:
        """Create the environment `name` and return its coordinates once it is ready."""
        ...

    def down(self, name: str) -> list[str]:
        """Remove everything `up` created for `name` (also after a failed or interrupted `up`)."""
        ...


@dataclass
class DockerBackend:
    """The specs realised directly on the Docker engine (`harness.local_env`), on free ports."""

    workers: int = 1
    kind: str = "docker"

    def up(self, name: str) -> local_env.Coordinates:
        postgres_port, function_port = free_ports(2)
        env = local_env.up(
            name, postgres_port=postgres_port, function_port=function_port, workers=self.workers
        )
        return env.coordinates()

    def down(self, name: str) -> list[str]:
        return local_env.down(name)


@dataclass(frozen=True)
class GeneratedSecrets:
    """Secrets an ephemeral stack is given up front, so that the tests know them too."""

    database_password: str = field(repr=False)
    service_key: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    encryption_key: str = field(repr=False)

    @classmethod
    def new(cls) -> GeneratedSecrets:
        import secrets

        from cryptography.fernet import Fernet

        return cls(
            database_password=secrets.token_urlsafe(24),
            service_key=secrets.token_urlsafe(48),
            jwt_secret=secrets.token_urlsafe(48),
            encryption_key=Fernet.generate_key().decode(),
        )


def pulumi_stack_config(
    name: str,
    *,
    postgres_port: int,
    function_port: int,
    secrets: GeneratedSecrets,
    build_args: Mapping[str, str],
    workers: int = 1,
) -> dict[str, tuple[str, bool]]:
    """The `autosync:` stack configuration of an ephemeral stack: key → (value, is secret).

    Plain data, so the tests check it against the program's own validation (`infra.stack_config`)
    on machines without the Pulumi CLI.
    """
    config: dict[str, tuple[str, bool]] = {
        "namePrefix": (name, False),
        "postgresPort": (str(postgres_port), False),
        "functionPort": (str(function_port), False),
        "workers": (str(workers), False),
        "databasePassword": (secrets.database_password, True),
        "serviceKey": (secrets.service_key, True),
        "jwtSecret": (secrets.jwt_secret, True),
        "encryptionKey": (secrets.encryption_key, True),
    }
    if build_args:
        config["functionBuildArgs"] = (json.dumps(dict(build_args)), False)
    return config


@dataclass
class PulumiBackend:
    """The real Pulumi program on a fresh stack in a temporary local backend (Automation API).

    `cli` is where the CLI was found; the Automation API runs the `pulumi` on PATH.
    """

    cli: str
    workers: int = 1
    kind: str = "pulumi"
    on_output: Callable[[str], object] = field(default=lambda line: print(line, file=sys.stderr))
    _stacks: dict[str, tuple[object | None, Path]] = field(default_factory=dict, repr=False)

    def up(self, name: str) -> local_env.Coordinates:
        from pulumi import automation as auto

        # Backend state, the stack's config file and Pulumi.yaml all live in this directory, so the
        # checkout is not touched and nothing outlives the run.
        scratch = Path(tempfile.mkdtemp(prefix=f"{name}-pulumi-"))
        self._stacks[name] = (None, scratch)  # so that `down` removes the directory whatever fails next
        backend_dir = scratch / "backend"
        backend_dir.mkdir()
        secrets = GeneratedSecrets.new()
        passphrase = token_urlsafe(32)
        runtime_options = {"virtualenv": sys.prefix} if sys.prefix != sys.base_prefix else None
        workspace = auto.LocalWorkspaceOptions(
            work_dir=str(scratch),
            env_vars={
                "PULUMI_BACKEND_URL": f"file://{backend_dir}",
                # Encrypts the stack's secrets in the throw-away backend; never leaves this process.
                "PULUMI_CONFIG_PASSPHRASE": passphrase,
                "PULUMI_SKIP_UPDATE_CHECK": "true",
            },
            secrets_provider="passphrase",
            project_settings=auto.ProjectSettings(
                name="autosync",
                runtime=auto.ProjectRuntimeInfo(name="python", options=runtime_options),
                # The repo root, as in Pulumi.yaml: the program (__main__.py) and the dynamic-provider
                # host both run there.
                main=str(containers.REPO_ROOT),
            ),
        )
        stack = auto.create_stack(stack_name=name, work_dir=str(scratch), opts=workspace)
        self._stacks[name] = (stack, scratch)
        postgres_port, function_port = free_ports(2)
        config = pulumi_stack_config(
            name,
            postgres_port=postgres_port,
            function_port=function_port,
            secrets=secrets,
            build_args=local_env.function_build_args(),
            workers=self.workers,
        )
        stack.set_all_config(
            {
                f"autosync:{key}": auto.ConfigValue(value=value, secret=secret)
                for key, (value, secret) in config.items()
            }
        )
        result = stack.up(on_output=self.on_output)
        api_url = str(result.outputs["functionUrl"].value)
        local_env.wait_ready(api_url)
        return local_env.Coordinates(
            name=name,
            api_url=api_url,
            database_url=str(result.outputs["databaseUrl"].value),
            service_key=secrets.service_key,
            jwt_secret=secrets.jwt_secret,
        )

    def down(self, name: str) -> list[str]:
        removed: list[str] = []
        stack, scratch = self._stacks.pop(name, (None, None))
        try:
            if stack is not None:
                stack.destroy(on_output=self.on_output)  # type: ignore[attr-defined]
                stack.workspace.remove_stack(name)  # type: ignore[attr-defined]
                removed.append(f"pulumi stack {name}")
        finally:
            # Whatever a failed destroy left behind still carries the stack's label (its namePrefix).
            with contextlib.closing(docker_local.client()) as engine:
                removed += docker_local.remove_environment(engine, name)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        return removed


def select_backend(pulumi_cli: str | None, *, workers: int = 1) -> Backend:
    """Pulumi's Automation API when `pulumi_cli` (the CLI's path) is given, the Docker engine otherwise."""
    if pulumi_cli:
        return PulumiBackend(cli=pulumi_cli, workers=workers)
    return DockerBackend(workers=workers)


def default_backend(*, workers: int = 1) -> Backend:
    """The backend for this machine: Pulumi if its CLI is on PATH (`shutil.which`), else Docker."""
    return select_backend(shutil.which(PULUMI_CLI), workers=workers)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; raised so that teardown runs in `finally`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_raise() -> Iterator[Callable[[], None]]:
    """Within the block, SIGINT/SIGTERM raise `Interrupted`; call the yielded function to switch
    to "teardown mode", where further signals are noted but cannot cut the cleanup short.

    Only the main thread can install handlers; elsewhere the block runs with the defaults.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    previous = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    def note(signum: int, frame: FrameType | None) -> None:
        print(f"{signal.Signals(signum).name}: still removing the environment …", file=sys.stderr)

    def teardown_mode() -> None:
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, note)

    for sig in HANDLED_SIGNALS:
        signal.signal(sig, interrupt)
    try:
        yield teardown_mode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_tests(
    name: str,
    pytest_args: Sequence[str],
    *,
    backend: Backend | None = None,
    log: Callable[[str], object] = lambda line: print(line, file=sys.stderr),
) -> int:
    """Stand up `name`, run pytest with `pytest_args` against it, remove it; returns pytest's exit code.

    The environment is removed whatever happens: pytest failing, `up` failing half-way, an
    exception, SIGINT or SIGTERM (exit code 128 + signal number). The tests find the environment
    through the `AUTOSYNC_E2E_*` variables.
    """
    backend = backend if backend is not None else default_backend()
    child: subprocess.Popen[bytes] | None = None
    with _signals_raise() as teardown_mode:
        try:
            log(f"bringing up {name} ({backend.kind}) …")
            coordinates = backend.up(name)
            log(f"{name} is up: API {coordinates.api_url}; running pytest {' '.join(pytest_args)}")
            child = subprocess.Popen(
                [sys.executable, "-m", "pytest", *pytest_args],
                cwd=containers.REPO_ROOT,
                env={**os.environ, **coordinates.environ()},
            )
            return child.wait()
        except Interrupted as exc:
            log(f"{exc}: stopping the tests and removing {name}")
            return 128 + exc.signum
        finally:
            teardown_mode()
            if child is not None:
                stop_processes([child], grace_s=15)
            removed = backend.down(name)
            log(f"{name} removed ({len(removed)} objects)")
