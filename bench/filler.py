"""Work that needs no minute boundary, done while the cron benchmarks wait for one.

The fan-out observes three minute boundaries (per-user staggered, unstaggered, dispatcher); each
wait is up to a minute of nothing. Jobs queued here (the import benchmarks, the no-op throughput
passes, the API load) run in that time when their estimate ends before the boundary's lead time,
and the benchmark chooses its boundary only after they return, so a job that overruns costs a later
boundary, never a figure. Whatever has not fitted runs afterwards (`finish`). Nothing else of the
benchmark runs while a job does.

Jobs of one group run in the order they were added (the no-op passes need the first import); a job
that does not fit lets a later one of another group go first. A job that runs workers needs a quiet
queue: no run may be queued behind its back. The per-user waits are quiet (pg_cron's user jobs are
inactive then); the dispatcher's is not (it queues every user whose slot comes), so only jobs
without workers run there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Job:
    name: str
    group: str
    estimate_s: float
    run: Callable[[], None]
    needs_quiet_queue: bool


@dataclass
class Filler:
    jobs: list[Job] = field(default_factory=list)
    ran_while_waiting: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(
        self, name: str, estimate_s: float, run: Callable[[], None], *, group: str, needs_quiet_queue: bool
    ) -> None:
        self.jobs.append(Job(name, group, estimate_s, run, needs_quiet_queue))

    def until(self, deadline: float, *, quiet_queue: bool) -> None:
        """Run the jobs that fit before `deadline` (epoch s), each group's in order."""
        while (job := self._next(deadline, quiet_queue=quiet_queue)) is not None:
            self._run(job)
            self.ran_while_waiting.append(job.name)

    def finish(self) -> None:
        while self.jobs:
            self._run(self.jobs[0])

    def _next(self, deadline: float, *, quiet_queue: bool) -> Job | None:
        blocked: set[str] = set()
        for job in self.jobs:
            if job.group in blocked:
                continue
            blocked.add(job.group)  # whatever happens, this group's later jobs wait for this one
            if (quiet_queue or not job.needs_quiet_queue) and time.time() + job.estimate_s <= deadline:
                return job
        return None

    def _run(self, job: Job) -> None:
        self.jobs.remove(job)
        started = time.perf_counter()
        job.run()
        self.seconds[job.name] = time.perf_counter() - started
