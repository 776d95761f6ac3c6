"""Accounts with several folders through the API and the worker."""

from __future__ import annotations

import psycopg
import pytest

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.service import Service, WorkerThread
from tests.support.api import enable, trigger, wait_for_run
from tests.support.users import users

pytestmark = pytest.mark.docker


def body(dovecot: DovecotServer, name: str, password: str, **extra: object) -> dict[str, object]:
    return {
        "host": dovecot.host,
        "port": dovecot.port,
        "tls_mode": "plain",
        "username": name,
        "password": password,
        **extra,
    }


def test_an_all_folders_account_imports_every_folder_but_junk_and_trash(
    service: Service, database_url: str, dovecot: DovecotServer, worker: WorkerThread
) -> None:
    with users(database_url) as (user,):
        name, password = dovecot.new_user("folders")
        for folder, seed in (("INBOX", 41), ("Archive", 42), ("Junk", 43), ("Trash", 44)):
            dovecot.deliver(name, (g.raw for g in mailgen.generate(3, seed=seed)), mailbox=folder)
        response = service.client.post(
            "/api/email-accounts",
            json=body(dovecot, name, password, all_folders=True),
            headers=service.as_user(user),
        )
        assert response.status_code == 201, response.text
        account = response.json()["account"]
        assert (account["all_folders"], account["folders"], account["skip_special_use"]) == (
            True,
            None,
            ["\\Junk", "\\Trash"],
        )
        enable(service, user)
        status, _, imported, error = wait_for_run(database_url, trigger(service, user))
        assert (status, imported, error) == ("succeeded", 6, None)
        with psycopg.connect(database_url) as conn:
            folders = conn.execute(
                "SELECT DISTINCT mailbox FROM public.messages WHERE user_id = %s ORDER BY 1", (user,)
            ).fetchall()
        assert folders == [("Archive",), ("INBOX",)]


def test_chosen_folders_must_exist_when_the_account_is_saved(
    service: Service, database_url: str, dovecot: DovecotServer
) -> None:
    with users(database_url) as (user,):
        name, password = dovecot.new_user("folders")
        dovecot.deliver(name, mailgen.generate(1, seed=45)[0].raw, mailbox="Archive")
        response = service.client.post(
            "/api/email-accounts",
            json=body(dovecot, name, password, folders=["Archive", "Nowhere"]),
            headers=service.as_user(user),
        )
        assert response.status_code == 400, response.text
        assert "Nowhere" in response.json()["error"]
        ok = service.client.post(
            "/api/email-accounts",
            json=body(dovecot, name, password, folders=["INBOX", "Archive"]),
            headers=service.as_user(user),
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["account"]["folders"] == ["INBOX", "Archive"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"folders": ["INBOX"], "all_folders": True}, "not both"),
        ({"folders": []}, "folders"),
        ({"folders": ["bad\nname"]}, "control characters"),
        ({"all_folders": True, "skip_special_use": ["\\Spam"]}, "skip_special_use"),
        ({"all_folders": "yes"}, "all_folders"),
    ],
    ids=["both", "empty", "control", "unknown-use", "not-bool"],
)
def test_bad_folder_choices_are_refused_and_nothing_stored(
    extra: dict[str, object], says: str, service: Service, database_url: str, dovecot: DovecotServer
) -> None:
    with users(database_url) as (user,):
        response = service.client.post(
            "/api/email-accounts",
            json=body(dovecot, "nobody", "secret", **extra),
            headers=service.as_user(user),
        )
        assert response.status_code == 422, response.text
        assert says in response.json()["error"]
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM public.email_accounts WHERE user_id = %s", (user,)
            ).fetchone()
        assert row == (0,)
