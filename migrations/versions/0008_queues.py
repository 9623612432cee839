"""Named queues: jobs.queue and the workers that serve queues (issue 14)

`jobs.queue` is the named queue whose workers may take the job (the spec's `resources.queue`, resolved at
submission to the service's default GANFORGE_QUEUE when left out); existing jobs get the default queue of the
settings this migration runs with. The index (status, queue, priority, seq) keeps the scheduler's claim an index
scan per queue. `workers` is the registry of live training workers: each pool process upserts its row (its
queues, last_seen) every GANFORGE_WORKER_HEARTBEAT_SECONDS, so the API can tell a job whose queue no worker serves.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _default_queue() -> str:
    """The service's default queue (GANFORGE_QUEUE), or its built-in default when the settings cannot be read."""
    try:
        from models.settings import get_settings

        return get_settings().queue
    except Exception:  # migrating a store from a process with other (or invalid) settings: the built-in default
        return "ganforge"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("queue", sa.String(length=64), nullable=True))
    op.execute(sa.text("UPDATE jobs SET queue = :queue").bindparams(queue=_default_queue()))
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("queue", existing_type=sa.String(length=64), nullable=False)
    op.create_index("ix_jobs_status_queue_priority_seq", "jobs", ["status", "queue", "priority", "seq"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_workers_last_seen", "workers", ["last_seen"])


def downgrade() -> None:
    op.drop_index("ix_workers_last_seen", table_name="workers")
    op.drop_table("workers")
    op.drop_index("ix_jobs_status_queue_priority_seq", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("queue")
