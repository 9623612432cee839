"""Webhook endpoints and their durable delivery outbox (issue 13)

Placeholder: filled in by the work it is named for; until then it changes nothing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 16:40:00
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
