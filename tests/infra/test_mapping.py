"""The specs drive the Pulumi resources: what a component declares is what the spec says.

Written in Pulumi's own unit-test style: declare the component under mocks, then assert inside
`Output.all(...).apply`, which `@pulumi.runtime.test` waits for.
"""

from __future__ import annotations

import re
from pathlib import Path

import pulumi
import pytest

from infra.components import docker_mapping
from infra.components.postgres import Postgres, PostgresArgs
from infra.components.sync_function import SyncFunction, SyncFunctionArgs
from infra.containers import (
    POSTGRES_STOP_GRACE_S,
    ContainerSpec,
    HealthCheck,
    PostgresConfig,
    postgres_container,
    postgres_image,
)
from infra.function_specs import (
    SERVE_STOP_GRACE_S,
    WORKER_STOP_GRACE_S,
    SyncFunctionConfig,
    sync_function_container,
    sync_function_image,
)
from tests.infra.mocks import RecordingMonitor, mock_image_id

PASSWORD = "pw-" + "x" * 20


def expected_env(spec: ContainerSpec) -> list[str]:
    return [f"{key}={value}" for key, value in sorted(spec.env.items())]


def expected_healthcheck(check: HealthCheck) -> dict[str, object]:
    return {
        "tests": list(check.test),
        "interval": docker_mapping.duration(check.interval_s),
        "timeout": docker_mapping.duration(check.timeout_s),
        "retries": check.retries,
        "start_period": docker_mapping.duration(check.start_period_s),
    }


def healthcheck_dict(value: object) -> dict[str, object]:
    # Nested output types arrive as dictionaries with snake_case keys inside an apply.
    assert isinstance(value, dict)
    return {key: value[key] for key in ("tests", "interval", "timeout", "retries", "start_period")}


@pulumi.runtime.test
def test_postgres_container_matches_the_spec(monitor: RecordingMonitor) -> pulumi.Output[None]:
    postgres = Postgres(
        "pg", PostgresArgs(container_name="t-postgres", password=PASSWORD, port=55432, env_label="t")
    )
    spec = postgres_container(PostgresConfig(name="t-postgres", password=PASSWORD, port=55432))
    container = postgres.container

    def check(values: list[object]) -> None:
        name, image, command, envs, network, healthcheck, volumes, stop_signal, wait, url, image_name = values
        assert name == spec.name
        # The container runs the built image's ID, so a rebuild under the same name replaces it.
        assert image_name == spec.image.tag == postgres_image().tag
        assert image == mock_image_id(spec.image.tag)
        assert command == list(spec.command)
        assert envs == expected_env(spec)  # the real password replaced the placeholder
        assert network == "host"
        assert healthcheck_dict(healthcheck) == expected_healthcheck(spec.healthcheck)  # type: ignore[arg-type]
        assert [(v["volume_name"], v["container_path"]) for v in volumes] == sorted(spec.volumes.items())  # type: ignore[attr-defined]
        assert stop_signal == spec.stop_signal == "SIGINT"
        assert wait is True
        assert url == f"postgresql://postgres:{PASSWORD}@127.0.0.1:55432/autosync"

    return pulumi.Output.all(
        container.name,
        container.image,
        container.command,
        container.envs,
        container.network_mode,
        container.healthcheck,
        container.volumes,
        container.stop_signal,
        container.wait,
        postgres.url,
        postgres.image.image_name,
    ).apply(check)


@pulumi.runtime.test
def test_postgres_url_quotes_the_password(monitor: RecordingMonitor) -> pulumi.Output[None]:
    postgres = Postgres("pg", PostgresArgs(container_name="t-postgres", password="a@b/c:d%e" + "x" * 8))

    def check(url: str) -> None:
        assert url.startswith("postgresql://postgres:a%40b%2Fc%3Ad%25e")

    return postgres.url.apply(check)


@pulumi.runtime.test
def test_function_containers_match_the_specs(monitor: RecordingMonitor) -> pulumi.Output[None]:
    values = {
        "database_url": "postgresql://u:p@127.0.0.1:5432/db",
        "service_key": "k" * 40,
        "jwt_secret": "j" * 40,
        "encryption_key": "e" * 44,
    }
    function = SyncFunction("fn", SyncFunctionArgs(name_prefix="t-function", port=8081, workers=2, **values))
    config = SyncFunctionConfig(name="t-function", port=8081, **values)
    serve_spec = sync_function_container(config, role="serve")
    worker_specs = [sync_function_container(config, role="worker", index=i) for i in (1, 2)]

    def check(args: list[object]) -> None:
        containers = [args[i : i + 5] for i in range(0, len(args), 5)]
        for (name, image, command, envs, healthcheck), spec in zip(
            containers, [serve_spec, *worker_specs], strict=True
        ):
            assert name == spec.name
            assert image == mock_image_id(sync_function_image().tag)
            assert command == list(spec.command)
            assert envs == expected_env(spec)
            if spec.healthcheck is None:
                assert healthcheck is None
            else:
                assert healthcheck_dict(healthcheck) == expected_healthcheck(spec.healthcheck)
        assert function.url == "http://127.0.0.1:8081"

    outputs = []
    for container in [function.serve, *function.workers]:
        outputs += [container.name, container.image, container.command, container.envs, container.healthcheck]
    return pulumi.Output.all(*outputs).apply(check)


def test_container_args_refuse_missing_or_extra_secrets() -> None:
    spec = postgres_container(PostgresConfig(name="x", password=docker_mapping.SECRET_PLACEHOLDER))
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        docker_mapping.env_list(spec, {})
    with pytest.raises(ValueError, match="PGPORT"):
        docker_mapping.env_list(spec, {"POSTGRES_PASSWORD": "x", "PGPORT": "1"})


# Go's `time.Duration.String()` for these durations: what the docker provider reads back from Docker.
# Anything else ("60s" for a minute) is a diff on every `pulumi up`.
GO_DURATIONS = [
    (0, "0s"),
    (2.0, "2s"),
    (5, "5s"),
    (30, "30s"),
    (60, "1m0s"),
    (90.5, "1m30.5s"),
    (3600 + 120 + 0.3, "1h2m0.3s"),
    (3600 + 15 * 60 + 30.918273645, "1h15m30.918273645s"),
    (0.5, "500ms"),
    (0.3, "300ms"),
    (1.25, "1.25s"),
    (0.0015, "1.5ms"),
    (1.5e-6, "1.5\u00b5s"),
    (5e-9, "5ns"),
]


@pytest.mark.parametrize(("seconds", "text"), GO_DURATIONS)
def test_duration_is_gos_spelling(seconds: float, text: str) -> None:
    assert docker_mapping.duration(seconds) == text


def test_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        docker_mapping.duration(-1)


GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "\u00b5s": 1e-6, "ns": 1e-9}


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration string, the way the provider turns it into nanoseconds for Docker."""
    parts = re.findall(r"([0-9.]+)(h|ms|m|\u00b5s|ns|s)", text)
    assert "".join(number + unit for number, unit in parts) == text, f"not a Go duration: {text!r}"
    return sum(float(number) * GO_UNITS[unit] for number, unit in parts)


@pulumi.runtime.test
def test_every_health_check_duration_reads_back_unchanged(monitor: RecordingMonitor) -> pulumi.Output[None]:
    postgres = Postgres("pg", PostgresArgs(container_name="t-postgres", password=PASSWORD))
    function = SyncFunction(
        "fn",
        SyncFunctionArgs(
            name_prefix="t-fn",
            database_url="postgresql://u:p@h/d",
            service_key="k" * 40,
            jwt_secret="j" * 40,
            encryption_key="e" * 44,
        ),
    )

    def check(checks: list[dict[str, object]]) -> None:
        durations = [str(c[key]) for c in checks if c for key in ("interval", "timeout", "start_period")]
        assert "1m0s" in durations  # Postgres's start period: the case that used to read back changed
        for text in durations:
            assert docker_mapping.duration(parse_go_duration(text)) == text

    return pulumi.Output.all(postgres.container.healthcheck, function.serve.healthcheck).apply(check)


@pulumi.runtime.test
def test_containers_are_stopped_with_their_grace(monitor: RecordingMonitor) -> pulumi.Output[None]:
    postgres = Postgres("pg", PostgresArgs(container_name="t-postgres", password=PASSWORD))
    function = SyncFunction(
        "fn",
        SyncFunctionArgs(
            name_prefix="t-fn",
            database_url="postgresql://u:p@h/d",
            service_key="k" * 40,
            jwt_secret="j" * 40,
            encryption_key="e" * 44,
            workers=1,
        ),
    )
    containers = [postgres.container, function.serve, *function.workers]

    def check(values: list[object]) -> None:
        graces = [values[i : i + 2] for i in range(0, len(values), 2)]
        # Unset, the provider stops with 0 s: SIGKILL, crash recovery for Postgres, killed imports.
        assert graces == [
            [POSTGRES_STOP_GRACE_S, POSTGRES_STOP_GRACE_S],
            [SERVE_STOP_GRACE_S, SERVE_STOP_GRACE_S],
            [WORKER_STOP_GRACE_S, WORKER_STOP_GRACE_S],
        ]
        assert POSTGRES_STOP_GRACE_S >= 60 and WORKER_STOP_GRACE_S >= 60

    outputs: list[pulumi.Output[object]] = []
    for container in containers:
        outputs += [container.destroy_grace_seconds, container.stop_timeout]
    return pulumi.Output.all(*outputs).apply(check)


def test_image_args_build_locally_with_host_network(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = postgres_image()
    monkeypatch.chdir(spec.context.parent.parent.parent)  # the repo root, as under `pulumi up`
    args = docker_mapping.image_args(spec)
    assert args.image_name == spec.tag
    assert args.skip_push is True
    build = args.build
    assert build.network == "host"  # type: ignore[union-attr]
    # Relative, so the checkout's location never reaches the stack state.
    assert build.context == str(Path("infra/images/postgres"))  # type: ignore[union-attr]
    assert build.dockerfile == str(Path("infra/images/postgres/Dockerfile"))  # type: ignore[union-attr]
    assert docker_mapping.image_args(spec, tag_override="v2").image_name == "autosync-postgres:v2"
