"""Metric storage at production load (issue 14): series in chunks instead of one row per point

Table `metric_chunks` (models/records.py MetricChunk): up to 4,096 points of one series per row, packed as
little-endian int64 steps and float64 values, with a roll-up (per 64 consecutive points: min value, its step, max
value, its step). The rows of `metrics` move into it, series by series; `metrics` is dropped. Downgrade unpacks
the chunks back into one row per point. On PostgreSQL the blobs are stored uncompressed (STORAGE EXTERNAL): floats
barely compress, and a read then skips pglz.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 16:40:00
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The packing at this revision (models/store/results.py writes the same).
CHUNK_POINTS = 4096
ROLLUP_GROUP = 64
ROLLUP = np.dtype([("min_value", "<f8"), ("min_step", "<i8"), ("max_value", "<f8"), ("max_step", "<i8")])


def _chunks(job_id: str, name: str, steps: np.ndarray, values: np.ndarray) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for start in range(0, len(steps), CHUNK_POINTS):
        s, v = steps[start : start + CHUNK_POINTS], values[start : start + CHUNK_POINTS]
        groups = np.arange(0, len(s), ROLLUP_GROUP)
        rollup = np.empty(len(groups), dtype=ROLLUP)
        for i, g in enumerate(groups):
            low, high = g + int(np.argmin(v[g : g + ROLLUP_GROUP])), g + int(np.argmax(v[g : g + ROLLUP_GROUP]))
            rollup[i] = (v[low], s[low], v[high], s[high])
        rows.append(
            {
                "job_id": job_id,
                "name": name,
                "first_step": int(s[0]),
                "last_step": int(s[-1]),
                "count": len(s),
                "first_value": float(v[0]),
                "last_value": float(v[-1]),
                "steps": s.astype("<i8").tobytes(),
                "values": v.astype("<f8").tobytes(),
                "rollup": rollup.tobytes(),
            }
        )
    return rows


def upgrade() -> None:
    chunks = op.create_table(
        "metric_chunks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_value", sa.Float(), nullable=False),
        sa.Column("last_value", sa.Float(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("values", sa.LargeBinary(), nullable=False),
        sa.Column("rollup", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_metric_chunks_series", "metric_chunks", ["job_id", "name", "last_step"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for column in ("steps", "values", "rollup"):
            op.execute(f'ALTER TABLE metric_chunks ALTER COLUMN "{column}" SET STORAGE EXTERNAL')
    series = bind.execute(sa.text("SELECT DISTINCT job_id, name FROM metrics")).all()
    for job_id, name in series:
        points = bind.execute(
            sa.text("SELECT step, value FROM metrics WHERE job_id = :j AND name = :n ORDER BY step"),
            {"j": job_id, "n": name},
        ).all()
        steps = np.array([p[0] for p in points], dtype=np.int64)
        values = np.array([p[1] for p in points], dtype=np.float64)
        op.bulk_insert(chunks, _chunks(job_id, name, steps, values))
    op.drop_table("metrics")


def downgrade() -> None:
    metrics = op.create_table(
        "metrics",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "name", "step"),
    )
    bind = op.get_bind()
    for job_id, name, steps_blob, values_blob in bind.execute(
        sa.text('SELECT job_id, name, steps, "values" FROM metric_chunks ORDER BY id')
    ).all():
        steps = np.frombuffer(steps_blob, dtype="<i8").tolist()
        values = np.frombuffer(values_blob, dtype="<f8").tolist()
        rows = [{"job_id": job_id, "name": name, "step": s, "value": v} for s, v in zip(steps, values, strict=True)]
        if rows:
            op.bulk_insert(metrics, rows)
    op.drop_index("ix_metric_chunks_series", table_name="metric_chunks")
    op.drop_table("metric_chunks")
