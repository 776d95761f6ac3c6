"""`autosync env`: local and ephemeral environments on the Docker engine (registered as a plugin)."""

from __future__ import annotations

import typer
from rich.console import Console

env_app = typer.Typer(help="Local environments on the Docker engine.", no_args_is_help=True)
console = Console(stderr=True)


@env_app.command("up")
def env_up(
    name: str = typer.Option(
        "autosync-dev", help="Environment name; every container and volume is labelled with it."
    ),
    postgres_port: int = typer.Option(54322, help="Loopback port for Postgres (first start only)."),
    function_port: int = typer.Option(54321, help="Loopback port for the function's API (first start only)."),
    workers: int = typer.Option(1, min=0, help="Number of `autosync worker` containers."),
    api_processes: int = typer.Option(
        1, min=1, max=64, help="`autosync serve` processes in the serve container (AUTOSYNC_API_PROCESSES)."
    ),
    demo: bool = typer.Option(
        True, "--demo/--no-demo", help="Also run a demo mailbox (Dovecot) and a demo user syncing it."
    ),
    demo_mail_every: int = typer.Option(
        180, min=1, help="Seconds between new demo messages (applies when the demo's mail loop starts)."
    ),
    scheduling: str = typer.Option(
        "per_user",
        help="Auto-sync scheduling: per_user (one pg_cron job per user) or dispatcher (one job for all).",
    ),
) -> None:
    """Start Postgres (pg_cron + http, migrated) and the sync function (serve + workers). Safe to run again."""
    from harness import docker_local, local_env

    with console.status(f"bringing up {name} (first run builds the images) …"):
        try:
            env = local_env.up(
                name,
                postgres_port=postgres_port,
                function_port=function_port,
                workers=workers,
                api_processes=api_processes,
                demo=demo,
                demo_mail_every_s=demo_mail_every,
                scheduling=scheduling,
            )
        except (docker_local.HarnessError, ValueError) as exc:
            typer.echo(f"autosync: {exc}", err=True)
            typer.echo(f"  (whatever started is still there: autosync env down --name {name})", err=True)
            raise typer.Exit(1) from None
    state = env.state_file.relative_to(local_env.STATE_DIR.parent)
    typer.echo(f"environment {env.name} is up (schema at revision {env.revision})")
    typer.echo(f"  API:           {env.api_url}  (try {env.api_url}/readyz; pg_cron calls it)")
    metrics = f"  (Prometheus: {', '.join(env.worker_metrics)})" if env.worker_metrics else ""
    typer.echo(f"  workers:       {env.workers}{metrics}")
    typer.echo(f"  scheduling:    {env.scheduling}")
    typer.echo(f"  Postgres:      127.0.0.1:{env.postgres.port}, database {env.postgres.database}")
    typer.echo(f"  DATABASE_URL:  see {state} (mode 0600: generated password, service key, JWT secret)")
    typer.echo(f'  psql:          set -a; . {state}; set +a; psql "$DATABASE_URL"')
    down = f"autosync env down --name {env.name}"
    typer.echo(
        f"  take it down:  make down  (or: {down})"
        if env.name == local_env.DEFAULT_NAME
        else f"  take it down:  {down}"
    )
    if env.demo is not None:
        typer.echo(
            f"  demo:          user {env.demo.user_id}, {env.demo.messages} messages in a Dovecot on "
            f"127.0.0.1:{env.demo.imap_port} (user demo), auto-sync every 5 min, new mail every few minutes"
        )
        typer.echo(f"  operator view: the page's Operator button, with AUTOSYNC_SERVICE_KEY from {state}")
        typer.echo("")
        typer.echo(
            "Open the page as the demo user (the link's token expires in an hour; `make up` prints a new one):"
        )
        typer.echo(f"  {env.demo.link}")


@env_app.command("down")
def env_down(name: str = typer.Option("autosync-dev", help="Environment name.")) -> None:
    """Remove the environment's containers, volumes and state."""
    from harness import local_env

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

    from harness import ephemeral

    code = ephemeral.run_tests(name or f"autosync-test-{secrets.token_hex(4)}", list(ctx.args))
    raise typer.Exit(code)
