"""Supabase-compatible roles, auth.users and auth.uid()

On Supabase these exist and are used as they are. Elsewhere this revision creates them, following
PostgREST's convention: the verified JWT's claims are in the setting `request.jwt.claims` and
auth.uid() reads `sub` from it. Whatever this revision creates carries a marker in its comment, and
only marked objects are dropped on downgrade.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MARKER = "(created by autosync)"

CREATE_ROLES = f"""
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
        COMMENT ON ROLE anon IS 'Unauthenticated API requests {MARKER}';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
        COMMENT ON ROLE authenticated IS 'Requests with a verified user JWT {MARKER}';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        -- As on Supabase: the backend's role, trusted to act for any user.
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
        COMMENT ON ROLE service_role IS 'Trusted backend services {MARKER}';
    END IF;
END
$roles$
"""

CREATE_AUTH_SCHEMA = f"""
DO $auth$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'auth') THEN
        CREATE SCHEMA auth;
        COMMENT ON SCHEMA auth IS 'Users and the current user''s identity {MARKER}';
        GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    END IF;
END
$auth$
"""

CREATE_USERS = f"""
DO $users$
BEGIN
    IF to_regclass('auth.users') IS NULL THEN
        CREATE TABLE auth.users (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            email text UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE auth.users IS 'Application users {MARKER}';
        REVOKE ALL ON auth.users FROM PUBLIC;
        GRANT SELECT ON auth.users TO service_role;
    END IF;
END
$users$
"""

# 'request.jwt.claim.sub' is the older PostgREST setting; both are read, the newer one first.
CREATE_UID = f"""
DO $uid$
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid
        LANGUAGE sql STABLE
        SET search_path = ''
        AS $fn$
            SELECT nullif(
                coalesce(
                    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
                    current_setting('request.jwt.claim.sub', true)
                ),
                ''
            )::uuid
        $fn$;
        COMMENT ON FUNCTION auth.uid() IS 'The user id (sub) of the request''s JWT {MARKER}';
        GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;
    END IF;
END
$uid$
"""

DROP_UID = f"""
DO $uid$
BEGIN
    IF obj_description(to_regprocedure('auth.uid()'), 'pg_proc') LIKE '%{MARKER}' THEN
        DROP FUNCTION auth.uid();
    END IF;
END
$uid$
"""

DROP_USERS = f"""
DO $users$
BEGIN
    IF obj_description(to_regclass('auth.users'), 'pg_class') LIKE '%{MARKER}' THEN
        DROP TABLE auth.users;
    END IF;
END
$users$
"""

DROP_AUTH_SCHEMA = f"""
DO $auth$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n
               WHERE n.nspname = 'auth' AND obj_description(n.oid, 'pg_namespace') LIKE '%{MARKER}') THEN
        DROP SCHEMA auth;
    END IF;
END
$auth$
"""

# Roles are cluster-wide: another database may still use them, and then they stay.
DROP_ROLES = f"""
DO $roles$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['service_role', 'authenticated', 'anon'] LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.rolname = role_name
                     AND shobj_description(r.oid, 'pg_authid') LIKE '%{MARKER}') THEN
            BEGIN
                EXECUTE format('DROP ROLE %I', role_name);
            EXCEPTION WHEN dependent_objects_still_exist THEN
                RAISE NOTICE 'role % kept: objects in another database depend on it', role_name;
            END;
        END IF;
    END LOOP;
END
$roles$
"""


def upgrade() -> None:
    op.execute(CREATE_ROLES)
    op.execute(CREATE_AUTH_SCHEMA)
    op.execute(CREATE_USERS)
    op.execute(CREATE_UID)


def downgrade() -> None:
    op.execute(DROP_UID)
    op.execute(DROP_USERS)
    op.execute(DROP_AUTH_SCHEMA)
    op.execute(DROP_ROLES)
