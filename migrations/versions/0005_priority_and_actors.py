"""Job priority; the key that made an upload, a generate request and an API key

Issue 12: `jobs.priority` (0-100, higher is claimed first among an owner's waiting jobs) with the index the
scheduler's claim reads; `key_id` on data sets and generate requests (the key that did the action:
a store key's prefix, `env:<owner>`, or null with auth off); `api_keys.parent_prefix`, the store key
that created a key through POST /v1/keys, so revoking a key revokes the keys it made.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("priority", sa.Integer(), nullable=False, server_default="50"))
    op.create_index("ix_jobs_status_priority_seq", "jobs", ["status", "priority", "seq"])
    op.add_column("datasets", sa.Column("key_id", sa.String(length=64), nullable=True))
    op.add_column("generations", sa.Column("key_id", sa.String(length=64), nullable=True))
    op.add_column("api_keys", sa.Column("parent_prefix", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("parent_prefix")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("key_id")
    op.drop_index("ix_jobs_status_priority_seq", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("priority")
