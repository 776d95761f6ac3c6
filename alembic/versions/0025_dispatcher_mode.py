"""Dispatcher scheduling mode: one pg_cron job queues every due user's run, set-based

Per-user mode (the default, what 0008 does) gives every user a pg_cron job; each run of it is a
new backend and an HTTP call, and pg_cron launches only ~120 of those a second. Dispatcher mode
replaces them with one job, `autosync-dispatcher`, on a seconds-level schedule: each run calls
`auto_sync_dispatch()`, which finds every user whose slot has come and queues their runs in the
same database (a sync_runs row and a procrastinate job each, as the service's request_run does for
a cron-triggered run) in a few set-based statements. No HTTP: the queue is in this database, so a
direct insert is one transaction with nothing to fail half-way, and it needs no service key.

Slots. A user's slots are the instants whose minute since the Unix epoch (UTC) is congruent to
their offset modulo their interval. That is exactly when their per-user cron schedule fires
(`auto_sync_cron_schedule`, pg_cron's default cron.timezone is GMT): every supported interval
divides a day, so "minute of the day ≡ offset (mod interval)" and "minute since the epoch ≡ offset
(mod interval)" are the same set. The offset rule (an md5 of the user id) now has one home,
`auto_sync_slot_offset`, which both the cron schedule and the slot functions call.

Watermark. In dispatcher mode each auto_sync_jobs row carries `next_slot`, the earliest slot of
the user not yet dispatched (cron_job_id is then NULL; in per-user mode it is the other way round).
A dispatch takes the rows whose next_slot has come (FOR UPDATE SKIP LOCKED, so concurrent
dispatches never take the same user), queues one run each and moves next_slot past `now`. A
dispatch that runs late, a paused dispatcher or a restarted server therefore misses nothing, and
catches up missed slots with one run, not one per slot. A user whose run is still queued or
running gets no second one (sync_runs' one-active-run index, as in per-user mode).

The mode lives in `autosync_private.scheduling` (one row) and is switched by the owner with
`set_auto_sync_mode('per_user' | 'dispatcher')`, in one transaction that also moves the cron jobs.
The scheduling functions read the mode with FOR SHARE, so a switch waits for, and is waited for by,
concurrent schedule / update / unschedule calls: every user ends up scheduled the new way.

Revision ID: 0025
Revises: 0024
"""

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

CREATE_OFFSET = """
CREATE FUNCTION public.auto_sync_slot_offset(user_id uuid, interval_minutes integer) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
DECLARE
    minutes integer := public.auto_sync_check_interval(interval_minutes);
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- 28 bits of the md5 keep the value positive in an integer.
    RETURN ('x' || left(md5(user_id::text), 7))::bit(28)::integer % minutes;
END
$fn$
"""
COMMENT_OFFSET = """
COMMENT ON FUNCTION public.auto_sync_slot_offset(uuid, integer) IS
    'The stable per-user offset (minutes) inside the interval at which the user''s syncs are due'
"""

# 0003's body with the offset taken from its new home; same schedules for every user.
REPLACE_SCHEDULE = """
CREATE OR REPLACE FUNCTION public.auto_sync_cron_schedule(user_id uuid, interval_minutes integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
DECLARE
    minutes integer := public.auto_sync_check_interval(interval_minutes);
    slot integer := public.auto_sync_slot_offset(user_id, interval_minutes);
BEGIN
    IF minutes < 60 THEN
        RETURN format('%s-59/%s * * * *', slot, minutes);
    ELSIF minutes = 60 THEN
        RETURN format('%s * * * *', slot);
    ELSIF minutes < 1440 THEN
        RETURN format('%s %s-23/%s * * *', slot % 60, slot / 60, minutes / 60);
    END IF;
    RETURN format('%s %s * * *', slot % 60, slot / 60);
END
$fn$
"""

CREATE_LAST_SLOT = """
CREATE FUNCTION public.auto_sync_slot_at_or_before(user_id uuid, interval_minutes integer, as_of timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
    SELECT pg_catalog.to_timestamp(60 * (
        interval_minutes * pg_catalog.floor(
            (pg_catalog.floor(pg_catalog.date_part('epoch', as_of) / 60)
             - public.auto_sync_slot_offset(user_id, interval_minutes)) / interval_minutes)
        + public.auto_sync_slot_offset(user_id, interval_minutes)))
$fn$
"""
COMMENT_LAST_SLOT = """
COMMENT ON FUNCTION public.auto_sync_slot_at_or_before(uuid, integer, timestamptz) IS
    'The user''s latest slot at or before `as_of`: when their per-user cron job fires, to the minute (UTC)'
"""

CREATE_SETTINGS = """
CREATE TABLE autosync_private.scheduling (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mode text NOT NULL DEFAULT 'per_user' CONSTRAINT scheduling_mode CHECK (mode IN ('per_user', 'dispatcher')),
    dispatch_period_seconds integer NOT NULL DEFAULT 1
        CONSTRAINT scheduling_period CHECK (dispatch_period_seconds BETWEEN 1 AND 59)
)
"""
SEED_SETTINGS = "INSERT INTO autosync_private.scheduling DEFAULT VALUES"
REVOKE_SETTINGS = "REVOKE ALL ON autosync_private.scheduling FROM PUBLIC"

ALTER_JOBS = [
    "ALTER TABLE public.auto_sync_jobs ALTER COLUMN cron_job_id DROP NOT NULL",
    "ALTER TABLE public.auto_sync_jobs ADD COLUMN next_slot timestamptz",
    # Exactly one of the two: a per-user job, or a place in the dispatcher's order.
    """ALTER TABLE public.auto_sync_jobs ADD CONSTRAINT auto_sync_jobs_one_mode
           CHECK ((cron_job_id IS NULL) <> (next_slot IS NULL))""",
    # What each dispatch reads: only the due rows, in slot order.
    """CREATE INDEX auto_sync_jobs_next_slot ON public.auto_sync_jobs (next_slot)
           WHERE next_slot IS NOT NULL""",
]

CREATE_MODE = """
CREATE FUNCTION public.auto_sync_mode() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT s.mode FROM autosync_private.scheduling AS s
$fn$
"""
COMMENT_MODE = """
COMMENT ON FUNCTION public.auto_sync_mode() IS
    'How auto-sync is scheduled: per_user (one pg_cron job per user) or dispatcher (one job for all)'
"""

CREATE_DISPATCHER_JOB_NAME = """
CREATE FUNCTION public.auto_sync_dispatcher_job_name() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
    SELECT 'autosync-dispatcher'::text
$fn$
"""

# One home for the per-user cron job (schedule, command, active), used by the scheduling functions
# and by the switch back to per-user mode.
CREATE_PER_USER_JOB = """
CREATE FUNCTION autosync_private.schedule_per_user_job(target_user uuid, minutes integer) RETURNS bigint
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
DECLARE
    job_id bigint;
BEGIN
    job_id := cron.schedule(public.auto_sync_job_name(target_user),
                            public.auto_sync_cron_schedule(target_user, minutes),
                            format('SELECT public.trigger_auto_sync(%L::uuid)', target_user));
    -- A named re-schedule keeps the old `active` flag; a scheduled job must run.
    IF EXISTS (SELECT 1 FROM cron.job AS j WHERE j.jobid = job_id AND NOT j.active) THEN
        PERFORM cron.alter_job(job_id, active => true);
    END IF;
    RETURN job_id;
END
$fn$
"""
REVOKE_PER_USER_JOB = (
    "REVOKE EXECUTE ON FUNCTION autosync_private.schedule_per_user_job(uuid, integer) FROM PUBLIC"
)

CREATE_NEXT_SLOT = """
CREATE FUNCTION autosync_private.next_slot(target_user uuid, minutes integer, as_of timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $fn$
    SELECT public.auto_sync_slot_at_or_before(target_user, minutes, as_of) + pg_catalog.make_interval(mins => minutes)
$fn$
"""
REVOKE_NEXT_SLOT = (
    "REVOKE EXECUTE ON FUNCTION autosync_private.next_slot(uuid, integer, timestamptz) FROM PUBLIC"
)

REPLACE_UPSERT_JOB = """
CREATE OR REPLACE FUNCTION autosync_private.upsert_auto_sync_job(target_user uuid, minutes integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
DECLARE
    -- FOR SHARE: a mode switch waits for this call, and this call for a switch under way.
    current_mode text := (SELECT s.mode FROM autosync_private.scheduling AS s FOR SHARE);
    job_id bigint;
    leftover bigint;
BEGIN
    IF current_mode = 'per_user' THEN
        job_id := autosync_private.schedule_per_user_job(target_user, minutes);
        INSERT INTO public.auto_sync_jobs AS a (user_id, cron_job_id, interval_minutes)
        VALUES (target_user, job_id, minutes)
        ON CONFLICT ON CONSTRAINT auto_sync_jobs_user_id_key DO UPDATE
            SET cron_job_id = excluded.cron_job_id,
                interval_minutes = excluded.interval_minutes,
                next_slot = NULL,
                updated_at = now();
        RETURN job_id;
    END IF;
    -- Dispatcher mode: no job of the user's own (one left by drift goes), a place in the order.
    FOR leftover IN
        SELECT j.jobid FROM cron.job AS j
        WHERE j.jobname = public.auto_sync_job_name(target_user) AND j.username = current_user
    LOOP
        PERFORM cron.unschedule(leftover);
    END LOOP;
    INSERT INTO public.auto_sync_jobs AS a (user_id, cron_job_id, interval_minutes, next_slot)
    VALUES (target_user, NULL, minutes, autosync_private.next_slot(target_user, minutes, now()))
    ON CONFLICT ON CONSTRAINT auto_sync_jobs_user_id_key DO UPDATE
        SET cron_job_id = NULL,
            interval_minutes = excluded.interval_minutes,
            -- Same interval: the slot due next stays due (saving again must not skip it).
            next_slot = CASE WHEN a.next_slot IS NOT NULL AND a.interval_minutes = excluded.interval_minutes
                             THEN a.next_slot ELSE excluded.next_slot END,
            updated_at = now();
    -- The job that serves the user now.
    RETURN (SELECT j.jobid FROM cron.job AS j
            WHERE j.jobname = public.auto_sync_dispatcher_job_name() AND j.username = current_user);
END
$fn$
"""

# Not SECURITY DEFINER, and the only function here whose search_path includes public:
# procrastinate's functions name their tables without a schema and set no search_path of their own.
CREATE_DEFER_RUNS = """
CREATE FUNCTION autosync_private.defer_cron_runs(run_ids uuid[], user_ids uuid[]) RETURNS integer
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
    GET DIAGNOSTICS queued = ROW_COUNT;
    RETURN queued;
END
$fn$
"""
REVOKE_DEFER_RUNS = "REVOKE EXECUTE ON FUNCTION autosync_private.defer_cron_runs(uuid[], uuid[]) FROM PUBLIC"

CREATE_DISPATCH = """
CREATE FUNCTION public.auto_sync_dispatch(as_of timestamptz DEFAULT now(), max_users integer DEFAULT 20000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
DECLARE
    run_ids uuid[];
    user_ids uuid[];
BEGIN
    IF (SELECT s.mode FROM autosync_private.scheduling AS s) <> 'dispatcher' THEN
        RETURN 0;
    END IF;
    WITH due AS (
        SELECT a.user_id FROM public.auto_sync_jobs AS a
        WHERE a.next_slot <= as_of
        ORDER BY a.next_slot
        LIMIT max_users
        FOR UPDATE SKIP LOCKED
    ), advanced AS (
        -- Past every missed slot at once: one catch-up run, not one per slot.
        UPDATE public.auto_sync_jobs AS a
        SET next_slot = autosync_private.next_slot(a.user_id, a.interval_minutes, as_of)
        FROM due WHERE a.user_id = due.user_id
        RETURNING a.user_id
    ), wanted AS (
        SELECT v.user_id FROM advanced AS v
        JOIN public.user_settings AS s ON s.user_id = v.user_id AND s.enabled
        -- A job still waiting under the user's queueing lock would fail the whole batch.
        WHERE NOT EXISTS (SELECT 1 FROM public.procrastinate_jobs AS j
                          WHERE j.queueing_lock = 'user:' || v.user_id AND j.status = 'todo')
    ), inserted AS (
        INSERT INTO public.sync_runs (user_id, trigger, status)
        SELECT w.user_id, 'cron', 'queued' FROM wanted AS w
        ON CONFLICT (user_id) WHERE status IN ('queued', 'running') DO NOTHING
        RETURNING id, user_id
    )
    SELECT pg_catalog.array_agg(i.id), pg_catalog.array_agg(i.user_id) INTO run_ids, user_ids
    FROM inserted AS i;
    RETURN autosync_private.defer_cron_runs(run_ids, user_ids);
END
$fn$
"""
COMMENT_DISPATCH = """
COMMENT ON FUNCTION public.auto_sync_dispatch(timestamptz, integer) IS
    'Queues one run for every user whose slot has come by `as_of` (at most max_users); returns how many'
"""

CREATE_SET_MODE = """
CREATE FUNCTION public.set_auto_sync_mode(mode text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
DECLARE
    previous text;
    period integer;
    job bigint;
BEGIN
    IF mode IS NULL OR mode NOT IN ('per_user', 'dispatcher') THEN
        RAISE EXCEPTION 'unknown auto-sync mode: % (supported: per_user, dispatcher)', coalesce(mode, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT s.mode, s.dispatch_period_seconds INTO previous, period
    FROM autosync_private.scheduling AS s FOR UPDATE;
    -- Wait for unschedule calls under way (they lock the row they delete, not the mode), so that no
    -- job is removed twice; later ones wait for this transaction and find the new state.
    PERFORM 1 FROM public.auto_sync_jobs AS a FOR UPDATE;
    IF mode = 'dispatcher' THEN
        FOR job IN
            SELECT j.jobid FROM cron.job AS j
            WHERE public.auto_sync_job_user(j.jobname) IS NOT NULL AND j.username = current_user
        LOOP
            PERFORM cron.unschedule(job);
        END LOOP;
        UPDATE public.auto_sync_jobs AS a
        SET cron_job_id = NULL,
            next_slot = coalesce(a.next_slot, autosync_private.next_slot(a.user_id, a.interval_minutes, now())),
            updated_at = now();
        job := cron.schedule(public.auto_sync_dispatcher_job_name(), period || ' seconds',
                             'SELECT public.auto_sync_dispatch()');
        -- A named re-schedule keeps a paused job paused; switching (again) means it runs.
        IF EXISTS (SELECT 1 FROM cron.job AS j WHERE j.jobid = job AND NOT j.active) THEN
            PERFORM cron.alter_job(job, active => true);
        END IF;
    ELSE
        FOR job IN
            SELECT j.jobid FROM cron.job AS j
            WHERE j.jobname = public.auto_sync_dispatcher_job_name() AND j.username = current_user
        LOOP
            PERFORM cron.unschedule(job);
        END LOOP;
        UPDATE public.auto_sync_jobs AS a
        SET cron_job_id = autosync_private.schedule_per_user_job(a.user_id, a.interval_minutes),
            next_slot = NULL,
            updated_at = now();
    END IF;
    UPDATE autosync_private.scheduling AS s SET mode = set_auto_sync_mode.mode;
    RETURN previous;
END
$fn$
"""
COMMENT_SET_MODE = """
COMMENT ON FUNCTION public.set_auto_sync_mode(text) IS
    'Switches auto-sync scheduling to per_user or dispatcher, moving the cron jobs; returns the previous mode'
"""

GRANTS = [
    "REVOKE EXECUTE ON FUNCTION public.auto_sync_slot_offset(uuid, integer) FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION public.auto_sync_slot_offset(uuid, integer) TO service_role",
    "REVOKE EXECUTE ON FUNCTION public.auto_sync_slot_at_or_before(uuid, integer, timestamptz) FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION public.auto_sync_slot_at_or_before(uuid, integer, timestamptz) TO service_role",
    "REVOKE EXECUTE ON FUNCTION public.auto_sync_mode() FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION public.auto_sync_mode() TO service_role",
    "REVOKE EXECUTE ON FUNCTION public.auto_sync_dispatcher_job_name() FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION public.auto_sync_dispatcher_job_name() TO service_role",
    # The owner's alone: the dispatch queues runs for everyone, the switch moves everyone's jobs.
    "REVOKE EXECUTE ON FUNCTION public.auto_sync_dispatch(timestamptz, integer) FROM PUBLIC",
    "REVOKE EXECUTE ON FUNCTION public.set_auto_sync_mode(text) FROM PUBLIC",
]

# Frozen copies restored by the downgrade. Keep them byte for byte.
RESTORE_SCHEDULE = """
CREATE OR REPLACE FUNCTION public.auto_sync_cron_schedule(user_id uuid, interval_minutes integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
DECLARE
    minutes integer := public.auto_sync_check_interval(interval_minutes);
    slot integer;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- 28 bits of the md5 keep the value positive in an integer.
    slot := ('x' || left(md5(user_id::text), 7))::bit(28)::integer % minutes;
    IF minutes < 60 THEN
        RETURN format('%s-59/%s * * * *', slot, minutes);
    ELSIF minutes = 60 THEN
        RETURN format('%s * * * *', slot);
    ELSIF minutes < 1440 THEN
        RETURN format('%s %s-23/%s * * *', slot % 60, slot / 60, minutes / 60);
    END IF;
    RETURN format('%s %s * * *', slot % 60, slot / 60);
END
$fn$
"""

RESTORE_UPSERT_JOB = """
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


def upgrade() -> None:
    for statement in (
        CREATE_OFFSET,
        COMMENT_OFFSET,
        REPLACE_SCHEDULE,
        CREATE_LAST_SLOT,
        COMMENT_LAST_SLOT,
        CREATE_SETTINGS,
        SEED_SETTINGS,
        REVOKE_SETTINGS,
        *ALTER_JOBS,
        CREATE_MODE,
        COMMENT_MODE,
        CREATE_DISPATCHER_JOB_NAME,
        CREATE_PER_USER_JOB,
        REVOKE_PER_USER_JOB,
        CREATE_NEXT_SLOT,
        REVOKE_NEXT_SLOT,
        REPLACE_UPSERT_JOB,
        CREATE_DEFER_RUNS,
        REVOKE_DEFER_RUNS,
        CREATE_DISPATCH,
        COMMENT_DISPATCH,
        CREATE_SET_MODE,
        COMMENT_SET_MODE,
        *GRANTS,
    ):
        op.execute(statement)


def downgrade() -> None:
    # Back to one job per user first, so that every scheduled user keeps a cron job.
    op.execute("SELECT public.set_auto_sync_mode('per_user')")
    op.execute(RESTORE_UPSERT_JOB)
    for function in (
        "public.set_auto_sync_mode(text)",
        "public.auto_sync_dispatch(timestamptz, integer)",
        "autosync_private.defer_cron_runs(uuid[], uuid[])",
        "autosync_private.next_slot(uuid, integer, timestamptz)",
        "autosync_private.schedule_per_user_job(uuid, integer)",
        "public.auto_sync_dispatcher_job_name()",
        "public.auto_sync_mode()",
    ):
        op.execute(f"DROP FUNCTION {function}")
    op.execute("DROP INDEX public.auto_sync_jobs_next_slot")
    op.execute("ALTER TABLE public.auto_sync_jobs DROP CONSTRAINT auto_sync_jobs_one_mode")
    op.execute("ALTER TABLE public.auto_sync_jobs DROP COLUMN next_slot")
    op.execute("ALTER TABLE public.auto_sync_jobs ALTER COLUMN cron_job_id SET NOT NULL")
    op.execute("DROP TABLE autosync_private.scheduling")
    op.execute("DROP FUNCTION public.auto_sync_slot_at_or_before(uuid, integer, timestamptz)")
    op.execute(RESTORE_SCHEDULE)
    op.execute("DROP FUNCTION public.auto_sync_slot_offset(uuid, integer)")
