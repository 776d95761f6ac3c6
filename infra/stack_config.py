"""Read and validate the stack configuration (namespace `autosync:`) into a frozen dataclass.

Plain Python on purpose: validation runs before any resource is declared, is unit-testable without
the Pulumi engine, and reports every problem at once, each line naming its key. The Pulumi program
reads the config through `from_pulumi()`; tests pass a dictionary through `load()`.

Secrets (database password, service key, JWT secret, encryption key) are optional: when absent the
program generates them once per stack (see `infra/components/secrets.py`), so no secret ever has
to live in the repository. When present they must have been set with `pulumi config set --secret`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

NAMESPACE = "autosync"

DEFAULT_POSTGRES_PORT = 5432
DEFAULT_FUNCTION_PORT = 8000
DEFAULT_DATABASE_NAME = "autosync"
DEFAULT_DATABASE_USER = "postgres"
DEFAULT_WORKERS = 1
# Worker n serves its Prometheus metrics on 127.0.0.1:(workerMetricsPort + n - 1) (host networking).
DEFAULT_WORKER_METRICS_PORT = 9464
MAX_WORKERS = 32
# `autosync serve` processes in the serve container (AUTOSYNC_API_PROCESSES).
DEFAULT_API_PROCESSES = 1
MAX_API_PROCESSES = 64
# How auto-sync is scheduled (the schema's set_auto_sync_mode): one pg_cron job per user, the
# default the seed documents, or one dispatcher job for everyone (for many users).
SCHEDULING_MODES = ("per_user", "dispatcher")
DEFAULT_SCHEDULING_MODE = "per_user"

# Lower bounds for secrets a user supplies. The service key bound is the schema's own
# (autosync_private.set_service_key refuses shorter keys); 32 bytes is HS256's key size.
MIN_SERVICE_KEY = 32
MIN_JWT_SECRET = 32
MIN_DATABASE_PASSWORD = 12

# Keys that only describe a container the program would create: set together with the
# existing-infrastructure key that replaces that container, they would silently do nothing.
POSTGRES_ONLY_KEYS = ("postgresPort", "databaseName", "databaseUser", "databasePassword", "postgresImageTag")
FUNCTION_ONLY_KEYS = (
    "functionPort",
    "workers",
    "workerMetricsPort",
    "apiProcesses",
    "functionImageTag",
    "functionBuildArgs",
    "jwtSecret",
    "encryptionKey",
)

SECRET_KEYS = frozenset({"databaseUrl", "databasePassword", "serviceKey", "jwtSecret", "encryptionKey"})
KNOWN_KEYS = frozenset(
    {
        "namePrefix",
        "databaseUrl",
        "functionUrl",
        "postgresPort",
        "databaseName",
        "databaseUser",
        "databasePassword",
        "postgresImageTag",
        "functionPort",
        "workers",
        "workerMetricsPort",
        "apiProcesses",
        "functionImageTag",
        "functionBuildArgs",
        "serviceKey",
        "jwtSecret",
        "encryptionKey",
        "schedulingMode",
    }
)

_NAME_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StackConfigError(ValueError):
    """The stack configuration is invalid; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid stack configuration:\n{lines}")


class ConfigSource(Protocol):
    """Where raw configuration comes from: Pulumi's config, or a dictionary in tests."""

    def get(self, key: str) -> str | None:
        """The raw string value of `key` (without namespace), or None when unset."""
        ...

    def is_secret(self, key: str) -> bool:
        """Whether `key` was set as a secret (`pulumi config set --secret`)."""
        ...

    def keys(self) -> list[str]:
        """Every key set in the `autosync:` namespace (without namespace)."""
        ...


@dataclass(frozen=True)
class DictSource:
    """A `ConfigSource` over a dictionary; `secret_keys` names the values that count as secrets."""

    values: Mapping[str, str]
    secret_keys: frozenset[str] = frozenset()

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def is_secret(self, key: str) -> bool:
        return key in self.secret_keys

    def keys(self) -> list[str]:
        return list(self.values)


@dataclass(frozen=True)
class StackConfig:
    """The validated stack configuration. Secrets are plain strings here and never in `repr`;
    the program wraps them as Pulumi secrets before any resource sees them."""

    name_prefix: str
    # Existing-infrastructure mode: set → that part is not created by this stack.
    database_url: str | None = field(default=None, repr=False)
    function_url: str | None = None
    postgres_port: int = DEFAULT_POSTGRES_PORT
    database_name: str = DEFAULT_DATABASE_NAME
    database_user: str = DEFAULT_DATABASE_USER
    database_password: str | None = field(default=None, repr=False)
    postgres_image_tag: str | None = None
    function_port: int = DEFAULT_FUNCTION_PORT
    workers: int = DEFAULT_WORKERS
    worker_metrics_port: int = DEFAULT_WORKER_METRICS_PORT
    api_processes: int = DEFAULT_API_PROCESSES
    function_image_tag: str | None = None
    function_build_args: Mapping[str, str] = field(default_factory=dict)
    service_key: str | None = field(default=None, repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    encryption_key: str | None = field(default=None, repr=False)
    scheduling_mode: str = DEFAULT_SCHEDULING_MODE

    @property
    def creates_postgres(self) -> bool:
        return self.database_url is None

    @property
    def creates_function(self) -> bool:
        return self.function_url is None

    @property
    def sync_function_url(self) -> str:
        """The base URL the database's trigger posts to: the configured one, or the local container's."""
        if self.function_url is not None:
            return self.function_url
        return f"http://127.0.0.1:{self.function_port}"


class _Reader:
    """Collects problems while reading, so that one run reports all of them."""

    def __init__(self, source: ConfigSource) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{NAMESPACE}:{key}: {message}")

    def string(self, key: str, *, pattern: re.Pattern[str] | None = None, hint: str = "") -> str | None:
        value = self.source.get(key)
        if value is None:
            return None
        if value.strip() != value or value == "":
            self.fail(key, "must not be empty or have surrounding whitespace")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(key, f"{hint} (got {value!r})")
            return None
        return value

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        raw = self.source.get(key)
        if raw is None:
            return default
        # Strict: "8000" yes; "8e3", "8000.0", "-1", "true" no.
        if not re.fullmatch(r"[0-9]+", raw.strip()):
            self.fail(key, f"must be an integer between {low} and {high} (got {raw!r})")
            return default
        value = int(raw)
        if not low <= value <= high:
            self.fail(key, f"must be an integer between {low} and {high} (got {value})")
            return default
        return value

    def secret(self, key: str, *, check: Callable[[str], str | None]) -> str | None:
        value = self.source.get(key)
        if value is None:
            return None
        if not self.source.is_secret(key):
            # Its value is now in plain text in Pulumi.<stack>.yaml: refuse rather than deploy it.
            self.fail(key, f"is a secret: set it with `pulumi config set --secret {key} …`")
            return None
        problem = check(value)
        if problem is not None:
            self.fail(key, problem)
            return None
        return value


def _check_service_key(value: str) -> str | None:
    if len(value) < MIN_SERVICE_KEY:
        return f"must be at least {MIN_SERVICE_KEY} characters (got {len(value)})"
    return None


def _check_jwt_secret(value: str) -> str | None:
    if len(value) < MIN_JWT_SECRET:
        return f"must be at least {MIN_JWT_SECRET} characters (got {len(value)})"
    return None


def _check_password(value: str) -> str | None:
    if len(value) < MIN_DATABASE_PASSWORD:
        return f"must be at least {MIN_DATABASE_PASSWORD} characters (got {len(value)})"
    return None


def _check_encryption_key(value: str) -> str | None:
    # The generated form: URL-safe base64 of 32 random bytes (a Fernet key; also an AES-256 key).
    # Several, comma-separated, add keys the stack does not know yet (NEW,OLD): stored secrets under
    # OLD are then re-encrypted under NEW (infra/components/encryption.py).
    keys = value.split(",")
    for key in keys:
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raw = b""
        if len(raw) != 32 or key.strip() != key:
            return (
                "must be URL-safe base64 of 32 bytes (or several such keys separated by commas, the new one "
                "first), e.g. the output of "
                "python -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
            )
    if len(set(keys)) != len(keys):
        return "lists the same key twice"
    return None


def _check_database_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in {"postgresql", "postgres"} or not parts.hostname:
        return "must be a URL like postgresql://user:password@host:5432/database"
    if not parts.path.strip("/"):
        return "must name the database (postgresql://…/database)"
    return None


def load(source: ConfigSource, *, stack: str) -> StackConfig:
    """Validate the raw configuration of `stack`; raise `StackConfigError` listing every problem."""
    reader = _Reader(source)
    for key in sorted(set(source.keys()) - KNOWN_KEYS):
        reader.fail(key, f"unknown key; known keys: {', '.join(sorted(KNOWN_KEYS))}")

    name_prefix = reader.string(
        "namePrefix",
        pattern=_NAME_PREFIX,
        hint="must be 1-40 of a-z 0-9 _ . -, starting with a letter or digit",
    )
    if name_prefix is None and source.get("namePrefix") is None:
        # "pulumi" in the name keeps the stack's containers apart from the harness's `make up`
        # environments (`autosync-dev-…`) on the same Docker engine.
        name_prefix = f"autosync-pulumi-{stack}".lower()
        if not _NAME_PREFIX.match(name_prefix):
            reader.fail("namePrefix", f"the default {name_prefix!r} is not a valid Docker name; set one")

    database_url = reader.secret("databaseUrl", check=_check_database_url)
    function_url = reader.string("functionUrl")
    if function_url is not None:
        parts = urlsplit(function_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
            reader.fail(
                "functionUrl", f"must be a base URL like https://functions.example.com (got {function_url!r})"
            )
            function_url = None
        else:
            # The trigger appends /functions/v1/auto-sync itself.
            function_url = function_url.rstrip("/")

    if source.get("databaseUrl") is not None:
        for key in POSTGRES_ONLY_KEYS:
            if source.get(key) is not None:
                reader.fail(
                    key, "has no effect with databaseUrl set (no Postgres container is created); remove it"
                )
    if source.get("functionUrl") is not None:
        for key in FUNCTION_ONLY_KEYS:
            if source.get(key) is not None:
                reader.fail(
                    key, "has no effect with functionUrl set (no function container is created); remove it"
                )
        if source.get("serviceKey") is None:
            # A generated key could not match the one the existing function checks.
            reader.fail("serviceKey", "is required with functionUrl: the key the existing function expects")

    postgres_port = reader.integer("postgresPort", DEFAULT_POSTGRES_PORT, low=1, high=65535)
    function_port = reader.integer("functionPort", DEFAULT_FUNCTION_PORT, low=1, high=65535)
    both_local = source.get("databaseUrl") is None and source.get("functionUrl") is None
    if both_local and postgres_port == function_port:
        # Both containers use host networking: one of them could not bind.
        reader.fail("functionPort", f"must differ from postgresPort (both are {function_port})")

    database_name = reader.string(
        "databaseName", pattern=_IDENTIFIER, hint="must be a plain identifier (letters, digits, _; max 63)"
    )
    database_user = reader.string(
        "databaseUser", pattern=_IDENTIFIER, hint="must be a plain identifier (letters, digits, _; max 63)"
    )
    postgres_image_tag = reader.string("postgresImageTag", pattern=_IMAGE_TAG, hint="must be a Docker tag")
    function_image_tag = reader.string("functionImageTag", pattern=_IMAGE_TAG, hint="must be a Docker tag")
    workers = reader.integer("workers", DEFAULT_WORKERS, low=0, high=MAX_WORKERS)
    worker_metrics_port = reader.integer(
        "workerMetricsPort", DEFAULT_WORKER_METRICS_PORT, low=1, high=65535 - MAX_WORKERS
    )
    api_processes = reader.integer("apiProcesses", DEFAULT_API_PROCESSES, low=1, high=MAX_API_PROCESSES)
    build_args = _build_args(reader)
    scheduling_mode = reader.string("schedulingMode") or DEFAULT_SCHEDULING_MODE
    if scheduling_mode not in SCHEDULING_MODES:
        reader.fail(
            "schedulingMode", f"must be one of {', '.join(SCHEDULING_MODES)} (got {scheduling_mode!r})"
        )
        scheduling_mode = DEFAULT_SCHEDULING_MODE

    config = StackConfig(
        name_prefix=name_prefix or "invalid",
        database_url=database_url,
        function_url=function_url,
        postgres_port=postgres_port,
        database_name=database_name or DEFAULT_DATABASE_NAME,
        database_user=database_user or DEFAULT_DATABASE_USER,
        database_password=reader.secret("databasePassword", check=_check_password),
        postgres_image_tag=postgres_image_tag,
        function_port=function_port,
        workers=workers,
        worker_metrics_port=worker_metrics_port,
        api_processes=api_processes,
        function_image_tag=function_image_tag,
        function_build_args=build_args,
        service_key=reader.secret("serviceKey", check=_check_service_key),
        jwt_secret=reader.secret("jwtSecret", check=_check_jwt_secret),
        encryption_key=reader.secret("encryptionKey", check=_check_encryption_key),
        scheduling_mode=scheduling_mode,
    )
    if reader.problems:
        raise StackConfigError(reader.problems)
    return config


def _build_args(reader: _Reader) -> dict[str, str]:
    raw = reader.source.get("functionBuildArgs")
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and _BUILD_ARG.match(k) and isinstance(v, str) for k, v in value.items()
    ):
        reader.fail(
            "functionBuildArgs",
            'must be a map of build-arg names to strings, e.g. {"PIP_EXTRA_CA_CERTS": "<PEM text>"}',
        )
        return {}
    return dict(value)


@dataclass(frozen=True)
class PulumiSource:
    """A `ConfigSource` over the running stack's Pulumi configuration."""

    namespace: str = NAMESPACE

    def get(self, key: str) -> str | None:
        import pulumi  # imported here so that validation itself needs no Pulumi runtime

        # Plain `get` also returns secret values (decrypted); secrecy is checked via is_secret().
        return pulumi.Config(self.namespace).get(key)

    def is_secret(self, key: str) -> bool:
        from pulumi.runtime.config import is_config_secret

        return bool(is_config_secret(f"{self.namespace}:{key}"))

    def keys(self) -> list[str]:
        from pulumi.runtime.config import CONFIG, get_config_env

        prefix = f"{self.namespace}:"
        every = set(CONFIG.get()) | set(get_config_env())
        return sorted(key[len(prefix) :] for key in every if key.startswith(prefix))


def from_pulumi(*, stack: str) -> StackConfig:
    """The validated configuration of the running stack."""
    return load(PulumiSource(), stack=stack)
