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

import operator
import ssl
import time
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import pq, sql

from sync_function.destinations import PUBLIC_ONLY, DestinationPolicy
from sync_function.imap import DEFAULT_TIMEOUT_S, TLS_MODES, FetchedMessage, ImapSession, TlsMode, connect
from sync_function.parse import parse_message

# The defaults live here; sync_function.config refers to them.
DEFAULT_BATCH_SIZE = 200
DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024
TOO_LARGE = "too_large"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One row of `public.messages` as an import writes it (`id` and `imported_at` are the database's).

    This class is the only definition of that row: the field order is the column order of every
    statement below, and each field's `pg_type` is its column's type, which binary COPY needs (it
    sends typed values). tests/imap/test_schema.py checks both against the migrated table.
    """

    user_id: UUID = field(metadata={"pg_type": "uuid"})
    account_id: UUID = field(metadata={"pg_type": "uuid"})
    mailbox: str = field(metadata={"pg_type": "text"})
    uidvalidity: int = field(metadata={"pg_type": "bigint"})
    uid: int = field(metadata={"pg_type": "bigint"})
    sha256: bytes | None = field(metadata={"pg_type": "bytea"})
    message_id: str | None = field(metadata={"pg_type": "text"})
    from_addr: str | None = field(metadata={"pg_type": "text"})
    to_addrs: str | None = field(metadata={"pg_type": "text"})
    cc_addrs: str | None = field(metadata={"pg_type": "text"})
    subject: str | None = field(metadata={"pg_type": "text"})
    sent_at: datetime | None = field(metadata={"pg_type": "timestamptz"})
    body_text: str | None = field(metadata={"pg_type": "text"})
    snippet: str | None = field(metadata={"pg_type": "text"})
    size: int = field(metadata={"pg_type": "integer"})
    defects: list[str] = field(metadata={"pg_type": "text[]"})
    skipped_reason: str | None = field(metadata={"pg_type": "text"})
    raw: bytes | None = field(metadata={"pg_type": "bytea"})


MESSAGE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(StoredMessage))
MESSAGE_TYPES: tuple[str, ...] = tuple(f.metadata["pg_type"] for f in fields(StoredMessage))
# StoredMessage -> tuple of its values in column order (what COPY writes), without copying values.
_as_row = operator.attrgetter(*MESSAGE_COLUMNS)

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

# The statements that write StoredMessage rows, built once from it. Print one with
# `importer.INSERT_ONE.as_string()` to read it as plain SQL.
_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in MESSAGE_COLUMNS)

# Straight into messages: used while no stored row can collide with the batch (the usual case).
COPY_MESSAGES = sql.SQL("COPY public.messages ({columns}) FROM STDIN (FORMAT BINARY)").format(
    columns=_COLUMNS
)

# Otherwise a batch goes through a temporary table of the same row shape, then INSERT ... SELECT.
CREATE_BATCH_TABLE = sql.SQL(
    "CREATE TEMPORARY TABLE IF NOT EXISTS autosync_import_batch ({columns}) ON COMMIT DELETE ROWS"
).format(
    columns=sql.SQL(", ").join(
        sql.SQL("{name} {type}").format(name=sql.Identifier(name), type=sql.SQL(pg_type))
        for name, pg_type in zip(MESSAGE_COLUMNS, MESSAGE_TYPES, strict=True)
    )
)

COPY_BATCH = sql.SQL("COPY autosync_import_batch ({columns}) FROM STDIN (FORMAT BINARY)").format(
    columns=_COLUMNS
)

INSERT_BATCH = sql.SQL("""
WITH inserted AS (
    INSERT INTO public.messages ({columns})
    SELECT {columns} FROM autosync_import_batch
    ORDER BY uid
    ON CONFLICT (account_id, mailbox, uidvalidity, uid) DO NOTHING
    RETURNING skipped_reason
)
SELECT count(*) FILTER (WHERE skipped_reason IS NULL), count(*) FILTER (WHERE skipped_reason IS NOT NULL)
FROM inserted
""").format(columns=_COLUMNS)

INSERT_ONE = sql.SQL("""
INSERT INTO public.messages ({columns})
VALUES ({values})
ON CONFLICT (account_id, mailbox, uidvalidity, uid) DO NOTHING
RETURNING skipped_reason
""").format(columns=_COLUMNS, values=sql.SQL(", ").join(sql.Placeholder(name) for name in MESSAGE_COLUMNS))

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
    timeout_s: float = DEFAULT_TIMEOUT_S,
    allowed: DestinationPolicy = PUBLIC_ONLY,
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
        allowed=allowed,
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
        large = (
            set(session.search_uids(min_uid=last_uid + 1, larger_than=max_message_bytes))
            if new_uids
            else set()
        )
        large_sizes = session.fetch_sizes(sorted(large)) if large else {}
        with conn.transaction():
            conn.execute(CREATE_BATCH_TABLE)
            row = conn.execute(MAX_STORED_UID, params).fetchone()
        # Rows above the checkpoint exist only after a checkpoint was moved back by hand or a
        # concurrent import: then every batch takes the slower path that skips duplicates.
        writer = _BatchWriter(
            conn, params={**params, "user_id": user_id}, direct=bool(row and row[0] <= last_uid)
        )

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
                    "highestmodseq": opened.highestmodseq
                    if opened.highestmodseq is not None
                    else status.highestmodseq,
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


# What the database (or the client encoding a value for it) refuses because of one value.
_UNSTORABLE = (psycopg.DataError, psycopg.errors.ProgramLimitExceeded, UnicodeEncodeError)
# What a refused row keeps when it is stored again: where it is, its bytes, its size and why.
_ESSENTIAL = frozenset(
    {"user_id", "account_id", "mailbox", "uidvalidity", "uid", "sha256", "size", "skipped_reason", "raw"}
)


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

    def write(self, messages: list[StoredMessage], *, last_uid: int) -> tuple[int, int]:
        """Store `messages`; returns (new stored rows, new skipped rows)."""
        try:
            if self.direct:
                try:
                    return self._write_direct(messages, last_uid=last_uid)
                except psycopg.errors.UniqueViolation:
                    self.direct = False
            return self._write_deduplicated(messages, last_uid=last_uid)
        except _UNSTORABLE:
            # One message the database refuses must not block the mailbox forever.
            return self._write_one_by_one(messages, last_uid=last_uid)

    def _write_one_by_one(self, messages: list[StoredMessage], *, last_uid: int) -> tuple[int, int]:
        """Each row in its own savepoint; a refused row is stored again with its bytes only."""
        stored = skipped = 0
        with self.conn.transaction(), self.conn.cursor() as cur:
            for message in messages:
                try:
                    with self.conn.transaction():
                        inserted = cur.execute(INSERT_ONE, _params(message)).fetchone()
                except _UNSTORABLE as exc:
                    with self.conn.transaction():
                        inserted = cur.execute(INSERT_ONE, _params(_bytes_only(message, exc))).fetchone()
                if inserted is not None:
                    if inserted[0] is None:
                        stored += 1
                    else:
                        skipped += 1
            self._advance(cur, last_uid)
        return stored, skipped

    def _write_direct(self, messages: list[StoredMessage], *, last_uid: int) -> tuple[int, int]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            with cur.copy(COPY_MESSAGES) as copy:
                copy.set_types(MESSAGE_TYPES)
                for message in messages:
                    copy.write_row(_as_row(message))
            self._advance(cur, last_uid)
        skipped = sum(1 for message in messages if message.skipped_reason is not None)
        return len(messages) - skipped, skipped

    def _write_deduplicated(self, messages: list[StoredMessage], *, last_uid: int) -> tuple[int, int]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            with cur.copy(COPY_BATCH) as copy:
                copy.set_types(MESSAGE_TYPES)
                for message in messages:
                    copy.write_row(_as_row(message))
            counts = cur.execute(INSERT_BATCH).fetchone()
            assert counts is not None
            self._advance(cur, last_uid)
        return int(counts[0]), int(counts[1])

    def _advance(self, cur: psycopg.Cursor[Any], last_uid: int) -> None:
        if cur.execute(ADVANCE_CHECKPOINT, {**self.params, "last_uid": last_uid}).rowcount != 1:
            raise ImportConflict(
                "the checkpoint row disappeared or its UIDVALIDITY changed during the import; "
                "nothing of this batch was stored, run again"
            )


def _params(message: StoredMessage) -> dict[str, Any]:
    return dict(zip(MESSAGE_COLUMNS, _as_row(message), strict=True))


def _bytes_only(message: StoredMessage, exc: Exception) -> StoredMessage:
    parsed: dict[str, Any] = {name: None for name in MESSAGE_COLUMNS if name not in _ESSENTIAL}
    parsed["defects"] = [f"parsed columns not storable ({type(exc).__name__}); raw bytes kept"]
    return replace(message, **parsed)


def _store_batch(
    writer: _BatchWriter,
    *,
    fetched: list[FetchedMessage],
    skipped: dict[int, int],
    counts: _Counts,
    last_uid: int,
) -> None:
    p = writer.params
    messages: list[StoredMessage] = []
    for fetched_message in fetched:
        parsed = parse_message(fetched_message.raw)
        messages.append(
            StoredMessage(
                user_id=p["user_id"],
                account_id=p["account_id"],
                mailbox=p["mailbox"],
                uidvalidity=p["uidvalidity"],
                uid=fetched_message.uid,
                sha256=parsed.sha256,
                message_id=parsed.message_id,
                from_addr=parsed.from_addr,
                to_addrs=parsed.to_addrs,
                cc_addrs=parsed.cc_addrs,
                subject=parsed.subject,
                sent_at=parsed.sent_at,
                body_text=parsed.body_text,
                snippet=parsed.snippet,
                size=fetched_message.size,
                defects=list(parsed.defects),
                skipped_reason=None,
                raw=fetched_message.raw,
            )
        )
    for uid, size in skipped.items():
        messages.append(
            StoredMessage(
                user_id=p["user_id"],
                account_id=p["account_id"],
                mailbox=p["mailbox"],
                uidvalidity=p["uidvalidity"],
                uid=uid,
                sha256=None,
                message_id=None,
                from_addr=None,
                to_addrs=None,
                cc_addrs=None,
                subject=None,
                sent_at=None,
                body_text=None,
                snippet=None,
                size=size,
                defects=[],
                skipped_reason=TOO_LARGE,
                raw=None,
            )
        )
    imported, skipped_new = writer.write(messages, last_uid=last_uid)
    counts.imported += imported
    counts.skipped += skipped_new
    counts.duplicates += len(messages) - imported - skipped_new
