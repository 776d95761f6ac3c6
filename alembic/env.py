"""Alembic environment: raw-SQL revisions, database from DATABASE_URL."""

from __future__ import annotations

import logging
import os
import sys
from logging.config import fileConfig

from psycopg import sql
from sqlalchemy import create_engine, event
from sqlalchemy.pool import NullPool

from alembic import context

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def sqlalchemy_url(database_url: str) -> str:
    """`postgresql://…` → the psycopg 3 dialect URL SQLAlchemy needs."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError("DATABASE_URL must start with postgresql:// (got a URL with another scheme)")


def database_url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        sys.exit(
            "alembic: DATABASE_URL is not set. Set it to the database to migrate, e.g.\n"
            "  DATABASE_URL=postgresql://postgres:PASSWORD@127.0.0.1:5432/autosync alembic upgrade head\n"
            "(`alembic upgrade head --sql` needs no database.)"
        )
    return str(url)


# What revisions RAISE (WARNING: a seed setting moved, an interval mapped; NOTICE: kept as found) is
# part of the upgrade's output: psycopg drops server notices unless a handler takes them.
notices = logging.getLogger("alembic.runtime.postgres")


def log_notice(diagnostic) -> None:  # type: ignore[no-untyped-def]
    severity = str(diagnostic.severity_nonlocalized or diagnostic.severity or "NOTICE")
    level = logging.WARNING if severity == "WARNING" else logging.INFO
    message = str(diagnostic.message_primary)
    if diagnostic.message_hint:
        message += f" (hint: {diagnostic.message_hint})"
    notices.log(level, "%s", message)


# Supabase (like any database whose owner ran ALTER DEFAULT PRIVILEGES … TO anon, authenticated,
# service_role) grants every new table, sequence and function to the API roles. The revisions grant each
# role exactly what it needs, so while a revision runs, the migrating role's default privileges towards
# those roles are set aside, in the revision's own transaction, and put back before it commits; a
# revision that fails rolls both back. (Offline SQL cannot do this: apply it as a role without them.)
API_DEFAULTS = """
SELECT n.nspname, d.defaclobjtype, r.rolname, a.privilege_type, a.is_grantable
FROM pg_catalog.pg_default_acl AS d
CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) AS a
JOIN pg_catalog.pg_roles AS r ON r.oid = a.grantee
LEFT JOIN pg_catalog.pg_namespace AS n ON n.oid = d.defaclnamespace
WHERE d.defaclrole = (SELECT u.oid FROM pg_catalog.pg_roles AS u WHERE u.rolname = current_user)
  AND r.rolname IN ('anon', 'authenticated', 'service_role')
ORDER BY 1, 2, 3, 4
"""
OBJECT_TYPES = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}


def set_aside_api_defaults(driver_connection) -> list[sql.Composed]:  # type: ignore[no-untyped-def]
    """Revoke the API roles' default privileges; the statements that grant them back."""
    give_back = []
    for schema, kind, role, privilege, grantable in driver_connection.execute(API_DEFAULTS).fetchall():
        where = sql.SQL(" IN SCHEMA {}").format(sql.Identifier(schema)) if schema else sql.SQL("")
        what = sql.SQL("{} ON {}").format(sql.SQL(privilege), sql.SQL(OBJECT_TYPES[kind]))
        driver_connection.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES{} REVOKE {} FROM {}").format(where, what, sql.Identifier(role))
        )
        give_back.append(
            sql.SQL("ALTER DEFAULT PRIVILEGES{} GRANT {} TO {}{}").format(
                where, what, sql.Identifier(role), sql.SQL(" WITH GRANT OPTION" if grantable else "")
            )
        )
    return give_back


def run_migrations_offline() -> None:
    # Offline SQL needs only the dialect; a URL is used when one is given.
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    context.configure(
        url=sqlalchemy_url(url) if url else "postgresql+psycopg://",
        literal_binds=True,
        # "named" keeps '%' as it is; pyformat would print it doubled into the SQL.
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(sqlalchemy_url(database_url()), poolclass=NullPool)
    with engine.connect() as connection:
        driver_connection = connection.connection.driver_connection
        driver_connection.add_notice_handler(log_notice)  # type: ignore[union-attr]
        set_aside: list[sql.Composed] = []

        # Every transaction on this connection (one per revision) sets them aside when it begins (the
        # first statement on the psycopg connection starts it), gives them back just before it commits,
        # and on a rollback the database puts them back itself.
        @event.listens_for(connection, "begin")
        def _begin(conn) -> None:  # type: ignore[no-untyped-def]
            set_aside[:] = set_aside_api_defaults(driver_connection)

        @event.listens_for(connection, "commit")
        def _commit(conn) -> None:  # type: ignore[no-untyped-def]
            for statement in set_aside:
                driver_connection.execute(statement)  # type: ignore[union-attr]
            set_aside.clear()

        @event.listens_for(connection, "rollback")
        def _rollback(conn) -> None:  # type: ignore[no-untyped-def]
            set_aside.clear()

        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
