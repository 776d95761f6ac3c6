"""The auto-sync conventions, each defined once in SQL

Three conventions were re-derived wherever they were needed (the scheduling functions, the
service, `autosync doctor`, the infrastructure code). Each now has one home, a function that
everything else calls:

    auto_sync_job_name(user_id)    the pg_cron job of a user: 'auto-sync-<user_id>'
    auto_sync_job_user(job_name)   the inverse: the user a job name belongs to, NULL if none
    auto_sync_lock_user(user_id)   the per-user, transaction-scoped advisory lock that serialises
                                   scheduling and run requests for one user; its key is the hash of
                                   the job name, the key 0008 uses, so code on either side of this
                                   revision serialises with the other
    auto_sync_function_url()       the function URL new sessions, hence pg_cron runs, will see: the
                                   database-level app.settings.sync_function_url (NULL when unset
                                   or empty, as trigger_auto_sync treats it)

Who may call: the owner and service_role. The lock is what the service takes before it requests a
run; the others describe the service's own objects and reveal nothing secret. anon and
authenticated get none of them: functions in `public` are API endpoints under PostgREST, no client
needs these, and the lock would let any user make another user's scheduling and runs wait.

Only the functions that derived a convention are replaced, with CREATE OR REPLACE (same
signatures, owners and grants): autosync_private.lock_user (now delegates to the public lock),
autosync_private.upsert_auto_sync_job (the job name) and unschedule_auto_sync (the job name).
schedule_auto_sync and update_auto_sync_schedule derive nothing themselves: they reach the
conventions through lock_user and upsert_auto_sync_job, so they stay as 0008 made them, and their
bodies are not copied here. The downgrade restores the three replaced bodies from the frozen 0008
text below (explicit SQL, never read back from the catalog), then drops the new functions.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

CREATE_JOB_NAME = """
CREATE FUNCTION public.auto_sync_job_name(user_id uuid) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN 'auto-sync-' || user_id::text;
END
$fn$
"""
COMMENT_JOB_NAME = """
COMMENT ON FUNCTION public.auto_sync_job_name(uuid) IS
    'The name of the pg_cron job that syncs this user'
"""

# Defined through auto_sync_job_name, so that the prefix lives in one place: a name belongs to the
# user whose job name it is, spelled exactly as auto_sync_job_name spells it.
CREATE_JOB_USER = """
CREATE FUNCTION public.auto_sync_job_user(job_name text) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = ''
AS $fn$
DECLARE
    candidate text := pg_catalog.right(job_name, 36);
BEGIN
    -- Two steps: SQL does not promise to evaluate OR left to right, and the cast must not fail.
    IF candidate !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN NULL;
    END IF;
    IF public.auto_sync_job_name(candidate::uuid) <> job_name THEN
        RETURN NULL;
    END IF;
    RETURN candidate::uuid;
END
$fn$
"""
COMMENT_JOB_USER = """
COMMENT ON FUNCTION public.auto_sync_job_user(text) IS
    'The user whose auto-sync job has this name; NULL for any other name'
"""

# Not SECURITY DEFINER: taking an advisory lock needs no privilege beyond calling this function.
CREATE_LOCK_USER = """
CREATE FUNCTION public.auto_sync_lock_user(user_id uuid) RETURNS void
LANGUAGE sql
SET search_path = ''
AS $fn$
    SELECT pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtextextended(public.auto_sync_job_name(user_id), 0))
$fn$
"""
COMMENT_LOCK_USER = """
COMMENT ON FUNCTION public.auto_sync_lock_user(uuid) IS
    'Waits for, then holds until the transaction ends, the lock that serialises auto-sync changes '
    'and run requests for this user'
"""

# What doctor read from Python before: the database's own setting (not one of a role, not the
# session's), which is what a new session starts with.
CREATE_FUNCTION_URL = """
CREATE FUNCTION public.auto_sync_function_url() RETURNS text
LANGUAGE sql STABLE
SET search_path = ''
AS $fn$
    SELECT nullif(pg_catalog.substr(s.setting, pg_catalog.length('app.settings.sync_function_url=') + 1), '')
    FROM pg_catalog.pg_db_role_setting AS r
    JOIN pg_catalog.pg_database AS d ON d.oid = r.setdatabase
    CROSS JOIN LATERAL pg_catalog.unnest(r.setconfig) AS s(setting)
    WHERE d.datname = pg_catalog.current_database()
      AND r.setrole = 0
      AND pg_catalog.starts_with(s.setting, 'app.settings.sync_function_url=')
$fn$
"""
COMMENT_FUNCTION_URL = """
COMMENT ON FUNCTION public.auto_sync_function_url() IS
    'The sync function URL that new sessions, and so pg_cron runs, will see; NULL when not set'
"""

NEW_FUNCTIONS = (
    "public.auto_sync_job_name(uuid)",
    "public.auto_sync_job_user(text)",
    "public.auto_sync_lock_user(uuid)",
    "public.auto_sync_function_url()",
)
GRANTS = [
    statement
    for function in NEW_FUNCTIONS
    for statement in (
        f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION {function} TO service_role",
    )
]

# The 0008 functions that derived a convention, now calling its home.
REPLACE_LOCK_USER = """
CREATE OR REPLACE FUNCTION autosync_private.lock_user(target_user uuid) RETURNS void
LANGUAGE sql
SET search_path = ''
AS $fn$
    SELECT public.auto_sync_lock_user(target_user)
$fn$
"""

REPLACE_UPSERT_JOB = """
CREATE OR REPLACE FUNCTION autosync_private.upsert_auto_sync_job(target_user uuid, minutes integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
DECLARE
    job_name text := public.auto_sync_job_name(target_user);
    schedule text := public.auto_sync_cron_schedule(target_user, minutes);
    job_id bigint;
BEGIN
    job_id := cron.schedule(job_name, schedule,
                            format('SELECT public.trigger_auto_sync(%L::uuid)', target_user));
    -- A named re-schedule keeps the old `active` flag; a scheduled job must run.
    IF EXISTS (SELECT 1 FROM cron.job AS j WHERE j.jobid = job_id AND NOT j.active) THEN
        PERFORM cron.alter_job(job_id, active => true);
    END IF;
    INSERT INTO public.auto_sync_jobs AS a (user_id, cron_job_id, interval_minutes)
    VALUES (target_user, job_id, minutes)
    ON CONFLICT ON CONSTRAINT auto_sync_jobs_user_id_key DO UPDATE
        SET cron_job_id = excluded.cron_job_id,
            interval_minutes = excluded.interval_minutes,
            updated_at = now();
    RETURN job_id;
END
$fn$
"""

REPLACE_UNSCHEDULE = """
CREATE OR REPLACE FUNCTION public.unschedule_auto_sync(user_id uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
DECLARE
    removed_rows integer;
    removed_jobs integer := 0;
    orphan bigint;
BEGIN
    PERFORM autosync_private.assert_may_manage(unschedule_auto_sync.user_id);
    PERFORM autosync_private.lock_user(unschedule_auto_sync.user_id);
    DELETE FROM public.auto_sync_jobs AS a WHERE a.user_id = unschedule_auto_sync.user_id;
    GET DIAGNOSTICS removed_rows = ROW_COUNT;
    FOR orphan IN
        SELECT j.jobid FROM cron.job AS j
        WHERE j.jobname = public.auto_sync_job_name(unschedule_auto_sync.user_id)
          AND j.username = current_user
    LOOP
        PERFORM cron.unschedule(orphan);
        removed_jobs := removed_jobs + 1;
    END LOOP;
    RETURN removed_rows + removed_jobs > 0;
END
$fn$
"""

# Frozen copies of the 0008 bodies, restored by the downgrade. Keep them byte for byte.
RESTORE_LOCK_USER = """
CREATE OR REPLACE FUNCTION autosync_private.lock_user(target_user uuid) RETURNS void
LANGUAGE sql
SET search_path = ''
AS $fn$
    SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('auto-sync-' || target_user, 0))
$fn$
"""

RESTORE_UPSERT_JOB = """
CREATE OR REPLACE FUNCTION autosync_private.upsert_auto_sync_job(target_user uuid, minutes integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
DECLARE
    job_name text := 'auto-sync-' || target_user;
    schedule text := public.auto_sync_cron_schedule(target_user, minutes);
    job_id bigint;
BEGIN
    job_id := cron.schedule(job_name, schedule,
                            format('SELECT public.trigger_auto_sync(%L::uuid)', target_user));
    -- A named re-schedule keeps the old `active` flag; a scheduled job must run.
    IF EXISTS (SELECT 1 FROM cron.job AS j WHERE j.jobid = job_id AND NOT j.active) THEN
        PERFORM cron.alter_job(job_id, active => true);
    END IF;
    INSERT INTO public.auto_sync_jobs AS a (user_id, cron_job_id, interval_minutes)
    VALUES (target_user, job_id, minutes)
    ON CONFLICT ON CONSTRAINT auto_sync_jobs_user_id_key DO UPDATE
        SET cron_job_id = excluded.cron_job_id,
            interval_minutes = excluded.interval_minutes,
            updated_at = now();
    RETURN job_id;
END
$fn$
"""

RESTORE_UNSCHEDULE = """
CREATE OR REPLACE FUNCTION public.unschedule_auto_sync(user_id uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
DECLARE
    removed_rows integer;
    removed_jobs integer := 0;
    orphan bigint;
BEGIN
    PERFORM autosync_private.assert_may_manage(unschedule_auto_sync.user_id);
    PERFORM autosync_private.lock_user(unschedule_auto_sync.user_id);
    DELETE FROM public.auto_sync_jobs AS a WHERE a.user_id = unschedule_auto_sync.user_id;
    GET DIAGNOSTICS removed_rows = ROW_COUNT;
    FOR orphan IN
        SELECT j.jobid FROM cron.job AS j
        WHERE j.jobname = 'auto-sync-' || unschedule_auto_sync.user_id AND j.username = current_user
    LOOP
        PERFORM cron.unschedule(orphan);
        removed_jobs := removed_jobs + 1;
    END LOOP;
    RETURN removed_rows + removed_jobs > 0;
END
$fn$
"""


def upgrade() -> None:
    for statement in (
        CREATE_JOB_NAME,
        COMMENT_JOB_NAME,
        CREATE_JOB_USER,
        COMMENT_JOB_USER,
        CREATE_LOCK_USER,
        COMMENT_LOCK_USER,
        CREATE_FUNCTION_URL,
        COMMENT_FUNCTION_URL,
        *GRANTS,
        REPLACE_LOCK_USER,
        REPLACE_UPSERT_JOB,
        REPLACE_UNSCHEDULE,
    ):
        op.execute(statement)


def downgrade() -> None:
    op.execute(RESTORE_UNSCHEDULE)
    op.execute(RESTORE_UPSERT_JOB)
    op.execute(RESTORE_LOCK_USER)
    for function in reversed(NEW_FUNCTIONS):
        op.execute(f"DROP FUNCTION {function}")
