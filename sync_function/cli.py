"""The `autosync` command line."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    help="autosync: server-side periodic email import scheduled by pg_cron.", no_args_is_help=True
)


def _add_installed_commands() -> None:
    """Command groups that other installed packages register under the `autosync.commands` entry point.

    The development harness adds `autosync env` this way, so the service never imports it and the
    service image (which does not install the harness) has no `env` group at all.
    """
    from importlib.metadata import entry_points

    for entry in entry_points(group="autosync.commands"):
        try:
            group = entry.load()
        except ImportError:  # registered by pyproject.toml but not installed here (the service image)
            continue
        app.add_typer(group, name=entry.name)


def _config():  # type: ignore[no-untyped-def]
    from sync_function.config import ConfigError, load_config

    try:
        return load_config()
    except ConfigError as exc:
        typer.echo(f"autosync: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default AUTOSYNC_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default AUTOSYNC_PORT, 8000)."),
    processes: int | None = typer.Option(
        None, min=1, max=64, help="Server processes sharing the port (default AUTOSYNC_API_PROCESSES, 1)."
    ),
) -> None:
    """Run the HTTP API (settings, accounts, history, the functions pg_cron calls)."""
    import uvicorn

    from sync_function import logs
    from sync_function.main import app_for_serving

    config = _config()  # checked here, so a bad variable stops the parent with its message
    logs.configure(config.log_level)
    count = processes or config.api_processes
    common = {
        "host": host or config.host,
        "port": port or config.port,
        "log_level": config.log_level,
        "access_log": False,
        "proxy_headers": False,
    }
    if count == 1:
        uvicorn.run(app_for_serving(config), **common)  # type: ignore[arg-type]
        return
    # One Python process is one GIL: JWT checks, validation and JSON of concurrent requests queue
    # behind each other. uvicorn's supervisor binds the socket once and starts `count` processes,
    # each building its app (and pool) from the environment.
    uvicorn.run("sync_function.main:app_from_environment", factory=True, workers=count, **common)  # type: ignore[arg-type]


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

    import uvloop
    from prometheus_client import start_http_server

    from sync_function import logs, metrics, queue

    config = _config()
    logs.configure(config.log_level)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.REGISTRY)
    # uvloop, as `serve` has through uvicorn: every job's fetch and finish pass through this loop.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(queue.run_worker(config, concurrency=concurrency))


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
        moved = checks.seed_intervals(conn)
    table = Table("check", "", "detail", title="autosync doctor")
    for check in results:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAIL[/red]", check.detail)
    Console().print(table)
    if moved:
        seed = Table(
            "user", "seed interval", "now", "auto-sync", title="intervals moved when the seed was adopted"
        )
        for user in moved:
            seed.add_row(
                str(user.user_id),
                "unset" if user.seed_interval is None else f"{user.seed_interval} min",
                f"{user.interval_minutes} min",
                "on" if user.enabled else "off",
            )
        Console().print(seed)
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


def _encryption_keys(as_json: bool) -> list[str]:
    """AUTOSYNC_ENCRYPTION_KEY as a key list; exits 2 with a message that names no key."""
    import os

    from sync_function import crypto

    try:
        return crypto.parse_keys(os.environ.get("AUTOSYNC_ENCRYPTION_KEY", ""))
    except crypto.KeyListError as exc:
        _fail(f"AUTOSYNC_ENCRYPTION_KEY {exc}", code=2, error="bad_key_list", as_json=as_json)


def _fail(message: str, *, code: int, error: str, as_json: bool, **details: object) -> NoReturn:
    """Exit with `code`: the message on stderr and, with --json, `{"error": …}` on stdout for programs."""
    import json

    if as_json:
        typer.echo(json.dumps({"error": error, "detail": message, **details}))
    typer.echo(f"autosync: {message}", err=True)
    raise typer.Exit(code)


JSON_OPTION = typer.Option(False, "--json", help="Print the result as one JSON object (for programs).")


@app.command()
def reencrypt(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be rewritten."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Rewrite every stored mailbox password under the first key of AUTOSYNC_ENCRYPTION_KEY.

    To rotate the key: run every service process with AUTOSYNC_ENCRYPTION_KEY=NEW,OLD, then run this
    (as the database owner, DATABASE_URL), then drop OLD. Nothing changes if a stored password is
    readable with no key of the list (exit 1).
    """
    import dataclasses
    import json

    import psycopg

    from sync_function import crypto

    keys = _encryption_keys(as_json)
    with psycopg.connect(_database_url()) as conn:
        try:
            result = crypto.reencrypt_stored(conn, keys, dry_run=dry_run)
        except crypto.UnreadableSecretsError as exc:
            _fail(str(exc), code=1, error="unreadable_secrets", as_json=as_json, unreadable=exc.count)
    if as_json:
        typer.echo(json.dumps({**dataclasses.asdict(result), "dry_run": dry_run}))
        return
    verb = "would be re-encrypted" if dry_run else "re-encrypted"
    typer.echo(
        f"{result.total} stored secret(s): {result.rewritten} {verb} under the first key, "
        f"{result.already} already were, {result.changed_meanwhile} changed meanwhile"
    )


encryption_keys = typer.Typer(help="The key list of AUTOSYNC_ENCRYPTION_KEY and the secrets stored under it.")
app.add_typer(encryption_keys, name="encryption-keys")


@encryption_keys.command("usage")
def encryption_keys_usage(as_json: bool = JSON_OPTION) -> None:
    """How many stored secrets each key of AUTOSYNC_ENCRYPTION_KEY decrypts, and how many none does.

    Keys are named by their position in the list, never printed. A key that decrypts nothing can be
    dropped (after `autosync reencrypt`, only the first one is needed). Exit 1 when some stored
    secret is readable with no key of the list.
    """
    import dataclasses
    import json

    import psycopg

    from sync_function import crypto

    keys = _encryption_keys(as_json)
    with psycopg.connect(_database_url()) as conn:
        usage = crypto.key_usage(conn, keys)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(usage)))
    else:
        for position, count in enumerate(usage.per_key, start=1):
            role = "encrypts" if position == 1 else "decrypts"
            typer.echo(f"key {position} of {len(keys)} ({role}): {count} stored secret(s)")
        typer.echo(f"{usage.unreadable} of {usage.total} stored secret(s) readable with no key of the list")
    if usage.unreadable:
        raise typer.Exit(1)


def _when(value: object) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S %Z}".strip()


@app.command("users")
def list_users(
    limit: int = typer.Option(1000, help="At most this many users."), as_json: bool = JSON_OPTION
) -> None:
    """Users with their auto-sync schedule, next run and last run (as the owner, DATABASE_URL)."""
    import dataclasses
    import json

    import psycopg
    from rich.table import Table

    from sync_function import operations

    with psycopg.connect(_database_url(), autocommit=True) as conn:
        rows = operations.users(conn, limit=limit)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(row) for row in rows], default=str))
        return
    table = Table(
        "user", "email", "auto-sync", "cron schedule", "next run", "last run", title="autosync users"
    )
    for row in rows:
        state = f"every {row.interval_minutes} min" if row.enabled else "off"
        last = f"{row.last_status} {_when(row.last_queued_at)}" if row.last_status else ""
        table.add_row(str(row.user_id), row.email or "", state, row.schedule or "", _when(row.next_run), last)
    Console().print(table)


@app.command("history")
def user_history(
    user_id: str = typer.Argument(..., help="The user's id."),
    limit: int = typer.Option(20, min=1, max=1000, help="The newest runs, at most this many."),
    as_json: bool = JSON_OPTION,
) -> None:
    """A user's sync runs, newest first, with progress and errors (as the owner, DATABASE_URL)."""
    import dataclasses
    import json

    import psycopg
    from rich.table import Table

    from sync_function import runs

    user = _user_id(user_id)
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        records = runs.history(conn, user_id=user, limit=limit)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(record) for record in records], default=str))
        return
    table = Table(
        "queued", "trigger", "status", "attempts", "imported", "progress", "error", title=f"runs of {user}"
    )
    for record in records:
        progress = "" if record.progress_total is None else f"{record.progress_done}/{record.progress_total}"
        table.add_row(
            _when(record.queued_at),
            record.trigger,
            record.status,
            str(record.attempts),
            str(record.messages_imported),
            progress,
            record.error or "",
        )
    Console().print(table)


@app.command("sync")
def sync_user(user_id: str = typer.Argument(..., help="The user's id.")) -> None:
    """Import a user's mail now, in this process, with a progress bar (exit 1 when an account failed).

    Needs the service's configuration (AUTOSYNC_* and DATABASE_URL, as for `serve`); counts as one
    of the user's manual imports (AUTOSYNC_MANUAL_IMPORT_LIMIT per window).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sync_function import logs, ratelimits, sync, triggers
    from sync_function.db import open_pool
    from sync_function.users import UnknownUser

    user = _user_id(user_id)
    config = _config()
    logs.configure("warning")
    pool = open_pool(config, name="autosync-cli", max_size=2)
    try:
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task("import", total=None)

            def show(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            try:
                with pool.connection() as conn:
                    run_id = triggers.claim_manual_run(
                        conn,
                        user_id=user,
                        limit=ratelimits.manual_import(config),
                    )
                result = sync.run_attempt(
                    pool, config, run_id=run_id, attempt=1, final=True, on_progress=show
                )
            except (UnknownUser, ratelimits.RateLimited, triggers.AlreadyRunning) as exc:
                typer.echo(f"autosync: {exc}", err=True)
                raise typer.Exit(2) from None
            except sync.ImportFailed as exc:
                typer.echo(f"autosync: import failed: {exc}", err=True)
                raise typer.Exit(1) from None
    finally:
        pool.close()
    typer.echo(
        f"run {result.run_id}: {result.imported} imported, {result.skipped} skipped, "
        f"{result.duplicates} duplicates from {result.accounts} account(s) in {result.seconds:.1f} s"
    )


def _user_id(text: str):  # type: ignore[no-untyped-def]
    import uuid

    try:
        return uuid.UUID(text)
    except ValueError:
        typer.echo(f"autosync: {text!r} is not a user id (a UUID)", err=True)
        raise typer.Exit(2) from None


@app.command()
def openapi() -> None:
    """Print the OpenAPI document (no configuration or database needed)."""
    import json

    from sync_function.config import Config
    from sync_function.main import create_app

    placeholder = Config.model_construct()
    typer.echo(json.dumps(create_app(placeholder).openapi(), indent=2))


_add_installed_commands()

if __name__ == "__main__":
    app()
