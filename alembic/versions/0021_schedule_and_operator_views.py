"""When a user's sync fires, and what operators may read of pg_cron's run log

`auto_sync_last_slot(user, interval, at)`: the latest time at or before `at` at which the schedule
of `auto_sync_cron_schedule(user, interval)` fires. Every supported interval divides a day, so the
schedule fires at the UTC minutes-of-day congruent to the user's slot modulo the interval (pg_cron
runs in GMT unless cron.timezone says otherwise); the next run is `last slot + interval`, and how
late a cron run started is `started_at - last slot at its queued_at`.

`auto_sync_failed_cron_runs(max_rows)`: the last failed runs of the auto-sync jobs from
`cron.job_run_details`, which service_role may not read: SECURITY DEFINER, exposing only the
auto-sync jobs' user, status, message and times.

Revision ID: 0021
Revises: 0020
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

CREATE_LAST_SLOT = """
CREATE FUNCTION public.auto_sync_last_slot(user_id uuid, interval_minutes integer, at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
DECLARE
    minutes integer := public.auto_sync_check_interval(interval_minutes);
    -- The slot exactly as auto_sync_cron_schedule (revision 0003) derives it.
    slot integer := ('x' || left(md5(user_id::text), 7))::bit(28)::integer % minutes;
    -- Whole minutes since the epoch, which starts at a UTC midnight.
    minute_index bigint := floor(extract(epoch FROM at) / 60)::bigint;
BEGIN
    IF user_id IS NULL OR at IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.to_timestamp(
        (minute_index - (((minute_index - slot) % minutes) + minutes) % minutes) * 60);
END
$fn$
"""

COMMENT_LAST_SLOT = """
COMMENT ON FUNCTION public.auto_sync_last_slot(uuid, integer, timestamptz) IS
    'The latest time at or before `at` at which auto_sync_cron_schedule(user_id, interval_minutes) fires'
"""

CREATE_FAILED_RUNS = """
CREATE FUNCTION public.auto_sync_failed_cron_runs(max_rows integer DEFAULT 20)
RETURNS TABLE (user_id uuid, status text, return_message text, start_time timestamptz, end_time timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT public.auto_sync_job_user(j.jobname), d.status, d.return_message, d.start_time, d.end_time
    FROM cron.job_run_details AS d
    JOIN cron.job AS j ON j.jobid = d.jobid
    WHERE d.status = 'failed' AND public.auto_sync_job_user(j.jobname) IS NOT NULL
    ORDER BY d.start_time DESC NULLS LAST
    LIMIT least(greatest(max_rows, 0), 200)
$fn$
"""

GRANTS = [
    "REVOKE EXECUTE ON FUNCTION public.auto_sync_failed_cron_runs(integer) FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION public.auto_sync_failed_cron_runs(integer) TO service_role",
]


def upgrade() -> None:
    op.execute(CREATE_LAST_SLOT)
    op.execute(COMMENT_LAST_SLOT)
    op.execute(CREATE_FAILED_RUNS)
    for statement in GRANTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION public.auto_sync_failed_cron_runs(integer)")
    op.execute("DROP FUNCTION public.auto_sync_last_slot(uuid, integer, timestamptz)")
