"""import_mailbox against a real Dovecot and the real schema."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from harness import mailgen
from harness.dovecot import DovecotServer
from sync_function import importer
from sync_function.importer import ImportResult
from sync_function.parse import ParsedMessage
from tests.support.mailboxes import Mailbox

pytestmark = pytest.mark.docker

CAP = 400_000  # above every generated attachment (≤ ~275 KB encoded), below the oversized one
Run = Callable[..., ImportResult]


def stored(db: psycopg.Connection, account_id: uuid.UUID) -> dict[int, dict[str, Any]]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    rows = cur.execute(
        "SELECT * FROM public.messages WHERE account_id = %s ORDER BY uid", (account_id,)
    ).fetchall()
    return {row["uid"]: row for row in rows}


def state(db: psycopg.Connection, account_id: uuid.UUID) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT uidvalidity, last_uid, uidnext FROM public.mailbox_state WHERE account_id = %s", (account_id,)
    ).fetchone()


def test_first_import_stores_every_message_with_its_bytes_and_columns(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_import: Run
) -> None:
    generated = mailgen.generate(224, seed=1, oversized_index=101, oversized_bytes=CAP + 50_000)
    dovecot.deliver(mailbox.user, (g.raw for g in generated))
    on_server = dovecot.messages(mailbox.user)
    assert len(on_server) == 224

    result = run_import(mailbox, batch_size=50, max_message_bytes=CAP)

    assert (result.fetched, result.imported, result.skipped, result.duplicates) == (223, 223, 1, 0)
    assert result.bytes == sum(len(raw) for raw in on_server.values() if len(raw) <= CAP)
    assert not result.unchanged and not result.uidvalidity_changed
    # STATUS, EXAMINE, two UID SEARCHes, 1 size FETCH, one FETCH per batch of 50.
    assert result.round_trips == 5 + math.ceil(223 / 50)
    rows = stored(db, mailbox.account.account_id)
    assert set(rows) == set(on_server)
    by_hash = {g.sha256: g for g in generated}
    for uid, row in rows.items():
        raw = on_server[uid]
        assert row["user_id"] == mailbox.user_id and row["mailbox"] == "INBOX"
        assert row["uidvalidity"] == result.uidvalidity
        assert row["size"] == len(raw)
        if row["skipped_reason"] is not None:
            continue
        assert bytes(row["raw"]) == raw
        assert bytes(row["sha256"]) == hashlib.sha256(raw).digest()
        source = by_hash[bytes(row["sha256"])]
        assert row["subject"] == source.subject
        assert row["message_id"] == source.message_id
        assert (row["sent_at"] is not None) == source.has_date
        assert source.body_marker in row["body_text"]
        assert row["snippet"]
        assert bool(row["defects"]) == (source.kind in mailgen.MALFORMED_KINDS), (source.kind, row["defects"])

    skipped = [row for row in rows.values() if row["skipped_reason"] is not None]
    assert len(skipped) == 1
    big = skipped[0]
    assert big["skipped_reason"] == "too_large" and big["raw"] is None and big["sha256"] is None
    assert big["size"] == len(on_server[big["uid"]]) > CAP
    assert big["uid"] == sorted(on_server)[101]

    status = dovecot.status(mailbox.user)
    assert state(db, mailbox.account.account_id) == (status[b"UIDVALIDITY"], max(on_server), status[b"UIDNEXT"])
    # Imported, yet still unread: BODY.PEEK[] never sets \Seen.
    flags = dovecot.flags(mailbox.user)
    assert len(flags) == 224 and not any(b"\\Seen" in f for f in flags.values())


def test_second_run_imports_exactly_the_new_messages(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_import: Run
) -> None:
    dovecot.deliver(mailbox.user, (g.raw for g in mailgen.generate(30, seed=2)))
    assert run_import(mailbox).imported == 30

    dovecot.deliver(mailbox.user, (g.raw for g in mailgen.generate(35, seed=2)[30:]))
    result = run_import(mailbox)

    assert (result.fetched, result.imported, result.duplicates) == (5, 5, 0)
    rows = stored(db, mailbox.account.account_id)
    assert len(rows) == 35
    assert {bytes(r["sha256"]) for r in rows.values()} == {g.sha256 for g in mailgen.generate(35, seed=2)}


def test_a_run_with_nothing_new_is_one_status_and_no_fetch(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_import: Run
) -> None:
    dovecot.deliver(mailbox.user, (g.raw for g in mailgen.generate(12, seed=3)))
    first = run_import(mailbox)
    assert first.imported == 12
    before = state(db, mailbox.account.account_id)

    result = run_import(mailbox)

    assert result.unchanged
    assert result.imap_commands == ("STATUS",)
    assert result.round_trips == 1
    assert (result.fetched, result.imported, result.bytes) == (0, 0, 0)
    assert state(db, mailbox.account.account_id) == before
    # The server's own account of the two sessions: 12 bodies, then none.
    assert dovecot.bodies_fetched(mailbox.user, sessions=2) == [12, 0]


def test_uidvalidity_change_resyncs_without_duplicates(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_import: Run
) -> None:
    dovecot.deliver(mailbox.user, (g.raw for g in mailgen.generate(20, seed=4)))
    first = run_import(mailbox)
    assert first.imported == 20
    ids_before = {bytes(r["sha256"]): r["id"] for r in stored(db, mailbox.account.account_id).values()}

    new_validity = dovecot.reset_uidvalidity(mailbox.user)
    dovecot.deliver(mailbox.user, (g.raw for g in mailgen.generate(23, seed=4)[20:]))
    result = run_import(mailbox)

    assert result.uidvalidity_changed and result.uidvalidity == new_validity != first.uidvalidity
    assert (result.rematched, result.imported, result.duplicates, result.removed) == (20, 3, 0, 0)
    rows = stored(db, mailbox.account.account_id)
    on_server = dovecot.messages(mailbox.user)
    assert {uid: bytes(r["sha256"]) for uid, r in rows.items()} == {
        uid: hashlib.sha256(raw).digest() for uid, raw in on_server.items()
    }
    assert {r["uidvalidity"] for r in rows.values()} == {new_validity}
    # Re-matched, not re-inserted: the rows keep their ids.
    kept = {bytes(r["sha256"]): r["id"] for r in rows.values() if bytes(r["sha256"]) in ids_before}
    assert kept == ids_before
    assert state(db, mailbox.account.account_id)[:2] == (new_validity, max(on_server))  # type: ignore[index]


def test_a_message_deleted_on_the_server_survives_a_uidvalidity_change(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_import: Run
) -> None:
    generated = mailgen.generate(12, seed=14, oversized_index=5, oversized_bytes=CAP + 50_000)
    dovecot.deliver(mailbox.user, (g.raw for g in generated))
    first = run_import(mailbox, max_message_bytes=CAP)
    assert (first.imported, first.skipped) == (11, 1)
    before = stored(db, mailbox.account.account_id)
    deleted = sorted(before)[1:3]
    deleted_hashes = {bytes(before[uid]["sha256"]) for uid in deleted}
    dovecot.expunge(mailbox.user, deleted)

    new_validity = dovecot.reset_uidvalidity(mailbox.user)
    fresh = mailgen.generate(15, seed=14)[12:]
    dovecot.deliver(mailbox.user, (g.raw for g in fresh))
    result = run_import(mailbox, max_message_bytes=CAP, batch_size=4)

    # 9 stored messages came back under new UIDs, 3 are new, the placeholder is recorded again.
    assert (result.rematched, result.imported, result.skipped, result.duplicates) == (9, 3, 1, 0)
    assert result.removed == 1
    after = db.execute(
        "SELECT uidvalidity, uid, sha256 FROM public.messages WHERE account_id = %s AND skipped_reason IS NULL",
        (mailbox.account.account_id,),
    ).fetchall()
    hashes = [bytes(h) for _, _, h in after]
    assert len(hashes) == len(set(hashes)) == 11 + 3, "nothing duplicated, nothing lost"
    on_server = {uid: hashlib.sha256(raw).digest() for uid, raw in dovecot.messages(mailbox.user).items()}
    current = {uid: bytes(h) for v, uid, h in after if v == new_validity}
    assert current == {uid: h for uid, h in on_server.items() if uid in current}
    assert len(current) == 12
    # The copies deleted on the server stay, under the UIDVALIDITY they were stored with.
    assert {bytes(h): v for v, _, h in after if v != new_validity} == dict.fromkeys(
        deleted_hashes, first.uidvalidity
    )
    placeholders = db.execute(
        "SELECT uidvalidity FROM public.messages WHERE account_id = %s AND skipped_reason IS NOT NULL",
        (mailbox.account.account_id,),
    ).fetchall()
    assert placeholders == [(new_validity,)]

    again = run_import(mailbox, max_message_bytes=CAP)
    assert again.unchanged


def test_equal_bytes_twice_stay_two_rows_after_a_uidvalidity_change(
    db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_import: Run
) -> None:
    raw = mailgen.generate(1, seed=15)[0].raw
    dovecot.deliver(mailbox.user, [raw, raw, raw])
    run_import(mailbox)
    dovecot.expunge(mailbox.user, [min(dovecot.messages(mailbox.user))])
    new_validity = dovecot.reset_uidvalidity(mailbox.user)

    result = run_import(mailbox)

    assert (result.rematched, result.imported, result.duplicates) == (2, 0, 0)
    rows = db.execute(
        "SELECT uidvalidity, count(*) FROM public.messages WHERE account_id = %s GROUP BY 1 ORDER BY 2",
        (mailbox.account.account_id,),
    ).fetchall()
    assert [count for _, count in rows] == [1, 2] and rows[1][0] == new_validity


def test_a_crash_during_a_uidvalidity_rematch_resumes_without_copies(
    db: psycopg.Connection,
    dovecot: DovecotServer,
    mailbox: Mailbox,
    run_import: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dovecot.deliver(mailbox.user, (g.raw for g in mailgen.generate(30, seed=16)))
    run_import(mailbox)
    new_validity = dovecot.reset_uidvalidity(mailbox.user)
    real_store = importer._store_batch
    calls = {"n": 0}

    def crash_on_third_batch(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(importer, "_store_batch", crash_on_third_batch)
    with pytest.raises(RuntimeError, match="worker killed"):
        run_import(mailbox, batch_size=7)
    monkeypatch.setattr(importer, "_store_batch", real_store)
    result = run_import(mailbox, batch_size=7)

    assert not result.uidvalidity_changed, "the first run already moved the checkpoint"
    assert (result.rematched, result.imported, result.duplicates) == (16, 0, 0)
    rows = stored(db, mailbox.account.account_id)
    assert len(rows) == 30 and {r["uidvalidity"] for r in rows.values()} == {new_validity}
    assert set(rows) == set(dovecot.messages(mailbox.user))


def test_a_crash_mid_import_loses_at_most_one_batch_and_resumes(
    db: psycopg.Connection,
    dovecot: DovecotServer,
    mailbox: Mailbox,
    run_import: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generated = mailgen.generate(50, seed=5)
    dovecot.deliver(mailbox.user, (g.raw for g in generated))
    real_store = importer._store_batch
    calls = {"n": 0}

    def crash_on_third_batch(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(importer, "_store_batch", crash_on_third_batch)
    with pytest.raises(RuntimeError, match="worker killed"):
        run_import(mailbox, batch_size=10)
    uids = sorted(dovecot.messages(mailbox.user))
    assert sorted(stored(db, mailbox.account.account_id)) == uids[:20]
    # Checkpoint after batch 2, and no UIDNEXT: the next run cannot mistake this for "no change".
    assert state(db, mailbox.account.account_id)[1:] == (uids[19], None)  # type: ignore[index]

    monkeypatch.setattr(importer, "_store_batch", real_store)
    result = run_import(mailbox, batch_size=10)
    assert (result.fetched, result.imported, result.duplicates) == (30, 30, 0)
    assert sorted(stored(db, mailbox.account.account_id)) == uids


@pytest.mark.parametrize("detected", [True, False], ids=["detected-up-front", "caught-on-copy"])
def test_rows_already_stored_count_as_duplicates_not_copies(
    detected: bool,
    db: psycopg.Connection,
    dovecot: DovecotServer,
    mailbox: Mailbox,
    run_import: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dovecot.deliver(mailbox.user, (g.raw for g in mailgen.generate(15, seed=6)))
    run_import(mailbox)
    if not detected:
        # As if a concurrent import stored rows after this one looked: the direct COPY collides.
        monkeypatch.setattr(importer, "MAX_STORED_UID", "SELECT 0 WHERE %(account_id)s IS NOT NULL")
    # As if a batch committed its rows but the worker lost track of the checkpoint.
    db.execute(
        "UPDATE public.mailbox_state SET last_uid = 0, uidnext = NULL WHERE account_id = %s",
        (mailbox.account.account_id,),
    )

    result = run_import(mailbox)

    assert (result.fetched, result.imported, result.duplicates) == (15, 0, 15)
    assert len(stored(db, mailbox.account.account_id)) == 15


def test_a_message_the_database_refuses_is_kept_with_its_bytes_and_the_rest_imports(
    db: psycopg.Connection,
    dovecot: DovecotServer,
    mailbox: Mailbox,
    run_import: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generated = mailgen.generate(8, seed=8)
    dovecot.deliver(mailbox.user, (g.raw for g in generated))
    poisoned = generated[3].sha256
    real_parse = importer.parse_message

    def parse_with_a_poisoned_subject(raw: bytes) -> ParsedMessage:
        parsed = real_parse(raw)
        # A lone surrogate cannot be encoded for Postgres: the whole COPY fails on it.
        return replace(parsed, subject="bad \ud800") if parsed.sha256 == poisoned else parsed

    monkeypatch.setattr(importer, "parse_message", parse_with_a_poisoned_subject)
    result = run_import(mailbox)

    assert (result.imported, result.duplicates) == (8, 0)
    rows = {bytes(r["sha256"]): r for r in stored(db, mailbox.account.account_id).values()}
    assert len(rows) == 8
    bad = rows[poisoned]
    assert bad["subject"] is None and bytes(bad["raw"]) == generated[3].served
    assert any("not storable" in d for d in bad["defects"])
    assert all(r["subject"] for sha, r in rows.items() if sha != poisoned)
    assert state(db, mailbox.account.account_id)[1] == max(dovecot.messages(mailbox.user))  # type: ignore[index]


def test_a_folder_other_than_inbox(
    db: psycopg.Connection, dovecot: DovecotServer, make_mailbox: Callable[..., Mailbox], run_import: Run
) -> None:
    box = make_mailbox(mailbox="Archive")
    dovecot.deliver(box.user, (g.raw for g in mailgen.generate(4, seed=7)), mailbox="Archive")
    dovecot.deliver(box.user, mailgen.message("plain", 99, seed=7).raw)  # INBOX: not this account's

    result = run_import(box)

    assert result.imported == 4
    assert {r["mailbox"] for r in stored(db, box.account.account_id).values()} == {"Archive"}


def test_progress_runs_between_batches_with_the_connection_idle_and_every_batch_committed(
    db: psycopg.Connection,
    service_conn: psycopg.Connection,
    dovecot: DovecotServer,
    mailbox: Mailbox,
    run_import: Run,
) -> None:
    # Batches are stored by a writer thread while the next one is parsed: progress must still come
    # after each batch's commit, in order, on a connection no transaction holds (it writes there).
    dovecot.deliver(mailbox.user, (g.raw for g in mailgen.generate(45, seed=17)))
    seen: list[tuple[int, int, int]] = []

    def on_progress(done: int, total: int) -> None:
        assert service_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        seen.append((done, total, len(stored(db, mailbox.account.account_id))))

    result = run_import(mailbox, batch_size=10, on_progress=on_progress)

    assert result.imported == 45
    assert seen == [(0, 45, 0), (10, 45, 10), (20, 45, 20), (30, 45, 30), (40, 45, 40), (45, 45, 45)]


def test_batches_keep_uid_order_and_stop_at_the_count_or_the_byte_budget() -> None:
    uids = list(range(1, 12))
    sizes = {3: 900, 4: 900, 7: 5_000, 9: 0}  # 9: too large, recorded without a fetch
    batches = importer.plan_batches(uids, sizes, max_count=4, max_bytes=1_000, unsized_bytes=100)
    assert batches == [[1, 2], [3], [4, 5], [6], [7], [8, 9, 10, 11]]
    assert [uid for batch in batches for uid in batch] == uids
    # Small messages only: the count decides.
    assert importer.plan_batches(uids, {}, max_count=5, max_bytes=10**9, unsized_bytes=100) == [
        [1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10],
        [11],
    ]
    assert importer.plan_batches([], {}, max_count=5, max_bytes=1, unsized_bytes=1) == []
