"""Say which grant is missing when the owner is not superuser (managed Postgres)

On a managed Postgres (Supabase, RDS, Cloud SQL) the migration role owns the database but is not
superuser. Storing the function URL runs `ALTER DATABASE … SET app.settings.sync_function_url`,
and PostgreSQL lets a non-superuser set a custom parameter only when it was granted SET on it
(PostgreSQL 15+). Without that grant the error was a bare "permission denied to set parameter";
now it names the grant and the statement an administrator runs. The bodies are otherwise those of
revision 0006, which the downgrade restores.

Revision ID: 0023
Revises: 0022
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_MISSING_GRANT = """
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'role % may not set app.settings.sync_function_url on database %',
                current_user, current_database()
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Storing the function URL runs ALTER DATABASE ... SET, which needs SET on that '
                           'parameter for a role that is not superuser (managed Postgres).',
                  HINT = format('An administrator runs: GRANT SET ON PARAMETER app.settings.sync_function_url '
                                'TO %I;  (PostgreSQL 15 or later)', current_user);
"""

SET_URL = """
CREATE OR REPLACE FUNCTION autosync_private.set_sync_function_url(url text) RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
BEGIN
    IF url IS NULL OR url !~ '^https?://[^/[:space:]]+(/[^[:space:]]*)?$' THEN
        RAISE EXCEPTION 'invalid sync function URL: %', coalesce(url, 'null')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the base URL of the sync function, e.g. http://127.0.0.1:8000';
    END IF;
    BEGIN
        EXECUTE format('ALTER DATABASE %I SET app.settings.sync_function_url = %L',
                       current_database(), rtrim(url, '/'));
    {missing_grant}
    END;
END
$fn$
"""

RESET_URL = """
CREATE OR REPLACE FUNCTION autosync_private.reset_sync_function_url() RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
BEGIN
    BEGIN
        EXECUTE format('ALTER DATABASE %I RESET app.settings.sync_function_url', current_database());
    {missing_grant}
    END;
END
$fn$
"""

# Revision 0006's bodies, restored on downgrade.
SET_URL_0006 = """
CREATE OR REPLACE FUNCTION autosync_private.set_sync_function_url(url text) RETURNS void
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

RESET_URL_0006 = """
CREATE OR REPLACE FUNCTION autosync_private.reset_sync_function_url() RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
BEGIN
    EXECUTE format('ALTER DATABASE %I RESET app.settings.sync_function_url', current_database());
END
$fn$
"""


def upgrade() -> None:
    op.execute(SET_URL.replace("{missing_grant}", _MISSING_GRANT))
    op.execute(RESET_URL.replace("{missing_grant}", _MISSING_GRANT))


def downgrade() -> None:
    op.execute(RESET_URL_0006)
    op.execute(SET_URL_0006)
