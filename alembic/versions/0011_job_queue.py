"""Job queue: procrastinate's schema

The sync function's imports run from procrastinate's Postgres-backed queue. Its schema ships inside
the pinned procrastinate package; this revision applies exactly the file whose SHA-256 is frozen
below and refuses any other, so that an upgraded package cannot silently change what this
revision does. A newer procrastinate gets a new revision applying its own migration files.

Revision ID: 0011
Revises: 0010
"""

import hashlib
from importlib import resources

import sqlalchemy as sa

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PROCRASTINATE_VERSION = "3.10.0"
SCHEMA_SHA256 = "c70ec4b400a60ad9592787653aae5ae77ae41bf801d56b5bd2712751a07f2009"

# Everything procrastinate creates is named procrastinate_*; tables first (with their triggers),
# then functions, then types.
DROP_ALL = """
DO $drop$
DECLARE
    object_name text;
BEGIN
    FOR object_name IN
        SELECT c.oid::regclass::text FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname LIKE 'procrastinate\\_%'
    LOOP
        EXECUTE 'DROP TABLE IF EXISTS ' || object_name || ' CASCADE';
    END LOOP;
    FOR object_name IN
        SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc AS p
        JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname LIKE 'procrastinate\\_%'
    LOOP
        EXECUTE 'DROP ROUTINE IF EXISTS ' || object_name || ' CASCADE';
    END LOOP;
    FOR object_name IN
        SELECT t.oid::regtype::text FROM pg_catalog.pg_type AS t
        JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typname LIKE 'procrastinate\\_%' AND t.typtype IN ('e', 'c', 'd')
    LOOP
        EXECUTE 'DROP TYPE IF EXISTS ' || object_name || ' CASCADE';
    END LOOP;
END
$drop$
"""


def procrastinate_schema() -> str:
    sql = (resources.files("procrastinate.sql") / "schema.sql").read_text(encoding="utf-8")
    digest = hashlib.sha256(sql.encode()).hexdigest()
    if digest != SCHEMA_SHA256:
        raise RuntimeError(
            f"procrastinate's schema.sql is not the one of procrastinate {PROCRASTINATE_VERSION} "
            f"(sha256 {digest}); install procrastinate=={PROCRASTINATE_VERSION} as pinned in pyproject.toml"
        )
    return sql


def upgrade() -> None:
    # Escaped colons: SQLAlchemy's text() would read ':name' inside the SQL as a bind parameter.
    op.execute(sa.text(procrastinate_schema().replace(":", "\\:")))


def downgrade() -> None:
    op.execute(DROP_ALL)
