"""Map container specs (`infra/containers.py`, `infra/function_specs.py`) onto pulumi-docker arguments.

The Pulumi side of "one source of truth for containers": `harness/docker_local.py` maps the same
specs onto the Docker engine for the harness. Only the mapping lives here; the components decide
which resources to declare.

Secrets: a spec carries its secret environment values as plain strings, which the program does
not have (they are Pulumi secrets). Components build specs with `SECRET_PLACEHOLDER` and pass the
real values to `container_args`, which refuses a spec whose secret variables and the supplied
secrets differ, so a placeholder can never reach a container.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import pulumi
import pulumi_docker as docker

from infra.containers import ENV_LABEL, ContainerSpec, HealthCheck, ImageSpec

SECRET_PLACEHOLDER = "<set-by-pulumi-secret>"  # noqa: S105 - a marker, never a value

# Containers deployed by Pulumi are long-lived, unlike the harness's: come back after a reboot
# or a crash unless someone stopped them on purpose.
RESTART_POLICY = "unless-stopped"


def duration(seconds: float) -> str:
    """`seconds` as Go prints a `time.Duration`: 2 → "2s", 60 → "1m0s", 0.5 → "500ms", 5400 → "1h30m0s".

    The docker provider sends these strings to Docker as nanoseconds and reads them back with Go's
    `Duration.String()` (terraform-provider-docker, internal/provider/resource_docker_container_funcs.go,
    the healthcheck block of the read). Any other spelling ("60s") differs from what it reads back
    and shows as an update on every `pulumi up`.
    """
    nanos = round(seconds * 1e9)
    if nanos < 0:
        raise ValueError(f"a duration cannot be negative (got {seconds})")
    if nanos == 0:
        return "0s"
    if nanos < 1_000:
        return f"{nanos}ns"
    if nanos < 1_000_000:
        return f"{_decimal(nanos, 3)}\u00b5s"  # Go writes the micro sign, U+00B5
    if nanos < 1_000_000_000:
        return f"{_decimal(nanos, 6)}ms"
    whole_seconds, fraction = divmod(nanos, 1_000_000_000)
    minutes, secs = divmod(whole_seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{_decimal(secs * 1_000_000_000 + fraction, 9)}s"
    if whole_seconds >= 60:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


def _decimal(value: int, digits: int) -> str:
    """`value / 10**digits` without trailing zeros: (1500, 3) → "1.5", (2000, 3) → "2"."""
    whole, fraction = divmod(value, 10**digits)
    decimals = f"{fraction:0{digits}d}".rstrip("0")
    return f"{whole}.{decimals}" if decimals else str(whole)


def relative_path(path: os.PathLike[str] | str) -> str:
    """`path` relative to the working directory.

    Build contexts are resource inputs stored in the state: relative paths keep the checkout's
    location on one machine out of the state, so another checkout shows no diff.
    """
    return os.path.relpath(os.fspath(path))


def image_name(spec: ImageSpec, tag_override: str | None = None) -> str:
    """`repository:tag`, the tag being the content hash unless the stack overrides it."""
    return f"{spec.repository}:{tag_override}" if tag_override else spec.tag


def image_args(spec: ImageSpec, *, tag_override: str | None = None) -> docker.ImageArgs:
    """A local build of `spec`: never pushed (there is no registry), built with host networking
    so that apt-get inside the build reaches the machine's Debian mirror (as the harness does)."""
    return docker.ImageArgs(
        image_name=image_name(spec, tag_override),
        build=docker.DockerBuildArgs(
            context=relative_path(spec.context),
            dockerfile=relative_path(spec.context / spec.dockerfile),
            args=dict(spec.build_args) or None,
            network="host",
        ),
        skip_push=True,
    )


def image_reference(image: docker.Image) -> pulumi.Output[str]:
    """What containers run: the built image's ID, not its `repository:tag` name.

    A rebuild under the same name (a fixed tag, a changed build argument) leaves the name as it was,
    so containers that name the image would keep running the old one; the ID changes with every
    build, so the containers that run it are replaced. For images that are not pushed, pulumi-docker
    reports the local image ID (`sha256:…`) as `repo_digest` (pulumi-docker, provider/image.go), and
    the docker provider reads an image given as `sha256:…` back as that ID, so it shows no diff
    (terraform-provider-docker, resourceDockerContainerRead).
    """
    return image.repo_digest


def healthcheck_args(check: HealthCheck) -> docker.ContainerHealthcheckArgs:
    return docker.ContainerHealthcheckArgs(
        tests=list(check.test),
        interval=duration(check.interval_s),
        timeout=duration(check.timeout_s),
        retries=check.retries,
        start_period=duration(check.start_period_s),
    )


def wait_timeout_s(check: HealthCheck) -> int:
    """How long `pulumi up` waits for healthy: the start period plus every retry, with a margin."""
    return int(check.start_period_s + check.retries * (check.interval_s + check.timeout_s)) + 30


def env_list(spec: ContainerSpec, secrets: Mapping[str, pulumi.Input[str]]) -> list[pulumi.Input[str]]:
    """`KEY=value` entries, sorted; secret variables come from `secrets` and stay Pulumi secrets."""
    missing = spec.secret_env - set(secrets)
    extra = set(secrets) - spec.secret_env
    if missing or extra:
        raise ValueError(
            f"container {spec.name}: secret variables {sorted(spec.secret_env)} need exactly one value "
            f"each (missing {sorted(missing)}, not secret in the spec {sorted(extra)})"
        )
    entries: list[pulumi.Input[str]] = []
    for key in sorted(spec.env):
        if key in secrets:
            entries.append(pulumi.Output.secret(secrets[key]).apply(functools.partial(_env_entry, key)))
        else:
            entries.append(f"{key}={spec.env[key]}")
    return entries


def _env_entry(key: str, value: str) -> str:
    return f"{key}={value}"


def container_args(
    spec: ContainerSpec,
    *,
    image: pulumi.Input[str],
    env_label: str,
    secrets: Mapping[str, pulumi.Input[str]],
    volume_names: Mapping[str, pulumi.Input[str]] | None = None,
) -> docker.ContainerArgs:
    """A container for `spec` running `image`, which should be an image ID (`image_reference`).

    Host networking, as in the harness: the service binds `spec.port` on loopback itself, so no
    port is published. `volume_names` maps the spec's volume names to declared Volume names (so the
    container depends on the Volume resources). Containers with a health check are waited for:
    `pulumi up` proceeds only once Docker reports them healthy.

    Stopping: the docker provider stops a container it replaces or destroys with
    `destroy_grace_seconds`, and with 0 s (straight to SIGKILL) when that is unset
    (terraform-provider-docker, resourceDockerContainerDelete); pulumi-docker replaces containers
    delete-before-replace. `stop_timeout` gives `docker stop` and the daemon the same grace.
    """
    volume_names = volume_names or {}
    labels = [docker.ContainerLabelArgs(label=ENV_LABEL, value=env_label)]
    if spec.port is not None:
        labels.append(docker.ContainerLabelArgs(label="autosync.port", value=str(spec.port)))
    check = spec.healthcheck
    return docker.ContainerArgs(
        name=spec.name,
        image=image,
        command=list(spec.command) or None,
        envs=env_list(spec, secrets),
        network_mode="host",
        volumes=[
            docker.ContainerVolumeArgs(volume_name=volume_names.get(name, name), container_path=path)
            for name, path in sorted(spec.volumes.items())
        ]
        or None,
        healthcheck=healthcheck_args(check) if check is not None else None,
        wait=check is not None,
        wait_timeout=wait_timeout_s(check) if check is not None else None,
        stop_signal=spec.stop_signal,
        stop_timeout=spec.stop_grace_s,
        destroy_grace_seconds=spec.stop_grace_s,
        labels=labels,
        restart=RESTART_POLICY,
        must_run=True,
    )


def volume_args(name: str, *, env_label: str) -> docker.VolumeArgs:
    return docker.VolumeArgs(name=name, labels=[docker.VolumeLabelArgs(label=ENV_LABEL, value=env_label)])
