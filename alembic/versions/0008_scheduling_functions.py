"""schedule_auto_sync, update_auto_sync_schedule, unschedule_auto_sync

Each keeps the pg_cron job `auto-sync-<user_id>` and the user's auto_sync_jobs row in step, in the
caller's transaction. Named cron.schedule is an upsert that keeps the jobid, so scheduling twice
leaves one job and one row. A per-user advisory lock serialises concurrent calls for one user.

Who may call: the owner, members of service_role, and members of `authenticated` for their own id
(auth.uid()). The functions run as the owner (SECURITY DEFINER) so that every job has one owner;
the caller is therefore read from the session (SET ROLE, else the login role), not current_user.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CREATE_ASSERT_MAY_MANAGE = """
CREATE FUNCTION autosync_private.assert_may_manage(target_user uuid) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $fn$
DECLARE
    caller name := CASE WHEN current_setting('role') = 'none' THEN session_user
                        ELSE current_setting('role')::name END;
    owner_role oid := (SELECT n.nspowner FROM pg_catalog.pg_namespace AS n
                       WHERE n.nspname = 'autosync_private');
BEGIN
    IF target_user IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = caller)
       OR pg_catalog.pg_has_role(caller, owner_role, 'MEMBER')
       OR pg_catalog.pg_has_role(caller, 'service_role', 'MEMBER') THEN
        RETURN;
    END IF;
    IF pg_catalog.pg_has_role(caller, 'authenticated', 'MEMBER') AND auth.uid() = target_user THEN
        RETURN;
    END IF;
    RAISE EXCEPTION 'permission denied: % may not manage auto-sync for user %', caller, target_user
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Users may manage only their own auto-sync; services use service_role.';
END
$fn$
"""
REVOKE_ASSERT = "REVOKE EXECUTE ON FUNCTION autosync_private.assert_may_manage(uuid) FROM PUBLIC"

# Shared by schedule and update: creates or moves the job, then mirrors it in auto_sync_jobs.
CREATE_UPSERT_JOB = """
CREATE FUNCTION autosync_private.upsert_auto_sync_job(target_user uuid, minutes integer) RETURNS bigint
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
REVOKE_UPSERT_JOB = (
    "REVOKE EXECUTE ON FUNCTION autosync_private.upsert_auto_sync_job(uuid, integer) FROM PUBLIC"
)

CREATE_LOCK_USER = """
CREATE FUNCTION autosync_private.lock_user(target_user uuid) RETURNS void
LANGUAGE sql
SET search_path = ''
AS $fn$
    SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('auto-sync-' || target_user, 0))
$fn$
"""
REVOKE_LOCK_USER = "REVOKE EXECUTE ON FUNCTION autosync_private.lock_user(uuid) FROM PUBLIC"

CREATE_SCHEDULE = """
CREATE FUNCTION public.schedule_auto_sync(user_id uuid, interval_minutes integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
    PERFORM autosync_private.assert_may_manage(schedule_auto_sync.user_id);
    PERFORM public.auto_sync_check_interval(schedule_auto_sync.interval_minutes);
    IF NOT EXISTS (SELECT 1 FROM auth.users AS u WHERE u.id = schedule_auto_sync.user_id) THEN
        RAISE EXCEPTION 'no user with id %', schedule_auto_sync.user_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    PERFORM autosync_private.lock_user(schedule_auto_sync.user_id);
    RETURN autosync_private.upsert_auto_sync_job(schedule_auto_sync.user_id,
                                                  schedule_auto_sync.interval_minutes);
END
$fn$
"""

CREATE_UPDATE = """
CREATE FUNCTION public.update_auto_sync_schedule(user_id uuid, interval_minutes integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
    PERFORM autosync_private.assert_may_manage(update_auto_sync_schedule.user_id);
    PERFORM public.auto_sync_check_interval(update_auto_sync_schedule.interval_minutes);
    PERFORM autosync_private.lock_user(update_auto_sync_schedule.user_id);
    IF NOT EXISTS (SELECT 1 FROM public.auto_sync_jobs AS a
                   WHERE a.user_id = update_auto_sync_schedule.user_id) THEN
        RAISE EXCEPTION 'auto-sync is not scheduled for user %', update_auto_sync_schedule.user_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Call schedule_auto_sync first.';
    END IF;
    RETURN autosync_private.upsert_auto_sync_job(update_auto_sync_schedule.user_id,
                                                  update_auto_sync_schedule.interval_minutes);
END
$fn$
"""

# The row's delete trigger removes its cron job; a job left without a row (drift) goes too.
CREATE_UNSCHEDULE = """
CREATE FUNCTION public.unschedule_auto_sync(user_id uuid) RETURNS boolean
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

GRANTS = [
    "REVOKE EXECUTE ON FUNCTION public.schedule_auto_sync(uuid, integer) FROM PUBLIC",
    "REVOKE EXECUTE ON FUNCTION public.update_auto_sync_schedule(uuid, integer) FROM PUBLIC",
    "REVOKE EXECUTE ON FUNCTION public.unschedule_auto_sync(uuid) FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION public.schedule_auto_sync(uuid, integer) TO authenticated, service_role",
    "GRANT EXECUTE ON FUNCTION public.update_auto_sync_schedule(uuid, integer) TO authenticated, service_role",
    "GRANT EXECUTE ON FUNCTION public.unschedule_auto_sync(uuid) TO authenticated, service_role",
]

# Jobs are data this revision's functions created; the downgrade takes every one of them away.
UNSCHEDULE_ALL = """
DO $unschedule$
DECLARE
    job bigint;
BEGIN
    DELETE FROM public.auto_sync_jobs;
    FOR job IN SELECT j.jobid FROM cron.job AS j WHERE j.jobname LIKE 'auto-sync-%' LOOP
        PERFORM cron.unschedule(job);
    END LOOP;
END
$unschedule$
"""


def upgrade() -> None:
    op.execute(CREATE_ASSERT_MAY_MANAGE)
    op.execute(REVOKE_ASSERT)
    op.execute(CREATE_LOCK_USER)
    op.execute(REVOKE_LOCK_USER)
    op.execute(CREATE_UPSERT_JOB)
    op.execute(REVOKE_UPSERT_JOB)
    op.execute(CREATE_SCHEDULE)
    op.execute(CREATE_UPDATE)
    op.execute(CREATE_UNSCHEDULE)
    for statement in GRANTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute(UNSCHEDULE_ALL)
    op.execute("DROP FUNCTION public.unschedule_auto_sync(uuid)")
    op.execute("DROP FUNCTION public.update_auto_sync_schedule(uuid, integer)")
    op.execute("DROP FUNCTION public.schedule_auto_sync(uuid, integer)")
    op.execute("DROP FUNCTION autosync_private.upsert_auto_sync_job(uuid, integer)")
    op.execute("DROP FUNCTION autosync_private.lock_user(uuid)")
    op.execute("DROP FUNCTION autosync_private.assert_may_manage(uuid)")
