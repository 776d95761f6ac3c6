"""Alembic environment: raw-SQL revisions, database from DATABASE_URL."""

from __future__ import annotations

import logging
import os
import sys
from logging.config import fileConfig

from sqlalchemy import create_engine
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
        connection.connection.driver_connection.add_notice_handler(log_notice)  # type: ignore[union-attr]
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
