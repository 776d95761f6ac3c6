"""The `autosync` command line."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    help="autosync: server-side periodic email import scheduled by pg_cron.", no_args_is_help=True
)
env_app = typer.Typer(help="Local environments on the Docker engine.", no_args_is_help=True)
app.add_typer(env_app, name="env")
console = Console(stderr=True)


@env_app.command("up")
def env_up(
    name: str = typer.Option(
        "autosync-dev", help="Environment name; every container and volume is labelled with it."
    ),
    postgres_port: int = typer.Option(54322, help="Loopback port for Postgres (first start only)."),
) -> None:
    """Start Postgres (pg_cron + http) and migrate it to head. Safe to run again."""
    from infra import local_env

    with console.status(f"bringing up {name} …"):
        env = local_env.up(name, postgres_port=postgres_port)
    typer.echo(f"environment {env.name} is up (schema at revision {env.revision})")
    typer.echo(f"  Postgres:      127.0.0.1:{env.postgres.port}, database {env.postgres.database}")
    typer.echo(f"  DATABASE_URL:  see .autosync/{env.name}.env (contains the generated password)")
    typer.echo(f'  psql:          set -a; . .autosync/{env.name}.env; set +a; psql "$DATABASE_URL"')
    typer.echo(f"  take it down:  make down  (or: autosync env down --name {env.name})")


@env_app.command("down")
def env_down(name: str = typer.Option("autosync-dev", help="Environment name.")) -> None:
    """Remove the environment's containers, volumes and state."""
    from infra import local_env

    removed = local_env.down(name)
    typer.echo(f"environment {name} removed ({len(removed)} objects)")
    for item in removed:
        typer.echo(f"  {item}")


if __name__ == "__main__":
    app()
