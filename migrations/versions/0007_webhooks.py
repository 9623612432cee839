"""Webhook endpoints and their durable delivery outbox (issue 13)

`webhook_endpoints`: per-owner URLs, the event kinds each wants, its Standard Webhooks secret, enabled or
disabled (and why), and since when its deliveries fail. `webhook_deliveries`: the outbox, one row per event and
endpoint, written in the same transaction as the state change (models/store/outbox.py), with its attempts, the last
response and the sender's lease.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("seq", BIG_PK, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("failing_since", TIME, nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_webhook_endpoints_owner_seq", "webhook_endpoints", ["owner", "seq"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("seq", BIG_PK, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("endpoint_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=True),
        sa.Column("last_attempt_at", TIME, nullable=True),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("lease_until", TIME, nullable=True),
        sa.Column("lease_holder", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_endpoint_seq", "webhook_deliveries", ["endpoint_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_endpoint_seq", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_endpoints_owner_seq", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
