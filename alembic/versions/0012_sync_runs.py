"""sync_runs and sync_run_attempts: each user's sync history

A run is one request to import a user's mail (from pg_cron or a manual call); each try of it is an
attempt. A partial unique index allows one active (queued or running) run per user, so concurrent
triggers cannot enqueue a second import: the database, not the caller, decides.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

CREATE_RUNS = """
CREATE TABLE public.sync_runs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    trigger text NOT NULL CONSTRAINT sync_runs_trigger CHECK (trigger IN ('cron', 'manual')),
    status text NOT NULL DEFAULT 'queued'
        CONSTRAINT sync_runs_status CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    job_id bigint,
    attempts integer NOT NULL DEFAULT 0,
    messages_imported integer NOT NULL DEFAULT 0,
    error text,
    queued_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
)
"""

CREATE_ONE_ACTIVE = """
CREATE UNIQUE INDEX sync_runs_one_active_per_user ON public.sync_runs (user_id)
    WHERE status IN ('queued', 'running')
"""

CREATE_HISTORY_INDEX = "CREATE INDEX sync_runs_user_recent ON public.sync_runs (user_id, queued_at DESC)"

CREATE_ATTEMPTS = """
CREATE TABLE public.sync_run_attempts (
    run_id uuid NOT NULL REFERENCES public.sync_runs (id) ON DELETE CASCADE,
    attempt integer NOT NULL CHECK (attempt >= 1),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'running'
        CONSTRAINT sync_run_attempts_status CHECK (status IN ('running', 'succeeded', 'failed')),
    messages_imported integer NOT NULL DEFAULT 0,
    error text,
    worker text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (run_id, attempt)
)
"""

RLS = [
    "ALTER TABLE public.sync_runs ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE public.sync_run_attempts ENABLE ROW LEVEL SECURITY",
    """CREATE POLICY sync_runs_select_own ON public.sync_runs
           FOR SELECT TO authenticated USING (user_id = auth.uid())""",
    """CREATE POLICY sync_run_attempts_select_own ON public.sync_run_attempts
           FOR SELECT TO authenticated USING (user_id = auth.uid())""",
    "REVOKE ALL ON public.sync_runs, public.sync_run_attempts FROM PUBLIC, anon, authenticated",
    "GRANT SELECT ON public.sync_runs, public.sync_run_attempts TO authenticated",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON public.sync_runs, public.sync_run_attempts TO service_role",
]


def upgrade() -> None:
    op.execute(CREATE_RUNS)
    op.execute(CREATE_ONE_ACTIVE)
    op.execute(CREATE_HISTORY_INDEX)
    op.execute(CREATE_ATTEMPTS)
    for statement in RLS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE public.sync_run_attempts")
    op.execute("DROP TABLE public.sync_runs")
