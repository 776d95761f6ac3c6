"""schedule_auto_sync, update_auto_sync_schedule, unschedule_auto_sync

Each keeps the pg_cron job `auto-sync-<user_id>` and the user's auto_sync_jobs row in step, in the
caller's transaction. Named cron.schedule is an upsert that keeps the jobid, so scheduling twice
leaves one job and one row. A per-user advisory lock serialises concurrent calls for one user.

Who may call: the owner, members of service_role, and members of `authenticated` for their own id
(auth.uid()). The functions run as the owner (SECURITY DEFINER) so that every job has one owner;
the caller is therefore read from the session (SET ROLE, else the login role), not current_user.

Adopting the seed's functions and jobs. Where the seed's migration ran, its `schedule_auto_sync`,
`update_auto_sync_schedule` and `unschedule_auto_sync` are replaced under the same names (definitions
and grants logged as undo statements in `autosync_seed.adopted`, see 0004), and once this revision's
functions exist, each user with auto-sync on gets their job moved: the same pg_cron job (jobid kept,
named `cron.schedule` is an upsert) on the user's staggered schedule at their (0004: supported)
interval, running this project's command; one WARNING per user with the old and new schedule. The
seed's jobs and rows of users with auto-sync off go, as the seed's unschedule would have removed
them. The jobs must belong to the role that runs the upgrade (pg_cron names jobs per role): if they
do not, the upgrade stops and says how to hand them over. The downgrade gives every moved job its
seed schedule and command, and the removed jobs and rows back; jobs scheduled since keep theirs.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CREATE_ADOPTION_RECORD = """
CREATE SCHEMA IF NOT EXISTS autosync_seed;
REVOKE ALL ON SCHEMA autosync_seed FROM PUBLIC;
COMMENT ON SCHEMA autosync_seed IS
    'What adopting the seed''s objects changed, so that a downgrade can give them back: owner only';
CREATE TABLE IF NOT EXISTS autosync_seed.adopted (
    step text PRIMARY KEY,
    undo text[] NOT NULL,
    adopted_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON autosync_seed.adopted FROM PUBLIC;
"""

# Any of the three names in public before this revision is the seed's (whatever its signature).
ADOPT_SEED_FUNCTIONS = f"""
DO $adopt$
DECLARE
    undo text[] := '{{}}';
    found record;
    acl record;
BEGIN
    FOR found IN SELECT p.oid, p.oid::regprocedure::text AS signature, p.proacl, p.proowner
                 FROM pg_catalog.pg_proc AS p
                 WHERE p.pronamespace = 'public'::regnamespace
                   AND p.proname IN ('schedule_auto_sync', 'update_auto_sync_schedule', 'unschedule_auto_sync')
                 ORDER BY p.proname LOOP
        FOR acl IN SELECT a.privilege_type,
                          CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                               ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END AS grantee
                   FROM pg_catalog.aclexplode(found.proacl) AS a WHERE a.grantee <> found.proowner LOOP
            undo := array_prepend(format('GRANT %s ON FUNCTION %s TO %s', acl.privilege_type, found.signature, acl.grantee), undo);
        END LOOP;
        IF found.proacl IS NOT NULL THEN
            undo := array_prepend(format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', found.signature), undo);
        END IF;
        IF NOT pg_catalog.pg_has_role(current_user, found.proowner, 'USAGE') THEN
            RAISE EXCEPTION 'the seed''s function % belongs to %, not to %: it cannot be replaced',
                found.signature, found.proowner::regrole, current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('Run the upgrade as the role that ran the seed''s migration, or an '
                                    'administrator runs: ALTER FUNCTION %s OWNER TO %I;',
                                    found.signature, current_user);
        END IF;
        undo := array_prepend(pg_catalog.pg_get_functiondef(found.oid), undo);
        EXECUTE format('DROP FUNCTION %s', found.signature);
        RAISE WARNING 'the seed''s function % was replaced by this project''s', found.signature;
    END LOOP;
    IF undo <> '{{}}' THEN
        {CREATE_ADOPTION_RECORD}
        INSERT INTO autosync_seed.adopted (step, undo) VALUES ('scheduling_functions', undo);
    END IF;
END
$adopt$
"""

# Only where 0004 or 0005 adopted a seed table: a new database has no auto-sync jobs yet.
MOVE_SEED_JOBS = r"""
DO $move$
DECLARE
    undo text[] := '{}';
    entry record;
    job_id bigint;
    moved_to text;
    foreign_owners text;
BEGIN
    -- Two statements: PL/pgSQL plans a whole condition, and the table may not exist.
    IF to_regclass('autosync_seed.adopted') IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM autosync_seed.adopted AS a WHERE a.step IN ('user_settings', 'auto_sync_jobs')) THEN
        RETURN;
    END IF;
    SELECT string_agg(DISTINCT j.username, ', ') INTO foreign_owners
    FROM cron.job AS j WHERE j.jobname LIKE 'auto-sync-%' AND j.username <> current_user;
    IF foreign_owners IS NOT NULL THEN
        RAISE EXCEPTION 'the seed''s auto-sync jobs belong to %, not to %: pg_cron would keep them beside '
                        'the moved ones', foreign_owners, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Run the upgrade as the role that ran the seed''s migration, or an administrator runs: '
                         'UPDATE cron.job SET username = ' || quote_literal(current_user)
                         || ' WHERE jobname LIKE ''auto-sync-%'';';
    END IF;

    -- Auto-sync on: the same job, moved to the user's staggered schedule and this project's command.
    FOR entry IN
        SELECT s.user_id, s.interval_minutes, j.jobid, j.schedule, j.command, j.active,
               a.interval_minutes AS row_interval
        FROM public.user_settings AS s
        LEFT JOIN cron.job AS j ON j.jobname = 'auto-sync-' || s.user_id
        LEFT JOIN public.auto_sync_jobs AS a ON a.user_id = s.user_id
        WHERE s.enabled
        ORDER BY s.user_id
    LOOP
        job_id := autosync_private.upsert_auto_sync_job(entry.user_id, entry.interval_minutes);
        SELECT j.schedule INTO moved_to FROM cron.job AS j WHERE j.jobid = job_id;
        IF entry.jobid IS NULL THEN
            RAISE WARNING 'user %: auto-sync was on without a job: scheduled %, every % min',
                entry.user_id, moved_to, entry.interval_minutes;
        ELSE
            undo := array_prepend(format('SELECT cron.alter_job(j.jobid, schedule => %L, command => %L, active => %L) '
                           'FROM cron.job AS j WHERE j.jobid = %s',
                           entry.schedule, entry.command, entry.active, entry.jobid), undo);
            RAISE WARNING 'user %: auto-sync job % moved from "%" to "%", every % min',
                entry.user_id, entry.jobid, entry.schedule, moved_to, entry.interval_minutes;
        END IF;
        IF entry.row_interval IS DISTINCT FROM entry.interval_minutes AND entry.row_interval IS NOT NULL THEN
            undo := array_prepend(format('UPDATE public.auto_sync_jobs SET interval_minutes = %s '
                           'WHERE user_id = %L AND interval_minutes = %s',
                           entry.row_interval, entry.user_id, entry.interval_minutes), undo);
        END IF;
    END LOOP;

    -- Auto-sync off: the row goes, and its job with it (auto_sync_jobs' delete trigger).
    FOR entry IN
        SELECT a.user_id, pg_catalog.to_jsonb(a) AS image, j.jobname, j.schedule, j.command
        FROM public.auto_sync_jobs AS a
        LEFT JOIN cron.job AS j ON j.jobid = a.cron_job_id
        WHERE NOT EXISTS (SELECT 1 FROM public.user_settings AS s WHERE s.user_id = a.user_id AND s.enabled)
        ORDER BY a.user_id
    LOOP
        undo := array_prepend(format('INSERT INTO public.auto_sync_jobs SELECT (pg_catalog.jsonb_populate_record('
                       'NULL::public.auto_sync_jobs, %L::jsonb%s)).*',
                       entry.image,
                       CASE WHEN entry.jobname IS NOT NULL THEN
                           format(' || jsonb_build_object(''cron_job_id'', cron.schedule(%L, %L, %L))',
                                  entry.jobname, entry.schedule, entry.command)
                       ELSE '' END), undo);
        DELETE FROM public.auto_sync_jobs AS a WHERE a.user_id = entry.user_id;
        RAISE WARNING 'user %: auto-sync is off: the seed''s job % and its auto_sync_jobs row were removed',
            entry.user_id, coalesce(entry.jobname, '(none)');
    END LOOP;
    -- A job left without a row: a user whose auto-sync is off.
    FOR entry IN
        SELECT j.jobid, j.jobname, j.schedule, j.command
        FROM cron.job AS j
        WHERE j.jobname LIKE 'auto-sync-%'
          AND NOT EXISTS (SELECT 1 FROM public.auto_sync_jobs AS a WHERE a.cron_job_id = j.jobid)
        ORDER BY j.jobname
    LOOP
        undo := array_prepend(format('SELECT cron.schedule(%L, %L, %L)', entry.jobname, entry.schedule, entry.command), undo);
        PERFORM cron.unschedule(entry.jobid);
        RAISE WARNING 'the seed''s job % (%) serves no user with auto-sync on: removed', entry.jobname,
            entry.schedule;
    END LOOP;
    INSERT INTO autosync_seed.adopted (step, undo) VALUES ('jobs', undo);
END
$move$
"""

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

# Jobs are data this revision's functions created; the downgrade takes every one of them away. Adopted
# ones instead get their seed schedule back, and removed ones return.
GIVE_BACK_OR_UNSCHEDULE_JOBS = """
DO $down$
DECLARE
    undo text[];
    statement text;
    job bigint;
BEGIN
    IF to_regclass('autosync_seed.adopted') IS NOT NULL THEN
        SELECT a.undo INTO undo FROM autosync_seed.adopted AS a WHERE a.step = 'jobs';
    END IF;
    IF undo IS NULL THEN
        DELETE FROM public.auto_sync_jobs;
        FOR job IN SELECT j.jobid FROM cron.job AS j WHERE j.jobname LIKE 'auto-sync-%' LOOP
            PERFORM cron.unschedule(job);
        END LOOP;
        RETURN;
    END IF;
    FOREACH statement IN ARRAY undo LOOP
        EXECUTE statement;
    END LOOP;
    DELETE FROM autosync_seed.adopted AS a WHERE a.step = 'jobs';
    RAISE WARNING 'the seed''s auto-sync jobs are back on their schedules; jobs scheduled since the upgrade '
                  'keep this project''s staggered schedule and command';
END
$down$
"""

GIVE_BACK_SEED_FUNCTIONS = """
DO $down$
DECLARE
    undo text[];
    statement text;
BEGIN
    IF to_regclass('autosync_seed.adopted') IS NOT NULL THEN
        SELECT a.undo INTO undo FROM autosync_seed.adopted AS a WHERE a.step = 'scheduling_functions';
    END IF;
    IF undo IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('check_function_bodies', 'off', true);
    FOREACH statement IN ARRAY undo LOOP
        EXECUTE statement;
    END LOOP;
    PERFORM pg_catalog.set_config('check_function_bodies', 'on', true);
    DELETE FROM autosync_seed.adopted AS a WHERE a.step = 'scheduling_functions';
    IF NOT EXISTS (SELECT 1 FROM autosync_seed.adopted) THEN
        DROP TABLE autosync_seed.adopted;
        DROP SCHEMA autosync_seed;
    END IF;
END
$down$
"""


def upgrade() -> None:
    op.execute(ADOPT_SEED_FUNCTIONS)
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
    op.execute(MOVE_SEED_JOBS)


def downgrade() -> None:
    op.execute(GIVE_BACK_OR_UNSCHEDULE_JOBS)
    op.execute("DROP FUNCTION public.unschedule_auto_sync(uuid)")
    op.execute("DROP FUNCTION public.update_auto_sync_schedule(uuid, integer)")
    op.execute("DROP FUNCTION public.schedule_auto_sync(uuid, integer)")
    op.execute("DROP FUNCTION autosync_private.upsert_auto_sync_job(uuid, integer)")
    op.execute("DROP FUNCTION autosync_private.lock_user(uuid)")
    op.execute("DROP FUNCTION autosync_private.assert_may_manage(uuid)")
    op.execute(GIVE_BACK_SEED_FUNCTIONS)
