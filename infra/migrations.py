"""Run Alembic migrations from Python (Pulumi's Migrations provider, the harness and the CLI)."""

from __future__ import annotations

import io
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from alembic import command

REPO_ROOT = Path(__file__).resolve().parent.parent


def sqlalchemy_url(database_url: str) -> str:
    """`postgresql://…` → the psycopg 3 dialect URL SQLAlchemy needs."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError("DATABASE_URL must start with postgresql:// (got a URL with another scheme)")


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"), stdout=io.StringIO())
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    # Called from Python: leave the caller's logging alone (env.py configures it only for the CLI).
    config.attributes["configure_logger"] = False
    if database_url is not None:
        # Passed through attributes, not the ini, so '%' in passwords needs no escaping.
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> str | None:
    command.upgrade(alembic_config(database_url), revision)
    return current(database_url)


def downgrade(database_url: str, revision: str = "base") -> str | None:
    command.downgrade(alembic_config(database_url), revision)
    return current(database_url)


def offline_sql(revision_range: str = "head") -> str:
    """The SQL that `alembic upgrade <range> --sql` prints, for DBAs who apply it themselves."""
    config = alembic_config()
    buffer = io.StringIO()
    config.output_buffer = buffer
    command.upgrade(config, revision_range, sql=True)
    return buffer.getvalue()


def head() -> str:
    head_revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head_revision is not None
    return head_revision


def current(database_url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
