"""The message_folders revision: its downgrade turns links back into copies, so no folder loses mail."""

from __future__ import annotations

import psycopg
from alembic.script import ScriptDirectory

from infra import migrations
from infra.containers import PostgresConfig
from tests.support.db import new_user


def revision_before_message_folders() -> str:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    found = next(r for r in script.walk_revisions() if (r.doc or "").startswith("message_folders"))
    assert isinstance(found.down_revision, str)
    return found.down_revision


def test_downgrade_keeps_every_folder_of_a_linked_message(fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    migrations.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        user_id = new_user(conn)
        row = conn.execute(
            """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
               VALUES (%s, 'imap.example.com', 993, 'tls', 'u', '\\x00') RETURNING id""",
            (user_id,),
        ).fetchone()
        assert row is not None
        account_id = row[0]
        message = conn.execute(
            """INSERT INTO public.messages (user_id, account_id, mailbox, uidvalidity, uid, sha256, size, raw)
               VALUES (%s, %s, 'INBOX', 1, 1, sha256('hello'), 5, 'hello') RETURNING id""",
            (user_id, account_id),
        ).fetchone()
        assert message is not None
        conn.execute(
            """INSERT INTO public.message_folders (account_id, mailbox, uidvalidity, uid, message_id, user_id)
               VALUES (%s, 'Archive', 9, 7, %s, %s)""",
            (account_id, message[0], user_id),
        )
        where = conn.execute(
            "SELECT mailbox, uid FROM public.message_locations WHERE account_id = %s ORDER BY 1",
            (account_id,),
        ).fetchall()
        assert where == [("Archive", 7), ("INBOX", 1)]

    migrations.downgrade(url, revision_before_message_folders())
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT mailbox, uidvalidity, uid, raw FROM public.messages WHERE account_id = %s ORDER BY 1",
            (account_id,),
        ).fetchall()
    assert [(m, v, u, bytes(r)) for m, v, u, r in rows] == [
        ("Archive", 9, 7, b"hello"),
        ("INBOX", 1, 1, b"hello"),
    ]
    assert migrations.upgrade(url) == migrations.head()
