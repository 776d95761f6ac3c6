"""Which backend realises an ephemeral environment, and the Pulumi (Automation API) branch."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from harness import ephemeral, local_env
from harness.ports import unique_name
from infra import stack_config
from infra.function_specs import PIP_CA_BUILD_ARG


def test_docker_engine_without_the_pulumi_cli() -> None:
    backend = ephemeral.select_backend(None, workers=2)
    assert isinstance(backend, ephemeral.DockerBackend)
    assert (backend.kind, backend.workers) == ("docker", 2)


def test_pulumi_where_the_cli_is_installed() -> None:
    backend = ephemeral.select_backend("/opt/pulumi/bin/pulumi")
    assert isinstance(backend, ephemeral.PulumiBackend)
    assert (backend.kind, backend.cli) == ("pulumi", "/opt/pulumi/bin/pulumi")


def test_default_follows_the_path() -> None:
    expected = "pulumi" if shutil.which("pulumi") else "docker"
    assert ephemeral.default_backend().kind == expected


def test_ephemeral_stack_config_passes_the_programs_validation() -> None:
    secrets = ephemeral.GeneratedSecrets.new()
    build_args = {PIP_CA_BUILD_ARG: "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"}
    raw = ephemeral.pulumi_stack_config(
        "autosync-test-1234", postgres_port=50001, function_port=50002, secrets=secrets, build_args=build_args
    )
    source = stack_config.DictSource(
        {key: value for key, (value, _) in raw.items()},
        secret_keys=frozenset(key for key, (_, secret) in raw.items() if secret),
    )
    config = stack_config.load(source, stack="autosync-test-1234")
    assert config.name_prefix == "autosync-test-1234"
    assert (config.postgres_port, config.function_port, config.workers) == (50001, 50002, 1)
    assert config.creates_postgres and config.creates_function
    assert config.service_key == secrets.service_key and config.jwt_secret == secrets.jwt_secret
    assert config.encryption_key == secrets.encryption_key
    assert config.database_password == secrets.database_password
    assert dict(config.function_build_args) == build_args
    # Every secret is marked secret: the program refuses plain-text secrets.
    assert {key for key, (_, secret) in raw.items() if secret} == {
        "databasePassword",
        "serviceKey",
        "jwtSecret",
        "encryptionKey",
    }
    assert "functionBuildArgs" not in ephemeral.pulumi_stack_config(
        "x", postgres_port=1, function_port=2, secrets=secrets, build_args={}
    )
    assert json.loads(raw["functionBuildArgs"][0]) == build_args


@pytest.mark.docker
def test_automation_api_stack_up_and_destroy() -> None:
    cli = shutil.which("pulumi")
    if cli is None:
        pytest.skip(
            "the pulumi CLI is not installed (shutil.which('pulumi') is None); the Automation API "
            "branch of `autosync env test` runs only where it is"
        )
    name = unique_name("autosync-pulumitest")
    backend = ephemeral.PulumiBackend(cli=cli)
    try:
        coordinates = backend.up(name)
        assert httpx.get(f"{coordinates.api_url}/readyz", timeout=5).status_code == 200
    finally:
        backend.down(name)
    assert local_env.leftovers(name) == []
