"""Import one IMAP mailbox into Postgres, incrementally and crash-safely.

How a run goes:

1. Read the checkpoint (`mailbox_state`) and check the account belongs to `user_id`.
2. Log in and ask STATUS. Same UIDVALIDITY and same UIDNEXT as stored → nothing can be new: return
   after this single round trip (no EXAMINE, no FETCH).
3. EXAMINE (read-only), find UIDs above the checkpoint, and which of them are above the size cap.
4. Per batch: UID FETCH BODY.PEEK[] (mail stays unread), parse, store, and move
   `mailbox_state.last_uid`, all in ONE transaction. A crash loses at most the batch in flight and
   never duplicates; the next run resumes after the last committed batch. The next batch is
   fetched while the current one is stored. Rows are COPYed straight into `messages` while no
   stored row can collide (nothing above the checkpoint); otherwise through a temporary table and
   INSERT ... ON CONFLICT DO NOTHING on (account, mailbox, UIDVALIDITY, UID), counting duplicates.
5. Store UIDNEXT/HIGHESTMODSEQ only once every batch is in: until then a rerun cannot take the
   "nothing new" shortcut.

UIDVALIDITY change: the server says the old UIDs mean nothing any more, so the rows stored under
the previous UIDVALIDITY for that mailbox are deleted and the checkpoint reset in one transaction,
and the mailbox is imported again from UID 1. The stored set then equals the server's mailbox
(no duplicates, no stale UIDs); message ids (`messages.id`) of those rows change.

Messages above `max_message_bytes` are stored as rows with `skipped_reason = 'too_large'`, their
size and no bytes; their bodies are never fetched.

Deletions on the server are not mirrored: an import only adds.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg import pq

from sync_function.imap import TLS_MODES, FetchedMessage, ImapSession, TlsMode, connect
from sync_function.parse import parse_message

DEFAULT_BATCH_SIZE = 200
DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024
TOO_LARGE = "too_large"

READ_STATE = """
SELECT a.user_id, s.uidvalidity, s.last_uid, s.uidnext
FROM public.email_accounts AS a
LEFT JOIN public.mailbox_state AS s ON s.account_id = a.id AND s.mailbox = %(mailbox)s
WHERE a.id = %(account_id)s
"""

DELETE_OTHER_UIDVALIDITY = """
DELETE FROM public.messages
WHERE account_id = %(account_id)s AND mailbox = %(mailbox)s AND uidvalidity <> %(uidvalidity)s
"""

RESET_STATE = """
INSERT INTO public.mailbox_state (account_id, mailbox, uidvalidity, last_uid, uidnext, highestmodseq)
VALUES (%(account_id)s, %(mailbox)s, %(uidvalidity)s, 0, NULL, NULL)
ON CONFLICT (account_id, mailbox) DO UPDATE
SET uidvalidity = excluded.uidvalidity, last_uid = 0, uidnext = NULL, highestmodseq = NULL, updated_at = now()
"""

MAX_STORED_UID = """
SELECT coalesce(max(uid), 0) FROM public.messages
WHERE account_id = %(account_id)s AND mailbox = %(mailbox)s AND uidvalidity = %(uidvalidity)s
"""

# Straight into messages: used while no stored row can collide with the batch (the usual case).
COPY_MESSAGES = """
COPY public.messages (
    user_id, account_id, mailbox, uidvalidity, uid, sha256, message_id, from_addr, to_addrs, cc_addrs,
    subject, sent_at, body_text, snippet, size, defects, skipped_reason, raw
) FROM STDIN (FORMAT BINARY)
"""

CREATE_BATCH_TABLE = """
CREATE TEMPORARY TABLE IF NOT EXISTS autosync_import_batch (
    uid bigint NOT NULL,
    sha256 bytea,
    message_id text,
    from_addr text,
    to_addrs text,
    cc_addrs text,
    subject text,
    sent_at timestamptz,
    body_text text,
    snippet text,
    size integer NOT NULL,
    defects text[] NOT NULL,
    skipped_reason text,
    raw bytea
) ON COMMIT DELETE ROWS
"""

COPY_BATCH = """
COPY autosync_import_batch (
    uid, sha256, message_id, from_addr, to_addrs, cc_addrs, subject, sent_at, body_text, snippet,
    size, defects, skipped_reason, raw
) FROM STDIN (FORMAT BINARY)
"""
BATCH_TYPES = (
    "bigint", "bytea", "text", "text", "text", "text", "text", "timestamptz", "text", "text",
    "integer", "text[]", "text", "bytea",
)
MESSAGE_TYPES = ("uuid", "uuid", "text", "bigint", *BATCH_TYPES)

INSERT_BATCH = """
WITH inserted AS (
    INSERT INTO public.messages (
        user_id, account_id, mailbox, uidvalidity, uid, sha256, message_id, from_addr, to_addrs,
        cc_addrs, subject, sent_at, body_text, snippet, size, defects, skipped_reason, raw
    )
    SELECT %(user_id)s, %(account_id)s, %(mailbox)s, %(uidvalidity)s, b.uid, b.sha256, b.message_id,
           b.from_addr, b.to_addrs, b.cc_addrs, b.subject, b.sent_at, b.body_text, b.snippet, b.size,
           b.defects, b.skipped_reason, b.raw
    FROM autosync_import_batch AS b
    ORDER BY b.uid
    ON CONFLICT (account_id, mailbox, uidvalidity, uid) DO NOTHING
    RETURNING skipped_reason
)
SELECT count(*) FILTER (WHERE skipped_reason IS NULL), count(*) FILTER (WHERE skipped_reason IS NOT NULL)
FROM inserted
"""

INSERT_ONE = """
INSERT INTO public.messages (
    user_id, account_id, mailbox, uidvalidity, uid, sha256, message_id, from_addr, to_addrs, cc_addrs,
    subject, sent_at, body_text, snippet, size, defects, skipped_reason, raw
) VALUES (
    %(user_id)s, %(account_id)s, %(mailbox)s, %(uidvalidity)s, %(uid)s, %(sha256)s, %(message_id)s,
    %(from_addr)s, %(to_addrs)s, %(cc_addrs)s, %(subject)s, %(sent_at)s, %(body_text)s, %(snippet)s,
    %(size)s, %(defects)s, %(skipped_reason)s, %(raw)s
)
ON CONFLICT (account_id, mailbox, uidvalidity, uid) DO NOTHING
RETURNING skipped_reason
"""
ROW_COLUMNS = (
    "uid", "sha256", "message_id", "from_addr", "to_addrs", "cc_addrs", "subject", "sent_at", "body_text",
    "snippet", "size", "defects", "skipped_reason", "raw",
)

ADVANCE_CHECKPOINT = """
UPDATE public.mailbox_state
SET last_uid = greatest(last_uid, %(last_uid)s), updated_at = now()
WHERE account_id = %(account_id)s AND mailbox = %(mailbox)s AND uidvalidity = %(uidvalidity)s
"""

FINISH_STATE = """
UPDATE public.mailbox_state
SET uidnext = %(uidnext)s, highestmodseq = %(highestmodseq)s,
    last_uid = greatest(last_uid, %(last_uid)s), updated_at = now()
WHERE account_id = %(account_id)s AND mailbox = %(mailbox)s AND uidvalidity = %(uidvalidity)s
"""


class ImportConflict(RuntimeError):
    """The checkpoint changed under this import (another import of the same mailbox ran)."""


@dataclass(frozen=True)
class ImapAccount:
    """Where to import from. `password` is already decrypted by the caller; it is never shown."""

    account_id: UUID
    host: str
    port: int
    tls_mode: TlsMode
    username: str
    password: str = field(repr=False)
    mailbox: str = "INBOX"


@dataclass(frozen=True)
class ImportResult:
    """What one run did.

    fetched: bodies downloaded; imported: new rows with bytes; skipped: new rows without bytes
    (too large); duplicates: rows already stored (a crashed run's batch); bytes: bytes downloaded;
    removed: rows of an old UIDVALIDITY deleted; round_trips: IMAP commands after login.
    """

    account_id: UUID
    mailbox: str
    uidvalidity: int
    last_uid: int
    fetched: int = 0
    imported: int = 0
    skipped: int = 0
    duplicates: int = 0
    bytes: int = 0
    seconds: float = 0.0
    unchanged: bool = False
    uidvalidity_changed: bool = False
    removed: int = 0
    round_trips: int = 0
    imap_commands: tuple[str, ...] = field(default=(), repr=False)


@dataclass
class _Counts:
    fetched: int = 0
    imported: int = 0
    skipped: int = 0
    duplicates: int = 0
    bytes: int = 0
    removed: int = 0


def import_mailbox(
    conn: psycopg.Connection[Any],
    *,
    account: ImapAccount,
    user_id: UUID,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ssl_context: ssl.SSLContext | None = None,
    timeout_s: float = 60.0,
) -> ImportResult:
    """Import what is new in `account.mailbox` (see the module docstring for the guarantees).

    `conn` must be idle (no open transaction): each batch commits on its own. It needs write access
    to `messages` and `mailbox_state` (service_role or the owner). Raises `ValueError` for bad
    arguments or an account that is not the user's (before anything is fetched or written), the
    `sync_function.imap.ImapError` family for IMAP failures.
    """
    started = time.perf_counter()
    _check_arguments(conn, account=account, batch_size=batch_size, max_message_bytes=max_message_bytes)
    params = {"account_id": account.account_id, "mailbox": account.mailbox}
    row = conn.execute(READ_STATE, params).fetchone()
    if conn.info.transaction_status == pq.TransactionStatus.INTRANS:
        conn.commit()
    if row is None:
        raise ValueError(f"email account {account.account_id} does not exist")
    owner, stored_uidvalidity, stored_last_uid, stored_uidnext = row
    if owner != user_id:
        raise ValueError(f"email account {account.account_id} does not belong to user {user_id}")

    with connect(
        host=account.host,
        port=account.port,
        tls_mode=account.tls_mode,
        username=account.username,
        password=account.password,
        timeout_s=timeout_s,
        ssl_context=ssl_context,
    ) as session:
        status = session.status(account.mailbox)
        if (
            stored_uidvalidity == status.uidvalidity
            and stored_uidnext is not None
            and stored_uidnext == status.uidnext
        ):
            return ImportResult(
                account_id=account.account_id,
                mailbox=account.mailbox,
                uidvalidity=status.uidvalidity,
                last_uid=stored_last_uid,
                seconds=time.perf_counter() - started,
                unchanged=True,
                round_trips=session.round_trips,
                imap_commands=tuple(session.commands),
            )

        opened = session.examine(account.mailbox)
        uidvalidity = opened.uidvalidity
        counts = _Counts()
        changed = stored_uidvalidity is not None and stored_uidvalidity != uidvalidity
        last_uid = stored_last_uid or 0
        if stored_uidvalidity != uidvalidity:
            params["uidvalidity"] = uidvalidity
            with conn.transaction():
                counts.removed = conn.execute(DELETE_OTHER_UIDVALIDITY, params).rowcount
                conn.execute(RESET_STATE, params)
            last_uid = 0
        params["uidvalidity"] = uidvalidity

        new_uids = session.search_uids(min_uid=last_uid + 1)
        large = set(session.search_uids(min_uid=last_uid + 1, larger_than=max_message_bytes)) if new_uids else set()
        large_sizes = session.fetch_sizes(sorted(large)) if large else {}
        with conn.transaction():
            conn.execute(CREATE_BATCH_TABLE)
            row = conn.execute(MAX_STORED_UID, params).fetchone()
        # Rows above the checkpoint exist only after a checkpoint was moved back by hand or a
        # concurrent import: then every batch takes the slower path that skips duplicates.
        writer = _BatchWriter(conn, params={**params, "user_id": user_id}, direct=bool(row and row[0] <= last_uid))

        batches = [new_uids[i : i + batch_size] for i in range(0, len(new_uids), batch_size)]
        # closing(): on an error, wait for the fetch in flight before the session logs out.
        with closing(_prefetched(session, batches, large)) as stream:
            for batch, fetched in stream:
                counts.fetched += len(fetched)
                counts.bytes += sum(len(m.raw) for m in fetched)
                _store_batch(
                    writer,
                    fetched=fetched,
                    # A large UID without a size was expunged meanwhile: nothing to record.
                    skipped={uid: large_sizes[uid] for uid in batch if uid in large_sizes},
                    counts=counts,
                    last_uid=batch[-1],
                )
                last_uid = batch[-1]

        final_uidnext = max(opened.uidnext, status.uidnext if status.uidvalidity == uidvalidity else 0)
        with conn.transaction():
            updated = conn.execute(
                FINISH_STATE,
                {
                    **params,
                    "uidnext": final_uidnext,
                    "highestmodseq": opened.highestmodseq if opened.highestmodseq is not None else status.highestmodseq,
                    "last_uid": last_uid,
                },
            ).rowcount
            if updated != 1:
                raise ImportConflict(_conflict_message(account))
        return ImportResult(
            account_id=account.account_id,
            mailbox=account.mailbox,
            uidvalidity=uidvalidity,
            last_uid=last_uid,
            fetched=counts.fetched,
            imported=counts.imported,
            skipped=counts.skipped,
            duplicates=counts.duplicates,
            bytes=counts.bytes,
            seconds=time.perf_counter() - started,
            uidvalidity_changed=changed,
            removed=counts.removed,
            round_trips=session.round_trips,
            imap_commands=tuple(session.commands),
        )


def _check_arguments(
    conn: psycopg.Connection[Any], *, account: ImapAccount, batch_size: int, max_message_bytes: int
) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    if max_message_bytes < 1:
        raise ValueError(f"max_message_bytes must be at least 1 (got {max_message_bytes})")
    if account.tls_mode not in TLS_MODES:
        raise ValueError(f"tls_mode must be one of {', '.join(TLS_MODES)} (got {account.tls_mode!r})")
    if not account.mailbox:
        raise ValueError("mailbox must not be empty")
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise ValueError(
            "import_mailbox needs an idle connection (no open transaction): each batch commits on its own"
        )


def _conflict_message(account: ImapAccount) -> str:
    return (
        f"the checkpoint of account {account.account_id} mailbox {account.mailbox!r} changed during "
        "the import (UIDVALIDITY reset by another run?); nothing of this batch was stored, run again"
    )


def _prefetched(
    session: ImapSession, batches: Sequence[list[int]], large: set[int]
) -> Generator[tuple[list[int], list[FetchedMessage]], None, None]:
    """Yield (batch, its messages), fetching batch n+1 while the caller stores batch n.

    Only the worker thread talks IMAP while this runs, so the session is never used concurrently.
    """
    if not batches:
        return

    def fetch(batch: list[int]) -> list[FetchedMessage]:
        wanted = [uid for uid in batch if uid not in large]
        return session.fetch_messages(wanted) if wanted else []

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-prefetch") as pool:
        pending: Future[list[FetchedMessage]] = pool.submit(fetch, batches[0])
        for index, batch in enumerate(batches):
            fetched = pending.result()
            if index + 1 < len(batches):
                pending = pool.submit(fetch, batches[index + 1])
            try:
                yield batch, fetched
            except BaseException:
                pending.cancel()
                raise


Row = tuple[Any, ...]
# What the database (or the client encoding a value for it) refuses because of one value.
_UNSTORABLE = (psycopg.DataError, psycopg.errors.ProgramLimitExceeded, UnicodeEncodeError)


@dataclass
class _BatchWriter:
    """Writes a batch and its checkpoint in one transaction.

    `direct`: COPY straight into `messages`, the fast path, valid while nothing stored can collide.
    Otherwise (or once a COPY hits a stored row) COPY into a temporary table and insert-select with
    ON CONFLICT DO NOTHING, which counts what was already there.
    """

    conn: psycopg.Connection[Any]
    params: dict[str, Any]
    direct: bool

    def write(self, rows: list[Row], *, last_uid: int) -> tuple[int, int]:
        """Store `rows` (batch-table column order); returns (new stored rows, new skipped rows)."""
        try:
            if self.direct:
                try:
                    return self._write_direct(rows, last_uid=last_uid)
                except psycopg.errors.UniqueViolation:
                    self.direct = False
            return self._write_deduplicated(rows, last_uid=last_uid)
        except _UNSTORABLE:
            # One message the database refuses must not block the mailbox forever.
            return self._write_one_by_one(rows, last_uid=last_uid)

    def _write_one_by_one(self, rows: list[Row], *, last_uid: int) -> tuple[int, int]:
        """Each row in its own savepoint; a refused row is stored again with its bytes only."""
        stored = skipped = 0
        with self.conn.transaction(), self.conn.cursor() as cur:
            for row in rows:
                values = dict(zip(ROW_COLUMNS, row, strict=True))
                try:
                    with self.conn.transaction():
                        inserted = cur.execute(INSERT_ONE, {**self.params, **values}).fetchone()
                except _UNSTORABLE as exc:
                    values = {
                        **dict.fromkeys(ROW_COLUMNS),
                        **{k: values[k] for k in ("uid", "sha256", "size", "skipped_reason", "raw")},
                        "defects": [f"parsed columns not storable ({type(exc).__name__}); raw bytes kept"],
                    }
                    with self.conn.transaction():
                        inserted = cur.execute(INSERT_ONE, {**self.params, **values}).fetchone()
                if inserted is not None:
                    if inserted[0] is None:
                        stored += 1
                    else:
                        skipped += 1
            self._advance(cur, last_uid)
        return stored, skipped

    def _write_direct(self, rows: list[Row], *, last_uid: int) -> tuple[int, int]:
        p = self.params
        prefix = (p["user_id"], p["account_id"], p["mailbox"], p["uidvalidity"])
        with self.conn.transaction(), self.conn.cursor() as cur:
            with cur.copy(COPY_MESSAGES) as copy:
                copy.set_types(MESSAGE_TYPES)
                for row in rows:
                    copy.write_row(prefix + row)
            self._advance(cur, last_uid)
        skipped = sum(1 for row in rows if row[12] is not None)
        return len(rows) - skipped, skipped

    def _write_deduplicated(self, rows: list[Row], *, last_uid: int) -> tuple[int, int]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            with cur.copy(COPY_BATCH) as copy:
                copy.set_types(BATCH_TYPES)
                for row in rows:
                    copy.write_row(row)
            counts = cur.execute(INSERT_BATCH, self.params).fetchone()
            assert counts is not None
            self._advance(cur, last_uid)
        return int(counts[0]), int(counts[1])

    def _advance(self, cur: psycopg.Cursor[Any], last_uid: int) -> None:
        if cur.execute(ADVANCE_CHECKPOINT, {**self.params, "last_uid": last_uid}).rowcount != 1:
            raise ImportConflict(
                "the checkpoint row disappeared or its UIDVALIDITY changed during the import; "
                "nothing of this batch was stored, run again"
            )


def _store_batch(
    writer: _BatchWriter,
    *,
    fetched: list[FetchedMessage],
    skipped: dict[int, int],
    counts: _Counts,
    last_uid: int,
) -> None:
    rows: list[Row] = []
    for message in fetched:
        parsed = parse_message(message.raw)
        rows.append(
            (
                message.uid,
                parsed.sha256,
                parsed.message_id,
                parsed.from_addr,
                parsed.to_addrs,
                parsed.cc_addrs,
                parsed.subject,
                parsed.sent_at,
                parsed.body_text,
                parsed.snippet,
                message.size,
                list(parsed.defects),
                None,
                message.raw,
            )
        )
    for uid, size in skipped.items():
        rows.append((uid, None, None, None, None, None, None, None, None, None, size, [], TOO_LARGE, None))
    imported, skipped_new = writer.write(rows, last_uid=last_uid)
    counts.imported += imported
    counts.skipped += skipped_new
    counts.duplicates += len(rows) - imported - skipped_new
