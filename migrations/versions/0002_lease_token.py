"""lease token apart from the attempt count

`attempt` used to be both the count of claims and the lease's fencing token, so a
graceful hand-back used up an attempt. The fencing token becomes `lease_token`;
`attempt` counts failed attempts only (1-based, never above max_attempts).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 19:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases: SQLite's batch mode would copy and drop the jobs table.
    op.add_column("jobs", sa.Column("lease_token", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("jobs", sa.Column("forgiven_token", sa.BigInteger(), nullable=True))
    # Every claim so far raised attempt: that count is the fencing token a running worker still holds.
    op.execute("UPDATE jobs SET lease_token = attempt")
    # The new attempt is 1-based and bounded by max_attempts (old rows could show attempt 4 of 3).
    op.execute("UPDATE jobs SET attempt = 1 WHERE attempt < 1")
    op.execute("UPDATE jobs SET attempt = max_attempts WHERE attempt > max_attempts")


def downgrade() -> None:
    # The old code reads attempt as the claim count and fencing token.
    op.execute("UPDATE jobs SET attempt = lease_token")
    # ALTER TABLE DROP COLUMN (SQLite 3.35+), not batch mode: dropping the copied jobs table would cascade
    # to every event, metric, sample and checkpoint.
    op.execute("ALTER TABLE jobs DROP COLUMN forgiven_token")
    op.execute("ALTER TABLE jobs DROP COLUMN lease_token")
