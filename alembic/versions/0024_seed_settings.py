"""Move the seed's database settings: the service key out of a GUC, the function URL to its name

The seed (the Supabase setup this project grew from) kept the service key as a database-level GUC,
`app.settings.service_role_key`, readable by every role through current_setting(), and the
function's base URL as `app.settings.supabase_url`. Where this database has them, the key is moved
into the private store (unless one is stored already) and the GUC removed, and the URL is copied to
`app.settings.sync_function_url` (unless that is set), each with a WARNING that says what was done
and never the key. The downgrade does not put a key back into a GUC.

Revision ID: 0024
Revises: 0023
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

MOVE = r"""
DO $move$
DECLARE
    settings text[];
    entry text;
    old_key text;
    old_url text;
BEGIN
    SELECT s.setconfig INTO settings
    FROM pg_catalog.pg_db_role_setting AS s
    JOIN pg_catalog.pg_database AS d ON d.oid = s.setdatabase
    WHERE d.datname = current_database() AND s.setrole = 0;
    FOREACH entry IN ARRAY coalesce(settings, '{}') LOOP
        IF entry LIKE 'app.settings.service_role_key=%' THEN
            old_key := substr(entry, length('app.settings.service_role_key=') + 1);
        ELSIF entry LIKE 'app.settings.supabase_url=%' THEN
            old_url := substr(entry, length('app.settings.supabase_url=') + 1);
        END IF;
    END LOOP;

    IF old_key IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM autosync_private.service_key) THEN
            RAISE WARNING 'app.settings.service_role_key is set on database %, but a service key is already '
                          'stored: the stored one is kept', current_database();
        ELSIF length(old_key) < 32 THEN
            RAISE WARNING 'app.settings.service_role_key on database % is shorter than 32 characters and was '
                          'not moved: store a new key with autosync_private.set_service_key', current_database();
        ELSE
            PERFORM autosync_private.set_service_key(old_key);
            RAISE WARNING 'the service key stored in app.settings.service_role_key was moved to the private '
                          'store (autosync_private.service_key); give the sync function the same value in '
                          'AUTOSYNC_SERVICE_KEY';
        END IF;
        BEGIN
            EXECUTE format('ALTER DATABASE %I RESET app.settings.service_role_key', current_database());
            RAISE WARNING 'app.settings.service_role_key was removed from database %: every role could read it',
                current_database();
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'app.settings.service_role_key could not be removed from database % (not permitted)',
                current_database()
                USING HINT = format('An administrator runs: ALTER DATABASE %I RESET app.settings.service_role_key',
                                    current_database());
        END;
    END IF;

    IF old_url IS NOT NULL AND public.auto_sync_function_url() IS NULL THEN
        BEGIN
            PERFORM autosync_private.set_sync_function_url(old_url);
            RAISE WARNING 'app.settings.supabase_url (%) was copied to app.settings.sync_function_url', old_url;
        EXCEPTION WHEN invalid_parameter_value OR insufficient_privilege THEN
            RAISE WARNING 'app.settings.supabase_url (%) could not be copied to app.settings.sync_function_url: %',
                old_url, SQLERRM
                USING HINT = 'Set it with autosync_private.set_sync_function_url(''<base URL of the sync function>'')';
        END;
    END IF;
END
$move$
"""


def upgrade() -> None:
    op.execute(MOVE)


def downgrade() -> None:
    # Nothing to undo: putting a secret back into a GUC would reopen what the upgrade closed.
    pass
