"""studies, watch alerts and compute seconds on jobs, generate requests

Issue 11: a study fans out ordinary jobs (jobs.study_id); training.watch records
what it found on the job (jobs.alerts); a job's CPU/GPU seconds; and
POST /v1/jobs/{id}/generate requests (generations).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 04:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both databases (SQLite's batch mode would copy and drop jobs).
    op.add_column("jobs", sa.Column("study_id", sa.String(length=36), nullable=True))
    op.add_column("jobs", sa.Column("alerts", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("cpu_seconds", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("gpu_seconds", sa.Float(), nullable=True))
    op.create_index("ix_jobs_study_id", "jobs", ["study_id"])
    op.create_table(
        "studies",
        sa.Column("seq", BIG_PK, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("job_count", sa.Integer(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_studies_owner_idempotency_key"),
    )
    op.create_index("ix_studies_owner_seq", "studies", ["owner", "seq"])
    op.create_table(
        "generations",
        sa.Column("seq", BIG_PK, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result_key", sa.String(length=512), nullable=True),
        sa.Column("media_type", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_generations_job_id", "generations", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_generations_job_id", table_name="generations")
    op.drop_table("generations")
    op.drop_index("ix_studies_owner_seq", table_name="studies")
    op.drop_table("studies")
    op.drop_index("ix_jobs_study_id", table_name="jobs")
    # ALTER TABLE DROP COLUMN (SQLite 3.35+), not batch mode: dropping the copied jobs table would cascade.
    for column in ("gpu_seconds", "cpu_seconds", "alerts", "study_id"):
        op.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
