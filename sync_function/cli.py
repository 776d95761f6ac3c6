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


def _settings():  # type: ignore[no-untyped-def]
    from sync_function.settings import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"autosync: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default AUTOSYNC_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default AUTOSYNC_PORT, 8000)."),
) -> None:
    """Run the HTTP API (settings, accounts, history, the functions pg_cron calls)."""
    import uvicorn

    from sync_function import logs
    from sync_function.main import create_app

    config = _settings()
    logs.configure(config.log_level)
    uvicorn.run(
        create_app(config),
        host=host or config.host,
        port=port or config.port,
        log_level=config.log_level,
        access_log=False,
        proxy_headers=False,
    )


@app.command()
def worker(
    concurrency: int | None = typer.Option(
        None, help="Imports run at once (default AUTOSYNC_WORKER_CONCURRENCY)."
    ),
    metrics_port: int | None = typer.Option(
        None, help="Serve this worker's Prometheus metrics on 127.0.0.1:PORT."
    ),
) -> None:
    """Run a queue worker. Start as many as you like, on any host sharing the database."""
    import asyncio

    from prometheus_client import start_http_server

    from sync_function import logs, metrics, queue

    config = _settings()
    logs.configure(config.log_level)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.REGISTRY)
    asyncio.run(queue.run_worker(config, concurrency=concurrency))


def _database_url() -> str:
    import os

    url = os.environ.get("DATABASE_URL") or os.environ.get("AUTOSYNC_DATABASE_URL")
    if not url:
        typer.echo("autosync: DATABASE_URL is not set (the database to check, as its owner)", err=True)
        raise typer.Exit(2)
    return url


@app.command()
def doctor() -> None:
    """Check extensions, schema, settings, key, function reachability and schedule drift (exit 1 on problems)."""
    import psycopg
    from rich.table import Table

    from sync_function import doctor as checks

    with psycopg.connect(_database_url(), autocommit=True) as conn:
        results = checks.run_checks(conn)
        drift = checks.find_drift(conn)
    table = Table("check", "", "detail", title="autosync doctor")
    for check in results:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAIL[/red]", check.detail)
    Console().print(table)
    if drift:
        detail = Table("problem", "user", "detail", title="schedule drift")
        for item in drift:
            detail.add_row(item.kind, str(item.user_id or item.job_name), item.detail)
        Console().print(detail)
    if not all(check.ok for check in results):
        raise typer.Exit(1)


@app.command()
def reconcile(dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would change.")) -> None:
    """Make cron.job and auto_sync_jobs match user_settings (schedule the enabled, unschedule the rest)."""
    import psycopg

    from sync_function import doctor as checks

    with psycopg.connect(_database_url(), autocommit=True) as conn:
        fixes = checks.reconcile(conn, dry_run=dry_run)
        remaining = [] if dry_run else checks.find_drift(conn)
    for fix in fixes:
        mark = "ok" if fix.ok else "FAILED"
        typer.echo(f"{mark:6} {fix.action:22} {fix.user_id or fix.job_name}  {fix.detail}")
    typer.echo(f"{len(fixes)} fix(es){' planned' if dry_run else ''}; {len(remaining)} problem(s) left")
    if remaining or not all(fix.ok for fix in fixes):
        raise typer.Exit(1)


@app.command()
def openapi() -> None:
    """Print the OpenAPI document (no configuration or database needed)."""
    import json

    from sync_function.main import create_app
    from sync_function.settings import Settings

    placeholder = Settings.model_construct()
    typer.echo(json.dumps(create_app(placeholder).openapi(), indent=2))


@env_app.command("up")
def env_up(
    name: str = typer.Option(
        "autosync-dev", help="Environment name; every container and volume is labelled with it."
    ),
    postgres_port: int = typer.Option(54322, help="Loopback port for Postgres (first start only)."),
    function_port: int = typer.Option(54321, help="Loopback port for the function's API (first start only)."),
    workers: int = typer.Option(1, min=0, help="Number of `autosync worker` containers."),
) -> None:
    """Start Postgres (pg_cron + http, migrated) and the sync function (serve + workers). Safe to run again."""
    from infra import docker_local, local_env

    with console.status(f"bringing up {name} (first run builds the images) …"):
        try:
            env = local_env.up(
                name, postgres_port=postgres_port, function_port=function_port, workers=workers
            )
        except (docker_local.HarnessError, ValueError) as exc:
            typer.echo(f"autosync: {exc}", err=True)
            typer.echo(f"  (whatever started is still there: autosync env down --name {name})", err=True)
            raise typer.Exit(1) from None
    state = env.state_file.relative_to(local_env.STATE_DIR.parent)
    typer.echo(f"environment {env.name} is up (schema at revision {env.revision})")
    typer.echo(f"  API:           {env.api_url}  (try {env.api_url}/readyz; pg_cron calls it)")
    typer.echo(f"  workers:       {env.workers}")
    typer.echo(f"  Postgres:      127.0.0.1:{env.postgres.port}, database {env.postgres.database}")
    typer.echo(f"  DATABASE_URL:  see {state} (mode 0600: generated password, service key, JWT secret)")
    typer.echo(f'  psql:          set -a; . {state}; set +a; psql "$DATABASE_URL"')
    down = f"autosync env down --name {env.name}"
    typer.echo(
        f"  take it down:  make down  (or: {down})"
        if env.name == local_env.DEFAULT_NAME
        else f"  take it down:  {down}"
    )


@env_app.command("down")
def env_down(name: str = typer.Option("autosync-dev", help="Environment name.")) -> None:
    """Remove the environment's containers, volumes and state."""
    from infra import local_env

    removed = local_env.down(name)
    typer.echo(f"environment {name} removed ({len(removed)} objects)")
    for item in removed:
        typer.echo(f"  {item}")


@env_app.command("test", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def env_test(
    ctx: typer.Context,
    name: str | None = typer.Option(None, help="Environment name (default: autosync-test-<random>)."),
) -> None:
    """Stand up a fresh environment, run `pytest ARGS` against it, then remove it, whatever happens.

    Usage: autosync env test --name NAME -- PYTEST_ARGS…

    The tests get the environment's coordinates as AUTOSYNC_E2E_API_URL, AUTOSYNC_E2E_DATABASE_URL,
    AUTOSYNC_E2E_SERVICE_KEY and AUTOSYNC_E2E_JWT_SECRET. Uses Pulumi's Automation API where the
    pulumi CLI is installed, the Docker engine otherwise.
    """
    import secrets

    from infra import ephemeral

    code = ephemeral.run_tests(name or f"autosync-test-{secrets.token_hex(4)}", list(ctx.args))
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
