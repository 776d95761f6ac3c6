"""mailbox_state and messages: imported mail and the per-mailbox import checkpoint

A message is identified by (account, mailbox, UIDVALIDITY, UID); its SHA-256 proves the stored
bytes. `mailbox_state.last_uid` is the checkpoint, written in the same transaction as each batch of
messages. Messages above the size cap are kept as rows without `raw`, with a `skipped_reason`.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CREATE_MAILBOX_STATE = """
CREATE TABLE public.mailbox_state (
    account_id uuid NOT NULL REFERENCES public.email_accounts (id) ON DELETE CASCADE,
    mailbox text NOT NULL,
    uidvalidity bigint NOT NULL CONSTRAINT mailbox_state_uidvalidity_range
        CHECK (uidvalidity BETWEEN 1 AND 4294967295),
    last_uid bigint NOT NULL DEFAULT 0 CONSTRAINT mailbox_state_last_uid_range
        CHECK (last_uid BETWEEN 0 AND 4294967295),
    -- NULL until an import has run to the end: a crash mid-import must not look like "no change".
    uidnext bigint,
    highestmodseq bigint,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, mailbox)
)
"""

ENABLE_RLS_MAILBOX_STATE = "ALTER TABLE public.mailbox_state ENABLE ROW LEVEL SECURITY"

CREATE_POLICY_MAILBOX_STATE = """
CREATE POLICY mailbox_state_select_own ON public.mailbox_state
    FOR SELECT TO authenticated
    USING (EXISTS (
        SELECT 1 FROM public.email_accounts a
        WHERE a.id = mailbox_state.account_id AND a.user_id = auth.uid()
    ))
"""

REVOKE_MAILBOX_STATE = "REVOKE ALL ON public.mailbox_state FROM PUBLIC, anon, authenticated"
GRANT_AUTHENTICATED_MAILBOX_STATE = "GRANT SELECT ON public.mailbox_state TO authenticated"
GRANT_SERVICE_MAILBOX_STATE = "GRANT SELECT, INSERT, UPDATE, DELETE ON public.mailbox_state TO service_role"

CREATE_MESSAGES = """
CREATE TABLE public.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- A copy of the account's owner, so that RLS needs no join; the foreign key keeps it true.
    user_id uuid NOT NULL,
    account_id uuid NOT NULL,
    mailbox text NOT NULL,
    uidvalidity bigint NOT NULL CONSTRAINT messages_uidvalidity_range CHECK (uidvalidity BETWEEN 1 AND 4294967295),
    uid bigint NOT NULL CONSTRAINT messages_uid_range CHECK (uid BETWEEN 1 AND 4294967295),
    sha256 bytea CONSTRAINT messages_sha256_length CHECK (octet_length(sha256) = 32),
    message_id text,
    from_addr text,
    to_addrs text,
    cc_addrs text,
    subject text,
    sent_at timestamptz,
    body_text text,
    snippet text,
    size integer NOT NULL CONSTRAINT messages_size_range CHECK (size >= 0),
    defects text[] NOT NULL DEFAULT '{}',
    skipped_reason text,
    raw bytea,
    imported_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_unique_uid UNIQUE (account_id, mailbox, uidvalidity, uid),
    CONSTRAINT messages_account_fkey FOREIGN KEY (account_id, user_id)
        REFERENCES public.email_accounts (id, user_id) ON DELETE CASCADE,
    -- A message is either stored (raw bytes and their hash) or skipped (a reason, no bytes).
    CONSTRAINT messages_stored_or_skipped CHECK (
        (skipped_reason IS NULL AND raw IS NOT NULL AND sha256 IS NOT NULL)
        OR (skipped_reason IS NOT NULL AND raw IS NULL)
    )
)
"""

# lz4 is several times faster than the default pglz on the import's hot path; servers built
# without it keep the default.
RAW_COMPRESSION = """
DO $compression$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE public.messages ALTER COLUMN raw SET COMPRESSION lz4;
    END IF;
END
$compression$
"""

CREATE_INDEX_USER_SENT = """
CREATE INDEX messages_user_sent_at_idx ON public.messages (user_id, sent_at DESC NULLS LAST, id)
"""
CREATE_INDEX_MESSAGE_ID = """
CREATE INDEX messages_user_message_id_idx ON public.messages (user_id, message_id)
    WHERE message_id IS NOT NULL
"""

ENABLE_RLS_MESSAGES = "ALTER TABLE public.messages ENABLE ROW LEVEL SECURITY"

CREATE_POLICY_MESSAGES = """
CREATE POLICY messages_select_own ON public.messages
    FOR SELECT TO authenticated
    USING (user_id = auth.uid())
"""

REVOKE_MESSAGES = "REVOKE ALL ON public.messages FROM PUBLIC, anon, authenticated"
GRANT_AUTHENTICATED_MESSAGES = "GRANT SELECT ON public.messages TO authenticated"
GRANT_SERVICE_MESSAGES = "GRANT SELECT, INSERT, UPDATE, DELETE ON public.messages TO service_role"


def upgrade() -> None:
    op.execute(CREATE_MAILBOX_STATE)
    op.execute(ENABLE_RLS_MAILBOX_STATE)
    op.execute(CREATE_POLICY_MAILBOX_STATE)
    op.execute(REVOKE_MAILBOX_STATE)
    op.execute(GRANT_AUTHENTICATED_MAILBOX_STATE)
    op.execute(GRANT_SERVICE_MAILBOX_STATE)
    op.execute(CREATE_MESSAGES)
    op.execute(RAW_COMPRESSION)
    op.execute(CREATE_INDEX_USER_SENT)
    op.execute(CREATE_INDEX_MESSAGE_ID)
    op.execute(ENABLE_RLS_MESSAGES)
    op.execute(CREATE_POLICY_MESSAGES)
    op.execute(REVOKE_MESSAGES)
    op.execute(GRANT_AUTHENTICATED_MESSAGES)
    op.execute(GRANT_SERVICE_MESSAGES)


def downgrade() -> None:
    op.execute("DROP TABLE public.messages")
    op.execute("DROP TABLE public.mailbox_state")
