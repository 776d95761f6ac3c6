"""Supported auto-sync intervals and their staggered cron schedules

An interval is supported when a cron schedule fires at exactly that spacing all day: divisors of
60 from 5 minutes, whole hours that divide 24, and a day. `*/45` would fire at :00 and :45, and
`*/90` is not valid at all, so anything else is refused with the list of supported values.

Each user gets a stable offset inside the interval (from an md5 of the user id, reproducible
anywhere), so 10,000 users on a 15-minute interval spread over the 15 minutes instead of all
firing at :00.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CREATE_SUPPORTED = """
CREATE FUNCTION public.auto_sync_supported_intervals() RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
    SELECT array_agg(minutes ORDER BY minutes)
    FROM pg_catalog.generate_series(5, 1440) AS minutes
    WHERE (minutes <= 60 AND 60 % minutes = 0)
       OR (minutes % 60 = 0 AND 1440 % minutes = 0)
$fn$
"""

COMMENT_SUPPORTED = """
COMMENT ON FUNCTION public.auto_sync_supported_intervals() IS
    'Intervals (minutes) whose cron schedule fires at exactly that spacing all day'
"""

CREATE_CHECK = """
CREATE FUNCTION public.auto_sync_check_interval(interval_minutes integer) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
BEGIN
    IF interval_minutes IS NULL
       OR NOT interval_minutes = ANY (public.auto_sync_supported_intervals()) THEN
        RAISE EXCEPTION 'unsupported auto-sync interval: % minutes (supported: %)',
                coalesce(interval_minutes::text, 'null'),
                array_to_string(public.auto_sync_supported_intervals(), ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pick one of the supported intervals; others cannot fire at an even spacing.';
    END IF;
    RETURN interval_minutes;
END
$fn$
"""

CREATE_SCHEDULE = """
CREATE FUNCTION public.auto_sync_cron_schedule(user_id uuid, interval_minutes integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $fn$
DECLARE
    minutes integer := public.auto_sync_check_interval(interval_minutes);
    slot integer;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- 28 bits of the md5 keep the value positive in an integer.
    slot := ('x' || left(md5(user_id::text), 7))::bit(28)::integer % minutes;
    IF minutes < 60 THEN
        RETURN format('%s-59/%s * * * *', slot, minutes);
    ELSIF minutes = 60 THEN
        RETURN format('%s * * * *', slot);
    ELSIF minutes < 1440 THEN
        RETURN format('%s %s-23/%s * * *', slot % 60, slot / 60, minutes / 60);
    END IF;
    RETURN format('%s %s * * *', slot % 60, slot / 60);
END
$fn$
"""

COMMENT_SCHEDULE = """
COMMENT ON FUNCTION public.auto_sync_cron_schedule(uuid, integer) IS
    'The cron schedule for a user and interval, offset inside the interval by a stable per-user slot'
"""


def upgrade() -> None:
    op.execute(CREATE_SUPPORTED)
    op.execute(COMMENT_SUPPORTED)
    op.execute(CREATE_CHECK)
    op.execute(CREATE_SCHEDULE)
    op.execute(COMMENT_SCHEDULE)


def downgrade() -> None:
    op.execute("DROP FUNCTION public.auto_sync_cron_schedule(uuid, integer)")
    op.execute("DROP FUNCTION public.auto_sync_check_interval(integer)")
    op.execute("DROP FUNCTION public.auto_sync_supported_intervals()")
