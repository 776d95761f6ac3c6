"""Rotating the encryption key outside Pulumi: the key list (sync_function/crypto.py), `autosync reencrypt`
and `autosync encryption-keys usage`, and infra/encryption_keys.py, which asks those commands.

The Pulumi side of the same rotation runs through the provider host in test_provider_host.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet

from infra import encryption_keys, migrations
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


def run_autosync(url: str, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "AUTOSYNC_ENCRYPTION_KEY": keys}
    return subprocess.run(
        [*AUTOSYNC, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def run_reencrypt(url: str, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_autosync(url, keys, "reencrypt", *args)


def seed_accounts(url: str, keys: list[str]) -> None:
    """A migrated database with one mailbox password stored under each of `keys`."""
    migrations.upgrade(url)
    with psycopg.connect(url, autocommit=True) as connection:
        for index, key in enumerate(keys):
            connection.execute(
                """
                INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                VALUES (%s, 'imap.example.com', 993, 'tls', %s, %s)
                """,
                (new_user(connection), f"user{index}", crypto.encrypt_password(key, f"password-{index}")),
            )


def tokens(url: str) -> dict[uuid.UUID, bytes]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT id, password_encrypted FROM public.email_accounts").fetchall()
    return {row[0]: bytes(row[1]) for row in rows}


@pytest.mark.docker
def test_autosync_reencrypt(fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    seed_accounts(url, [OLD, OLD, NEW])
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


def assert_no_secret(url: str, *outputs: str) -> None:
    for output in outputs:
        for secret in (OLD, NEW, url):
            assert secret not in output


@pytest.mark.docker
def test_the_commands_answer_programs_in_json_without_key_material(fresh_postgres: PostgresConfig) -> None:
    # infra/encryption_keys.py reads these answers: their shape is a contract, like SQL.
    url = fresh_postgres.url
    seed_accounts(url, [OLD, OLD, NEW])
    before = tokens(url)

    usage = run_autosync(url, f"{NEW},{OLD}", "encryption-keys", "usage", "--json")
    assert usage.returncode == 0, usage.stderr
    assert json.loads(usage.stdout) == {"total": 3, "per_key": [1, 2], "unreadable": 0}
    short = run_autosync(url, NEW, "encryption-keys", "usage", "--json")
    assert short.returncode == 1, "a stored secret readable with no key of the list is a problem"
    assert json.loads(short.stdout) == {"total": 3, "per_key": [1], "unreadable": 2}
    human = run_autosync(url, f"{NEW},{OLD}", "encryption-keys", "usage")
    assert human.returncode == 0, human.stderr
    assert "key 2 of 2 (decrypts): 2 stored secret(s)" in human.stdout

    dry = run_reencrypt(url, f"{NEW},{OLD}", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {
        "total": 3,
        "rewritten": 2,
        "already": 1,
        "changed_meanwhile": 0,
        "dry_run": True,
    }
    refused = run_reencrypt(url, NEW, "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"] == "unreadable_secrets"
    assert json.loads(refused.stdout)["unreadable"] == 2
    bad = run_autosync(url, f"{NEW},garbage", "encryption-keys", "usage", "--json")
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"] == "bad_key_list"
    assert "key 2 of 2 is not a Fernet key" in json.loads(bad.stdout)["detail"]

    assert tokens(url) == before, "counting and dry runs change nothing"
    everything = [usage, short, human, dry, refused, bad]
    assert_no_secret(url, *(run.stdout + run.stderr for run in everything))


@pytest.mark.docker
def test_infra_asks_the_command_with_secrets_in_its_environment_only(
    fresh_postgres: PostgresConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fresh_postgres.url
    seed_accounts(url, [OLD, OLD])
    calls: list[tuple[list[str], dict[str, str]]] = []
    run = subprocess.run

    def recording_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append((list(command), dict(kwargs["env"])))
        return run(command, **kwargs)  # the real command, only watched

    monkeypatch.setattr(encryption_keys.subprocess, "run", recording_run)
    third = Fernet.generate_key().decode()

    keys = encryption_keys.key_list(url, configured=[NEW], previous=[OLD])
    assert keys == [NEW, OLD]
    assert encryption_keys.reencrypt(url, keys) == 2
    assert sorted(crypto.decrypt_password(NEW, token) for token in tokens(url).values()) == [
        "password-0",
        "password-1",
    ]
    # The previous first key stays for one more list (running containers still encrypt with it);
    # an older one that nothing needs is dropped.
    assert encryption_keys.key_list(url, configured=[third], previous=[NEW, OLD]) == [third, NEW]

    with pytest.raises(encryption_keys.KeyListError, match="2 stored secret") as unreadable:
        encryption_keys.key_list(url, configured=[third], previous=[])
    with pytest.raises(encryption_keys.KeyListError, match="key 1 of 1 is not a Fernet key") as bad:
        encryption_keys.key_list(url, configured=["not-a-key"], previous=[])
    assert "autosync:encryptionKey" in str(bad.value)
    assert_no_secret(url, str(unreadable.value), str(bad.value))

    assert len(calls) == 5
    for command, env in calls:
        assert command[0] == str(Path(sys.executable).parent / "autosync"), "the installed entry point"
        assert_no_secret(url, " ".join(command))  # process listings show the command line
        assert env["DATABASE_URL"] == url
    assert calls[0][1]["AUTOSYNC_ENCRYPTION_KEY"] == f"{NEW},{OLD}"


def test_a_missing_command_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    with pytest.raises(encryption_keys.KeyListError, match=r"not installed beside .*pulumi install"):
        encryption_keys.autosync_command(str(tmp_path / "bin" / "python"))
