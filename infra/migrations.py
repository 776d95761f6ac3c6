"""Run Alembic migrations from Python (Pulumi's Migrations provider, the harness and the CLI)."""

from __future__ import annotations

import io
from pathlib import Path

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    """The database's revision, or None before the first upgrade."""
    with psycopg.connect(database_url) as connection:
        if connection.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,):
            return None
        row = connection.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return None if row is None else str(row[0])
