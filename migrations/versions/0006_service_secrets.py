"""Service secrets

Issue 12: a one-row-per-secret table for secrets the service makes once for itself and every API process must
share (PostgreSQL with several API processes, and across restarts on both backends): the key that makes paging
cursors opaque and binds each to its list and owner. Rows are made on first use, not here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_secrets",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("service_secrets")
