"""Metric storage at production load (issue 14)

Placeholder: filled in by the work it is named for; until then it changes nothing.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 16:40:00
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
