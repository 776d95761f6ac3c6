r"""Several folders per account: a chosen list or every selectable folder, and folders that vanish

`folders` is the chosen list (NULL: just `mailbox`, as before); `all_folders` discovers them with
LIST at each run, leaving out folders whose special use is in `skip_special_use` (Junk and Trash by
default). Each folder keeps its own checkpoint in `mailbox_state`; `missing_since` records when a
folder with a checkpoint was last found gone (renamed or deleted on the server), NULL once it is
back.

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

ADD_ACCOUNT_COLUMNS = r"""
ALTER TABLE public.email_accounts
    ADD COLUMN folders text[] CONSTRAINT email_accounts_folders_shape CHECK (
        folders IS NULL
        OR (cardinality(folders) BETWEEN 1 AND 1000
            AND array_position(folders, NULL) IS NULL
            AND array_position(folders, '') IS NULL)
    ),
    ADD COLUMN all_folders boolean NOT NULL DEFAULT false,
    ADD COLUMN skip_special_use text[] NOT NULL DEFAULT ARRAY['\Junk', '\Trash'],
    ADD CONSTRAINT email_accounts_folders_or_all CHECK (NOT (all_folders AND folders IS NOT NULL))
"""

GRANT_AUTHENTICATED = """
GRANT SELECT (folders, all_folders, skip_special_use) ON public.email_accounts TO authenticated
"""

ADD_MISSING_SINCE = "ALTER TABLE public.mailbox_state ADD COLUMN missing_since timestamptz"

REVOKE_AUTHENTICATED = """
REVOKE SELECT (folders, all_folders, skip_special_use) ON public.email_accounts FROM authenticated
"""
DROP_ACCOUNT_COLUMNS = """
ALTER TABLE public.email_accounts
    DROP CONSTRAINT email_accounts_folders_or_all,
    DROP COLUMN skip_special_use,
    DROP COLUMN all_folders,
    DROP COLUMN folders
"""
DROP_MISSING_SINCE = "ALTER TABLE public.mailbox_state DROP COLUMN missing_since"


def upgrade() -> None:
    op.execute(ADD_ACCOUNT_COLUMNS)
    op.execute(GRANT_AUTHENTICATED)
    op.execute(ADD_MISSING_SINCE)


def downgrade() -> None:
    op.execute(DROP_MISSING_SINCE)
    op.execute(REVOKE_AUTHENTICATED)
    op.execute(DROP_ACCOUNT_COLUMNS)
