"""Queue: an index that keeps procrastinate's job fetch cheap however deep the queue is

Every import job carries a lock (`user:<id>`), so that one user never has two runs at once.
procrastinate's fetch (`procrastinate_fetch_job_v2`) therefore asks, for the job it is about to
take, whether another job with the same lock is running or waiting ahead of it. Its only index that
can answer holds `(id, lock)`: `lock` is not its leading column, so the question reads the whole
index, every todo and doing job, once per fetch. The cost grows with the queue's depth: 0.4 ms of
Postgres CPU per fetch with 10,000 runs queued (96 index pages read), which is what a dispatcher
burst or a no-op pass puts there (BENCHMARKS.md, no-op throughput), and ten times that at 100,000.

This index leads with `lock`, under the same predicate as procrastinate's own, so the question is
one index probe (3 pages) at any depth. procrastinate's upstream tracks the same cost
(procrastinate-org/procrastinate#1242); its schema file stays byte for byte as revision 0011 froze
it, and the index is this project's, named for it.

Plain CREATE INDEX, in the migration's transaction: the table holds only live jobs (finished ones
are deleted), so the build takes milliseconds, during which enqueues wait.

Revision ID: 0028
Revises: 0027
"""

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

CREATE_INDEX = """
CREATE INDEX autosync_procrastinate_jobs_lock_idx
    ON public.procrastinate_jobs (lock, priority, id)
    WHERE status = ANY (ARRAY['todo'::public.procrastinate_job_status, 'doing'::public.procrastinate_job_status])
"""


def upgrade() -> None:
    op.execute(CREATE_INDEX)


def downgrade() -> None:
    op.execute("DROP INDEX public.autosync_procrastinate_jobs_lock_idx")
