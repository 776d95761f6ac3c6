"""user_settings: each user's auto-sync choice

Users read their own row (RLS); writes go through the service, which updates the row and the
cron job in one transaction, so that the two never drift apart.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CREATE_TABLE = """
CREATE TABLE public.user_settings (
    user_id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    enabled boolean NOT NULL DEFAULT false,
    interval_minutes integer NOT NULL DEFAULT 60
        CONSTRAINT user_settings_interval_supported
        CHECK (interval_minutes = ANY (public.auto_sync_supported_intervals())),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

ENABLE_RLS = "ALTER TABLE public.user_settings ENABLE ROW LEVEL SECURITY"

CREATE_POLICY = """
CREATE POLICY user_settings_select_own ON public.user_settings
    FOR SELECT TO authenticated
    USING (user_id = auth.uid())
"""

REVOKE_ALL = "REVOKE ALL ON public.user_settings FROM PUBLIC, anon, authenticated"
GRANT_AUTHENTICATED = "GRANT SELECT ON public.user_settings TO authenticated"
GRANT_SERVICE = "GRANT SELECT, INSERT, UPDATE, DELETE ON public.user_settings TO service_role"


def upgrade() -> None:
    op.execute(CREATE_TABLE)
    op.execute(ENABLE_RLS)
    op.execute(CREATE_POLICY)
    op.execute(REVOKE_ALL)
    op.execute(GRANT_AUTHENTICATED)
    op.execute(GRANT_SERVICE)


def downgrade() -> None:
    op.execute("DROP TABLE public.user_settings")
