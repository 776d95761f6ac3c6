"""Configuration from the environment, validated once, with errors that name each variable."""

from __future__ import annotations

from pydantic import (
    AliasChoices,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sync_function.cors import parse_origins
from sync_function.crypto import KeyListError, parse_keys
from sync_function.destinations import DestinationPolicy
from sync_function.imap import DEFAULT_TIMEOUT_S
from sync_function.importer import DEFAULT_BATCH_SIZE, DEFAULT_MAX_MESSAGE_BYTES

LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]


class ConfigError(RuntimeError):
    """The environment does not configure the service correctly; the message lists every problem."""


class Config(BaseSettings):
    """Every knob of the sync function. Variables are AUTOSYNC_<NAME>, except DATABASE_URL."""

    model_config = SettingsConfigDict(env_prefix="AUTOSYNC_", extra="ignore", frozen=True)

    database_url: SecretStr = Field(validation_alias=AliasChoices("DATABASE_URL", "AUTOSYNC_DATABASE_URL"))
    service_key: SecretStr = Field(min_length=32)
    # While the service key rotates: the key pg_cron may still send until the database holds the new
    # one. Accepted besides service_key, never sent anywhere; empty or unset: none.
    service_key_previous: SecretStr | None = Field(default=None, min_length=32)
    # User JWTs: HS256 with this secret, RS256/ES256 with the keys at jwt_jwks_url; one or both.
    jwt_secret: SecretStr | None = Field(default=None, min_length=32)
    jwt_jwks_url: HttpUrl | None = Field(default=None, validate_default=True)
    # An unknown `kid` refetches the JWKS at most once per this; the set is refreshed after max age.
    jwt_jwks_min_refresh_seconds: float = Field(default=60.0, ge=0.0, le=86400)
    jwt_jwks_max_age_seconds: float = Field(default=600.0, ge=1.0, le=7 * 86400)
    jwt_audience: str | None = None
    encryption_key: SecretStr

    # Browser origins allowed to call /api/* (comma-separated, no '*'); empty: no CORS at all.
    cors_allowed_origins: str = ""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    db_pool_max: int = Field(default=10, ge=1, le=200)
    # `serve` processes (uvicorn workers) sharing one socket; each has its own pools (db_pool_max each).
    api_processes: int = Field(default=1, ge=1, le=64)
    # Every connection runs SET ROLE to this (empty: keep the login role). service_role holds exactly
    # what the service needs (revision 0014), so a superuser URL does not make the service one.
    database_role: str = Field(default="service_role", max_length=63)

    # Queue and retries: attempt n (from 1) waits retry_base_seconds * 2**(n-1) before the next.
    max_attempts: int = Field(default=4, ge=1, le=20)
    retry_base_seconds: float = Field(default=10.0, ge=0.0, le=3600.0)
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    # A worker silent for 3 heartbeats is taken for dead and its job is run again.
    heartbeat_seconds: float = Field(default=10.0, ge=0.5, le=600)
    stalled_check_seconds: float = Field(default=30.0, ge=0.5, le=3600)

    # After this many consecutive failed runs for a user, POST to the webhook (if set).
    failure_threshold: int = Field(default=3, ge=1, le=1000)
    failure_webhook_url: HttpUrl | None = None

    # Manual imports (/functions/v1/import-emails): at most this many per user per window.
    manual_import_limit: int = Field(default=3, ge=1, le=1000)
    manual_import_window_seconds: int = Field(default=60, ge=1, le=86400)
    # save-auto-sync writes a cron job; adding an email account logs in to a server the user names.
    save_auto_sync_limit: int = Field(default=60, ge=1, le=100000)
    save_auto_sync_window_seconds: int = Field(default=60, ge=1, le=86400)
    add_email_account_limit: int = Field(default=10, ge=1, le=100000)
    add_email_account_window_seconds: int = Field(default=600, ge=1, le=86400)

    # The import's defaults have one home, the modules that use them (also when called without Config).
    # Destinations that IMAP connections may reach although they are not public (comma-separated CIDRs,
    # addresses or host names), e.g. an internal mail server. Empty: public addresses only.
    imap_allowed_networks: str = ""

    imap_timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=600)
    imap_batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=5000)
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024)
    # Token endpoints come from users (custom providers) and get the service's POST with the client
    # secret and refresh token: public https only, unless listed here (comma-separated CIDRs,
    # addresses or host names; plain http too). Not shared with imap_allowed_networks: allowing an
    # internal mail server must not open every internal web service on its network.
    oauth_allowed_networks: str = ""
    # Shorthand for adding 127.0.0.0/8 and ::1 to oauth_allowed_networks (development and tests).
    oauth_allow_loopback_http: bool = False

    @field_validator("service_key_previous", mode="before")
    @classmethod
    def _no_previous_key(cls, value: object) -> object:
        # The Pulumi program and the harness always set the variable; empty means no rotation under way.
        return None if value == "" else value

    def service_keys(self) -> tuple[str, ...]:
        """Every key a service caller may present: the current one, then the previous one if set."""
        keys = [self.service_key.get_secret_value()]
        if self.service_key_previous is not None:
            keys.append(self.service_key_previous.get_secret_value())
        return tuple(keys)

    @field_validator("jwt_jwks_url")
    @classmethod
    def _some_jwt_key(cls, value: HttpUrl | None, info: ValidationInfo) -> HttpUrl | None:
        # Declared after jwt_secret, so a valid secret is in info.data by now.
        if value is None and info.data.get("jwt_secret") is None:
            raise ValueError("neither this nor AUTOSYNC_JWT_SECRET is set; user JWTs need one or both")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        parse_origins(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("imap_allowed_networks", "oauth_allowed_networks")
    @classmethod
    def _destinations(cls, value: str) -> str:
        DestinationPolicy.parse(value.split(","))  # raises ValueError naming the bad entry
        return value

    def oauth_destinations(self) -> DestinationPolicy:
        """The allow-list for OAuth2 token endpoints (sync_function.oauth)."""
        entries = self.oauth_allowed_networks.split(",")
        if self.oauth_allow_loopback_http:
            entries += LOOPBACK_NETWORKS
        return DestinationPolicy.parse(entries)

    def imap_destinations(self) -> DestinationPolicy:
        """The allow-list for IMAP connections (sync_function.destinations)."""
        return DestinationPolicy.parse(self.imap_allowed_networks.split(","))

    @field_validator("encryption_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr) -> SecretStr:
        # One key, or NEW,OLD while a key is rotated (sync_function/crypto.py).
        try:
            parse_keys(value.get_secret_value())
        except KeyListError as exc:
            raise ValueError(
                f"{exc}; generate a key with "
                'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            ) from None
        return value


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        if not problem["loc"]:  # a check across variables names them in its message
            lines.append(f"  {str(problem['msg']).removeprefix('Value error, ')}")
            continue
        field = str(problem["loc"][0])
        variable = field.upper() if field.upper().startswith("AUTOSYNC_") else f"AUTOSYNC_{field.upper()}"
        if variable == "AUTOSYNC_DATABASE_URL":
            variable = "DATABASE_URL"
        message = "is not set" if problem["type"] == "missing" else problem["msg"]
        lines.append(f"  {variable}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_config() -> Config:
    """Read and validate the environment; raises ConfigError naming every bad variable."""
    try:
        return Config()  # type: ignore[call-arg]
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
