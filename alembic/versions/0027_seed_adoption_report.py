"""What adopting the seed changed for users: the intervals that were moved, for `autosync doctor`

Revision 0004 moves a seed user's unsupported interval (45, 90…) to a supported one and records it
in `autosync_seed.intervals` (a schema that exists only where a seed installation was adopted, and
only the owner may read). `auto_sync_seed_intervals()` lists the users still on the interval chosen
for them, with the one they had, so that doctor reports them until they choose again. SECURITY
DEFINER for service_role only; on a database that never had the seed it returns no rows.

Revision ID: 0027
Revises: 0026
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

# Dynamic SQL: autosync_seed.intervals may not exist, and a static reference would fail to plan.
CREATE_REPORT = """
CREATE FUNCTION public.auto_sync_seed_intervals()
RETURNS TABLE (user_id uuid, seed_interval integer, interval_minutes integer, enabled boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
    IF pg_catalog.to_regclass('autosync_seed.intervals') IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT i.user_id, i.seed_interval, s.interval_minutes, s.enabled
         FROM autosync_seed.intervals AS i
         JOIN public.user_settings AS s ON s.user_id = i.user_id AND s.interval_minutes = i.interval_minutes
         ORDER BY i.user_id';
END
$fn$
"""
COMMENT_REPORT = """
COMMENT ON FUNCTION public.auto_sync_seed_intervals() IS
    'Users whose unsupported seed interval was moved to a supported one on adoption, while they keep it'
"""
REVOKE_REPORT = "REVOKE EXECUTE ON FUNCTION public.auto_sync_seed_intervals() FROM PUBLIC"
GRANT_REPORT = "GRANT EXECUTE ON FUNCTION public.auto_sync_seed_intervals() TO service_role"


def upgrade() -> None:
    op.execute(CREATE_REPORT)
    op.execute(COMMENT_REPORT)
    op.execute(REVOKE_REPORT)
    op.execute(GRANT_REPORT)


def downgrade() -> None:
    op.execute("DROP FUNCTION public.auto_sync_seed_intervals()")
