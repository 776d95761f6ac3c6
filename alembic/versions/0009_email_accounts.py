"""email_accounts: the IMAP mailboxes each user imports from

Users see their own accounts (RLS) but never the encrypted password: column-level grants leave
`password_encrypted` to the service, which encrypts on write and decrypts only to log in.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CREATE_TABLE = """
CREATE TABLE public.email_accounts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    host text NOT NULL CONSTRAINT email_accounts_host_not_blank CHECK (btrim(host) <> ''),
    port integer NOT NULL CONSTRAINT email_accounts_port_range CHECK (port BETWEEN 1 AND 65535),
    tls_mode text NOT NULL CONSTRAINT email_accounts_tls_mode CHECK (tls_mode IN ('tls', 'starttls', 'plain')),
    username text NOT NULL CONSTRAINT email_accounts_username_not_blank CHECK (username <> ''),
    password_encrypted bytea NOT NULL,
    mailbox text NOT NULL DEFAULT 'INBOX' CONSTRAINT email_accounts_mailbox_not_blank CHECK (mailbox <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT email_accounts_unique_mailbox UNIQUE (user_id, host, port, username, mailbox),
    -- Target of messages' (account_id, user_id) foreign key, which keeps their copy of user_id true.
    CONSTRAINT email_accounts_id_user_id_key UNIQUE (id, user_id)
)
"""

ENABLE_RLS = "ALTER TABLE public.email_accounts ENABLE ROW LEVEL SECURITY"

CREATE_POLICY = """
CREATE POLICY email_accounts_select_own ON public.email_accounts
    FOR SELECT TO authenticated
    USING (user_id = auth.uid())
"""

REVOKE_ALL = "REVOKE ALL ON public.email_accounts FROM PUBLIC, anon, authenticated"
# Every column but password_encrypted.
GRANT_AUTHENTICATED = """
GRANT SELECT (id, user_id, host, port, tls_mode, username, mailbox, created_at, updated_at)
    ON public.email_accounts TO authenticated
"""
GRANT_SERVICE = "GRANT SELECT, INSERT, UPDATE, DELETE ON public.email_accounts TO service_role"


def upgrade() -> None:
    op.execute(CREATE_TABLE)
    op.execute(ENABLE_RLS)
    op.execute(CREATE_POLICY)
    op.execute(REVOKE_ALL)
    op.execute(GRANT_AUTHENTICATED)
    op.execute(GRANT_SERVICE)


def downgrade() -> None:
    op.execute("DROP TABLE public.email_accounts")
