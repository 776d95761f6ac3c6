"""rate_limit_hits: one row per limited action a user took, counted over a sliding window

The user-facing writes that cost something outside the request (a manual import, a cron job
written by save-auto-sync, an outbound IMAP login when an account is added) are limited per user.
The service counts a user's recent hits of an action under the per-user lock, refuses beyond the
limit, and otherwise records one; rows older than the window are deleted as it goes, so the table
holds at most `limit` rows per user and action. Only the service reads or writes it.

Revision ID: 0022
Revises: 0021
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

CREATE = """
CREATE TABLE public.rate_limit_hits (
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    action text NOT NULL CONSTRAINT rate_limit_hits_action CHECK (action ~ '^[a-z_]{1,40}$'),
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

CREATE_INDEX = "CREATE INDEX rate_limit_hits_user_action_at ON public.rate_limit_hits (user_id, action, at)"

PRIVILEGES = [
    "ALTER TABLE public.rate_limit_hits ENABLE ROW LEVEL SECURITY",
    "REVOKE ALL ON public.rate_limit_hits FROM PUBLIC, anon, authenticated",
    "GRANT SELECT, INSERT, DELETE ON public.rate_limit_hits TO service_role",
]


def upgrade() -> None:
    op.execute(CREATE)
    op.execute(CREATE_INDEX)
    for statement in PRIVILEGES:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE public.rate_limit_hits")
