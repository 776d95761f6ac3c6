"""A named local environment on the Docker engine: what `make up` / `make down` drive.

An environment is Postgres (pg_cron + http), migrated to head and configured for the sync function,
plus the function itself: one `autosync serve` container and `workers` `autosync worker` containers,
all from the same specs as the Pulumi program (`infra.containers`, `infra.function_specs`) and
migrated/configured by the same code (`infra.migrations`, `infra.dbsettings`).

Generated secrets and ports persist in `.autosync/<name>.env` (mode 0600, outside git), so a second
`up` reuses them; the file is also an env file for the service (`set -a; . FILE`, `--env-file`).
Every container and volume carries the label `autosync.env=<name>`: `down` removes them all, even
after a crash. `ephemeral()` is an environment that is always removed when its block ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from harness import demo as demo_mail
from harness import docker_local
from harness.ports import free_ports
from infra import containers, dbsettings, function_specs, migrations
from infra.stack_config import SCHEDULING_MODES

STATE_DIR = containers.REPO_ROOT / ".autosync"
DEFAULT_NAME = "autosync-dev"
# Supabase's local ports (API 54321, database 54322): familiar, and off the usual 5432/8000.
DEFAULT_POSTGRES_PORT = 54322
DEFAULT_FUNCTION_PORT = 54321

# Where the harness looks for CA certificates to hand to pip inside the function image build, in
# order: this variable (a file path; empty disables), SSL_CERT_FILE, the host's OpenSSL default.
PIP_CA_BUNDLE_VAR = "AUTOSYNC_PIP_CA_BUNDLE"
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"

# A PEM certificate block; and how much PEM text a build arg may carry (the kernel's 128 KiB limit
# on one environment string, with a margin).
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
MAX_BUILD_ARG_CHARS = 120_000

# Variables through which an environment's coordinates reach tests (`autosync env test`).
E2E_API_URL = "AUTOSYNC_E2E_API_URL"
E2E_DATABASE_URL = "AUTOSYNC_E2E_DATABASE_URL"
E2E_SERVICE_KEY = "AUTOSYNC_E2E_SERVICE_KEY"
E2E_JWT_SECRET = "AUTOSYNC_E2E_JWT_SECRET"  # noqa: S105 - a variable name, not a secret
E2E_ENV_NAME = "AUTOSYNC_E2E_ENV_NAME"
E2E_WORKER_METRICS = "AUTOSYNC_E2E_WORKER_METRICS"  # comma-separated URLs of the workers' /metrics


@dataclass(frozen=True)
class Coordinates:
    """How to reach a running environment: what tests need, whoever stood it up."""

    name: str
    api_url: str
    database_url: str = field(repr=False)
    service_key: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    worker_metrics: tuple[str, ...] = ()

    def environ(self) -> dict[str, str]:
        """The `AUTOSYNC_E2E_*` variables for a test process."""
        return {
            E2E_ENV_NAME: self.name,
            E2E_API_URL: self.api_url,
            E2E_DATABASE_URL: self.database_url,
            E2E_SERVICE_KEY: self.service_key,
            E2E_JWT_SECRET: self.jwt_secret,
            E2E_WORKER_METRICS: ",".join(self.worker_metrics),
        }

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Coordinates | None:
        """The coordinates `environ()` exported, or None when they are not (all) set."""
        needed = (E2E_API_URL, E2E_DATABASE_URL, E2E_SERVICE_KEY, E2E_JWT_SECRET)
        if not all(environ.get(key) for key in needed):
            return None
        return cls(
            name=environ.get(E2E_ENV_NAME, ""),
            api_url=environ[E2E_API_URL],
            database_url=environ[E2E_DATABASE_URL],
            service_key=environ[E2E_SERVICE_KEY],
            jwt_secret=environ[E2E_JWT_SECRET],
            worker_metrics=tuple(url for url in environ.get(E2E_WORKER_METRICS, "").split(",") if url),
        )


@dataclass(frozen=True)
class LocalEnv:
    """A running environment: its Postgres, its function, and where its state is kept."""

    name: str
    postgres: containers.PostgresConfig
    revision: str | None
    function: function_specs.SyncFunctionConfig
    workers: int
    state_file: Path
    demo: demo_mail.Demo | None = None
    scheduling: str = "per_user"

    @property
    def api_url(self) -> str:
        return self.function.url

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def coordinates(self) -> Coordinates:
        return Coordinates(
            name=self.name,
            api_url=self.api_url,
            database_url=self.database_url,
            service_key=self.function.service_key,
            jwt_secret=self.function.jwt_secret,
            worker_metrics=self.worker_metrics,
        )

    @property
    def worker_metrics(self) -> tuple[str, ...]:
        """Each worker's Prometheus endpoint (the workers share the host's network)."""
        ports = [self.function.metrics_port(index) for index in range(1, self.workers + 1)]
        return tuple(f"http://127.0.0.1:{port}/metrics" for port in ports if port is not None)


def state_file(name: str) -> Path:
    """Where `name`'s generated secrets and ports are kept."""
    return STATE_DIR / f"{name}.env"


def read_state(name: str) -> dict[str, str]:
    path = state_file(name)
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def _write_state(name: str, values: Mapping[str, str]) -> None:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    path = state_file(name)
    # Created 0600 from the start (not chmod-ed after writing): the file holds the secrets.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)  # an older file may have been created with another mode


def pip_ca_bundle(environ: Mapping[str, str] | None = None) -> Path | None:
    """The CA bundle to hand to pip inside the image build, if any (see `PIP_CA_BUNDLE_VAR`)."""
    environ = os.environ if environ is None else environ
    if PIP_CA_BUNDLE_VAR in environ:
        chosen = environ[PIP_CA_BUNDLE_VAR]
        if not chosen:
            return None
        path = Path(chosen)
        if not path.is_file():
            raise docker_local.HarnessError(f"{PIP_CA_BUNDLE_VAR}={chosen}: no such file")
        return path
    for candidate in (environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def extra_ca_certs(bundle: str, public: str) -> str:
    """The certificates (PEM) of `bundle` that are not in `public`, in `bundle`'s order."""

    def certs(text: str) -> list[tuple[str, str]]:
        found = []
        for block in _PEM.findall(text):
            body = "".join(block.split("-----")[2].split())
            found.append((body, block))
        return found

    known = {body for body, _ in certs(public)}
    return "".join(f"{block}\n" for body, block in certs(bundle) if body not in known)


def function_build_args(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Build args for the function image on this host: the CAs pip needs beyond the public ones.

    Where the package index is reached through a gateway or proxy whose CA only the host trusts,
    pip inside the build needs that CA. A build arg becomes an environment variable of the build's
    RUN steps, which Linux limits to 128 KiB, so a whole system bundle does not fit: pass the
    host's certificates that the public (Mozilla, as shipped by certifi) bundle lacks. The arg does
    not change the image tag.
    """
    bundle = pip_ca_bundle(environ)
    if bundle is None:
        return {}
    import certifi

    extra = extra_ca_certs(bundle.read_text(), Path(certifi.where()).read_text())
    if not extra:
        return {}
    if len(extra) > MAX_BUILD_ARG_CHARS:
        raise docker_local.HarnessError(
            f"{bundle} holds {len(extra) // 1024} KiB of non-public CA certificates, more than a build "
            f"argument can carry; set {PIP_CA_BUNDLE_VAR} to a file with just your proxy's CA"
        )
    return {function_specs.PIP_CA_BUILD_ARG: extra}


def _generated(state: Mapping[str, str], key: str, make: str) -> str:
    value = state.get(key)
    if value:
        return value
    if make == "token":
        return secrets.token_urlsafe(48)
    return Fernet.generate_key().decode()


def _current(engine, spec: containers.ContainerSpec, image_tag: str):  # type: ignore[no-untyped-def]
    """The running container of `spec`, if it runs `image_tag` with `spec`'s environment."""
    running = engine.containers.list(filters={"name": f"^{spec.name}$", "status": "running"})
    if not running:
        return None
    container = running[0]
    env = set(container.attrs["Config"].get("Env") or [])
    wanted = {f"{key}={value}" for key, value in spec.env.items()}
    if image_tag not in container.image.tags or not wanted <= env:
        return None
    return container


def _start(engine, spec: containers.ContainerSpec, *, env_name: str, image_tag: str):  # type: ignore[no-untyped-def]
    """Reuse `spec`'s container when it is current, otherwise (re)create it."""
    return _current(engine, spec, image_tag) or docker_local.run(
        engine, spec, env_name=env_name, image_tag=image_tag
    )


def wait_ready(api_url: str, *, timeout_s: float = 60.0) -> None:
    """Wait until `GET /readyz` answers 200 (database reachable, schema at the expected revision)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{api_url}/readyz", timeout=3.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise docker_local.HarnessError(f"{api_url}/readyz did not answer 200 within {timeout_s:.0f} s: {last}")


def up(
    name: str = DEFAULT_NAME,
    *,
    postgres_port: int | None = None,
    function_port: int | None = None,
    workers: int = 1,
    api_processes: int = 1,
    demo: bool = False,
    demo_mail_every_s: int = demo_mail.DEMO_MAIL_EVERY_S,
    scheduling: str = "per_user",
) -> LocalEnv:
    """Start (or reuse) the environment and return it once the function is ready. Idempotent.

    Ports and secrets come from the state file when there is one, so a second `up` changes
    nothing that works; the ports given here only apply to an environment's first start.
    `demo`: also run the demo mailbox and user (harness.demo); `make up` asks for it.
    `scheduling` is the database's auto-sync scheduling mode ('per_user' or 'dispatcher'), applied
    on every `up` (switching moves every user's cron job in one transaction).
    """
    if workers < 0:
        raise ValueError("workers must be >= 0")
    if api_processes < 1:
        raise ValueError("api_processes must be >= 1")
    if scheduling not in SCHEDULING_MODES:
        raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING_MODES)} (got {scheduling!r})")
    state = read_state(name)
    postgres = containers.PostgresConfig(
        name=f"{name}-postgres",
        password=_generated(state, "POSTGRES_PASSWORD", "token"),
        port=int(state.get("POSTGRES_PORT") or postgres_port or DEFAULT_POSTGRES_PORT),
    )
    function = function_specs.SyncFunctionConfig(
        name=f"{name}-function",
        database_url=postgres.url,
        service_key=_generated(state, "AUTOSYNC_SERVICE_KEY", "token"),
        jwt_secret=_generated(state, "AUTOSYNC_JWT_SECRET", "token"),
        encryption_key=_generated(state, "AUTOSYNC_ENCRYPTION_KEY", "fernet"),
        port=int(state.get("AUTOSYNC_PORT") or function_port or DEFAULT_FUNCTION_PORT),
        # The local environment syncs from a test Dovecot on this machine: loopback is allowed here only.
        imap_allowed_networks=LOOPBACK_NETWORKS,
        worker_metrics_port=int(state.get("AUTOSYNC_WORKER_METRICS_PORT") or free_ports(1)[0]),
        # A changed count changes the serve container's spec, so `up` recreates it.
        api_processes=api_processes,
    )
    if postgres.port == function.port:
        raise ValueError(f"Postgres and the function would both listen on port {postgres.port}")
    demo_ports = [int(state[key]) for key in ("DEMO_IMAP_PORT", "DEMO_IMAPS_PORT") if state.get(key)]
    if demo and len(demo_ports) != 2:
        demo_ports = free_ports(2)
    demo_password = state.get("DEMO_IMAP_PASSWORD") or demo_mail.new_password()
    # Written before anything starts: if a step below fails, `down` still finds the environment
    # and a retry reuses the same secrets (the database volume already holds the password).
    _write_state(
        name,
        {
            "POSTGRES_PASSWORD": postgres.password,
            "POSTGRES_PORT": str(postgres.port),
            "DATABASE_URL": postgres.url,
            "AUTOSYNC_SERVICE_KEY": function.service_key,
            "AUTOSYNC_JWT_SECRET": function.jwt_secret,
            "AUTOSYNC_ENCRYPTION_KEY": function.encryption_key,
            "AUTOSYNC_HOST": function.host,
            "AUTOSYNC_PORT": str(function.port),
            "AUTOSYNC_API_URL": function.url,
            **(
                {
                    "DEMO_IMAP_PORT": str(demo_ports[0]),
                    "DEMO_IMAPS_PORT": str(demo_ports[1]),
                    "DEMO_IMAP_PASSWORD": demo_password,
                }
                if len(demo_ports) == 2
                else {}
            ),
            "AUTOSYNC_WORKER_METRICS_PORT": str(function.worker_metrics_port),
        },
    )

    # Closed when done: a leaked client's socket surfaces later as a ResourceWarning somewhere else.
    with contextlib.closing(docker_local.client()) as engine:
        postgres_tag = docker_local.ensure_image(engine, containers.postgres_image())
        image = function_specs.sync_function_image(function_build_args())
        function_tag = docker_local.ensure_image(engine, image)

        database = _start(
            engine, containers.postgres_container(postgres), env_name=name, image_tag=postgres_tag
        )
        docker_local.wait_healthy(database)
        revision = migrations.upgrade(postgres.url)
        dbsettings.configure(
            postgres.url,
            function_url=function.url,
            service_key=function.service_key,
            scheduling_mode=scheduling,
        )

        specs = [function_specs.sync_function_container(function, role="serve", image=image)]
        specs += [
            function_specs.sync_function_container(function, role="worker", index=index, image=image)
            for index in range(1, workers + 1)
        ]
        wanted = {spec.name for spec in specs}
        # Workers beyond the requested count (an earlier `up --workers 3`) would keep importing.
        for container in engine.containers.list(
            all=True, filters={"label": f"{containers.ENV_LABEL}={name}"}
        ):
            if container.name.startswith(f"{function.name}-worker-") and container.name not in wanted:
                container.remove(force=True)
        started = [_start(engine, spec, env_name=name, image_tag=function_tag) for spec in specs]
        docker_local.wait_healthy(started[0], timeout_s=60)
        wait_ready(function.url)
        for container in started[1:]:
            container.reload()
            if container.status != "running":
                logs = container.logs(tail=40).decode(errors="replace")
                raise docker_local.HarnessError(f"worker {container.name} is {container.status}:\n{logs}")
        demo_env = None
        if demo:
            demo_env = demo_mail.start(
                engine,
                env_name=name,
                config=demo_mail.dovecot_config(name, imap_port=demo_ports[0], imaps_port=demo_ports[1]),
                password=demo_password,
                database_url=postgres.url,
                api_url=function.url,
                jwt_secret=function.jwt_secret,
                mail_every_s=demo_mail_every_s,
            )
    return LocalEnv(
        name=name,
        postgres=postgres,
        revision=revision,
        function=function,
        workers=workers,
        state_file=state_file(name),
        demo=demo_env,
        scheduling=scheduling,
    )


def down(name: str = DEFAULT_NAME) -> list[str]:
    """Remove every container and volume of the environment, and its state file."""
    with contextlib.closing(docker_local.client()) as engine:
        removed = docker_local.remove_environment(engine, name)
    path = state_file(name)
    if path.exists():
        path.unlink()
        removed.append(f"state file {path.relative_to(containers.REPO_ROOT)}")
    return removed


def leftovers(name: str) -> list[str]:
    """Containers and volumes still labelled with `name` (empty after `down`)."""
    selector = {"label": f"{containers.ENV_LABEL}={name}"}
    with contextlib.closing(docker_local.client()) as engine:
        found = [f"container {c.name}" for c in engine.containers.list(all=True, filters=selector)]
        found += [f"volume {v.name}" for v in engine.volumes.list(filters=selector)]
    return found


@contextlib.contextmanager
def ephemeral(name: str, *, workers: int = 1, demo: bool = False) -> Iterator[LocalEnv]:
    """An environment on free ports that is removed when the block ends, however it ends.

    The removal also runs when `up` itself fails half-way (a build error, a container that never
    gets healthy), since whatever was created already carries the label.
    """
    postgres_port, function_port = free_ports(2)
    try:
        yield up(name, postgres_port=postgres_port, function_port=function_port, workers=workers, demo=demo)
    finally:
        down(name)
