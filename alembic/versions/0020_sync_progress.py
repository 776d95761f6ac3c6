"""sync_runs.progress_done and progress_total: how far a running import is

The worker moves them after every committed batch, so the history shows "messages done of the
total" while a run imports. `progress_total` is NULL until the first mailbox has been searched;
it grows when a user's next account is reached (accounts are imported one after another).

Revision ID: 0020
Revises: 0019
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

ADD_PROGRESS = """
ALTER TABLE public.sync_runs
    ADD COLUMN progress_done integer NOT NULL DEFAULT 0 CONSTRAINT sync_runs_progress_done CHECK (progress_done >= 0),
    ADD COLUMN progress_total integer CONSTRAINT sync_runs_progress_total CHECK (progress_total >= 0)
"""

DROP_PROGRESS = """
ALTER TABLE public.sync_runs DROP COLUMN progress_total, DROP COLUMN progress_done
"""


def upgrade() -> None:
    op.execute(ADD_PROGRESS)


def downgrade() -> None:
    op.execute(DROP_PROGRESS)
