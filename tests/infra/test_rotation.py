"""Rotating the encryption key outside Pulumi: the key list (sync_function/crypto.py) and `autosync reencrypt`.

The Pulumi side of the same rotation runs through the provider host in test_provider_host.py.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import psycopg
import pytest
from cryptography.fernet import Fernet

from infra import migrations
from infra.containers import PostgresConfig
from sync_function import crypto
from sync_function.config import Config
from tests.support.cli import AUTOSYNC
from tests.support.db import new_user

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def test_first_key_encrypts_every_key_decrypts() -> None:
    token = crypto.encrypt_password(f"{NEW},{OLD}", "secret")
    assert crypto.key_index([NEW, OLD], token) == 0
    assert crypto.decrypt_password(NEW, token) == "secret"
    old_token = crypto.encrypt_password(OLD, "older")
    assert crypto.decrypt_password(f"{NEW},{OLD}", old_token) == "older"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_password(NEW, old_token)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "one Fernet key, or several"),
        (f"{NEW},", "no empty entries"),
        (f"{NEW},not-a-key", "key 2 of 2 is not a Fernet key"),
        (f"{NEW},{NEW}", "the same key twice"),
    ],
)
def test_bad_key_lists_are_refused_without_echoing_keys(value: str, message: str) -> None:
    with pytest.raises(crypto.KeyListError, match=message) as refused:
        crypto.parse_keys(value)
    assert NEW not in str(refused.value)


def test_service_config_accepts_a_key_list() -> None:
    base = {"DATABASE_URL": "postgresql://u:p@h/d", "service_key": "s" * 40, "jwt_secret": "j" * 40}
    config = Config(**base, encryption_key=f"{NEW},{OLD}")  # type: ignore[arg-type]
    assert config.encryption_key.get_secret_value() == f"{NEW},{OLD}"
    with pytest.raises(ValueError, match="key 2 of 2"):
        Config(**base, encryption_key=f"{NEW},nope")  # type: ignore[arg-type]


def run_reencrypt(url: str, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "AUTOSYNC_ENCRYPTION_KEY": keys}
    return subprocess.run(
        [*AUTOSYNC, "reencrypt", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def tokens(url: str) -> dict[uuid.UUID, bytes]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT id, password_encrypted FROM public.email_accounts").fetchall()
    return {row[0]: bytes(row[1]) for row in rows}


@pytest.mark.docker
def test_autosync_reencrypt(fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    migrations.upgrade(url)
    with psycopg.connect(url, autocommit=True) as connection:
        for index, key in enumerate([OLD, OLD, NEW]):
            connection.execute(
                """
                INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                VALUES (%s, 'imap.example.com', 993, 'tls', %s, %s)
                """,
                (new_user(connection), f"user{index}", crypto.encrypt_password(key, f"password-{index}")),
            )
    before = tokens(url)

    # Without the old key: refused, nothing changed.
    refused = run_reencrypt(url, NEW)
    assert refused.returncode == 1 and "2 stored secret(s) cannot be decrypted" in refused.stderr
    assert tokens(url) == before

    dry = run_reencrypt(url, f"{NEW},{OLD}", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "3 stored secret(s): 2 would be re-encrypted under the first key, 1 already were" in dry.stdout
    assert tokens(url) == before

    done = run_reencrypt(url, f"{NEW},{OLD}")
    assert done.returncode == 0, done.stderr
    assert "2 re-encrypted under the first key, 1 already were" in done.stdout
    after = tokens(url)
    assert sorted(crypto.decrypt_password(NEW, token) for token in after.values()) == [
        "password-0",
        "password-1",
        "password-2",
    ]

    # Idempotent, and OLD is now needed by nothing.
    assert "0 re-encrypted" in run_reencrypt(url, f"{NEW},{OLD}").stdout
    assert tokens(url) == after
    assert run_reencrypt(url, NEW).returncode == 0

    bad = run_reencrypt(url, f"{NEW},garbage")
    assert bad.returncode == 2 and "key 2 of 2 is not a Fernet key" in bad.stderr and NEW not in bad.stderr
