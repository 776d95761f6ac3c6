"""Several folders per account: discovery with LIST, a checkpoint each, folders that vanish."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import psycopg
import pytest

from harness import mailgen
from harness.dovecot import LOOPBACK_ALLOWED, DovecotServer
from sync_function import importer
from sync_function.imap import ImapMailboxError
from sync_function.importer import AccountImportResult, ImapAccount
from tests.support.mailboxes import Mailbox

pytestmark = pytest.mark.docker

RunAccount = Callable[..., AccountImportResult]
# Each folder gets its own messages (distinct seeds), so that counts per folder can be told apart.
LAYOUT = {"INBOX": (4, 31), "Sent": (3, 32), "Work.Projects": (5, 33), "Junk": (2, 34), "Trash": (2, 35)}


@pytest.fixture
def run_account(service_conn: psycopg.Connection, dovecot: DovecotServer) -> RunAccount:
    def run(box: Mailbox, account: ImapAccount, **kwargs: object) -> AccountImportResult:
        return importer.import_account(
            service_conn,
            account=account,
            user_id=box.user_id,
            ssl_context=dovecot.ssl_context(),
            **{"allowed": LOOPBACK_ALLOWED, **kwargs},  # type: ignore[arg-type]
        )

    return run


def fill(dovecot: DovecotServer, box: Mailbox) -> None:
    for folder, (count, seed) in LAYOUT.items():
        dovecot.deliver(box.user, (g.raw for g in mailgen.generate(count, seed=seed)), mailbox=folder)


def per_folder(db: psycopg.Connection, account_id: uuid.UUID) -> dict[str, int]:
    rows = db.execute(
        "SELECT mailbox, count(*) FROM public.messages WHERE account_id = %s GROUP BY mailbox", (account_id,)
    ).fetchall()
    return dict(rows)


def checkpoints(db: psycopg.Connection, account_id: uuid.UUID) -> dict[str, tuple[int, bool]]:
    rows = db.execute(
        "SELECT mailbox, last_uid, missing_since IS NOT NULL FROM public.mailbox_state WHERE account_id = %s",
        (account_id,),
    ).fetchall()
    return {mailbox: (last_uid, missing) for mailbox, last_uid, missing in rows}


def test_all_folders_leaves_junk_and_trash_out_and_keeps_a_checkpoint_each(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_account: RunAccount
) -> None:
    fill(dovecot, mailbox)
    account = replace(mailbox.account, all_folders=True)

    result = run_account(mailbox, account)

    assert [r.mailbox for r in result.folders] == ["INBOX", "Sent", "Work.Projects"]
    assert result.imported == 4 + 3 + 5 and result.missing == ()
    assert per_folder(db, account.account_id) == {"INBOX": 4, "Sent": 3, "Work.Projects": 5}
    assert checkpoints(db, account.account_id) == {
        "INBOX": (4, False),
        "Sent": (3, False),
        "Work.Projects": (5, False),
    }

    # New mail in one folder: only that folder fetches anything.
    dovecot.deliver(mailbox.user, mailgen.generate(7, seed=33)[5:][0].raw, mailbox="Work.Projects")
    again = run_account(mailbox, account)
    assert [(r.mailbox, r.imported, r.unchanged) for r in again.folders] == [
        ("INBOX", 0, True),
        ("Sent", 0, True),
        ("Work.Projects", 1, False),
    ]


def test_a_no_op_sync_of_all_folders_costs_one_list_more_than_a_status_each(
    dovecot: DovecotServer, mailbox: Mailbox, run_account: RunAccount
) -> None:
    fill(dovecot, mailbox)
    account = replace(mailbox.account, all_folders=True)
    run_account(mailbox, account)

    result = run_account(mailbox, account)

    assert result.unchanged and result.fetched == 0
    assert result.imap_commands == ("LIST", "STATUS", "STATUS", "STATUS")
    assert result.round_trips == 1 + len(result.folders)


def test_special_uses_to_skip_are_the_accounts_choice(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_account: RunAccount
) -> None:
    fill(dovecot, mailbox)
    account = replace(mailbox.account, all_folders=True, skip_special_use=("\\Sent", "\\Trash"))

    run_account(mailbox, account)

    assert per_folder(db, account.account_id) == {"INBOX": 4, "Junk": 2, "Work.Projects": 5}


def test_a_chosen_list_reads_only_those_folders_without_listing(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_account: RunAccount
) -> None:
    fill(dovecot, mailbox)
    account = replace(mailbox.account, folders=("Work.Projects", "INBOX"))

    result = run_account(mailbox, account)

    assert "LIST" not in result.imap_commands
    assert per_folder(db, account.account_id) == {"INBOX": 4, "Work.Projects": 5}
    noop = run_account(mailbox, account)
    assert noop.imap_commands == ("STATUS", "STATUS") and noop.round_trips == 2


def test_a_chosen_folder_renamed_on_the_server_is_recorded_and_skipped(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_account: RunAccount
) -> None:
    fill(dovecot, mailbox)
    account = replace(mailbox.account, folders=("INBOX", "Sent"))
    run_account(mailbox, account)
    dovecot.rename_folder(mailbox.user, "Sent", "Sent Items")
    dovecot.deliver(mailbox.user, mailgen.generate(6, seed=31)[4:][0].raw)

    result = run_account(mailbox, account)

    assert result.missing == ("Sent",)
    assert [(r.mailbox, r.imported) for r in result.folders] == [("INBOX", 1)]
    assert checkpoints(db, account.account_id) == {"INBOX": (5, False), "Sent": (3, True)}
    # What was imported from the folder stays.
    assert per_folder(db, account.account_id) == {"INBOX": 5, "Sent": 3}

    dovecot.rename_folder(mailbox.user, "Sent Items", "Sent")
    back = run_account(mailbox, account)
    assert back.missing == () and checkpoints(db, account.account_id)["Sent"] == (3, False)


def test_with_all_folders_a_renamed_folder_is_read_under_its_new_name(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_account: RunAccount
) -> None:
    fill(dovecot, mailbox)
    account = replace(mailbox.account, all_folders=True)
    run_account(mailbox, account)
    dovecot.rename_folder(mailbox.user, "Work.Projects", "Archive2024")

    result = run_account(mailbox, account)

    assert result.missing == ()
    assert [r.mailbox for r in result.folders] == ["INBOX", "Archive2024", "Sent"]
    marks = checkpoints(db, account.account_id)
    assert marks["Work.Projects"] == (5, True) and marks["Archive2024"] == (5, False)


def test_a_single_folder_account_still_fails_on_a_missing_folder(
    dovecot: DovecotServer, mailbox: Mailbox, run_account: RunAccount
) -> None:
    account = replace(mailbox.account, mailbox="Nowhere")
    with pytest.raises(ImapMailboxError, match="Nowhere"):
        run_account(mailbox, account)


def locations(db: psycopg.Connection, account_id: uuid.UUID) -> dict[bytes, list[tuple[str, int]]]:
    rows = db.execute(
        """SELECT m.sha256, l.mailbox, l.uid FROM public.message_locations AS l
           JOIN public.messages AS m ON m.id = l.message_id
           WHERE l.account_id = %s ORDER BY l.mailbox, l.uid""",
        (account_id,),
    ).fetchall()
    out: dict[bytes, list[tuple[str, int]]] = {}
    for sha256, mailbox, uid in rows:
        out.setdefault(bytes(sha256), []).append((mailbox, uid))
    return out


def test_a_message_in_several_folders_is_stored_once_and_records_each_folder(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_account: RunAccount
) -> None:
    shared = mailgen.generate(5, seed=51)
    only_inbox = mailgen.generate(7, seed=51)[5:]
    dovecot.deliver(mailbox.user, (g.raw for g in [*shared, *only_inbox]))
    # As Gmail shows a labelled message: the same bytes in a second folder.
    dovecot.deliver(mailbox.user, (g.raw for g in shared[:3]), mailbox="Work.Projects")
    account = replace(mailbox.account, all_folders=True)

    result = run_account(mailbox, account)

    assert [(r.mailbox, r.imported, r.linked) for r in result.folders] == [
        ("INBOX", 7, 0),
        ("Work.Projects", 0, 3),
    ]
    count = db.execute("SELECT count(*) FROM public.messages WHERE account_id = %s", (account.account_id,))
    assert count.fetchone() == (7,), "raw bytes stored once per account"
    where = locations(db, account.account_id)
    for message in shared[:3]:
        assert [folder for folder, _ in where[message.sha256]] == ["INBOX", "Work.Projects"]
    for message in [*shared[3:], *only_inbox]:
        assert [folder for folder, _ in where[message.sha256]] == ["INBOX"]

    # Stored again after a lost checkpoint: the links count as duplicates, nothing new is made.
    db.execute(
        "UPDATE public.mailbox_state SET last_uid = 0, uidnext = NULL WHERE account_id = %s AND mailbox = %s",
        (account.account_id, "Work.Projects"),
    )
    again = run_account(mailbox, account)
    projects = next(r for r in again.folders if r.mailbox == "Work.Projects")
    assert (projects.imported, projects.linked, projects.duplicates) == (0, 0, 3)
    assert locations(db, account.account_id) == where


def test_a_uidvalidity_change_of_a_linked_folder_links_again_without_copies(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_account: RunAccount
) -> None:
    shared = mailgen.generate(4, seed=52)
    dovecot.deliver(mailbox.user, (g.raw for g in shared))
    dovecot.deliver(mailbox.user, (g.raw for g in shared), mailbox="Work.Projects")
    account = replace(mailbox.account, folders=("INBOX", "Work.Projects"))
    run_account(mailbox, account)
    dovecot.expunge(mailbox.user, [1], mailbox="Work.Projects")
    new_validity = dovecot.reset_uidvalidity(mailbox.user, "Work.Projects")

    result = run_account(mailbox, account)

    projects = next(r for r in result.folders if r.mailbox == "Work.Projects")
    assert projects.uidvalidity_changed and (projects.linked, projects.imported) == (3, 0)
    links = db.execute(
        "SELECT uidvalidity, count(*) FROM public.message_folders WHERE account_id = %s GROUP BY 1",
        (account.account_id,),
    ).fetchall()
    assert links == [(new_validity, 3)]
    count = db.execute("SELECT count(*) FROM public.messages WHERE account_id = %s", (account.account_id,))
    assert count.fetchone() == (4,)
