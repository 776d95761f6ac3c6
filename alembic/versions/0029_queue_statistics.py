"""Queue: a burst the planner has not seen is analysed when it is queued

procrastinate's job fetch takes the first waiting job in (priority, id) order. With column
statistics that say most rows of `procrastinate_jobs` are waiting, the planner walks procrastinate's
partial index in that order and stops at the first job: 0.07 ms at any depth. Without them (a table
never analysed, as in every new environment, or last analysed when it held nothing or only running
jobs) it estimates one waiting row, reads and sorts every waiting job instead, and does so on every
fetch: 17-19 ms per fetch with 10,000 runs queued, and 170 ms when the last ANALYZE saw an empty
table that VACUUM had not yet shrunk. Autovacuum corrects the statistics within a minute or so, by
which time a burst of that size has cost the workers' two cores most of that minute.

The dispatcher's bulk enqueue (`defer_cron_runs`) now checks, when it queues 1,000 runs or more,
whether the planner's picture still fits: the table's row estimate below half the burst, or fewer
than half its rows waiting according to the statistics. Then it runs ANALYZE on the table, inside
its own transaction, where the sample sees the burst it is about to commit. That costs 14 ms with
10,000 jobs queued and 80 ms with 100,000, and once the statistics fit, later bursts skip it. ANALYZE
never waits on a lock held by VACUUM or another ANALYZE: it gives up after 100 ms and the burst is
queued all the same. It runs as the function owner, who owns the table, which ANALYZE requires.

Revision ID: 0029
Revises: 0028
"""

from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

# Bursts below this fetch cheaply whatever the plan (under 2 ms each), and are not worth an ANALYZE.
BURST = 1000

CREATE_REFRESH = f"""
CREATE FUNCTION autosync_private.refresh_queue_statistics(queued integer) RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
SET lock_timeout = '100ms'
AS $fn$
DECLARE
    estimated_rows real;
    waiting_share real;
BEGIN
    IF queued < {BURST} THEN
        RETURN false;
    END IF;
    SELECT c.reltuples INTO estimated_rows
    FROM pg_catalog.pg_class AS c WHERE c.oid = 'public.procrastinate_jobs'::pg_catalog.regclass;
    SELECT s.most_common_freqs[pg_catalog.array_position(s.most_common_vals::text::text[], 'todo')]
    INTO waiting_share
    FROM pg_catalog.pg_stats AS s
    WHERE s.schemaname = 'public' AND s.tablename = 'procrastinate_jobs' AND s.attname = 'status';
    -- reltuples is -1 before the first ANALYZE.
    IF estimated_rows >= queued / 2 AND coalesce(waiting_share, 0) >= 0.5 THEN
        RETURN false;
    END IF;
    ANALYZE public.procrastinate_jobs;
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    -- VACUUM or another ANALYZE holds the table: it will have statistics soon enough.
    RETURN false;
END
$fn$
"""
COMMENT_REFRESH = """
COMMENT ON FUNCTION autosync_private.refresh_queue_statistics(integer) IS
    'ANALYZE procrastinate_jobs after a burst of `queued` jobs when its statistics do not fit a deep queue; true when it did'
"""
REVOKE_REFRESH = "REVOKE EXECUTE ON FUNCTION autosync_private.refresh_queue_statistics(integer) FROM PUBLIC"

# As revision 0025 wrote it, with the check at the end.
DEFER_RUNS = """
CREATE OR REPLACE FUNCTION autosync_private.defer_cron_runs(run_ids uuid[], user_ids uuid[]) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $fn$
DECLARE
    job_ids bigint[];
    queued integer;
BEGIN
    -- The job exactly as sync_function/runs.py's request_run defers it for a cron run.
    SELECT public.procrastinate_defer_jobs_v1(pg_catalog.array_agg(
               ROW('imports', 'autosync.import_user', 0, 'user:' || q.user_id, 'user:' || q.user_id,
                   pg_catalog.jsonb_build_object('run_id', q.run_id::text), NULL
               )::public.procrastinate_job_to_defer_v1))
    INTO job_ids
    FROM unnest(run_ids, user_ids) AS q(run_id, user_id);
    IF job_ids IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE public.sync_runs AS r SET job_id = j.id
    FROM public.procrastinate_jobs AS j
    WHERE j.id = ANY (job_ids) AND r.id = (j.args ->> 'run_id')::uuid;
    GET DIAGNOSTICS queued = ROW_COUNT;{check}
    RETURN queued;
END
$fn$
"""
CHECK = """
    PERFORM autosync_private.refresh_queue_statistics(queued);"""


def upgrade() -> None:
    op.execute(CREATE_REFRESH)
    op.execute(COMMENT_REFRESH)
    op.execute(REVOKE_REFRESH)
    op.execute(DEFER_RUNS.format(check=CHECK))


def downgrade() -> None:
    op.execute(DEFER_RUNS.format(check=""))
    op.execute("DROP FUNCTION autosync_private.refresh_queue_statistics(integer)")
