"""auto_sync_jobs: which pg_cron job serves which user

One row per scheduled user, pointing at the pg_cron job. Deleting a row (directly, or through the
cascade when the user is deleted) also removes its cron job, so no job outlives its row.

Adopting the seed's table. Where the seed's migration ran, `public.auto_sync_jobs` exists with a row
per scheduled user. It is adopted in place (rows and OID kept): its job id column (`job_id`,
`jobid`) becomes `cron_job_id` (filled from cron.job by the job's name where it was empty), missing
columns and the unique constraint the scheduling functions name are added, and its policies and
grants give way to ours. Its other columns (`job_name`…) stay; the service never writes them, so a
NOT NULL on them is lifted. Revision 0008 then moves each user's job to its staggered schedule. The
changes are logged as undo statements (`autosync_seed.adopted`, see 0004): the downgrade gives the
table back in the seed's shape with its rows instead of dropping it.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
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

# Runs before CREATE TABLE IF NOT EXISTS: on a new database it does nothing. `undo` is a stack.
ADOPT_SEED_TABLE = f"""
DO $adopt$
DECLARE
    t regclass := to_regclass('public.auto_sync_jobs');
    undo text[] := '{{}}';
    job_col name;
    interval_col name;
    found_type regtype;
    found_not_null boolean;
    entry record;
    unique_name name;
BEGIN
    IF t IS NULL THEN
        RETURN;
    END IF;
    -- Adopting changes the table: only its owner may. Say who that is instead of a bare permission error.
    IF NOT pg_catalog.pg_has_role(current_user, (SELECT c.relowner FROM pg_catalog.pg_class AS c WHERE c.oid = t),
                                  'USAGE') THEN
        RAISE EXCEPTION 'public.auto_sync_jobs (the seed''s) belongs to %, not to %: it cannot be adopted',
            (SELECT c.relowner::regrole FROM pg_catalog.pg_class AS c WHERE c.oid = t), current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Run the upgrade as the role that ran the seed''s migration, or an administrator '
                                'runs: ALTER TABLE public.auto_sync_jobs OWNER TO %I;', current_user);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS a
                   WHERE a.attrelid = t AND a.attname = 'user_id' AND NOT a.attisdropped
                     AND a.atttypid = 'uuid'::regtype) THEN
        RAISE EXCEPTION 'public.auto_sync_jobs exists but has no uuid column user_id: it cannot be adopted'
            USING HINT = 'Rename the table (or its user column to user_id) and upgrade again.';
    END IF;
    IF EXISTS (SELECT 1 FROM public.auto_sync_jobs AS j WHERE j.user_id IS NULL)
       OR EXISTS (SELECT 1 FROM public.auto_sync_jobs AS j GROUP BY j.user_id HAVING count(*) > 1) THEN
        RAISE EXCEPTION 'public.auto_sync_jobs has rows without a user_id or several for one user: '
                        'it cannot be adopted'
            USING HINT = 'Keep one row per user_id, then upgrade again.';
    END IF;
    RAISE WARNING 'public.auto_sync_jobs exists (the seed''s): adopting it with its % rows',
        (SELECT count(*) FROM public.auto_sync_jobs);
    {CREATE_ADOPTION_RECORD}

    FOR entry IN
        SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                      ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END AS grantee
        FROM pg_catalog.pg_class AS c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
        WHERE c.oid = t AND a.grantee <> c.relowner
    LOOP
        undo := array_prepend(format('GRANT %s ON public.auto_sync_jobs TO %s', entry.privilege_type, entry.grantee), undo);
    END LOOP;
    undo := array_prepend('REVOKE ALL ON public.auto_sync_jobs FROM PUBLIC, anon, authenticated, service_role', undo);
    REVOKE ALL ON public.auto_sync_jobs FROM service_role;
    IF NOT (SELECT c.relrowsecurity FROM pg_catalog.pg_class AS c WHERE c.oid = t) THEN
        undo := array_prepend('ALTER TABLE public.auto_sync_jobs DISABLE ROW LEVEL SECURITY', undo);
    END IF;
    FOR entry IN SELECT * FROM pg_catalog.pg_policies AS p
                 WHERE p.schemaname = 'public' AND p.tablename = 'auto_sync_jobs' LOOP
        undo := array_prepend(format('CREATE POLICY %I ON public.auto_sync_jobs AS %s FOR %s TO %s%s%s',
                       entry.policyname, entry.permissive, entry.cmd,
                       (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
                        FROM unnest(entry.roles) AS r),
                       ' USING (' || entry.qual || ')', ' WITH CHECK (' || entry.with_check || ')'), undo);
        EXECUTE format('DROP POLICY %I ON public.auto_sync_jobs', entry.policyname);
        RAISE WARNING 'the seed''s policy % on public.auto_sync_jobs was replaced by auto_sync_jobs_select_own',
            entry.policyname;
    END LOOP;

    -- cron_job_id: ours, or the seed's name for it; filled by job name where empty.
    SELECT c.name INTO job_col
    FROM unnest(ARRAY['cron_job_id', 'job_id', 'jobid', 'cron_jobid']) WITH ORDINALITY AS c(name, n)
    JOIN pg_catalog.pg_attribute AS a ON a.attrelid = t AND a.attname = c.name AND NOT a.attisdropped
    ORDER BY c.n LIMIT 1;
    IF job_col IS NULL THEN
        ALTER TABLE public.auto_sync_jobs ADD COLUMN cron_job_id bigint;
        undo := array_prepend('ALTER TABLE public.auto_sync_jobs DROP COLUMN cron_job_id', undo);
    ELSIF job_col <> 'cron_job_id' THEN
        EXECUTE format('ALTER TABLE public.auto_sync_jobs RENAME COLUMN %I TO cron_job_id', job_col);
        undo := array_prepend(format('ALTER TABLE public.auto_sync_jobs RENAME COLUMN cron_job_id TO %I', job_col), undo);
        RAISE WARNING 'public.auto_sync_jobs.% is now public.auto_sync_jobs.cron_job_id', job_col;
    END IF;
    SELECT a.atttypid, a.attnotnull INTO found_type, found_not_null
    FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = t AND a.attname = 'cron_job_id';
    IF found_type <> 'bigint'::regtype THEN
        IF found_type NOT IN ('integer'::regtype, 'smallint'::regtype, 'numeric'::regtype) THEN
            RAISE EXCEPTION 'public.auto_sync_jobs.% is %, not a pg_cron job id: it cannot be adopted',
                job_col, found_type;
        END IF;
        ALTER TABLE public.auto_sync_jobs ALTER COLUMN cron_job_id TYPE bigint USING cron_job_id::bigint;
        undo := array_prepend(format('ALTER TABLE public.auto_sync_jobs ALTER COLUMN cron_job_id TYPE %s', found_type), undo);
    END IF;
    UPDATE public.auto_sync_jobs AS a SET cron_job_id = j.jobid
    FROM cron.job AS j
    WHERE a.cron_job_id IS NULL AND j.jobname = 'auto-sync-' || a.user_id AND j.username = current_user;
    -- Rows still without a job are settled by 0008 (scheduled again, or removed when auto-sync is off).
    IF NOT found_not_null AND NOT EXISTS (SELECT 1 FROM public.auto_sync_jobs WHERE cron_job_id IS NULL) THEN
        ALTER TABLE public.auto_sync_jobs ALTER COLUMN cron_job_id SET NOT NULL;
        undo := array_prepend('ALTER TABLE public.auto_sync_jobs ALTER COLUMN cron_job_id DROP NOT NULL', undo);
    END IF;

    -- interval_minutes: ours, or the seed's name for it (0008 writes the user's interval into it).
    SELECT c.name INTO interval_col
    FROM unnest(ARRAY['interval_minutes', 'auto_sync_interval_minutes', 'sync_interval_minutes', 'interval'])
         WITH ORDINALITY AS c(name, n)
    JOIN pg_catalog.pg_attribute AS a ON a.attrelid = t AND a.attname = c.name AND NOT a.attisdropped
    ORDER BY c.n LIMIT 1;
    IF interval_col IS NULL THEN
        ALTER TABLE public.auto_sync_jobs ADD COLUMN interval_minutes integer;
        undo := array_prepend('ALTER TABLE public.auto_sync_jobs DROP COLUMN interval_minutes', undo);
        UPDATE public.auto_sync_jobs AS a SET interval_minutes = s.interval_minutes
        FROM public.user_settings AS s WHERE s.user_id = a.user_id;
    ELSIF interval_col <> 'interval_minutes' THEN
        EXECUTE format('ALTER TABLE public.auto_sync_jobs RENAME COLUMN %I TO interval_minutes', interval_col);
        undo := array_prepend(format('ALTER TABLE public.auto_sync_jobs RENAME COLUMN interval_minutes TO %I', interval_col), undo);
    END IF;
    SELECT a.atttypid INTO found_type
    FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = t AND a.attname = 'interval_minutes';
    IF found_type <> 'integer'::regtype THEN
        ALTER TABLE public.auto_sync_jobs ALTER COLUMN interval_minutes TYPE integer USING interval_minutes::integer;
        undo := array_prepend(format('ALTER TABLE public.auto_sync_jobs ALTER COLUMN interval_minutes TYPE %s', found_type), undo);
    END IF;

    -- The scheduling functions upsert ON CONFLICT ON CONSTRAINT auto_sync_jobs_user_id_key.
    SELECT c.conname INTO unique_name
    FROM pg_catalog.pg_constraint AS c
    JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
    WHERE c.conrelid = t AND c.contype IN ('u', 'p') AND array_length(c.conkey, 1) = 1 AND a.attname = 'user_id'
    ORDER BY c.conname = 'auto_sync_jobs_user_id_key' DESC, c.contype DESC LIMIT 1;
    IF unique_name IS NULL THEN
        ALTER TABLE public.auto_sync_jobs ADD CONSTRAINT auto_sync_jobs_user_id_key UNIQUE (user_id);
        undo := array_prepend('ALTER TABLE public.auto_sync_jobs DROP CONSTRAINT auto_sync_jobs_user_id_key', undo);
    ELSIF unique_name <> 'auto_sync_jobs_user_id_key' THEN
        EXECUTE format('ALTER TABLE public.auto_sync_jobs RENAME CONSTRAINT %I TO auto_sync_jobs_user_id_key',
                       unique_name);
        undo := array_prepend(format('ALTER TABLE public.auto_sync_jobs RENAME CONSTRAINT auto_sync_jobs_user_id_key TO %I',
                       unique_name), undo);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                   WHERE c.conrelid = t AND c.contype = 'f' AND c.confrelid = 'auth.users'::regclass) THEN
        ALTER TABLE public.auto_sync_jobs ADD CONSTRAINT auto_sync_jobs_user_id_fkey
            FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE NOT VALID;
        undo := array_prepend('ALTER TABLE public.auto_sync_jobs DROP CONSTRAINT auto_sync_jobs_user_id_fkey', undo);
    END IF;
    FOR entry IN SELECT c.name FROM unnest(ARRAY['created_at', 'updated_at']) AS c(name) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS a
                       WHERE a.attrelid = t AND a.attname = entry.name AND NOT a.attisdropped) THEN
            EXECUTE format('ALTER TABLE public.auto_sync_jobs ADD COLUMN %I timestamptz NOT NULL DEFAULT now()',
                           entry.name);
            undo := array_prepend(format('ALTER TABLE public.auto_sync_jobs DROP COLUMN %I', entry.name), undo);
        END IF;
    END LOOP;
    FOR entry IN SELECT a.attname FROM pg_catalog.pg_attribute AS a
                 LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull
                   AND d.adbin IS NULL AND a.attidentity = '' AND a.attgenerated = ''
                   AND a.attname NOT IN ('user_id', 'cron_job_id', 'interval_minutes')
                   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index AS i
                                   WHERE i.indrelid = t AND i.indisprimary AND a.attnum = ANY (i.indkey)) LOOP
        EXECUTE format('ALTER TABLE public.auto_sync_jobs ALTER COLUMN %I DROP NOT NULL', entry.attname);
        -- Rows the service wrote since have no value there: then the column stays nullable, and says so.
        undo := array_prepend(format(
            'DO $u$ BEGIN IF EXISTS (SELECT 1 FROM public.auto_sync_jobs WHERE %1$I IS NULL) THEN '
            'RAISE WARNING ''public.auto_sync_jobs.%1$s stays nullable: rows written since the upgrade have no value''; '
            'ELSE ALTER TABLE public.auto_sync_jobs ALTER COLUMN %1$I SET NOT NULL; END IF; END $u$',
            entry.attname), undo);
        RAISE WARNING 'public.auto_sync_jobs.% may now be NULL: the service does not write it', entry.attname;
    END LOOP;

    INSERT INTO autosync_seed.adopted (step, undo) VALUES ('auto_sync_jobs', undo);
END
$adopt$
"""

# IF NOT EXISTS: an adopted table is already in this shape (a NOTICE says it was skipped).
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS public.auto_sync_jobs (
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

# A table this revision created goes, with every row's cron job (through the trigger). An adopted
# one goes back to the seed's shape with its rows, and the jobs stay (0008's downgrade gave them back).
DROP_OR_GIVE_BACK = """
DO $down$
DECLARE
    undo text[];
    statement text;
BEGIN
    IF to_regclass('autosync_seed.adopted') IS NOT NULL THEN
        SELECT a.undo INTO undo FROM autosync_seed.adopted AS a WHERE a.step = 'auto_sync_jobs';
    END IF;
    IF undo IS NULL THEN
        DELETE FROM public.auto_sync_jobs;
        DROP TABLE public.auto_sync_jobs;
        RETURN;
    END IF;
    DROP TRIGGER auto_sync_jobs_unschedule_cron ON public.auto_sync_jobs;
    DROP POLICY auto_sync_jobs_select_own ON public.auto_sync_jobs;
    FOREACH statement IN ARRAY undo LOOP
        EXECUTE statement;
    END LOOP;
    RAISE WARNING 'public.auto_sync_jobs is the seed''s again, with its % rows',
        (SELECT count(*) FROM public.auto_sync_jobs);
    DELETE FROM autosync_seed.adopted AS a WHERE a.step = 'auto_sync_jobs';
    IF NOT EXISTS (SELECT 1 FROM autosync_seed.adopted) THEN
        DROP TABLE autosync_seed.adopted;
        DROP SCHEMA autosync_seed;
    END IF;
END
$down$
"""


def upgrade() -> None:
    op.execute(ADOPT_SEED_TABLE)
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
    op.execute(DROP_OR_GIVE_BACK)
    op.execute("DROP FUNCTION public.auto_sync_jobs_unschedule_cron()")
