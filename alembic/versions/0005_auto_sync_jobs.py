"""auto_sync_jobs: which pg_cron job serves which user

One row per scheduled user, pointing at the pg_cron job. Deleting a row (directly, or through the
cascade when the user is deleted) also removes its cron job, so no job outlives its row.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CREATE_TABLE = """
CREATE TABLE public.auto_sync_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL UNIQUE REFERENCES auth.users (id) ON DELETE CASCADE,
    cron_job_id bigint NOT NULL,
    interval_minutes integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

ENABLE_RLS = "ALTER TABLE public.auto_sync_jobs ENABLE ROW LEVEL SECURITY"

CREATE_POLICY = """
CREATE POLICY auto_sync_jobs_select_own ON public.auto_sync_jobs
    FOR SELECT TO authenticated
    USING (user_id = auth.uid())
"""

REVOKE_ALL = "REVOKE ALL ON public.auto_sync_jobs FROM PUBLIC, anon, authenticated"
GRANT_AUTHENTICATED = "GRANT SELECT ON public.auto_sync_jobs TO authenticated"
GRANT_SERVICE = "GRANT SELECT ON public.auto_sync_jobs TO service_role"

# SECURITY DEFINER: only the role that scheduled a job may unschedule it.
CREATE_UNSCHEDULE_FUNCTION = """
CREATE FUNCTION public.auto_sync_jobs_unschedule_cron() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM cron.job WHERE jobid = OLD.cron_job_id) THEN
        PERFORM cron.unschedule(OLD.cron_job_id);
    END IF;
    RETURN OLD;
END
$fn$
"""

REVOKE_UNSCHEDULE_FUNCTION = "REVOKE EXECUTE ON FUNCTION public.auto_sync_jobs_unschedule_cron() FROM PUBLIC"

CREATE_TRIGGER = """
CREATE TRIGGER auto_sync_jobs_unschedule_cron
    AFTER DELETE ON public.auto_sync_jobs
    FOR EACH ROW EXECUTE FUNCTION public.auto_sync_jobs_unschedule_cron()
"""


def upgrade() -> None:
    op.execute(CREATE_TABLE)
    op.execute(ENABLE_RLS)
    op.execute(CREATE_POLICY)
    op.execute(REVOKE_ALL)
    op.execute(GRANT_AUTHENTICATED)
    op.execute(GRANT_SERVICE)
    op.execute(CREATE_UNSCHEDULE_FUNCTION)
    op.execute(REVOKE_UNSCHEDULE_FUNCTION)
    op.execute(CREATE_TRIGGER)


def downgrade() -> None:
    # Through the trigger: every row's cron job goes with it.
    op.execute("DELETE FROM public.auto_sync_jobs")
    op.execute("DROP TABLE public.auto_sync_jobs")
    op.execute("DROP FUNCTION public.auto_sync_jobs_unschedule_cron()")
