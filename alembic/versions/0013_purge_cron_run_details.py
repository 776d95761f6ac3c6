"""Scheduled purge of cron.job_run_details

pg_cron records every run and never forgets: with one job per user that is millions of rows a
month. A daily job deletes runs older than `app.settings.cron_run_details_max_age` (an interval,
default 7 days), e.g. ALTER DATABASE … SET app.settings.cron_run_details_max_age = '30 days'.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

JOB_NAME = "autosync-purge-run-details"

CREATE_PURGE = """
CREATE FUNCTION autosync_private.purge_cron_run_details(max_age interval DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
DECLARE
    keep interval := coalesce(
        max_age,
        nullif(current_setting('app.settings.cron_run_details_max_age', true), '')::interval,
        interval '7 days');
    removed bigint;
BEGIN
    IF keep < interval '0' THEN
        RAISE EXCEPTION 'max_age must not be negative (got %)', keep USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM cron.job_run_details WHERE end_time < now() - keep;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$fn$
"""

REVOKE_PURGE = "REVOKE EXECUTE ON FUNCTION autosync_private.purge_cron_run_details(interval) FROM PUBLIC"

SCHEDULE = f"""
SELECT cron.schedule('{JOB_NAME}', '17 3 * * *', 'SELECT autosync_private.purge_cron_run_details()')
"""

UNSCHEDULE = f"""
SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = '{JOB_NAME}'
"""


def upgrade() -> None:
    op.execute(CREATE_PURGE)
    op.execute(REVOKE_PURGE)
    op.execute(SCHEDULE)


def downgrade() -> None:
    op.execute(UNSCHEDULE)
    op.execute("DROP FUNCTION autosync_private.purge_cron_run_details(interval)")
