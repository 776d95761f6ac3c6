"""Private store for the service key, and the function URL setting

The key that authenticates pg_cron's calls to the sync function is a secret. A custom GUC is
readable by every role, and cron.job / cron.job_run_details / the server log keep command text, so
the key lives in a table in a schema no other role can use. Only the owner may write it
(`autosync_private.set_service_key`); only `trigger_auto_sync` reads it.

The function URL is not secret and must outlive the session (each pg_cron run opens a new one), so
it is a database setting: `autosync_private.set_sync_function_url(url)` runs
ALTER DATABASE … SET app.settings.sync_function_url.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CREATE_SCHEMA = "CREATE SCHEMA autosync_private"
REVOKE_SCHEMA = "REVOKE ALL ON SCHEMA autosync_private FROM PUBLIC"
COMMENT_SCHEMA = """
COMMENT ON SCHEMA autosync_private IS
    'autosync internals and secrets: usable by the owner only'
"""

CREATE_TABLE = """
CREATE TABLE autosync_private.service_key (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""
REVOKE_TABLE = "REVOKE ALL ON autosync_private.service_key FROM PUBLIC"

CREATE_SET_KEY = """
CREATE FUNCTION autosync_private.set_service_key(new_key text) RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
BEGIN
    IF new_key IS NULL OR length(new_key) < 32 THEN
        RAISE EXCEPTION 'the service key must be at least 32 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Generate one, e.g. python -c "import secrets; print(secrets.token_urlsafe(48))"';
    END IF;
    INSERT INTO autosync_private.service_key AS k (singleton, key)
    VALUES (true, new_key)
    ON CONFLICT (singleton) DO UPDATE SET key = excluded.key, updated_at = now();
END
$fn$
"""
COMMENT_SET_KEY = """
COMMENT ON FUNCTION autosync_private.set_service_key(text) IS
    'Stores the key that trigger_auto_sync sends as its bearer token. Owner only; pass the key as a '
    'bind parameter so that it never appears in statement text.'
"""
REVOKE_SET_KEY = "REVOKE EXECUTE ON FUNCTION autosync_private.set_service_key(text) FROM PUBLIC"

CREATE_CLEAR_KEY = """
CREATE FUNCTION autosync_private.clear_service_key() RETURNS void
LANGUAGE sql
SET search_path = ''
AS $fn$
    DELETE FROM autosync_private.service_key
$fn$
"""
REVOKE_CLEAR_KEY = "REVOKE EXECUTE ON FUNCTION autosync_private.clear_service_key() FROM PUBLIC"

# ALTER DATABASE takes no parameters, so the URL is quoted with format(%L) after validation.
CREATE_SET_URL = """
CREATE FUNCTION autosync_private.set_sync_function_url(url text) RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
BEGIN
    IF url IS NULL OR url !~ '^https?://[^/[:space:]]+(/[^[:space:]]*)?$' THEN
        RAISE EXCEPTION 'invalid sync function URL: %', coalesce(url, 'null')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the base URL of the sync function, e.g. http://127.0.0.1:8000';
    END IF;
    EXECUTE format('ALTER DATABASE %I SET app.settings.sync_function_url = %L',
                   current_database(), rtrim(url, '/'));
END
$fn$
"""
REVOKE_SET_URL = "REVOKE EXECUTE ON FUNCTION autosync_private.set_sync_function_url(text) FROM PUBLIC"

CREATE_RESET_URL = """
CREATE FUNCTION autosync_private.reset_sync_function_url() RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
BEGIN
    EXECUTE format('ALTER DATABASE %I RESET app.settings.sync_function_url', current_database());
END
$fn$
"""
REVOKE_RESET_URL = "REVOKE EXECUTE ON FUNCTION autosync_private.reset_sync_function_url() FROM PUBLIC"

# For health checks by the service: tells whether a key is stored, never the key.
CREATE_KEY_IS_SET = """
CREATE FUNCTION public.auto_sync_service_key_is_set() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT EXISTS (SELECT 1 FROM autosync_private.service_key)
$fn$
"""
REVOKE_KEY_IS_SET = "REVOKE EXECUTE ON FUNCTION public.auto_sync_service_key_is_set() FROM PUBLIC"
GRANT_KEY_IS_SET = "GRANT EXECUTE ON FUNCTION public.auto_sync_service_key_is_set() TO service_role"

RESET_DATABASE_SETTINGS = """
DO $reset$
BEGIN
    EXECUTE format('ALTER DATABASE %I RESET app.settings.sync_function_url', current_database());
END
$reset$
"""


def upgrade() -> None:
    for statement in (
        CREATE_SCHEMA,
        REVOKE_SCHEMA,
        COMMENT_SCHEMA,
        CREATE_TABLE,
        REVOKE_TABLE,
        CREATE_SET_KEY,
        COMMENT_SET_KEY,
        REVOKE_SET_KEY,
        CREATE_CLEAR_KEY,
        REVOKE_CLEAR_KEY,
        CREATE_SET_URL,
        REVOKE_SET_URL,
        CREATE_RESET_URL,
        REVOKE_RESET_URL,
        CREATE_KEY_IS_SET,
        REVOKE_KEY_IS_SET,
        GRANT_KEY_IS_SET,
    ):
        op.execute(statement)


def downgrade() -> None:
    op.execute(RESET_DATABASE_SETTINGS)
    op.execute("DROP FUNCTION public.auto_sync_service_key_is_set()")
    op.execute("DROP FUNCTION autosync_private.reset_sync_function_url()")
    op.execute("DROP FUNCTION autosync_private.set_sync_function_url(text)")
    op.execute("DROP FUNCTION autosync_private.clear_service_key()")
    op.execute("DROP FUNCTION autosync_private.set_service_key(text)")
    op.execute("DROP TABLE autosync_private.service_key")
    op.execute("DROP SCHEMA autosync_private")
