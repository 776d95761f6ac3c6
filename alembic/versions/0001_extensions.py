"""pg_cron and http extensions

pg_cron schedules one job per user; http lets that job call the sync function. Both must be
available on the server (shared_preload_libraries for pg_cron); if one is not, the upgrade stops
with an error naming it and how to get it. Extensions that already existed are left alone on
downgrade: only the ones this revision created (marked in their comment) are dropped.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MARKER = "(installed by autosync)"

CHECK_AVAILABLE = """
DO $check$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pg_cron') THEN
        RAISE EXCEPTION 'extension "pg_cron" is not available on this server'
            USING HINT = 'Install pg_cron (Debian: postgresql-17-cron), set shared_preload_libraries = '
                         '''pg_cron'' and cron.database_name to this database, then restart PostgreSQL.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'http') THEN
        RAISE EXCEPTION 'extension "http" is not available on this server'
            USING HINT = 'Install pgsql-http (Debian: postgresql-17-http; source: github.com/pramsey/pgsql-http).';
    END IF;
END
$check$
"""

# CREATE EXTENSION pg_cron fails unless this is cron.database_name; say so plainly.
CREATE_PG_CRON = f"""
DO $create$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        IF current_setting('cron.database_name', true) IS DISTINCT FROM current_database() THEN
            RAISE EXCEPTION 'pg_cron can only be created in database "%", not in "%"',
                coalesce(current_setting('cron.database_name', true), 'postgres'), current_database()
                USING HINT = 'Set cron.database_name to this database in postgresql.conf and restart.';
        END IF;
        CREATE EXTENSION pg_cron;
        COMMENT ON EXTENSION pg_cron IS 'Job scheduler for PostgreSQL {MARKER}';
    END IF;
END
$create$
"""

CREATE_HTTP = f"""
DO $create$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'http') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'extensions') THEN
            CREATE SCHEMA extensions;
            COMMENT ON SCHEMA extensions IS 'Extensions {MARKER}';
        END IF;
        CREATE EXTENSION http WITH SCHEMA extensions;
        COMMENT ON EXTENSION http IS 'HTTP client for PostgreSQL {MARKER}';
    END IF;
END
$create$
"""

DROP_HTTP = f"""
DO $drop$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension e
               WHERE e.extname = 'http'
                 AND obj_description(e.oid, 'pg_extension') LIKE '%{MARKER}') THEN
        DROP EXTENSION http;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n
               WHERE n.nspname = 'extensions'
                 AND obj_description(n.oid, 'pg_namespace') LIKE '%{MARKER}') THEN
        BEGIN
            DROP SCHEMA extensions;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'schema "extensions" kept: other objects live in it';
        END;
    END IF;
END
$drop$
"""

DROP_PG_CRON = f"""
DO $drop$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension e
               WHERE e.extname = 'pg_cron'
                 AND obj_description(e.oid, 'pg_extension') LIKE '%{MARKER}') THEN
        DROP EXTENSION pg_cron;
    END IF;
END
$drop$
"""


# A migration role that is not superuser (managed Postgres) needs a few grants from an administrator;
# without them a later revision would stop on a bare "permission denied". Name them here, up front.
CHECK_PRIVILEGES = """
DO $check$
BEGIN
    IF NOT pg_catalog.has_schema_privilege('cron', 'USAGE') THEN
        RAISE EXCEPTION 'role % may not use pg_cron (schema "cron")', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('An administrator runs: GRANT USAGE ON SCHEMA cron TO %1$I; '
                                'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cron TO %1$I; '
                                'GRANT SELECT, DELETE ON ALL TABLES IN SCHEMA cron TO %1$I;', current_user);
    END IF;
    IF (SELECT count(*) FROM pg_catalog.pg_roles
        WHERE rolname IN ('anon', 'authenticated', 'service_role')) < 3
       AND NOT (SELECT r.rolsuper OR r.rolcreaterole FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
    THEN
        RAISE EXCEPTION 'role % may not create the roles anon, authenticated and service_role', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('An administrator runs: ALTER ROLE %I CREATEROLE BYPASSRLS; '
                                '(or creates those three roles, as Supabase does)', current_user);
    END IF;
END
$check$
"""


def upgrade() -> None:
    op.execute(CHECK_AVAILABLE)
    op.execute(CREATE_PG_CRON)
    op.execute(CREATE_HTTP)
    op.execute(CHECK_PRIVILEGES)


def downgrade() -> None:
    op.execute(DROP_HTTP)
    op.execute(DROP_PG_CRON)
