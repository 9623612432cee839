"""A NOTIFY for every change of a job row (issue 14): the API's job read cache (api/jobcache.py)

PostgreSQL only. After each UPDATE or DELETE of a `jobs` row, a trigger queues `pg_notify('ganforge_job_events',
'job <id>')`, delivered when the transaction commits (never for one that rolls back); identical payloads of one
transaction are folded into one by PostgreSQL. The API processes hear it on their one LISTEN connection
(models/store/notify.py) and drop their kept answer for that job. A trigger rather than a call in each store
method: no code path that changes a job, today's or tomorrow's, can forget it. SQLite needs nothing: the cache
reads `PRAGMA data_version` there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 22:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The channel and payload prefix of models/store/notify.py (CHANNEL, JOB_CHANGED_PREFIX), spelled out: a migration
# stays as it was written when the code it once imported changes.
FUNCTION = """
CREATE FUNCTION ganforge_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ganforge_job_events', 'job ' || OLD.id);
    RETURN NULL;
END
$$
"""
TRIGGER = """
CREATE TRIGGER jobs_changed AFTER UPDATE OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION ganforge_job_changed()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS jobs_changed ON jobs")
    op.execute("DROP FUNCTION IF EXISTS ganforge_job_changed()")
