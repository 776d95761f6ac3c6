"""The Dovecot IMAP server container, as plain data (tests and benchmarks import mail from it).

Like `containers.py`, nothing here talks to Docker: `docker_local` realises these specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from infra.containers import ContainerSpec, HealthCheck, ImageSpec

DOVECOT_CONTEXT = Path(__file__).resolve().parent / "images" / "dovecot"
MAIL_ROOT = "/srv/mail"
USERS_DIR = "/etc/dovecot/users.d"
CERT_FILE = "/etc/dovecot/tls/cert.pem"
# Debian's `nobody`/`nogroup`, the static userdb's owner of every Maildir file.
MAIL_UID = 65534
MAIL_GID = 65534
SSL_MODES = ("no", "yes", "required")


@dataclass(frozen=True)
class DovecotConfig:
    """One Dovecot server: loopback ports, TLS mode and initial users (name → password)."""

    name: str
    imap_port: int
    imaps_port: int
    ssl: str = "yes"
    host: str = "127.0.0.1"
    users: dict[str, str] = field(default_factory=dict)
    # When set, XOAUTH2/OAUTHBEARER bearer tokens are checked against this introspection endpoint.
    oauth2_introspection_url: str | None = None

    def __post_init__(self) -> None:
        if self.ssl not in SSL_MODES:
            raise ValueError(f"ssl must be one of {', '.join(SSL_MODES)} (got {self.ssl!r})")
        for port in (self.imap_port, self.imaps_port):
            if not 1 <= port <= 65535:
                raise ValueError(f"ports must be within 1..65535 (got {port})")
        for user, password in self.users.items():
            check_credentials(user, password)


def check_credentials(user: str, password: str) -> None:
    """Refuse what the passwd-file format cannot hold, before it silently breaks a login."""
    if not user or any(c in user for c in ":/\n\r\0") or user.startswith("."):
        raise ValueError(
            f"user name {user!r} must be non-empty, not start with '.', without ':', '/' or newlines"
        )
    if any(c in password for c in ":\n\r\0"):
        raise ValueError(f"the password of {user!r} must not contain ':', NUL or newlines")


def user_file(user: str, password: str) -> tuple[str, bytes]:
    """Path and content of the one-user passwd-file Dovecot authenticates `user` against."""
    check_credentials(user, password)
    return f"{USERS_DIR}/{user}", f"{user}:{{PLAIN}}{password}::::::\n".encode()


def dovecot_image() -> ImageSpec:
    return ImageSpec(repository="autosync-dovecot", context=DOVECOT_CONTEXT)


def dovecot_container(config: DovecotConfig) -> ContainerSpec:
    """The Dovecot container for `config`: IMAP (+STARTTLS) and IMAPS on loopback, Maildirs."""
    return ContainerSpec(
        name=config.name,
        image=dovecot_image(),
        env={
            "IMAP_PORT": str(config.imap_port),
            "IMAPS_PORT": str(config.imaps_port),
            "IMAP_LISTEN": config.host,
            "DOVECOT_SSL": config.ssl,
            "DOVECOT_USERS": "\n".join(f"{user}:{password}" for user, password in config.users.items()),
            **(
                {"DOVECOT_OAUTH2_INTROSPECTION_URL": config.oauth2_introspection_url}
                if config.oauth2_introspection_url
                else {}
            ),
        },
        secret_env=frozenset({"DOVECOT_USERS"}),
        port=config.imap_port,
        healthcheck=HealthCheck(
            test=("CMD", "/usr/local/bin/dovecot-healthcheck.sh"),
            interval_s=1.0,
            timeout_s=3.0,
            retries=10,
            start_period_s=30.0,
        ),
    )
