"""message_folders: a message in several folders of an account is stored once and linked to each

Servers that file one message under several folders (Gmail labels, "All Mail") would otherwise
make an account with several folders store the same bytes again for every folder. A message row
keeps where its bytes were first imported from (mailbox, UIDVALIDITY, UID); every other folder it
is in is a `message_folders` row, whose primary key is that folder's identity of the message.
`message_locations` lists both, so readers see every (folder, UIDVALIDITY, UID) of a message.

The downgrade turns each link back into a copy of its message, so no folder loses its messages.

Revision ID: 0018
Revises: 0017
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

CREATE_TABLE = """
CREATE TABLE public.message_folders (
    account_id uuid NOT NULL,
    mailbox text NOT NULL,
    uidvalidity bigint NOT NULL CONSTRAINT message_folders_uidvalidity_range
        CHECK (uidvalidity BETWEEN 1 AND 4294967295),
    uid bigint NOT NULL CONSTRAINT message_folders_uid_range CHECK (uid BETWEEN 1 AND 4294967295),
    message_id bigint NOT NULL REFERENCES public.messages (id) ON DELETE CASCADE,
    -- A copy of the account's owner, so that RLS needs no join; the foreign key keeps it true.
    user_id uuid NOT NULL,
    linked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, mailbox, uidvalidity, uid),
    CONSTRAINT message_folders_account_fkey FOREIGN KEY (account_id, user_id)
        REFERENCES public.email_accounts (id, user_id) ON DELETE CASCADE
)
"""

CREATE_INDEX_MESSAGE = "CREATE INDEX message_folders_message_id_idx ON public.message_folders (message_id)"

# Finds a message stored in another folder of the account by its bytes.
CREATE_INDEX_SHA256 = """
CREATE INDEX messages_account_sha256_idx ON public.messages (account_id, sha256) WHERE sha256 IS NOT NULL
"""

ENABLE_RLS = "ALTER TABLE public.message_folders ENABLE ROW LEVEL SECURITY"

CREATE_POLICY = """
CREATE POLICY message_folders_select_own ON public.message_folders
    FOR SELECT TO authenticated
    USING (user_id = auth.uid())
"""

REVOKE = "REVOKE ALL ON public.message_folders FROM PUBLIC, anon, authenticated"
GRANT_AUTHENTICATED = "GRANT SELECT ON public.message_folders TO authenticated"
GRANT_SERVICE = "GRANT SELECT, INSERT, UPDATE, DELETE ON public.message_folders TO service_role"

# security_invoker: the caller's RLS applies to both tables underneath.
CREATE_VIEW = """
CREATE VIEW public.message_locations WITH (security_invoker = true) AS
SELECT id AS message_id, user_id, account_id, mailbox, uidvalidity, uid FROM public.messages
UNION ALL
SELECT message_id, user_id, account_id, mailbox, uidvalidity, uid FROM public.message_folders
"""
REVOKE_VIEW = "REVOKE ALL ON public.message_locations FROM PUBLIC, anon, authenticated"
GRANT_VIEW = "GRANT SELECT ON public.message_locations TO authenticated, service_role"

# Every link becomes a copy of its message again, as the schema before this revision stored it.
COPY_LINKS_BACK = """
INSERT INTO public.messages (
    user_id, account_id, mailbox, uidvalidity, uid, sha256, message_id, from_addr, to_addrs, cc_addrs,
    subject, sent_at, body_text, snippet, size, defects, skipped_reason, raw, imported_at
)
SELECT f.user_id, f.account_id, f.mailbox, f.uidvalidity, f.uid, m.sha256, m.message_id, m.from_addr,
       m.to_addrs, m.cc_addrs, m.subject, m.sent_at, m.body_text, m.snippet, m.size, m.defects,
       m.skipped_reason, m.raw, f.linked_at
FROM public.message_folders AS f
JOIN public.messages AS m ON m.id = f.message_id
ON CONFLICT (account_id, mailbox, uidvalidity, uid) DO NOTHING
"""


def upgrade() -> None:
    op.execute(CREATE_TABLE)
    op.execute(CREATE_INDEX_MESSAGE)
    op.execute(CREATE_INDEX_SHA256)
    op.execute(ENABLE_RLS)
    op.execute(CREATE_POLICY)
    op.execute(REVOKE)
    op.execute(GRANT_AUTHENTICATED)
    op.execute(GRANT_SERVICE)
    op.execute(CREATE_VIEW)
    op.execute(REVOKE_VIEW)
    op.execute(GRANT_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW public.message_locations")
    op.execute(COPY_LINKS_BACK)
    op.execute("DROP TABLE public.message_folders")
    op.execute("DROP INDEX public.messages_account_sha256_idx")
