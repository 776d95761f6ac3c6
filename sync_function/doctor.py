"""Operator checks and repairs: `autosync doctor` and `autosync reconcile`.

Drift is any disagreement between what users chose (`user_settings`), what the project recorded
(`auto_sync_jobs`) and what pg_cron will actually run (`cron.job`). The settings are the source of
truth: reconcile schedules every enabled user at their interval and unschedules everyone else.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
import psycopg
from psycopg import Connection

from sync_function.db import EXPECTED_REVISION, schema_revision

PURGE_JOB = "autosync-purge-run-details"
DISPATCHER_JOB = "autosync-dispatcher"

# How many per-user jobs pg_cron starts a second (each is a new backend and an HTTP call), measured
# on the 2-core machines of BENCHMARKS.md (120-175/s); the lower figure, to advise early.
PER_USER_LAUNCHES_PER_S = 120
# Per-user mode launches a minute's due users one after another from the minute's start: past this
# many seconds for the last of them, doctor recommends the dispatcher (its target is < 2 s).
PER_USER_ADVICE_LAG_S = 5.0
# In dispatcher mode, a user whose slot is this far past without being dispatched means it is behind.
DISPATCHER_BEHIND_S = 60


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Drift:
    kind: str
    user_id: uuid.UUID | None
    job_name: str | None
    detail: str


@dataclass(frozen=True)
class SeedInterval:
    """A user adopted from the seed whose unsupported interval was moved to a supported one."""

    user_id: uuid.UUID
    seed_interval: int | None
    interval_minutes: int
    enabled: bool


@dataclass(frozen=True)
class Fix:
    action: str
    user_id: uuid.UUID | None
    job_name: str | None
    ok: bool
    detail: str


# One row per problem. Kinds:
#   missing_job      enabled in user_settings, but no auto_sync_jobs row
#   orphan_row       auto_sync_jobs row for a user who is not enabled
#   missing_cron     auto_sync_jobs row whose cron job does not exist
#   orphan_cron      an auto-sync-* cron job without an auto_sync_jobs row
#   wrong_schedule   the job or row does not match the user's interval (or the command is not ours)
#   inactive         the cron job is paused
#   wrong_mode       the row is scheduled the other mode's way (a job in dispatcher mode, or none in per-user)
#   dispatcher       the dispatcher job is missing or paused in dispatcher mode, or present in per-user mode
# In dispatcher mode no user has a job of their own, so every auto-sync-<user> job is an orphan_cron.
# Job names come from the schema's own functions (auto_sync_job_name, auto_sync_job_user). The
# `auto-sync-%` prefix here only recognises the namespace, so that a stray job in it that is no
# user's (user_id NULL) shows up too.
DRIFT = """
WITH settings AS (
    SELECT user_id, interval_minutes FROM public.user_settings WHERE enabled
), jobs AS (
    SELECT jobid, jobname, schedule, command, active, public.auto_sync_job_user(jobname) AS user_id
    FROM cron.job WHERE jobname LIKE 'auto-sync-%'
)
SELECT 'missing_job', s.user_id, NULL, format('enabled every %s min, but nothing is scheduled', s.interval_minutes)
FROM settings AS s LEFT JOIN public.auto_sync_jobs AS a USING (user_id) WHERE a.user_id IS NULL
UNION ALL
SELECT 'orphan_row', a.user_id, NULL, 'scheduled, but auto-sync is not enabled for this user'
FROM public.auto_sync_jobs AS a LEFT JOIN settings AS s USING (user_id) WHERE s.user_id IS NULL
UNION ALL
SELECT 'missing_cron', a.user_id, public.auto_sync_job_name(a.user_id),
       format('cron job %s does not exist', a.cron_job_id)
FROM public.auto_sync_jobs AS a
WHERE a.cron_job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cron.job AS j WHERE j.jobid = a.cron_job_id)
UNION ALL
SELECT 'wrong_mode', a.user_id, NULL,
       format('scheduled the %s way, but the mode is %s',
              CASE WHEN a.cron_job_id IS NULL THEN 'dispatcher' ELSE 'per_user' END, public.auto_sync_mode())
FROM public.auto_sync_jobs AS a
WHERE (a.cron_job_id IS NULL) <> (public.auto_sync_mode() = 'dispatcher')
UNION ALL
SELECT 'wrong_schedule', a.user_id, NULL,
       format('recorded every %s min; expected every %s min', a.interval_minutes, s.interval_minutes)
FROM public.auto_sync_jobs AS a JOIN settings AS s USING (user_id)
WHERE a.cron_job_id IS NULL AND a.interval_minutes <> s.interval_minutes
UNION ALL
SELECT 'dispatcher', NULL, d.name,
       CASE WHEN public.auto_sync_mode() = 'per_user' THEN 'the dispatcher job exists in per-user mode'
            WHEN j.jobid IS NULL THEN 'dispatcher mode, but the dispatcher job does not exist'
            ELSE format('the dispatcher job %s is paused', j.jobid) END
FROM (SELECT public.auto_sync_dispatcher_job_name() AS name) AS d
LEFT JOIN cron.job AS j ON j.jobname = d.name
WHERE (public.auto_sync_mode() = 'per_user' AND j.jobid IS NOT NULL)
   OR (public.auto_sync_mode() = 'dispatcher' AND (j.jobid IS NULL OR NOT j.active))
UNION ALL
SELECT 'orphan_cron', j.user_id, j.jobname, format('cron job %s has no auto_sync_jobs row', j.jobid)
FROM jobs AS j WHERE NOT EXISTS (SELECT 1 FROM public.auto_sync_jobs AS a WHERE a.cron_job_id = j.jobid)
UNION ALL
SELECT 'wrong_schedule', a.user_id, j.jobname,
       format('job runs %L every %s min; expected %L every %s min', j.schedule, a.interval_minutes,
              public.auto_sync_cron_schedule(a.user_id, s.interval_minutes), s.interval_minutes)
FROM public.auto_sync_jobs AS a
JOIN settings AS s USING (user_id)
JOIN jobs AS j ON j.jobid = a.cron_job_id
WHERE j.schedule <> public.auto_sync_cron_schedule(a.user_id, s.interval_minutes)
   OR a.interval_minutes <> s.interval_minutes
   OR j.user_id IS DISTINCT FROM a.user_id
   OR j.command <> format('SELECT public.trigger_auto_sync(%L::uuid)', a.user_id)
UNION ALL
SELECT 'inactive', j.user_id, j.jobname, format('cron job %s is paused', j.jobid)
FROM jobs AS j WHERE NOT j.active
ORDER BY 1, 2
"""


def find_drift(conn: Connection) -> list[Drift]:
    rows = conn.execute(DRIFT).fetchall()
    return [
        Drift(kind=kind, user_id=user_id, job_name=job_name, detail=detail)
        for kind, user_id, job_name, detail in rows
    ]


def run_checks(conn: Connection, *, timeout_s: float = 5.0) -> list[Check]:
    """Extensions, schema, settings, key, function reachability, purge job, drift, recent failures."""
    checks: list[Check] = []
    extensions: dict[str, str] = dict(
        conn.execute(
            "SELECT extname, extversion FROM pg_extension WHERE extname IN ('pg_cron', 'http')"
        ).fetchall()
    )
    for name in ("pg_cron", "http"):
        checks.append(
            Check(f"extension {name}", name in extensions, extensions.get(name, "not installed: see README"))
        )
    revision = schema_revision(conn)
    checks.append(
        Check(
            "schema revision",
            revision == EXPECTED_REVISION,
            f"{revision or 'none'} (this code expects {EXPECTED_REVISION})",
        )
    )
    url = function_url(conn)
    checks.append(
        Check(
            "sync_function_url",
            url is not None,
            url or "not set: SELECT autosync_private.set_sync_function_url('http://host:port')",
        )
    )
    key_set = bool(conn.execute("SELECT public.auto_sync_service_key_is_set()").fetchone()[0])  # type: ignore[index]
    checks.append(
        Check(
            "service key",
            key_set,
            "stored" if key_set else "not stored: SELECT autosync_private.set_service_key($1)",
        )
    )
    checks.append(users_readable_check(conn))
    if url is not None:
        reachable = _reachable(url, timeout_s=timeout_s)
        checks.append(reachable)
        if key_set and reachable.ok:  # an unreachable function is one failure, not two
            checks.append(service_key_check(conn, url, timeout_s=timeout_s))
    purge = conn.execute("SELECT active FROM cron.job WHERE jobname = %s", (PURGE_JOB,)).fetchone()
    checks.append(
        Check(
            "run-details purge job",
            bool(purge and purge[0]),
            "scheduled daily" if purge and purge[0] else "missing or paused: run alembic upgrade head",
        )
    )
    checks.append(scheduling_check(conn))
    checks.append(seed_interval_check(seed_intervals(conn)))
    drift = find_drift(conn)
    checks.append(
        Check(
            "schedules match settings",
            not drift,
            "no drift" if not drift else f"{len(drift)} problem(s): run `autosync reconcile`",
        )
    )
    failed = conn.execute(
        """SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FROM cron.job_run_details AS d
           JOIN cron.job AS j USING (jobid)
           WHERE j.jobname LIKE 'auto-sync-%' AND d.start_time > now() - interval '1 day'"""
    ).fetchone()
    assert failed is not None
    checks.append(
        Check(
            "cron runs (24 h)",
            failed[0] == 0,
            f"{failed[0]} of {failed[1]} failed"
            + (": see cron.job_run_details.return_message" if failed[0] else ""),
        )
    )
    return checks


# Users due per (interval, offset): a day's busiest minute is summed from these without a row per slot.
DUE_GROUPS = """
SELECT interval_minutes, public.auto_sync_slot_offset(user_id, interval_minutes), count(*)
FROM public.user_settings WHERE enabled GROUP BY 1, 2
"""


def busiest_minute(conn: Connection) -> int:
    """The most enabled users due in one minute of the day (their slots, whatever the mode)."""
    per_minute = [0] * 1440
    for minutes, offset, count in conn.execute(DUE_GROUPS).fetchall():
        for minute in range(offset, 1440, minutes):
            per_minute[minute] += count
    return max(per_minute)


def scheduling_check(conn: Connection) -> Check:
    """Per-user mode: can pg_cron launch the busiest minute's users? Dispatcher mode: is it keeping up?"""
    mode = str(conn.execute("SELECT public.auto_sync_mode()").fetchone()[0])  # type: ignore[index]
    due = busiest_minute(conn)
    if mode == "per_user":
        lag_s = due / PER_USER_LAUNCHES_PER_S
        detail = (
            f"per_user; busiest minute: {due} users due, the last launched ~{lag_s:.1f} s after its slot "
            f"(pg_cron launches ~{PER_USER_LAUNCHES_PER_S}/s)"
        )
        if lag_s > PER_USER_ADVICE_LAG_S:
            detail += ": switch to the dispatcher (SELECT public.set_auto_sync_mode('dispatcher'))"
        # Past a minute the launches of one minute run into the next: runs fall behind for good.
        return Check("scheduling mode", lag_s <= 60, detail)
    job = conn.execute("SELECT active FROM cron.job WHERE jobname = %s", (DISPATCHER_JOB,)).fetchone()
    behind = conn.execute(
        "SELECT count(*) FROM public.auto_sync_jobs WHERE next_slot < now() - make_interval(secs => %s)",
        (DISPATCHER_BEHIND_S,),
    ).fetchone()
    assert behind is not None
    if job is None or not job[0]:
        return Check(
            "scheduling mode", False, "dispatcher; its job is missing or paused: run `autosync reconcile`"
        )
    return Check(
        "scheduling mode",
        behind[0] == 0,
        f"dispatcher; busiest minute: {due} users due; "
        + (
            f"{behind[0]} user(s) more than {DISPATCHER_BEHIND_S} s past their slot"
            if behind[0]
            else "keeping up"
        ),
    )


def users_readable_check(conn: Connection) -> Check:
    """The service (as service_role) checks every user it acts for in auth.users. Revision 0002 grants that
    where it creates auth.users; an auth.users that existed before (Supabase's) may not allow it."""
    row = conn.execute("SELECT has_table_privilege('service_role', 'auth.users', 'SELECT')").fetchone()
    readable = bool(row and row[0])
    return Check(
        "service_role reads auth.users",
        readable,
        "yes"
        if readable
        else "no: every request would fail; an administrator runs GRANT SELECT ON auth.users TO service_role",
    )


def seed_intervals(conn: Connection) -> list[SeedInterval]:
    """Users still on the interval the seed's adoption chose for them (revision 0004's mapping)."""
    rows = conn.execute("SELECT * FROM public.auto_sync_seed_intervals()").fetchall()
    return [SeedInterval(*row) for row in rows]


def seed_interval_check(moved: list[SeedInterval]) -> Check:
    """Information, not a failure: these users sync at a supported interval near the one they chose."""
    if not moved:
        return Check("seed intervals", True, "no user on a moved interval")
    shown = ", ".join(
        f"{m.user_id}: {m.seed_interval if m.seed_interval is not None else 'unset'} -> {m.interval_minutes} min"
        for m in moved[:5]
    )
    more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
    return Check(
        "seed intervals",
        True,
        f"{len(moved)} user(s) adopted from the seed with an unsupported interval, now the longest supported "
        f"one not longer: {shown}{more}",
    )


def function_url(conn: Connection) -> str | None:
    """The function URL that new sessions (and so pg_cron runs) will see: the database setting."""
    row = conn.execute("SELECT public.auto_sync_function_url()").fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _reachable(url: str, *, timeout_s: float) -> Check:
    # From where doctor runs; pg_cron calls from the database host, which may see another network.
    try:
        response = httpx.get(url.rstrip("/") + "/readyz", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return Check("function reachable", False, f"{url}/readyz: {type(exc).__name__}: {exc}")
    return Check(
        "function reachable",
        response.status_code == 200,
        f"{url}/readyz answered {response.status_code}",
    )


def service_key_check(conn: Connection, url: str, *, timeout_s: float) -> Check:
    """Does the function accept the key pg_cron sends, and does it still accept a previous one?

    Presents the stored key (readable by the owner only) to the function, as pg_cron's trigger
    does; the function answers which of its keys it is. The key is never printed.
    """
    name = "function accepts the stored key"
    try:
        row = conn.execute("SELECT key FROM autosync_private.service_key").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return Check(name, False, "not checked: reading the stored key needs the owner's DATABASE_URL")
    if row is None:
        return Check(name, False, "no key stored")
    try:
        response = httpx.get(
            url.rstrip("/") + "/functions/v1/service-key",
            headers={"Authorization": f"Bearer {row[0]}"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        return Check(name, False, f"not checked: {type(exc).__name__}")
    if response.status_code == 401:
        return Check(
            name,
            False,
            "the function refuses the database's key: every pg_cron run fails with 401 "
            "(give AUTOSYNC_SERVICE_KEY and autosync_private.set_service_key the same key)",
        )
    if response.status_code != 200:
        return Check(name, False, f"not checked: /functions/v1/service-key answered {response.status_code}")
    status = response.json()
    if status.get("key") == "previous":
        return Check(
            name,
            True,
            "rotation under way: the database still holds the function's previous key; store the new "
            "one (SELECT autosync_private.set_service_key($1); with Pulumi: `pulumi up`)",
        )
    if status.get("previous_configured"):
        return Check(
            name,
            False,
            "yes, but the function still accepts a previous key (AUTOSYNC_SERVICE_KEY_PREVIOUS) although "
            "the database holds the new one: remove it (with Pulumi: run `pulumi up` again)",
        )
    return Check(name, True, "yes; no previous key accepted")


def reconcile(conn: Connection, *, dry_run: bool = False) -> list[Fix]:
    """Make cron.job and auto_sync_jobs match user_settings. Each user is fixed in its own transaction."""
    fixes: list[Fix] = []
    enabled: dict[uuid.UUID, int] = dict(
        conn.execute("SELECT user_id, interval_minutes FROM public.user_settings WHERE enabled").fetchall()
    )
    users: dict[uuid.UUID, None] = {}
    strays: list[str] = []
    dispatcher_drift = False
    for drift in find_drift(conn):
        if drift.kind == "dispatcher":
            dispatcher_drift = True
        elif drift.user_id is not None:
            users.setdefault(drift.user_id)
        elif drift.job_name is not None:
            strays.append(drift.job_name)
    for user_id in users:
        if user_id in enabled:
            fix = _apply(
                conn,
                "schedule",
                user_id,
                None,
                "SELECT public.schedule_auto_sync(%s, %s)",
                (user_id, enabled[user_id]),
                dry_run=dry_run,
            )
        else:
            fix = _apply(
                conn,
                "unschedule",
                user_id,
                None,
                "SELECT public.unschedule_auto_sync(%s)",
                (user_id,),
                dry_run=dry_run,
            )
        fixes.append(fix)
    if dispatcher_drift:  # applying the current mode again creates, resumes or removes the job
        fixes.append(
            _apply(
                conn,
                "apply the scheduling mode again",
                None,
                DISPATCHER_JOB,
                "SELECT public.set_auto_sync_mode(public.auto_sync_mode())",
                (),
                dry_run=dry_run,
            )
        )
    for job_name in strays:  # not named after a user id: nothing can own it
        fixes.append(
            _apply(
                conn,
                "unschedule stray job",
                None,
                job_name,
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s",
                (job_name,),
                dry_run=dry_run,
            )
        )
    return fixes


def _apply(
    conn: Connection,
    action: str,
    user_id: uuid.UUID | None,
    job_name: str | None,
    sql: str,
    params: tuple[object, ...],
    *,
    dry_run: bool,
) -> Fix:
    if dry_run:
        return Fix(action, user_id, job_name, True, "dry run: not applied")
    try:
        with conn.transaction():
            conn.execute(sql, params)  # type: ignore[arg-type]
    except Exception as exc:
        return Fix(action, user_id, job_name, False, str(exc).splitlines()[0])
    return Fix(action, user_id, job_name, True, "done")
