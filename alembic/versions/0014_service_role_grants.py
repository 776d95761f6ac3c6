"""What the sync function needs, granted to service_role

The sync function works as `service_role` (it runs SET ROLE service_role on every connection),
never as the owner: it can read and write the user-owned tables and the queue, call the scheduling
functions as a trusted service, and nothing else: no DDL, no pg_cron tables, no private schema,
no service key.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# The queue's tables and sequences, whatever procrastinate's schema named them.
GRANT_QUEUE = r"""
DO $grant$
DECLARE
    object_name text;
BEGIN
    FOR object_name IN
        SELECT c.oid::regclass::text FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'procrastinate\_%'
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO service_role', object_name);
    END LOOP;
    FOR object_name IN
        SELECT c.oid::regclass::text FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'S' AND c.relname LIKE 'procrastinate\_%'
    LOOP
        EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO service_role', object_name);
    END LOOP;
END
$grant$
"""

REVOKE_QUEUE = GRANT_QUEUE.replace(
    "GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO", "REVOKE ALL ON %s FROM"
).replace("GRANT USAGE, SELECT ON SEQUENCE %s TO", "REVOKE ALL ON SEQUENCE %s FROM")

# /readyz compares the schema revision with the one the code expects.
GRANT_VERSION = "GRANT SELECT ON public.alembic_version TO service_role"
REVOKE_VERSION = "REVOKE SELECT ON public.alembic_version FROM service_role"


def upgrade() -> None:
    op.execute(GRANT_QUEUE)
    op.execute(GRANT_VERSION)


def downgrade() -> None:
    op.execute(REVOKE_VERSION)
    op.execute(REVOKE_QUEUE)
