"""Import one IMAP mailbox into Postgres, incrementally and crash-safely.

How a run goes:

1. Read the checkpoint (`mailbox_state`) and check the account belongs to `user_id`.
2. Log in and ask STATUS. Same UIDVALIDITY and same UIDNEXT as stored → nothing can be new: return
   after this single round trip (no EXAMINE, no FETCH).
3. EXAMINE (read-only), find UIDs above the checkpoint, and which of them are above the size cap.
4. Per batch: UID FETCH BODY.PEEK[] (mail stays unread), parse, store, and move
   `mailbox_state.last_uid`, all in ONE transaction. A crash loses at most the batch in flight and
   never duplicates; the next run resumes after the last committed batch. Fetching, parsing and
   storing overlap (batch n+2 is fetched and n+1 parsed while n is stored), batches still commit
   one at a time and in order. Rows are COPYed straight into `messages` while no
   stored row can collide (nothing above the checkpoint); otherwise through a temporary table and
   INSERT ... ON CONFLICT DO NOTHING on (account, mailbox, UIDVALIDITY, UID), counting duplicates.
5. Store UIDNEXT/HIGHESTMODSEQ only once every batch is in: until then a rerun cannot take the
   "nothing new" shortcut.

UIDVALIDITY change: the server says the old UIDs mean nothing any more. The checkpoint is reset
and the mailbox read again from UID 1, but stored rows are kept: each fetched message whose SHA-256
matches a row stored under another UIDVALIDITY of that mailbox moves that row to its new
(UIDVALIDITY, UID) instead of inserting a copy (same bytes, same `messages.id`). Only messages no
stored row matches are inserted. Rows nothing matches (deleted on the server meanwhile) keep their
old UIDVALIDITY: the store never loses mail because the server renumbered. Equal bytes stored twice
pair up one to one, in UID order. Too-large placeholders (no bytes, no hash, nothing to match) of
the old UIDVALIDITY are dropped and recorded again under the new one. The re-match survives a
crash: whatever a run did not move yet is still under the old UIDVALIDITY for the next run.

Several folders (`import_account`): one session, each folder imported as above with its own
checkpoint. A message whose bytes are already stored from another folder of the same account
(Gmail labels) is not stored again: a `message_folders` row links this folder's (UIDVALIDITY, UID)
to the stored message, in the same transaction as the batch. Accounts of one folder never pay for
that check.

Messages above `max_message_bytes` are stored as rows with `skipped_reason = 'too_large'`, their
size and no bytes; their bodies are never fetched.

Deletions on the server are not mirrored: an import only adds.
"""

from __future__ import annotations

import operator
import ssl
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import pq, sql

from sync_function import oauth
from sync_function.destinations import PUBLIC_ONLY, DestinationPolicy
from sync_function.folders import DEFAULT_SKIP_SPECIAL_USE, selectable
from sync_function.imap import (
    DEFAULT_TIMEOUT_S,
    TLS_MODES,
    FetchedMessage,
    ImapMailboxError,
    ImapSession,
    ImapTokenRejected,
    TlsMode,
    connect,
)
from sync_function.oauth import OAuthLogin
from sync_function.parse import parse_message

# The defaults live here; sync_function.config refers to them.
DEFAULT_BATCH_SIZE = 500
# A batch also ends before it would hold more than this many bytes of messages: up to three batches
# are in memory at once (fetched, parsed, written), whatever the mailbox's message sizes.
BATCH_BYTES = 16 * 1024 * 1024
# Messages above this size have theirs asked for (one RFC822.SIZE fetch with the too-large ones);
# a smaller one counts as this many bytes of its batch's budget.
SMALL_MESSAGE_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024
TOO_LARGE = "too_large"

# Called with (messages handled, messages to handle) once the new UIDs are known and after each
# committed batch; the connection is idle when it is called.
ProgressCallback = Callable[[int, int], None]


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

# Placeholders carry no bytes and no hash: nothing could re-match them, and the new run records them again.
DELETE_OLD_PLACEHOLDERS = """
DELETE FROM public.messages
WHERE account_id = %(account_id)s AND mailbox = %(mailbox)s
  AND (uidvalidity < %(uidvalidity)s OR uidvalidity > %(uidvalidity)s)
  AND skipped_reason IS NOT NULL
"""

# Rows stored under another UIDVALIDITY of this mailbox, indexed by hash for the whole run. Two
# range conditions (not <>) so that the unique index on (account, mailbox, uidvalidity, uid)
# finds them without reading the mailbox's current rows.
CREATE_REMATCH_TABLE = """
CREATE TEMPORARY TABLE IF NOT EXISTS autosync_rematch (id bigint, uid bigint, sha256 bytea)
ON COMMIT PRESERVE ROWS
"""
CREATE_REMATCH_INDEX = "CREATE INDEX IF NOT EXISTS autosync_rematch_sha256 ON autosync_rematch (sha256)"
CLEAR_REMATCH = "TRUNCATE autosync_rematch"
FILL_REMATCH = """
INSERT INTO autosync_rematch (id, uid, sha256)
SELECT id, uid, sha256 FROM public.messages
WHERE account_id = %(account_id)s AND mailbox = %(mailbox)s
  AND (uidvalidity < %(uidvalidity)s OR uidvalidity > %(uidvalidity)s)
  AND sha256 IS NOT NULL
"""

# Links of a folder are identities under its UIDVALIDITY: when it changes, they are dropped (the
# message itself stays) and made again for the messages still there.
DELETE_OLD_LINKS = """
DELETE FROM public.message_folders
WHERE account_id = %(account_id)s AND mailbox = %(mailbox)s
  AND (uidvalidity < %(uidvalidity)s OR uidvalidity > %(uidvalidity)s)
"""

# Accounts with several folders, within a batch's transaction (after any re-match): a message whose
# bytes are already stored from another folder of the account is linked to that row instead of
# stored again. Returns (new links, batch rows taken out).
LINK_BATCH = """
WITH elsewhere AS (
    SELECT DISTINCT ON (b.uid) b.uid, m.id
    FROM autosync_import_batch AS b
    JOIN public.messages AS m
      ON m.account_id = %(account_id)s AND m.sha256 = b.sha256 AND m.mailbox <> %(mailbox)s
    WHERE b.sha256 IS NOT NULL
    ORDER BY b.uid, m.id
),
linked AS (
    INSERT INTO public.message_folders (account_id, mailbox, uidvalidity, uid, message_id, user_id)
    SELECT %(account_id)s, %(mailbox)s, %(uidvalidity)s, e.uid, e.id, %(user_id)s FROM elsewhere AS e
    ON CONFLICT DO NOTHING
    RETURNING 1
),
dropped AS (
    DELETE FROM autosync_import_batch AS b USING elsewhere AS e WHERE b.uid = e.uid RETURNING 1
)
SELECT (SELECT count(*) FROM linked), (SELECT count(*) FROM dropped)
"""

# The same for one message on the row-by-row path: the stored message to link to, if any.
FIND_ELSEWHERE = """
SELECT id FROM public.messages
WHERE account_id = %(account_id)s AND sha256 = %(sha256)s AND mailbox <> %(mailbox)s
ORDER BY id
LIMIT 1
"""
LINK_ONE = """
INSERT INTO public.message_folders (account_id, mailbox, uidvalidity, uid, message_id, user_id)
VALUES (%(account_id)s, %(mailbox)s, %(uidvalidity)s, %(uid)s, %(message_id)s, %(user_id)s)
ON CONFLICT DO NOTHING
"""

# Within a batch's transaction, after the batch is in autosync_import_batch: move every stored row
# whose bytes came back under a new UID to that UID, and drop those messages from the batch.
# The n-th copy of equal bytes in the batch takes the n-th stored copy (both in UID order); a UID
# already stored under the current UIDVALIDITY (a rerun) never takes a second row.
REMATCH_BATCH = """
WITH wanted AS (
    SELECT b.uid, b.sha256, row_number() OVER (PARTITION BY b.sha256 ORDER BY b.uid) AS n
    FROM autosync_import_batch AS b
    WHERE b.sha256 IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM public.messages AS m
          WHERE m.account_id = %(account_id)s AND m.mailbox = %(mailbox)s
            AND m.uidvalidity = %(uidvalidity)s AND m.uid = b.uid
      )
),
previous AS (
    SELECT r.id, r.sha256, row_number() OVER (PARTITION BY r.sha256 ORDER BY r.uid) AS n
    FROM autosync_rematch AS r
    WHERE r.sha256 IN (SELECT sha256 FROM wanted)
),
moved AS (
    UPDATE public.messages AS m
    SET uidvalidity = %(uidvalidity)s, uid = w.uid
    FROM wanted AS w JOIN previous AS p USING (sha256, n)
    WHERE m.id = p.id
    RETURNING m.id, m.uid
),
forgotten AS (
    DELETE FROM autosync_rematch AS r USING moved WHERE r.id = moved.id
)
DELETE FROM autosync_import_batch AS b USING moved WHERE b.uid = moved.uid
"""

# The same for one message, on the row-by-row path; returns a row when a stored row was moved.
REMATCH_ONE = """
WITH target AS (
    SELECT r.id FROM autosync_rematch AS r
    WHERE r.sha256 = %(sha256)s
      AND NOT EXISTS (
          SELECT 1 FROM public.messages AS m
          WHERE m.account_id = %(account_id)s AND m.mailbox = %(mailbox)s
            AND m.uidvalidity = %(uidvalidity)s AND m.uid = %(uid)s
      )
    ORDER BY r.uid
    LIMIT 1
),
moved AS (
    UPDATE public.messages AS m SET uidvalidity = %(uidvalidity)s, uid = %(uid)s
    FROM target WHERE m.id = target.id
    RETURNING m.id
)
DELETE FROM autosync_rematch AS r USING moved WHERE r.id = moved.id RETURNING r.id
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

# Folders of a several-folder account that were gone in this run get `missing_since` (kept from
# the first run that missed them); folders read again lose it. With a chosen list, only the
# listed folders are concerned; with all folders, every checkpoint of the account.
MARK_MISSING = """
UPDATE public.mailbox_state
SET missing_since = CASE WHEN mailbox = ANY(%(present)s::text[]) THEN NULL ELSE now() END
WHERE account_id = %(account_id)s
  AND (%(all_folders)s OR mailbox = ANY(%(names)s::text[]))
  AND (mailbox = ANY(%(present)s::text[])) = (missing_since IS NOT NULL)
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
    # None for OAuth2 accounts, which sign in with `oauth`.
    password: str | None = field(repr=False)
    mailbox: str = "INBOX"
    # PEM of the private certificate authority the server's certificate is signed by, if any.
    ca_pem: str | None = field(default=None, repr=False)
    # Several folders: a chosen list (None: just `mailbox`), or all selectable ones (LIST).
    folders: tuple[str, ...] | None = None
    all_folders: bool = False
    skip_special_use: tuple[str, ...] = DEFAULT_SKIP_SPECIAL_USE
    oauth: OAuthLogin | None = None

    @property
    def several_folders(self) -> bool:
        return self.all_folders or self.folders is not None


@dataclass(frozen=True)
class ImportResult:
    """What one run did.

    fetched: bodies downloaded; imported: new rows with bytes; skipped: new rows without bytes
    (too large); duplicates: rows already stored (a crashed run's batch); bytes: bytes downloaded;
    rematched: rows stored under an old UIDVALIDITY moved to their new UID (not copied);
    linked: messages already stored from another folder of the account, linked to this folder
    (message_folders) instead of stored again;
    removed: too-large placeholders of an old UIDVALIDITY dropped (recorded again under the new
    one); round_trips: IMAP commands after login.
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
    rematched: int = 0
    linked: int = 0
    removed: int = 0
    round_trips: int = 0
    imap_commands: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class AccountImportResult:
    """What one run did for an account: one ImportResult per folder read, and the folders found gone."""

    account_id: UUID
    folders: tuple[ImportResult, ...]
    missing: tuple[str, ...] = ()
    round_trips: int = 0
    imap_commands: tuple[str, ...] = field(default=(), repr=False)

    @property
    def fetched(self) -> int:
        return sum(r.fetched for r in self.folders)

    @property
    def imported(self) -> int:
        return sum(r.imported for r in self.folders)

    @property
    def skipped(self) -> int:
        return sum(r.skipped for r in self.folders)

    @property
    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.folders)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.folders)

    @property
    def unchanged(self) -> bool:
        return all(r.unchanged for r in self.folders)


@dataclass
class _Counts:
    fetched: int = 0
    imported: int = 0
    skipped: int = 0
    duplicates: int = 0
    bytes: int = 0
    rematched: int = 0
    linked: int = 0
    removed: int = 0

    def add_written(self, imported: int, skipped: int, rematched: int, linked: int, duplicates: int) -> None:
        self.imported += imported
        self.skipped += skipped
        self.rematched += rematched
        self.linked += linked
        self.duplicates += duplicates


def import_mailbox(
    conn: psycopg.Connection[Any],
    *,
    account: ImapAccount,
    user_id: UUID,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ssl_context: ssl.SSLContext | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
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
    state = _read_state(conn, account=account, mailbox=account.mailbox, user_id=user_id)
    with login(account, ssl_context=ssl_context, timeout_s=timeout_s, allowed=allowed) as session:
        return _import_folder(
            conn,
            session,
            account=account,
            mailbox=account.mailbox,
            user_id=user_id,
            state=state,
            batch_size=batch_size,
            max_message_bytes=max_message_bytes,
            started=started,
            on_progress=on_progress,
        )


def import_account(
    conn: psycopg.Connection[Any],
    *,
    account: ImapAccount,
    user_id: UUID,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ssl_context: ssl.SSLContext | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
    allowed: DestinationPolicy = PUBLIC_ONLY,
) -> AccountImportResult:
    """Import every folder of `account` over one IMAP session, each folder with its own checkpoint.

    An account of one folder behaves as `import_mailbox` (a missing folder fails the run). With
    several folders, a folder that is gone (renamed or deleted on the server) is recorded in
    `mailbox_state.missing_since` and in the result, and the other folders are imported.
    """
    if not account.several_folders:
        single = import_mailbox(
            conn,
            account=account,
            user_id=user_id,
            batch_size=batch_size,
            max_message_bytes=max_message_bytes,
            ssl_context=ssl_context,
            timeout_s=timeout_s,
            on_progress=on_progress,
            allowed=allowed,
        )
        return AccountImportResult(
            account_id=account.account_id,
            folders=(single,),
            round_trips=single.round_trips,
            imap_commands=single.imap_commands,
        )
    _check_arguments(conn, account=account, batch_size=batch_size, max_message_bytes=max_message_bytes)
    # Ownership first, before anything is fetched.
    _read_state(conn, account=account, mailbox=account.mailbox, user_id=user_id)
    results: list[ImportResult] = []
    missing: list[str] = []
    with login(account, ssl_context=ssl_context, timeout_s=timeout_s, allowed=allowed) as session:
        if account.all_folders:
            names = selectable(session.list_folders(), skip_special_use=account.skip_special_use)
        else:
            names = list(dict.fromkeys(account.folders or ()))
        # Progress over the whole account: the folders done so far, then the one in hand.
        folders_done = 0
        folder_total = 0

        def folder_progress(done: int, total: int) -> None:
            nonlocal folder_total
            folder_total = total
            if on_progress is not None:
                on_progress(folders_done + done, folders_done + total)

        for name in names:
            state = _read_state(conn, account=account, mailbox=name, user_id=user_id)
            folders_done += folder_total
            folder_total = 0
            try:
                results.append(
                    _import_folder(
                        conn,
                        session,
                        account=account,
                        mailbox=name,
                        user_id=user_id,
                        state=state,
                        batch_size=batch_size,
                        max_message_bytes=max_message_bytes,
                        started=time.perf_counter(),
                        on_progress=folder_progress,
                    )
                )
            except ImapMailboxError:
                missing.append(name)
        present = [result.mailbox for result in results]
        with conn.transaction():
            conn.execute(
                MARK_MISSING,
                {
                    "account_id": account.account_id,
                    "present": present,
                    "names": names,
                    "all_folders": account.all_folders,
                },
            )
        return AccountImportResult(
            account_id=account.account_id,
            folders=tuple(results),
            missing=tuple(missing),
            round_trips=session.round_trips,
            imap_commands=tuple(session.commands),
        )


def login(
    account: ImapAccount,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout_s: float,
    allowed: DestinationPolicy = PUBLIC_ONLY,
) -> ImapSession:
    """Log in with the password, or with a cached access token refreshed once if the server refuses it."""
    common: dict[str, Any] = {
        "host": account.host,
        "port": account.port,
        "tls_mode": account.tls_mode,
        "username": account.username,
        "timeout_s": timeout_s,
        "ssl_context": ssl_context,
        "ca_pem": account.ca_pem,
        "allowed": allowed,
    }
    if account.oauth is None:
        return connect(password=account.password, **common)
    login = account.oauth
    for attempt in (1, 2):
        tokens = oauth.current_token(account.account_id, login)
        try:
            return connect(access_token=tokens.access_token, sasl_mechanism=login.mechanism, **common)
        except ImapTokenRejected:
            # Expired early or revoked: one fresh token from the provider, then give up.
            oauth.forget_token(account.account_id, login)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class _State:
    uidvalidity: int | None
    last_uid: int | None
    uidnext: int | None


def _read_state(
    conn: psycopg.Connection[Any], *, account: ImapAccount, mailbox: str, user_id: UUID
) -> _State:
    row = conn.execute(READ_STATE, {"account_id": account.account_id, "mailbox": mailbox}).fetchone()
    if conn.info.transaction_status == pq.TransactionStatus.INTRANS:
        conn.commit()
    if row is None:
        raise ValueError(f"email account {account.account_id} does not exist")
    owner, uidvalidity, last_uid, uidnext = row
    if owner != user_id:
        raise ValueError(f"email account {account.account_id} does not belong to user {user_id}")
    return _State(uidvalidity=uidvalidity, last_uid=last_uid, uidnext=uidnext)


def _import_folder(
    conn: psycopg.Connection[Any],
    session: ImapSession,
    *,
    account: ImapAccount,
    mailbox: str,
    user_id: UUID,
    state: _State,
    batch_size: int,
    max_message_bytes: int,
    started: float,
    on_progress: ProgressCallback | None = None,
) -> ImportResult:
    params: dict[str, Any] = {"account_id": account.account_id, "mailbox": mailbox}
    stored_uidvalidity, stored_last_uid, stored_uidnext = state.uidvalidity, state.last_uid, state.uidnext
    trips_before, commands_before = session.round_trips, len(session.commands)
    status = session.status(mailbox)
    if (
        stored_uidvalidity == status.uidvalidity
        and stored_uidnext is not None
        and stored_uidnext == status.uidnext
    ):
        return ImportResult(
            account_id=account.account_id,
            mailbox=mailbox,
            uidvalidity=status.uidvalidity,
            last_uid=stored_last_uid or 0,
            seconds=time.perf_counter() - started,
            unchanged=True,
            round_trips=session.round_trips - trips_before,
            imap_commands=tuple(session.commands[commands_before:]),
        )

    opened = session.examine(mailbox)
    uidvalidity = opened.uidvalidity
    counts = _Counts()
    changed = stored_uidvalidity is not None and stored_uidvalidity != uidvalidity
    last_uid = stored_last_uid or 0
    if stored_uidvalidity != uidvalidity:
        params["uidvalidity"] = uidvalidity
        with conn.transaction():
            counts.removed = conn.execute(DELETE_OLD_PLACEHOLDERS, params).rowcount
            conn.execute(DELETE_OLD_LINKS, params)
            conn.execute(RESET_STATE, params)
        last_uid = 0
    params["uidvalidity"] = uidvalidity

    new_uids = session.search_uids(min_uid=last_uid + 1)
    done = 0
    if on_progress is not None:
        on_progress(done, len(new_uids))
    small_bytes = min(SMALL_MESSAGE_BYTES, max_message_bytes)
    sized = set(session.search_uids(min_uid=last_uid + 1, larger_than=small_bytes)) if new_uids else set()
    sizes = session.fetch_sizes(sorted(sized)) if sized else {}
    # Too large to import: recorded with their size, never fetched.
    large_sizes = {uid: size for uid, size in sizes.items() if size > max_message_bytes}
    large = set(large_sizes)
    with conn.transaction():
        conn.execute(CREATE_BATCH_TABLE)
        row = conn.execute(MAX_STORED_UID, params).fetchone()
        rematch = _collect_rematch(conn, params) if new_uids else False
    # Rows above the checkpoint exist only after a checkpoint was moved back by hand or a
    # concurrent import: then every batch takes the slower path that skips duplicates. Rows of
    # an old UIDVALIDITY waiting to be re-matched take it too.
    writer = _BatchWriter(
        conn,
        params={**params, "user_id": user_id},
        direct=bool(row and row[0] <= last_uid) and not rematch and not account.several_folders,
        rematch=rematch,
        cross_folder=account.several_folders,
    )

    batches = plan_batches(
        new_uids,
        {uid: 0 if uid in large else size for uid, size in sizes.items()},
        max_count=batch_size,
        max_bytes=BATCH_BYTES,
        unsized_bytes=small_bytes,
    )
    # Three stages overlap: the prefetch thread fetches batch n+2, this thread parses batch n+1,
    # the writer thread stores batch n (COPY + checkpoint + commit, where psycopg waits on Postgres
    # without the GIL). One write at a time, in batch order, so checkpoints move exactly as before;
    # the connection is only ever used by one thread, and is idle again (the write joined) when
    # `on_progress` runs. Leaving the `with` on an error waits for the write and the fetch in
    # flight (closing() before the session logs out, the pool's shutdown before the caller goes on).
    in_flight: tuple[Future[tuple[int, int, int, int, int]], list[int]] | None = None

    def finish_write() -> None:
        nonlocal last_uid, done
        assert in_flight is not None
        future, written = in_flight
        counts.add_written(*future.result())
        last_uid = written[-1]
        done += len(written)
        if on_progress is not None:
            on_progress(done, len(new_uids))

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-writer") as write_pool,
        closing(_prefetched(session, batches, large)) as stream,
    ):
        for batch, fetched in stream:
            counts.fetched += len(fetched)
            counts.bytes += sum(len(m.raw) for m in fetched)
            # A large UID without a size was expunged meanwhile: nothing to record.
            rows = _batch_rows(
                writer.params,
                fetched=fetched,
                skipped={uid: large_sizes[uid] for uid in batch if uid in large_sizes},
            )
            if in_flight is not None:
                finish_write()
            in_flight = (write_pool.submit(_store_batch, writer, rows, last_uid=batch[-1]), batch)
        if in_flight is not None:
            finish_write()

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
            raise ImportConflict(_conflict_message(account, mailbox))
    return ImportResult(
        account_id=account.account_id,
        mailbox=mailbox,
        uidvalidity=uidvalidity,
        last_uid=last_uid,
        fetched=counts.fetched,
        imported=counts.imported,
        skipped=counts.skipped,
        duplicates=counts.duplicates,
        bytes=counts.bytes,
        seconds=time.perf_counter() - started,
        uidvalidity_changed=changed,
        rematched=counts.rematched,
        linked=counts.linked,
        removed=counts.removed,
        round_trips=session.round_trips - trips_before,
        imap_commands=tuple(session.commands[commands_before:]),
    )


def plan_batches(
    uids: Sequence[int], sizes: Mapping[int, int], *, max_count: int, max_bytes: int, unsized_bytes: int
) -> list[list[int]]:
    """`uids` cut, in order, into batches of at most `max_count` UIDs and `max_bytes` bytes.

    A UID missing from `sizes` counts as `unsized_bytes`. A message larger than `max_bytes` on its
    own is a batch of one. Order matters: each batch's last UID becomes the checkpoint when it is
    committed.
    """
    batches: list[list[int]] = []
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, unsized_bytes)
        if batch and (len(batch) >= max_count or total + size > max_bytes):
            batches.append(batch)
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        batches.append(batch)
    return batches


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


def _collect_rematch(conn: psycopg.Connection[Any], params: dict[str, Any]) -> bool:
    """Gather the rows of other UIDVALIDITYs of the mailbox; True when there are any.

    Usually there are none and this is one cheap index probe. The table lives for the session
    (the pool's connection), refilled at each run, so a crashed run leaves nothing stale behind.
    """
    conn.execute(CREATE_REMATCH_TABLE)
    conn.execute(CREATE_REMATCH_INDEX)
    conn.execute(CLEAR_REMATCH)
    return conn.execute(FILL_REMATCH, params).rowcount > 0


def _conflict_message(account: ImapAccount, mailbox: str) -> str:
    return (
        f"the checkpoint of account {account.account_id} mailbox {mailbox!r} changed during "
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
    rematch: bool = False
    rematched: int = 0
    # Several folders: link messages stored from another folder instead of storing them again.
    cross_folder: bool = False
    linked: int = 0

    def write(self, messages: list[StoredMessage], *, last_uid: int) -> tuple[int, int]:
        """Store `messages`; returns (new stored rows, new skipped rows), re-matched rows not counted."""
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
                moved = (
                    self.rematch
                    and message.sha256 is not None
                    and cur.execute(REMATCH_ONE, _params(message)).fetchone() is not None
                )
                if moved:
                    self.rematched += 1
                    continue
                if self.cross_folder and message.sha256 is not None:
                    found = cur.execute(FIND_ELSEWHERE, _params(message)).fetchone()
                    if found is not None:
                        link = {**_params(message), "message_id": found[0]}
                        self.linked += cur.execute(LINK_ONE, link).rowcount
                        continue
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
            if self.rematch:
                self.rematched += cur.execute(REMATCH_BATCH, self.params).rowcount
            if self.cross_folder:
                links = cur.execute(LINK_BATCH, self.params).fetchone()
                assert links is not None
                # Links made before (a batch stored again) take their rows out too: duplicates.
                self.linked += int(links[0])
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


def _batch_rows(
    p: dict[str, Any], *, fetched: list[FetchedMessage], skipped: dict[int, int]
) -> list[StoredMessage]:
    """The rows of one batch: fetched messages parsed, too-large ones as placeholders."""
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
    return messages


def _store_batch(
    writer: _BatchWriter, messages: list[StoredMessage], *, last_uid: int
) -> tuple[int, int, int, int, int]:
    """Store one batch and its checkpoint; returns its (imported, skipped, rematched, linked, duplicates)."""
    rematched_before, linked_before = writer.rematched, writer.linked
    imported, skipped = writer.write(messages, last_uid=last_uid)
    rematched = writer.rematched - rematched_before
    linked = writer.linked - linked_before
    return imported, skipped, rematched, linked, len(messages) - imported - skipped - rematched - linked
