"""How many GPUs each training worker sees (issue 14): workers.gpus

Each training worker's pool process records in its heartbeat row the GPUs it sees (torch.cuda.device_count() after
`ganforge worker --gpu`; 0 on a CPU worker), so the API can say when a job asking for resources.gpus N waits on a
queue whose live workers cannot run it (LeaseStore.queue_reason). Nullable: a row written by a worker from before
this revision says nothing about its GPUs, and the API then assumes it can.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("gpus", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("gpus")
