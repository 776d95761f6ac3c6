"""trigger_auto_sync: what each pg_cron run calls

POSTs {"user_id": …} to <app.settings.sync_function_url>/functions/v1/auto-sync with the service key
as bearer token. pgsql-http calls block and do not fail on an HTTP error status, so timeouts are set
explicitly and any status >= 400 raises: a failed call must show as failed in cron.job_run_details.
The key goes into the request as a bind parameter, so no statement text, log line or error message
carries it.

Adopting the seed's function. Where the seed's migration ran, `public.trigger_auto_sync` exists (its
body reads the URL and the key from `app.settings.*` GUCs). It is replaced under the same name and
signature: its definition and grants are logged as undo statements (`autosync_seed.adopted`, see
0004), then it is dropped (its return type may differ, which CREATE OR REPLACE cannot change) and
this revision's is created. The downgrade drops ours and gives the seed's back, and says that the
key it reads is not put back into a GUC (0024 moved it).

Timeouts (milliseconds) can be tuned per database:
    ALTER DATABASE … SET app.settings.sync_function_connect_timeout_ms = '2000';
    ALTER DATABASE … SET app.settings.sync_function_timeout_ms = '5000';

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
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

# Any public.trigger_auto_sync before this revision is the seed's. `undo` is a stack (see 0004):
# the downgrade creates the function, then sets its grants.
ADOPT_SEED_FUNCTION = f"""
DO $adopt$
DECLARE
    undo text[] := '{{}}';
    found record;
    acl record;
BEGIN
    FOR found IN SELECT p.oid, p.oid::regprocedure::text AS signature, p.proacl, p.proowner
                 FROM pg_catalog.pg_proc AS p
                 WHERE p.pronamespace = 'public'::regnamespace AND p.proname = 'trigger_auto_sync' LOOP
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
        RAISE WARNING 'the seed''s function % was replaced by this project''s trigger_auto_sync(uuid)',
            found.signature;
    END LOOP;
    IF undo <> '{{}}' THEN
        {CREATE_ADOPTION_RECORD}
        INSERT INTO autosync_seed.adopted (step, undo) VALUES ('trigger_auto_sync', undo);
    END IF;
END
$adopt$
"""

CREATE_TRIGGER_FUNCTION = """
CREATE FUNCTION public.trigger_auto_sync(user_id uuid) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
DECLARE
    base_url text := nullif(current_setting('app.settings.sync_function_url', true), '');
    connect_ms text := coalesce(
        nullif(current_setting('app.settings.sync_function_connect_timeout_ms', true), ''), '2000');
    total_ms text := coalesce(
        nullif(current_setting('app.settings.sync_function_timeout_ms', true), ''), '5000');
    target text;
    bearer text;
    http_schema name;
    status integer;
    body text;
BEGIN
    IF trigger_auto_sync.user_id IS NULL THEN
        RAISE EXCEPTION 'trigger_auto_sync: user_id must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF base_url IS NULL THEN
        RAISE EXCEPTION 'trigger_auto_sync: app.settings.sync_function_url is not configured'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'As the owner: SELECT autosync_private.set_sync_function_url(''http://host:port'');';
    END IF;
    SELECT 'Bearer ' || k.key INTO bearer FROM autosync_private.service_key AS k;
    IF bearer IS NULL THEN
        RAISE EXCEPTION 'trigger_auto_sync: the service key is not configured'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'As the owner: SELECT autosync_private.set_service_key($1) with the key as parameter.';
    END IF;
    SELECT e.extnamespace::regnamespace::name INTO http_schema
    FROM pg_catalog.pg_extension AS e WHERE e.extname = 'http';
    target := rtrim(base_url, '/') || '/functions/v1/auto-sync';

    EXECUTE format('SELECT %1$I.http_set_curlopt(''CURLOPT_CONNECTTIMEOUT_MS'', $1), '
                   '%1$I.http_set_curlopt(''CURLOPT_TIMEOUT_MS'', $2)', http_schema)
        USING connect_ms, total_ms;
    BEGIN
        EXECUTE format(
            'SELECT r.status, r.content FROM %1$I.http(ROW(''POST'', $1, '
            'ARRAY[%1$I.http_header(''Authorization'', $2)], ''application/json'', $3)::%1$I.http_request) AS r',
            http_schema)
            INTO status, body
            USING target, bearer, pg_catalog.json_build_object('user_id', trigger_auto_sync.user_id)::text;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'trigger_auto_sync: POST % failed: %', target, SQLERRM
            USING ERRCODE = 'connection_failure';
    END;
    IF status >= 400 THEN
        RAISE EXCEPTION 'trigger_auto_sync: POST % answered HTTP %: %', target, status, left(body, 300)
            USING ERRCODE = 'external_routine_exception';
    END IF;
    RETURN status;
END
$fn$
"""

COMMENT = """
COMMENT ON FUNCTION public.trigger_auto_sync(uuid) IS
    'Asks the sync function to import mail for one user; raises on transport errors and HTTP >= 400'
"""

REVOKE = "REVOKE EXECUTE ON FUNCTION public.trigger_auto_sync(uuid) FROM PUBLIC"
GRANT = "GRANT EXECUTE ON FUNCTION public.trigger_auto_sync(uuid) TO service_role"


# The seed's function is created with its body unchecked: it was written for the seed's objects.
GIVE_BACK_SEED_FUNCTION = """
DO $down$
DECLARE
    undo text[];
    statement text;
BEGIN
    IF to_regclass('autosync_seed.adopted') IS NOT NULL THEN
        SELECT a.undo INTO undo FROM autosync_seed.adopted AS a WHERE a.step = 'trigger_auto_sync';
    END IF;
    IF undo IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('check_function_bodies', 'off', true);
    FOREACH statement IN ARRAY undo LOOP
        EXECUTE statement;
    END LOOP;
    PERFORM pg_catalog.set_config('check_function_bodies', 'on', true);
    DELETE FROM autosync_seed.adopted AS a WHERE a.step = 'trigger_auto_sync';
    IF NOT EXISTS (SELECT 1 FROM autosync_seed.adopted) THEN
        DROP TABLE autosync_seed.adopted;
        DROP SCHEMA autosync_seed;
    END IF;
    RAISE WARNING 'the seed''s trigger_auto_sync is back; the service key it may read from '
                  'app.settings.service_role_key is not put back into that GUC (every role could read it)'
        USING HINT = 'If the seed''s jobs must run again: ALTER DATABASE <db> SET app.settings.service_role_key '
                     '= ''<key>'' (and app.settings.supabase_url), as the seed''s setup did.';
END
$down$
"""


def upgrade() -> None:
    op.execute(ADOPT_SEED_FUNCTION)
    op.execute(CREATE_TRIGGER_FUNCTION)
    op.execute(COMMENT)
    op.execute(REVOKE)
    op.execute(GRANT)


def downgrade() -> None:
    op.execute("DROP FUNCTION public.trigger_auto_sync(uuid)")
    op.execute(GIVE_BACK_SEED_FUNCTION)
