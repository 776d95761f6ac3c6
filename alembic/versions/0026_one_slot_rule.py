"""One slot rule: drop `auto_sync_last_slot` in favour of `auto_sync_slot_at_or_before`

Revision 0021 added `auto_sync_last_slot` (the latest firing of a user's schedule) for the API and
the operator view; revision 0025 added `auto_sync_slot_at_or_before`, which computes the same instant
from `auto_sync_slot_offset` for the dispatcher. Two bodies of one rule can drift apart, and the one
the dispatcher runs on is the one that matters, so it is now the only one. It is a plain SQL function
(inlined into the callers' statements) granted to service_role only, where 0021's was granted to
PUBLIC: nothing outside the service asks when a user's sync fires.

Revision ID: 0026
Revises: 0025
"""

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

DROP_LAST_SLOT = "DROP FUNCTION public.auto_sync_last_slot(uuid, integer, timestamptz)"

# Revision 0021's definition, restored as it was (PUBLIC may execute it, as then).
RESTORE_LAST_SLOT = """
CREATE FUNCTION public.auto_sync_last_slot(user_id uuid, interval_minutes integer, at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
DECLARE
    minutes integer := public.auto_sync_check_interval(interval_minutes);
    -- The slot exactly as auto_sync_cron_schedule (revision 0003) derives it.
    slot integer := ('x' || left(md5(user_id::text), 7))::bit(28)::integer % minutes;
    -- Whole minutes since the epoch, which starts at a UTC midnight.
    minute_index bigint := floor(extract(epoch FROM at) / 60)::bigint;
BEGIN
    IF user_id IS NULL OR at IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.to_timestamp(
        (minute_index - (((minute_index - slot) % minutes) + minutes) % minutes) * 60);
END
$fn$
"""
RESTORE_COMMENT = """
COMMENT ON FUNCTION public.auto_sync_last_slot(uuid, integer, timestamptz) IS
    'The latest time at or before `at` at which auto_sync_cron_schedule(user_id, interval_minutes) fires'
"""


def upgrade() -> None:
    op.execute(DROP_LAST_SLOT)


def downgrade() -> None:
    op.execute(RESTORE_LAST_SLOT)
    op.execute(RESTORE_COMMENT)
