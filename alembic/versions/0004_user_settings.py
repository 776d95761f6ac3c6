"""user_settings: each user's auto-sync choice

Users read their own row (RLS); writes go through the service, which updates the row and the
cron job in one transaction, so that the two never drift apart.

Adopting the seed's table. A database where the seed's migration ran (the Supabase setup this
project grew from) already has a `public.user_settings` holding every user's choice. It is adopted
where it is, rows and OID kept, never recreated: its enabled and interval columns are renamed to
ours (`auto_sync_enabled`, `auto_sync_interval_minutes`… → `enabled`, `interval_minutes`), missing
columns and constraints are added, and its policies and grants give way to ours. An interval that
is not supported (45, 90…) becomes the longest supported one not longer than it (45 → 30, 90 → 60:
what the seed's `*/45` and hourly schedules fired at on average anyway; below 5 → 5, unset → 60),
one WARNING per user in the upgrade's output, and recorded in `autosync_seed.intervals` for
`autosync doctor`. Everything changed is logged as an undo statement in `autosync_seed.adopted`, so
the downgrade gives the table back in the seed's shape with its rows (users added since included)
instead of dropping it; a NULL the upgrade had to fill (enabled unset) is not restored.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Where adoption keeps what it changed; created only on a database that had the seed's objects.
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

# Runs before CREATE TABLE IF NOT EXISTS: on a new database it does nothing. `undo` is a stack
# (each step is prepended), so the downgrade runs it in order and undoes the last change first.
ADOPT_SEED_TABLE = f"""
DO $adopt$
DECLARE
    t regclass := to_regclass('public.user_settings');
    undo text[] := '{{}}';
    supported integer[] := public.auto_sync_supported_intervals();
    enabled_col name;
    interval_col name;
    found_type regtype;
    found_default text;
    found_not_null boolean;
    entry record;
    filled bigint;
BEGIN
    IF t IS NULL THEN
        RETURN;
    END IF;
    -- Adopting changes the table: only its owner may. Say who that is instead of a bare permission error.
    IF NOT pg_catalog.pg_has_role(current_user, (SELECT c.relowner FROM pg_catalog.pg_class AS c WHERE c.oid = t),
                                  'USAGE') THEN
        RAISE EXCEPTION 'public.user_settings (the seed''s) belongs to %, not to %: it cannot be adopted',
            (SELECT c.relowner::regrole FROM pg_catalog.pg_class AS c WHERE c.oid = t), current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Run the upgrade as the role that ran the seed''s migration, or an administrator '
                                'runs: ALTER TABLE public.user_settings OWNER TO %I;', current_user);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS a
                   WHERE a.attrelid = t AND a.attname = 'user_id' AND NOT a.attisdropped
                     AND a.atttypid = 'uuid'::regtype) THEN
        RAISE EXCEPTION 'public.user_settings exists but has no uuid column user_id: it cannot be adopted'
            USING HINT = 'Rename the table (or its user column to user_id) and upgrade again.';
    END IF;
    IF EXISTS (SELECT 1 FROM public.user_settings AS s WHERE s.user_id IS NULL) THEN
        RAISE EXCEPTION 'public.user_settings has rows without a user_id: they cannot be adopted'
            USING HINT = 'Delete or fix those rows (SELECT * FROM public.user_settings WHERE user_id IS NULL).';
    END IF;
    IF EXISTS (SELECT 1 FROM public.user_settings AS s GROUP BY s.user_id HAVING count(*) > 1) THEN
        RAISE EXCEPTION 'public.user_settings has several rows for one user: they cannot be adopted'
            USING HINT = 'Keep one row per user_id, then upgrade again.';
    END IF;
    RAISE WARNING 'public.user_settings exists (the seed''s): adopting it with its % rows',
        (SELECT count(*) FROM public.user_settings);
    {CREATE_ADOPTION_RECORD}
    CREATE TABLE autosync_seed.intervals (
        user_id uuid PRIMARY KEY,
        seed_interval integer,
        interval_minutes integer NOT NULL,
        enabled boolean NOT NULL
    );
    REVOKE ALL ON autosync_seed.intervals FROM PUBLIC;

    -- The seed's grants and policies come back last; ours replace them (Supabase grants everything
    -- to anon and authenticated by default, and the seed's policies may let users write their row).
    FOR entry IN
        SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                      ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END AS grantee
        FROM pg_catalog.pg_class AS c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
        WHERE c.oid = t AND a.grantee <> c.relowner
    LOOP
        undo := array_prepend(format('GRANT %s ON public.user_settings TO %s', entry.privilege_type, entry.grantee), undo);
    END LOOP;
    undo := array_prepend('REVOKE ALL ON public.user_settings FROM PUBLIC, anon, authenticated, service_role', undo);
    REVOKE ALL ON public.user_settings FROM service_role;
    IF NOT (SELECT c.relrowsecurity FROM pg_catalog.pg_class AS c WHERE c.oid = t) THEN
        undo := array_prepend('ALTER TABLE public.user_settings DISABLE ROW LEVEL SECURITY', undo);
    END IF;
    FOR entry IN SELECT * FROM pg_catalog.pg_policies AS p
                 WHERE p.schemaname = 'public' AND p.tablename = 'user_settings' LOOP
        undo := array_prepend(format('CREATE POLICY %I ON public.user_settings AS %s FOR %s TO %s%s%s',
                       entry.policyname, entry.permissive, entry.cmd,
                       (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
                        FROM unnest(entry.roles) AS r),
                       ' USING (' || entry.qual || ')', ' WITH CHECK (' || entry.with_check || ')'), undo);
        EXECUTE format('DROP POLICY %I ON public.user_settings', entry.policyname);
        RAISE WARNING 'the seed''s policy % on public.user_settings was replaced by user_settings_select_own '
                      '(users read their own row; writes go through the service)', entry.policyname;
    END LOOP;

    -- enabled: ours, or the seed's name for it.
    SELECT c.name INTO enabled_col
    FROM unnest(ARRAY['enabled', 'auto_sync_enabled', 'sync_enabled', 'is_enabled', 'auto_sync'])
         WITH ORDINALITY AS c(name, n)
    JOIN pg_catalog.pg_attribute AS a ON a.attrelid = t AND a.attname = c.name AND NOT a.attisdropped
    ORDER BY c.n LIMIT 1;
    IF enabled_col IS NULL THEN
        ALTER TABLE public.user_settings ADD COLUMN enabled boolean NOT NULL DEFAULT false;
        undo := array_prepend('ALTER TABLE public.user_settings DROP COLUMN enabled', undo);
        RAISE WARNING 'public.user_settings had no enabled column: added, auto-sync off for everyone';
    ELSE
        IF enabled_col <> 'enabled' THEN
            EXECUTE format('ALTER TABLE public.user_settings RENAME COLUMN %I TO enabled', enabled_col);
            undo := array_prepend(format('ALTER TABLE public.user_settings RENAME COLUMN enabled TO %I', enabled_col), undo);
            RAISE WARNING 'public.user_settings.% is now public.user_settings.enabled', enabled_col;
        END IF;
        SELECT a.atttypid, pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attnotnull
        INTO found_type, found_default, found_not_null
        FROM pg_catalog.pg_attribute AS a
        LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = t AND a.attname = 'enabled';
        IF found_type <> 'boolean'::regtype THEN
            RAISE EXCEPTION 'public.user_settings.% is %, not boolean: it cannot be adopted', enabled_col, found_type;
        END IF;
        undo := array_prepend(format('ALTER TABLE public.user_settings ALTER COLUMN enabled %s',
                       coalesce('SET DEFAULT ' || found_default, 'DROP DEFAULT')), undo);
        ALTER TABLE public.user_settings ALTER COLUMN enabled SET DEFAULT false;
        IF NOT found_not_null THEN
            UPDATE public.user_settings SET enabled = false WHERE enabled IS NULL;
            GET DIAGNOSTICS filled = ROW_COUNT;
            IF filled > 0 THEN
                RAISE WARNING '% user(s) had auto-sync neither on nor off (NULL): now off', filled;
            END IF;
            ALTER TABLE public.user_settings ALTER COLUMN enabled SET NOT NULL;
            undo := array_prepend('ALTER TABLE public.user_settings ALTER COLUMN enabled DROP NOT NULL', undo);
        END IF;
    END IF;

    -- interval_minutes: ours, or the seed's name for it; integer.
    SELECT c.name INTO interval_col
    FROM unnest(ARRAY['interval_minutes', 'auto_sync_interval_minutes', 'auto_sync_interval',
                      'sync_interval_minutes', 'sync_interval'])
         WITH ORDINALITY AS c(name, n)
    JOIN pg_catalog.pg_attribute AS a ON a.attrelid = t AND a.attname = c.name AND NOT a.attisdropped
    ORDER BY c.n LIMIT 1;
    IF interval_col IS NULL THEN
        ALTER TABLE public.user_settings ADD COLUMN interval_minutes integer;
        undo := array_prepend('ALTER TABLE public.user_settings DROP COLUMN interval_minutes', undo);
    ELSIF interval_col <> 'interval_minutes' THEN
        EXECUTE format('ALTER TABLE public.user_settings RENAME COLUMN %I TO interval_minutes', interval_col);
        undo := array_prepend(format('ALTER TABLE public.user_settings RENAME COLUMN interval_minutes TO %I', interval_col), undo);
        RAISE WARNING 'public.user_settings.% is now public.user_settings.interval_minutes', interval_col;
    END IF;
    SELECT a.atttypid, pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attnotnull
    INTO found_type, found_default, found_not_null
    FROM pg_catalog.pg_attribute AS a
    LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = t AND a.attname = 'interval_minutes';
    IF found_type <> 'integer'::regtype THEN
        IF found_type NOT IN ('smallint'::regtype, 'bigint'::regtype, 'numeric'::regtype) THEN
            RAISE EXCEPTION 'public.user_settings.% is %, not a number of minutes: it cannot be adopted',
                interval_col, found_type;
        END IF;
        ALTER TABLE public.user_settings ALTER COLUMN interval_minutes TYPE integer USING interval_minutes::integer;
        undo := array_prepend(format('ALTER TABLE public.user_settings ALTER COLUMN interval_minutes TYPE %s', found_type), undo);
    END IF;
    undo := array_prepend(format('ALTER TABLE public.user_settings ALTER COLUMN interval_minutes %s',
                   coalesce('SET DEFAULT ' || found_default, 'DROP DEFAULT')), undo);
    ALTER TABLE public.user_settings ALTER COLUMN interval_minutes SET DEFAULT 60;
    IF NOT found_not_null THEN
        undo := array_prepend('ALTER TABLE public.user_settings ALTER COLUMN interval_minutes DROP NOT NULL', undo);
    END IF;

    -- Unsupported intervals: the longest supported one not longer (at least the shortest; unset: 60).
    INSERT INTO autosync_seed.intervals (user_id, seed_interval, interval_minutes, enabled)
    SELECT s.user_id, s.interval_minutes,
           CASE WHEN s.interval_minutes IS NULL THEN 60
                ELSE coalesce((SELECT max(m) FROM unnest(supported) AS m WHERE m <= s.interval_minutes),
                              supported[1]) END,
           s.enabled
    FROM public.user_settings AS s
    WHERE s.interval_minutes IS NULL OR NOT s.interval_minutes = ANY (supported);
    UPDATE public.user_settings AS s SET interval_minutes = i.interval_minutes
    FROM autosync_seed.intervals AS i WHERE i.user_id = s.user_id;
    undo := array_prepend('UPDATE public.user_settings AS s SET interval_minutes = i.seed_interval '
            'FROM autosync_seed.intervals AS i '
            'WHERE i.user_id = s.user_id AND s.interval_minutes = i.interval_minutes', undo);
    FOR entry IN SELECT * FROM autosync_seed.intervals AS i ORDER BY i.user_id LOOP
        RAISE WARNING 'user %: auto-sync interval % is not supported; now every % min (auto-sync %)',
            entry.user_id, coalesce(entry.seed_interval || ' min', 'unset'), entry.interval_minutes,
            CASE WHEN entry.enabled THEN 'on' ELSE 'off' END;
    END LOOP;
    ALTER TABLE public.user_settings ALTER COLUMN interval_minutes SET NOT NULL;
    ALTER TABLE public.user_settings ADD CONSTRAINT user_settings_interval_supported
        CHECK (interval_minutes = ANY (public.auto_sync_supported_intervals()));
    undo := array_prepend('ALTER TABLE public.user_settings DROP CONSTRAINT user_settings_interval_supported', undo);

    -- What the service relies on: one row per user (ON CONFLICT (user_id)), tied to auth.users,
    -- timestamps it does not write, and no other column it would have to fill.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index AS i
                   JOIN pg_catalog.pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                   WHERE i.indrelid = t AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL
                     AND a.attname = 'user_id') THEN
        ALTER TABLE public.user_settings ADD CONSTRAINT user_settings_user_id_key UNIQUE (user_id);
        undo := array_prepend('ALTER TABLE public.user_settings DROP CONSTRAINT user_settings_user_id_key', undo);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                   WHERE c.conrelid = t AND c.contype = 'f' AND c.confrelid = 'auth.users'::regclass) THEN
        ALTER TABLE public.user_settings ADD CONSTRAINT user_settings_user_id_fkey
            FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE NOT VALID;
        undo := array_prepend('ALTER TABLE public.user_settings DROP CONSTRAINT user_settings_user_id_fkey', undo);
    END IF;
    FOR entry IN SELECT c.name FROM unnest(ARRAY['created_at', 'updated_at']) AS c(name) LOOP
        SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) INTO found_default
        FROM pg_catalog.pg_attribute AS a
        LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = t AND a.attname = entry.name AND NOT a.attisdropped;
        IF NOT FOUND THEN
            EXECUTE format('ALTER TABLE public.user_settings ADD COLUMN %I timestamptz NOT NULL DEFAULT now()',
                           entry.name);
            undo := array_prepend(format('ALTER TABLE public.user_settings DROP COLUMN %I', entry.name), undo);
        ELSIF found_default IS NULL THEN
            EXECUTE format('ALTER TABLE public.user_settings ALTER COLUMN %I SET DEFAULT now()', entry.name);
            undo := array_prepend(format('ALTER TABLE public.user_settings ALTER COLUMN %I DROP DEFAULT', entry.name), undo);
        END IF;
    END LOOP;
    FOR entry IN SELECT a.attname FROM pg_catalog.pg_attribute AS a
                 LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull
                   AND d.adbin IS NULL AND a.attidentity = '' AND a.attgenerated = ''
                   AND a.attname NOT IN ('user_id', 'enabled', 'interval_minutes', 'created_at', 'updated_at')
                   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index AS i
                                   WHERE i.indrelid = t AND i.indisprimary AND a.attnum = ANY (i.indkey)) LOOP
        EXECUTE format('ALTER TABLE public.user_settings ALTER COLUMN %I DROP NOT NULL', entry.attname);
        -- Rows the service wrote since have no value there: then the column stays nullable, and says so.
        undo := array_prepend(format(
            'DO $u$ BEGIN IF EXISTS (SELECT 1 FROM public.user_settings WHERE %1$I IS NULL) THEN '
            'RAISE WARNING ''public.user_settings.%1$s stays nullable: rows written since the upgrade have no value''; '
            'ELSE ALTER TABLE public.user_settings ALTER COLUMN %1$I SET NOT NULL; END IF; END $u$',
            entry.attname), undo);
        RAISE WARNING 'public.user_settings.% may now be NULL: the service does not write it', entry.attname;
    END LOOP;

    INSERT INTO autosync_seed.adopted (step, undo) VALUES ('user_settings', undo);
END
$adopt$
"""

# IF NOT EXISTS: an adopted table is already in this shape (a NOTICE says it was skipped).
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS public.user_settings (
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

# An adopted table goes back to the seed's shape, rows kept; a table this revision created is dropped.
DROP_OR_GIVE_BACK = """
DO $down$
DECLARE
    undo text[];
    statement text;
BEGIN
    IF to_regclass('autosync_seed.adopted') IS NOT NULL THEN
        SELECT a.undo INTO undo FROM autosync_seed.adopted AS a WHERE a.step = 'user_settings';
    END IF;
    IF undo IS NULL THEN
        DROP TABLE public.user_settings;
        RETURN;
    END IF;
    DROP POLICY user_settings_select_own ON public.user_settings;
    FOREACH statement IN ARRAY undo LOOP
        EXECUTE statement;
    END LOOP;
    RAISE WARNING 'public.user_settings is the seed''s again, with its % rows (users added since included)',
        (SELECT count(*) FROM public.user_settings);
    DROP TABLE autosync_seed.intervals;
    DELETE FROM autosync_seed.adopted AS a WHERE a.step = 'user_settings';
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


def downgrade() -> None:
    op.execute(DROP_OR_GIVE_BACK)
