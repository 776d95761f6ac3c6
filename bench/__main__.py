"""`python -m bench` (via `bench/run`): every benchmark, one table, optional JSON and chart."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import api_load, dispatch, fanout, imports, noop_throughput, report
from bench.env import BenchEnv
from bench.filler import Filler

SECTIONS = ("import", "noop", "memory", "schedule", "trigger", "fanout", "noop_throughput", "api_load")
MB = 1_000_000


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is: `--quick` keeps the shape and shrinks the numbers."""

    import_messages: int
    memory_large: int
    noop_autosync: int
    noop_mbsync: int
    schedule_levels: tuple[int, int, int]
    trigger_calls: int
    fanout_interval: int
    fanout_max_s: float
    # Dispatcher mode: the fan-out's users plus this many more on `dispatcher_large_interval`.
    dispatcher_large_users: int = 100_000
    dispatcher_large_interval: int = 30
    # Timed rounds of the full import (autosync and mbsync alternating), after one warm-up each.
    import_repeats: int = 5
    # End-to-end no-op runs: users (one Dovecot mailbox each), and the worker process counts.
    noop_throughput_users: int = 10_000
    noop_throughput_workers: tuple[int, ...] = (1, 2, 4)
    # The API under load: clients at once, seconds measured per endpoint, server process counts.
    api_load_users: int = 5_000
    api_load_clients: int = 50
    api_load_seconds: float = 10.0
    api_load_processes: tuple[int, ...] = (1, 2)
    # How long import + noop + memory take (the cron waits run it when it fits): generous.
    imports_estimate_s: float = 240.0
    # The per-user fan-out with every user on one minute (what the stagger avoids). It costs a
    # minute boundary of its own; --quick leaves it out to stay within 3 minutes (BENCHMARKS.md).
    fanout_unstaggered: bool = True


FULL = Sizes(10_000, 100_000, 200, 30, (1_000, 5_000, 10_000), 1_000, 5, 240.0, 100_000)
QUICK = Sizes(
    2_000,
    8_000,
    50,
    10,
    (200, 500, 1_000),
    200,
    5,
    45.0,
    10_000,
    import_repeats=3,
    noop_throughput_users=600,
    api_load_users=2_000,
    api_load_seconds=2.0,
    imports_estimate_s=40.0,
    fanout_unstaggered=False,
)

# The keys of one fan-out window (run_cron); a window not measured keeps them, saying why.
WINDOW_KEYS = (
    "due", "busiest_bucket", "calls", "p50_s", "p99_s", "max_s", "cron_runs", "cron_failed",
    "cron_not_finished", "launch_p99_s", "run_p50_ms", "run_p99_ms", "calls_per_s",
)
NOT_IN_QUICK = "not measured in --quick (a minute boundary of its own; the full run measures it)"


def machine() -> dict[str, object]:
    return {
        "machine.cpus": os.cpu_count() or 0,
        "machine.memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "machine.debian": Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "",
        "machine.python": platform.python_version(),
    }


def run_imports(env: BenchEnv, sizes: Sizes, wanted: set[str], figures: report.Figures, profile: str | None) -> None:
    box = imports.make_mailbox(env, sizes.import_messages, seed=1)
    imports.raw_fetch(box)  # Dovecot builds its index and caches on first access: not anyone's cost
    raw = imports.raw_fetch(box)
    client = imports.client_fetch(box)
    rounds, mbsync = imports.import_rounds(env, box, sizes.import_repeats, profile=profile)
    try:
        if "import" in wanted:
            report_import(figures, box, rounds, raw, client)
        if "noop" in wanted:
            # The first no-op of each tool settles its state (mbsync renames new/ to cur/): not counted.
            mbsync.run()
            mb_times = [mbsync.run() for _ in range(sizes.noop_mbsync)]
            imports.autosync_noop(env, box, 1)
            ours_times = imports.autosync_noop(env, box, sizes.noop_autosync)
            figures["noop.messages"] = box.count
            figures["noop.autosync.p50_ms"] = report.percentile(ours_times, 50) * 1000
            figures["noop.autosync.p99_ms"] = report.percentile(ours_times, 99) * 1000
            figures["noop.mbsync.p50_ms"] = report.percentile(mb_times, 50) * 1000
            figures["noop.mbsync.p99_ms"] = report.percentile(mb_times, 99) * 1000
            figures["ratio.noop_autosync_vs_mbsync_p50"] = report.ratio(
                figures["noop.autosync.p50_ms"], figures["noop.mbsync.p50_ms"]
            )
            figures["target.noop_tenth_of_mbsync"] = (
                figures["noop.autosync.p50_ms"] <= figures["noop.mbsync.p50_ms"] / 10
                and figures["noop.autosync.p99_ms"] <= figures["noop.mbsync.p99_ms"] / 10
            )
    finally:
        mbsync.cleanup()
    if "memory" in wanted:
        large = imports.make_mailbox(env, sizes.memory_large, seed=2)
        imports.raw_fetch(large)  # as above: Dovecot's first-access indexing is not the import's
        big = imports.autosync_import(env, large)
        # The highest peak of the timed rounds: each is a fresh child, so each is a full import's peak.
        ours = max(rounds.autosync, key=lambda result: result["peak_rss_kb"])
        small_mb, large_mb = ours["peak_rss_kb"] / 1024, big["peak_rss_kb"] / 1024
        figures["memory.small.messages"] = box.count
        figures["memory.small.baseline_rss_mb"] = ours["rss_before_kb"] / 1024
        figures["memory.small.peak_rss_mb"] = small_mb
        figures["memory.large.messages"] = large.count
        figures["memory.large.peak_rss_mb"] = large_mb
        figures["memory.large.msgs_per_s"] = large.count / big["seconds"]
        # Within the large import: RSS after the batches of its first and of its last quarter.
        first_mb, last_mb = big["rss_first_quarter_kb"] / 1024, big["rss_last_quarter_kb"] / 1024
        figures["memory.large.rss_first_quarter_mb"] = first_mb
        figures["memory.large.rss_last_quarter_mb"] = last_mb
        # The import is one process (threads for fetch and store, no process pool): its peak is the worker's.
        figures["memory.processes_per_import"] = 1
        figures["target.memory_200mb_and_flat"] = (
            large_mb <= 200 and large_mb <= small_mb * 1.25 and last_mb <= first_mb * 1.1
        )


def report_import(
    figures: report.Figures, box: imports.Mailbox, rounds: imports.ImportRounds, raw: dict[str, float],
    client: dict[str, float],
) -> None:
    """Medians of the alternating rounds; the ratio is the median of the per-round ratios, with its spread."""
    ours_s = statistics.median(result["seconds"] for result in rounds.autosync)
    mbsync_s = statistics.median(rounds.mbsync_s)
    figures["import.messages"] = box.count
    figures["import.mb"] = round(box.bytes / MB, 1)
    figures["import.repeats"] = len(rounds.ratios)
    # A busy machine slows mbsync's fsyncs more than our CPU and flatters the ratio: say how busy it was.
    figures["import.load_avg_1m"] = os.getloadavg()[0]
    figures["import.seconds"] = ours_s
    # CPU of the import process (all its threads): what a loaded machine changes least.
    figures["import.cpu_seconds"] = statistics.median(result["cpu_seconds"] for result in rounds.autosync)
    figures["import.msgs_per_s"] = box.count / ours_s
    figures["import.mb_per_s"] = box.bytes / MB / ours_s
    figures["mbsync.seconds"] = mbsync_s
    figures["mbsync.msgs_per_s"] = box.count / mbsync_s
    figures["mbsync.mb_per_s"] = box.bytes / MB / mbsync_s
    figures["raw_fetch.msgs_per_s"] = raw["messages"] / raw["seconds"]
    figures["raw_fetch.mb_per_s"] = raw["bytes"] / MB / raw["seconds"]
    figures["client_fetch.msgs_per_s"] = client["messages"] / client["seconds"]
    figures["ratio.import_vs_mbsync"] = rounds.median_ratio
    figures["ratio.import_vs_mbsync.min"] = min(rounds.ratios)
    figures["ratio.import_vs_mbsync.max"] = max(rounds.ratios)
    figures["ratio.import_vs_raw_fetch"] = report.ratio(figures["import.msgs_per_s"], figures["raw_fetch.msgs_per_s"])
    figures["ratio.mbsync_vs_raw_fetch"] = report.ratio(figures["mbsync.msgs_per_s"], figures["raw_fetch.msgs_per_s"])
    figures["target.import_1_5x_mbsync"] = figures["ratio.import_vs_mbsync"] >= 1.5
    figures["target.import_3x_mbsync"] = figures["ratio.import_vs_mbsync"] >= 3.0


def run_cron(
    env: BenchEnv, sizes: Sizes, wanted: set[str], figures: report.Figures, chart: Path | None, filler: Filler
) -> None:
    env.start_function()
    levels, users = fanout.scheduling_at_scale(env, list(sizes.schedule_levels), interval=sizes.fanout_interval)
    if "schedule" in wanted:
        for step, (level, seconds) in enumerate(sorted(levels.items()), start=1):
            figures[f"schedule.step{step}.users"] = level
            figures[f"schedule.step{step}.seconds"] = seconds
            figures[f"schedule.step{step}.users_per_s"] = level / seconds
    if "trigger" in wanted:
        times = fanout.trigger_latency(env, users, sizes.trigger_calls)
        figures["trigger.calls"] = len(times)
        figures["trigger.p50_ms"] = report.percentile(times, 50) * 1000
        figures["trigger.p99_ms"] = report.percentile(times, 99) * 1000
        figures["target.trigger_p99_under_50ms"] = figures["trigger.p99_ms"] < 50
    if "fanout" in wanted:
        windows = fanout.fanout(
            env,
            interval=sizes.fanout_interval,
            max_s=sizes.fanout_max_s,
            filler=filler,
            with_unstaggered=sizes.fanout_unstaggered,
        )
        if not sizes.fanout_unstaggered:
            figures.update({f"fanout.unstaggered.{name}": NOT_IN_QUICK for name in WINDOW_KEYS})
        figures["fanout.users"] = len(users)
        figures["fanout.interval_minutes"] = sizes.fanout_interval
        figures["fanout.receiver"] = "sync function (`autosync serve` in its own process, real enqueue)"
        for window in windows:
            key = f"fanout.{window.label}"
            runs = sum(window.run_status.values())
            figures[f"{key}.due"] = window.due
            figures[f"{key}.busiest_bucket"] = window.busiest_bucket
            figures[f"{key}.calls"] = len(window.delays)
            figures[f"{key}.p50_s"] = report.percentile(window.delays, 50)
            figures[f"{key}.p99_s"] = report.percentile(window.delays, 99)
            figures[f"{key}.max_s"] = max(window.delays, default=float("nan"))
            figures[f"{key}.cron_runs"] = runs
            figures[f"{key}.cron_failed"] = window.run_status.get("failed", 0)
            figures[f"{key}.cron_not_finished"] = runs - window.run_status.get("succeeded", 0) - window.run_status.get("failed", 0)
            figures[f"{key}.launch_p99_s"] = report.percentile(window.launch_delays, 99)
            figures[f"{key}.run_p50_ms"] = report.percentile(window.durations, 50) * 1000
            figures[f"{key}.run_p99_ms"] = report.percentile(window.durations, 99) * 1000
            span = max(window.delays, default=0.0) - min(window.delays, default=0.0)
            figures[f"{key}.calls_per_s"] = report.ratio(len(window.delays), span)
            for index, (message, count) in enumerate(window.failures, start=1):
                figures[f"{key}.failure{index}"] = f"{count}x {message}"
        figures["target.fanout_p99_under_5s_staggered"] = figures["fanout.staggered.p99_s"] < 5.0
        windows += run_dispatcher(env, sizes, figures, len(users), filler)
        if chart is not None:
            report.chart(
                chart,
                windows,
                title=f"slot to run queued: {len(users):,} users on {sizes.fanout_interval} min, per-user mode "
                f"and dispatcher (+{sizes.dispatcher_large_users:,} on {sizes.dispatcher_large_interval} min)",
            )


def run_dispatcher(
    env: BenchEnv, sizes: Sizes, figures: report.Figures, medium_users: int, filler: Filler
) -> list[fanout.Window]:
    """Dispatcher mode: the fan-out's users and a large population, observed at one minute boundary."""
    switched_at = time.time()
    figures["fanout.dispatcher.switch_s"] = dispatch.switch(env, "dispatcher")
    _, schedule_s = dispatch.schedule(env, sizes.dispatcher_large_users, sizes.dispatcher_large_interval)
    figures["fanout.dispatcher.schedule_users_per_s"] = report.ratio(sizes.dispatcher_large_users, schedule_s)
    populations = [
        dispatch.Population("medium", sizes.fanout_interval, medium_users),
        dispatch.Population("large", sizes.dispatcher_large_interval, sizes.dispatcher_large_users),
    ]
    observed = dispatch.observe(env, populations, max_s=sizes.fanout_max_s, switched_at=switched_at, filler=filler)
    figures["fanout.dispatcher.first_run_after_switch_s"] = observed.first_run_s
    figures["fanout.dispatcher.period_s"] = 1
    figures["fanout.dispatcher.dispatch_p50_ms"] = report.percentile(observed.dispatch_ms, 50)
    figures["fanout.dispatcher.dispatch_max_ms"] = max(observed.dispatch_ms, default=float("nan"))
    windows = []
    for population in populations:
        key = f"fanout.dispatcher.{population.label}"
        figures[f"{key}.users"] = population.users
        figures[f"{key}.interval_minutes"] = population.interval
        figures[f"{key}.due"] = population.due
        figures[f"{key}.busiest_minute"] = population.busiest_minute
        figures[f"{key}.runs"] = len(population.delays)
        figures[f"{key}.p50_s"] = report.percentile(population.delays, 50)
        figures[f"{key}.p99_s"] = report.percentile(population.delays, 99)
        figures[f"{key}.max_s"] = max(population.delays, default=float("nan"))
        figures[f"{key}.committed_p99_s"] = report.percentile(population.committed, 99)
        figures[f"{key}.missed"] = population.missed
        figures[f"{key}.doubled"] = population.doubled
        label = f"dispatcher, {population.users:,} on {population.interval} min"
        windows.append(fanout.Window(label, observed.slot, population.due, population.busiest_minute, population.delays))
    # Per-user mode at the large size, from the launch rate measured above in this run: the busiest
    # minute's users launched one after another (not run: scheduling that many jobs takes long).
    rate = figures.get("fanout.staggered.calls_per_s")
    large = populations[1]
    if isinstance(rate, float) and rate > 0:
        figures["fanout.dispatcher.large.per_user_estimated_tail_s"] = large.busiest_minute / rate
    figures["target.dispatcher_medium_p99_under_2s"] = figures["fanout.dispatcher.medium.p99_s"] < 2.0
    figures["target.dispatcher_large_p99_under_5s_none_missed_or_doubled"] = (
        figures["fanout.dispatcher.large.p99_s"] < 5.0 and large.missed == 0 and large.doubled == 0
    )
    return windows


def _with_dovecot(env: BenchEnv, job: Callable[..., None], *args: Any) -> None:
    env.ensure_dovecot()
    job(*args)


def noop_throughput_jobs(env: BenchEnv, sizes: Sizes, figures: report.Figures, filler: Filler) -> None:
    """Queue → worker → IMAP LOGIN + STATUS → run recorded, for unchanged mailboxes (bench/noop_throughput.py).

    As jobs of a Filler: the first import, then one pass per worker count, each on its own, so
    that they can run while the fan-out waits for a minute boundary.
    """
    state: dict[str, noop_throughput.Population] = {}
    users = sizes.noop_throughput_users
    # Generous: 40 runs/s for the first import, 50 for a pass, plus the workers' (and Dovecot's) start.
    first_estimate, pass_estimate = 12 + users / 40, 5 + users / 50

    def first_import() -> None:
        env.ensure_dovecot()
        population = noop_throughput.prepare(env, users)
        first = noop_throughput.run_pass(
            env, population, worker_count=max(sizes.noop_throughput_workers), concurrency=None
        )
        checkpoints = noop_throughput.imported_checkpoints(env, population)
        if checkpoints != len(population.users):
            raise RuntimeError(f"the first import left {checkpoints} of {len(population.users)} checkpoints")
        state["population"] = population
        figures["noop_throughput.users"] = len(population.users)
        figures["noop_throughput.mailboxes"] = "one Dovecot user per account, 2 messages each, imported first"
        figures["noop_throughput.first_import_runs_per_s"] = first.runs_per_s

    def one_pass(count: int) -> None:
        measured = noop_throughput.run_pass(env, state["population"], worker_count=count, concurrency=None)
        key = f"noop_throughput.workers{count}"
        figures[f"{key}.concurrency"] = measured.concurrency
        figures[f"{key}.runs"] = measured.runs
        figures[f"{key}.runs_per_s"] = measured.runs_per_s
        figures[f"{key}.run_p50_ms"] = report.percentile(measured.run_seconds, 50) * 1000
        figures[f"{key}.run_p99_ms"] = report.percentile(measured.run_seconds, 99) * 1000
        rates = [v for k, v in figures.items() if k.startswith("noop_throughput.workers") and k.endswith("runs_per_s")]
        figures["target.noop_throughput_200_per_s"] = max(rates) >= 200

    filler.add(
        "noop_throughput first import", first_estimate, first_import, group="noop_throughput", needs_quiet_queue=True
    )
    for count in sizes.noop_throughput_workers:
        filler.add(
            f"noop_throughput {count} worker(s)",
            pass_estimate,
            functools.partial(one_pass, count),
            group="noop_throughput",
            needs_quiet_queue=True,
        )


def api_load_jobs(env: BenchEnv, sizes: Sizes, figures: report.Figures, filler: Filler) -> None:
    """load-auto-sync and save-auto-sync at N concurrent clients, one server per process count (bench/api_load.py).

    One Filler job per process count; each leaves no schedule behind (its users are unscheduled).
    """
    state: dict[str, api_load.Population] = {}

    def one_server(processes: int) -> None:
        if "population" not in state:
            state["population"] = api_load.population(env, users=sizes.api_load_users)
        loads = api_load.measure(
            env,
            state["population"],
            processes=processes,
            clients=sizes.api_load_clients,
            seconds=sizes.api_load_seconds,
        )
        figures["api_load.clients"] = sizes.api_load_clients
        figures["api_load.users"] = sizes.api_load_users
        for load in loads:
            name = "load" if load.endpoint == api_load.LOAD else "save"
            key = f"api_load.{name}.processes{load.processes}"
            figures[f"{key}.requests_per_s"] = load.requests_per_s
            figures[f"{key}.p50_ms"] = report.percentile(load.latencies, 50) * 1000
            figures[f"{key}.p99_ms"] = report.percentile(load.latencies, 99) * 1000
            figures[f"{key}.errors"] = load.errors
            if load.first_error:
                figures[f"{key}.first_error"] = load.first_error
        best = min(v for k, v in figures.items() if k.startswith("api_load.load.") and k.endswith(".p99_ms"))
        figures["target.api_load_p99_under_100ms"] = best < 100

    # Each server: its start, then both endpoints (warm-up + measured seconds), then the unscheduling.
    estimate = 5 + 2 * (1 + sizes.api_load_seconds) + sizes.api_load_users / 2000
    for processes in sizes.api_load_processes:
        filler.add(
            f"api_load {processes} process(es)",
            estimate,
            functools.partial(one_server, processes),
            group="api_load",
            needs_quiet_queue=False,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same shape (< 3 minutes)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--chart", type=Path, help="fan-out latency PNG (default: next to --json)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--profile", help="write a cProfile of the full import to this file")
    parser.add_argument(
        "--fanout-interval",
        type=int,
        choices=(5, 10, 15, 20, 30, 60),
        help="the users' interval in the fan-out (default 5: the busiest minute the schedules allow)",
    )
    args = parser.parse_args(argv)
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = wanted - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    chart = args.chart or (args.json.with_suffix(".png") if args.json else None)
    sizes = QUICK if args.quick else FULL
    if args.fanout_interval:
        sizes = dataclasses.replace(sizes, fanout_interval=args.fanout_interval)
    started = time.perf_counter()
    figures: report.Figures = {"mode": "quick" if args.quick else "full", **machine()}
    with BenchEnv() as env:
        env.start_postgres()
        # Everything that needs no minute boundary is a job of the filler: run while the cron
        # benchmarks wait for one when it fits, afterwards otherwise (bench/filler.py).
        filler = Filler()
        if wanted & {"import", "noop", "memory"}:
            # The biggest job first: the cron benchmarks' first wait may hold it.
            filler.add(
                "import, noop, memory",
                sizes.imports_estimate_s,
                functools.partial(_with_dovecot, env, run_imports, env, sizes, wanted, figures, args.profile),
                group="imports",
                needs_quiet_queue=False,
            )
        if "noop_throughput" in wanted:
            noop_throughput_jobs(env, sizes, figures, filler)
        if "api_load" in wanted:
            api_load_jobs(env, sizes, figures, filler)
        if wanted & {"schedule", "trigger", "fanout"}:
            run_cron(env, sizes, wanted, figures, chart, filler)
            fanout.quiet(env)
        filler.finish()
    for name, seconds in filler.seconds.items():
        figures[f"bench.seconds.{name}"] = seconds
    figures["bench.ran_while_cron_waited"] = ", ".join(filler.ran_while_waiting) or "-"
    figures["total_seconds"] = time.perf_counter() - started
    print(report.table(figures))
    if args.json:
        report.write_json(args.json, figures)
        print(f"\nfigures: {args.json}" + (f", chart: {chart}" if chart and "fanout" in wanted else ""))
        throughput = args.json.with_name(f"{args.json.stem}-throughput.png")
        if report.throughput_chart(throughput, figures):
            print(f"no-op throughput and API load chart: {throughput}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
