"""What the sync function containers are, as plain data (the function side of `containers.py`).

One image runs both roles: `autosync serve` (the HTTP API that pg_cron calls) and `autosync worker`
(the job queue worker that imports mail). Like `containers.py`, nothing here talks to Docker or
Pulumi: the Pulumi program and the local harness both map these specs onto containers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from infra.containers import REPO_ROOT, ContainerSpec, HealthCheck, ImageSpec

FUNCTION_DOCKERFILE = "sync_function/Dockerfile"

# The parts of the repository the function image is built from. The build context is the repo
# root (the image installs the `autosync` package from pyproject.toml), but hashing the whole root
# would pull in .git, .venv and test output, so the tag covers only these. Keep this in line with
# the COPY lines of sync_function/Dockerfile (tests/infra checks that it is).
FUNCTION_SOURCES: tuple[str, ...] = ("pyproject.toml", "sync_function", ".dockerignore")

# The build argument that carries extra CA certificates (PEM text) for pip inside the build, for
# networks whose TLS gateway or proxy is not signed by a public CA (see sync_function/Dockerfile).
PIP_CA_BUILD_ARG = "PIP_EXTRA_CA_CERTS"

# Build arguments that only decide how the build reaches the package index, not what the image
# contains: they are left out of the tag, so the same sources give the same tag with or without a
# proxy CA (the harness passes the host's bundle; a `pulumi up` elsewhere may pass none), and a CA
# store update on the host does not force a rebuild.
TRUST_ONLY_BUILD_ARGS = frozenset({PIP_CA_BUILD_ARG})

# Environment variables that carry secrets: the Pulumi program fills them from Pulumi secrets.
FUNCTION_SECRET_ENV = frozenset(
    {
        "DATABASE_URL",
        "AUTOSYNC_SERVICE_KEY",
        "AUTOSYNC_SERVICE_KEY_PREVIOUS",
        "AUTOSYNC_JWT_SECRET",
        "AUTOSYNC_ENCRYPTION_KEY",
    }
)

Role = Literal["serve", "worker"]

# `serve` (uvicorn) stops accepting connections on SIGTERM and finishes the requests in flight; the
# routes answer at once (imports run in workers), so a few seconds are plenty.
SERVE_STOP_GRACE_S = 20
# A worker (procrastinate) stops fetching jobs on SIGTERM and waits for the imports it runs. An import
# commits checkpoints batch by batch; one still running when this runs out is killed, and the
# stalled-job check of the other workers hands it back to the queue after three missed heartbeats,
# to resume from its last checkpoint.
WORKER_STOP_GRACE_S = 120


def sources_hash(context: Path, sources: tuple[str, ...], build_args: dict[str, str] | None = None) -> str:
    """A short hash of the files under each of `sources` (relative to `context`) and of the build args.

    Sources that do not exist are skipped, so an optional file (a .dockerignore) may come and go.
    """
    digest = hashlib.sha256()
    for source in sources:
        root = context / source
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(context)).encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    for key in sorted(build_args or {}):
        digest.update(f"{key}={build_args[key]}\0".encode())  # type: ignore[index]
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SourcesImageSpec(ImageSpec):
    """An `ImageSpec` whose context is large (the repo root): the tag hashes `sources` only."""

    sources: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        tagged = {key: value for key, value in self.build_args.items() if key not in TRUST_ONLY_BUILD_ARGS}
        return f"{self.repository}:{sources_hash(self.context, self.sources, tagged)}"


@dataclass(frozen=True)
class SyncFunctionConfig:
    """Configuration of the sync function containers, as a stack or a test would give it.

    `name` prefixes the container names (`<name>-serve`, `<name>-worker-<n>`).
    """

    name: str
    database_url: str = field(repr=False)
    service_key: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    encryption_key: str = field(repr=False)
    # While the service key rotates, the key the database still sends (empty: no rotation under way).
    service_key_previous: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    # AUTOSYNC_IMAP_ALLOWED_NETWORKS: non-public IMAP destinations the function may reach (empty: none).
    imap_allowed_networks: str = ""
    # Worker n serves Prometheus metrics on 127.0.0.1:(worker_metrics_port + n - 1); None: not served.
    worker_metrics_port: int | None = None
    # AUTOSYNC_API_PROCESSES of the serve container: server processes sharing its port.
    api_processes: int = 1

    def metrics_port(self, index: int) -> int | None:
        """Where worker `index` (from 1) serves its metrics, if they are served."""
        return None if self.worker_metrics_port is None else self.worker_metrics_port + index - 1

    @property
    def url(self) -> str:
        """The base URL pg_cron's trigger posts to (it appends /functions/v1/auto-sync)."""
        return f"http://{self.host}:{self.port}"


def sync_function_image(build_args: dict[str, str] | None = None) -> SourcesImageSpec:
    """The image of the sync function; `build_args` reach the Dockerfile.

    The Dockerfile knows one: `PIP_EXTRA_CA_CERTS` (PEM text), CA certificates pip trusts during the
    build in addition to Debian's; it does not change the tag (see `TRUST_ONLY_BUILD_ARGS`).
    """
    return SourcesImageSpec(
        repository="autosync-sync-function",
        context=REPO_ROOT,
        dockerfile=FUNCTION_DOCKERFILE,
        build_args=dict(build_args or {}),
        sources=FUNCTION_SOURCES,
    )


def healthz_check(host: str, port: int) -> HealthCheck:
    """HTTP GET /healthz from inside the container.

    The image has Python but not necessarily curl; urlopen raises on a refused connection and on
    any non-2xx status, so the exit code is the health.
    """
    probe = f"import urllib.request; urllib.request.urlopen('http://{host}:{port}/healthz', timeout=4)"
    return HealthCheck(
        test=("CMD", "python3", "-c", probe), interval_s=2.0, timeout_s=5.0, retries=5, start_period_s=30.0
    )


def sync_function_container(
    config: SyncFunctionConfig,
    *,
    role: Role,
    index: int = 1,
    image: ImageSpec | None = None,
) -> ContainerSpec:
    """The `serve` or `worker` container of the sync function.

    The image's entrypoint is `autosync`, so the command is the sub-command alone. Both roles get
    the same environment: the service has one validated settings class, and a worker
    started without a variable it validates would not start. `index` numbers worker replicas.
    """
    env = {
        "DATABASE_URL": config.database_url,
        "AUTOSYNC_SERVICE_KEY": config.service_key,
        # Always set, empty when unused: the Pulumi program only knows at deploy time whether it is.
        "AUTOSYNC_SERVICE_KEY_PREVIOUS": config.service_key_previous,
        "AUTOSYNC_JWT_SECRET": config.jwt_secret,
        "AUTOSYNC_ENCRYPTION_KEY": config.encryption_key,
        "AUTOSYNC_HOST": config.host,
        "AUTOSYNC_PORT": str(config.port),
    }
    if config.imap_allowed_networks:
        env["AUTOSYNC_IMAP_ALLOWED_NETWORKS"] = config.imap_allowed_networks
    image = image if image is not None else sync_function_image()
    if role == "serve":
        if config.api_processes > 1:
            env["AUTOSYNC_API_PROCESSES"] = str(config.api_processes)
        return ContainerSpec(
            name=f"{config.name}-serve",
            image=image,
            command=("serve",),
            env=env,
            secret_env=FUNCTION_SECRET_ENV,
            port=config.port,
            healthcheck=healthz_check(config.host, config.port),
            stop_grace_s=SERVE_STOP_GRACE_S,
        )
    if role == "worker":
        # SIGTERM (Docker's default) lets the worker finish or release its current job.
        # Each worker counts the runs, attempts and import seconds it did itself (the API's /metrics
        # reads the database): a scraper needs every worker's port.
        metrics_port = config.metrics_port(index)
        metrics = ("--metrics-port", str(metrics_port)) if metrics_port is not None else ()
        return ContainerSpec(
            name=f"{config.name}-worker-{index}",
            image=image,
            command=("worker", *metrics),
            env=env,
            secret_env=FUNCTION_SECRET_ENV,
            stop_grace_s=WORKER_STOP_GRACE_S,
            port=metrics_port,
        )
    raise ValueError(f"unknown role {role!r}: expected 'serve' or 'worker'")
