"""Named queues: jobs.queue (issue 14)

Placeholder: filled in by the work it is named for; until then it changes nothing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 16:40:00
"""

from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
