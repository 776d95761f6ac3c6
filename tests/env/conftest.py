"""Fixtures for the environment tests: the function image, unique environment names, leftovers."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from harness import docker_local, local_env
from harness.ports import unique_name
from infra import function_specs


@pytest.fixture(scope="session")
def function_image(docker_engine: docker.DockerClient) -> str:
    """The sync function image, built (with this host's CA for pip) unless its tag exists."""
    image = function_specs.sync_function_image(local_env.function_build_args())
    return docker_local.ensure_image(docker_engine, image)


@pytest.fixture
def env_name(docker_engine: docker.DockerClient) -> Iterator[str]:
    """A fresh environment name; whatever a test leaves under it is removed afterwards."""
    name = unique_name("autosync-envtest")
    yield name
    # Safety net only: the tests assert on their own that nothing was left.
    local_env.down(name)
