"""trigger_auto_sync: what each pg_cron run calls

POSTs {"user_id": …} to <app.settings.sync_function_url>/functions/v1/auto-sync with the service key
as bearer token. pgsql-http calls block and do not fail on an HTTP error status, so timeouts are set
explicitly and any status >= 400 raises: a failed call must show as failed in cron.job_run_details.
The key goes into the request as a bind parameter, so no statement text, log line or error message
carries it.

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


def upgrade() -> None:
    op.execute(CREATE_TRIGGER_FUNCTION)
    op.execute(COMMENT)
    op.execute(REVOKE)
    op.execute(GRANT)


def downgrade() -> None:
    op.execute("DROP FUNCTION public.trigger_auto_sync(uuid)")
