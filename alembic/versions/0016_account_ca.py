"""email_accounts.ca_pem: the certificate authority an account's IMAP server is signed by

Optional PEM of a private CA (or a self-signed server certificate), checked by the service on
save. It is public material, so users may read it like the account's other columns.

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ADD_COLUMN = """
ALTER TABLE public.email_accounts
    ADD COLUMN ca_pem text CONSTRAINT email_accounts_ca_pem_shape
        CHECK (ca_pem IS NULL OR (length(ca_pem) <= 65536 AND ca_pem LIKE '%-----BEGIN CERTIFICATE-----%'))
"""

GRANT_AUTHENTICATED = "GRANT SELECT (ca_pem) ON public.email_accounts TO authenticated"

REVOKE_AUTHENTICATED = "REVOKE SELECT (ca_pem) ON public.email_accounts FROM authenticated"
DROP_COLUMN = "ALTER TABLE public.email_accounts DROP COLUMN ca_pem"


def upgrade() -> None:
    op.execute(ADD_COLUMN)
    op.execute(GRANT_AUTHENTICATED)


def downgrade() -> None:
    op.execute(REVOKE_AUTHENTICATED)
    op.execute(DROP_COLUMN)
