"""The sync function's container specs (infra/function_specs.py)."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest

from infra.containers import REPO_ROOT
from infra.function_specs import (
    FUNCTION_DOCKERFILE,
    FUNCTION_SECRET_ENV,
    FUNCTION_SOURCES,
    PIP_CA_BUILD_ARG,
    SyncFunctionConfig,
    sources_hash,
    sync_function_container,
    sync_function_image,
)

CONFIG = SyncFunctionConfig(
    name="t-function",
    database_url="postgresql://u:p@127.0.0.1:5432/db",
    service_key="k" * 40,
    jwt_secret="j" * 40,
    encryption_key="e" * 44,
    service_key_previous="o" * 40,
    port=8123,
)


def test_serve_spec() -> None:
    spec = sync_function_container(CONFIG, role="serve")
    assert spec.name == "t-function-serve"
    assert spec.command == ("serve",)  # the image's entrypoint is `autosync`
    assert spec.port == 8123
    assert spec.env == {
        "DATABASE_URL": CONFIG.database_url,
        "AUTOSYNC_SERVICE_KEY": CONFIG.service_key,
        "AUTOSYNC_SERVICE_KEY_PREVIOUS": CONFIG.service_key_previous,
        "AUTOSYNC_JWT_SECRET": CONFIG.jwt_secret,
        "AUTOSYNC_ENCRYPTION_KEY": CONFIG.encryption_key,
        "AUTOSYNC_HOST": "127.0.0.1",
        "AUTOSYNC_PORT": "8123",
    }
    assert spec.secret_env == FUNCTION_SECRET_ENV
    assert spec.healthcheck is not None
    probe = " ".join(spec.healthcheck.test)
    assert "http://127.0.0.1:8123/healthz" in probe
    assert CONFIG.url == "http://127.0.0.1:8123"


def test_worker_spec() -> None:
    spec = sync_function_container(CONFIG, role="worker", index=2)
    assert spec.name == "t-function-worker-2"
    assert spec.command == ("worker",)
    assert spec.port is None and spec.healthcheck is None
    assert spec.env == sync_function_container(CONFIG, role="serve").env


def test_secret_env_names_exactly_the_secrets() -> None:
    spec = sync_function_container(CONFIG, role="serve")
    secret_values = {
        CONFIG.database_url,
        CONFIG.service_key,
        CONFIG.service_key_previous,
        CONFIG.jwt_secret,
        CONFIG.encryption_key,
    }
    assert {key for key, value in spec.env.items() if value in secret_values} == spec.secret_env


def test_no_rotation_under_way_leaves_the_previous_key_empty() -> None:
    spec = sync_function_container(dataclasses.replace(CONFIG, service_key_previous=""), role="worker")
    # Empty means "none" to the service (sync_function/config.py), so the variable is always there.
    assert spec.env["AUTOSYNC_SERVICE_KEY_PREVIOUS"] == ""


def test_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        sync_function_container(CONFIG, role="cron")  # type: ignore[arg-type]


def test_config_repr_hides_secrets() -> None:
    assert CONFIG.service_key not in repr(CONFIG) and "u:p@" not in repr(CONFIG)


def test_image_spec() -> None:
    image = sync_function_image({"EXTRA_APT_PACKAGES": "less"})
    assert image.context == REPO_ROOT
    assert image.dockerfile == FUNCTION_DOCKERFILE
    assert image.tag.startswith("autosync-sync-function:")
    assert image.tag != sync_function_image().tag  # build args are part of the tag


def test_pip_ca_build_arg_reaches_the_build_but_not_the_tag() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    image = sync_function_image({PIP_CA_BUILD_ARG: pem})
    assert image.build_args == {PIP_CA_BUILD_ARG: pem}
    assert image.tag == sync_function_image().tag
    assert f"ARG {PIP_CA_BUILD_ARG}" in (REPO_ROOT / FUNCTION_DOCKERFILE).read_text()


def test_sources_hash_covers_sources_only(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("a = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "unrelated.txt").write_text("x")
    sources = ("pyproject.toml", "pkg", ".dockerignore")
    before = sources_hash(tmp_path, sources)
    (tmp_path / "unrelated.txt").write_text("y")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert sources_hash(tmp_path, sources) == before
    (tmp_path / "pkg" / "a.py").write_text("a = 2\n")
    assert sources_hash(tmp_path, sources) != before


def copy_sources(dockerfile: Path) -> list[str]:
    """The local sources of the Dockerfile's COPY/ADD instructions (not those from other stages)."""
    found: list[str] = []
    text = dockerfile.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() not in {"COPY", "ADD"}:
            continue
        args = words[1:]
        if any(arg.startswith("--from") for arg in args):
            continue
        paths = [arg for arg in args if not arg.startswith("--")]
        found += paths[:-1]
    return found


def test_image_tag_covers_every_copied_source() -> None:
    dockerfile = REPO_ROOT / FUNCTION_DOCKERFILE
    if not dockerfile.exists():
        pytest.skip(f"{FUNCTION_DOCKERFILE} is not written yet")
    uncovered = [
        source
        for source in copy_sources(dockerfile)
        if not any(Path(source.rstrip("/")).is_relative_to(covered) for covered in FUNCTION_SOURCES)
    ]
    assert not uncovered, f"add {uncovered} to FUNCTION_SOURCES, or a change there will not rebuild the image"


def build_context_files(context: Path, dockerfile: str) -> set[str]:
    """The files a builder receives from `context`, under its .dockerignore (docker-py applies the
    same rules as the Docker CLI and pulumi-docker: last matching pattern wins, `!` re-includes)."""
    exclude_paths = pytest.importorskip("docker.utils.build").exclude_paths
    ignore = context / ".dockerignore"
    patterns = [
        line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    return {
        path
        for path in exclude_paths(str(context), patterns, dockerfile=dockerfile)
        if (context / path).is_file()
    }


def test_function_build_context_is_an_allow_list() -> None:
    sent = build_context_files(REPO_ROOT, FUNCTION_DOCKERFILE)
    # Edits to these must not rebuild the image (pulumi-docker hashes the context it would send).
    for outside in ("README.md", "Pulumi.yaml", "Pulumi.dev.yaml", "infra/program.py", "alembic.ini"):
        assert outside not in sent, outside
    assert not any(path.startswith(("tests/", "harness/", ".git/", ".venv/")) for path in sent)
    assert not any("__pycache__" in path or path.endswith(".pyc") for path in sent)
    assert {"pyproject.toml", FUNCTION_DOCKERFILE, "sync_function/cli.py"} <= sent


def test_image_tag_and_build_context_cover_the_same_files() -> None:
    sent = build_context_files(REPO_ROOT, FUNCTION_DOCKERFILE)
    hashed = set()
    for source in FUNCTION_SOURCES:
        root = REPO_ROOT / source
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        hashed |= {
            str(p.relative_to(REPO_ROOT))
            for p in files
            if "__pycache__" not in p.parts and p.suffix != ".pyc"
        }
    # A file in the context but not in the tag would change the image without changing its tag.
    assert sent == hashed


def test_workers_serve_metrics_on_their_own_ports() -> None:
    config = dataclasses.replace(CONFIG, worker_metrics_port=9500)
    first = sync_function_container(config, role="worker", index=1)
    second = sync_function_container(config, role="worker", index=2)
    assert first.command == ("worker", "--metrics-port", "9500") and first.port == 9500
    assert second.command == ("worker", "--metrics-port", "9501") and second.port == 9501
    assert sync_function_container(config, role="serve").command == ("serve",)


def test_serve_runs_the_configured_process_count() -> None:
    assert "AUTOSYNC_API_PROCESSES" not in sync_function_container(CONFIG, role="serve").env
    config = dataclasses.replace(CONFIG, api_processes=3)
    assert sync_function_container(config, role="serve").env["AUTOSYNC_API_PROCESSES"] == "3"
    # Workers have no use for it.
    assert "AUTOSYNC_API_PROCESSES" not in sync_function_container(config, role="worker").env
