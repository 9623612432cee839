"""Fair share and priorities through the real service (API, two workers) on PostgreSQL and Redis.

(tests/test_scheduler.py checks the same order in the store on both backends; one backend here keeps this file
near 30 s: two worker processes start.)

team-a submits 6 tiny jobs, then team-b 1; team-a may run one job at a time (GANFORGE_OWNER_QUOTAS). team-b's job
runs second, team-a's never two at once, and each of team-a's jobs held back by its quota starts when the previous
one ends (the ending worker wakes the queue: the submission messages were used up while team-a was at its quota).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import api_only
from tests.service import TINY_SPEC, wait_for


@pytest.mark.slow
def test_one_owners_job_runs_second_behind_another_owners_six(tmp_path: Path) -> None:
    quotas = {"team-a": {"running_jobs": 1}, "team-b": {"max_priority": 90}}
    with api_only("postgres", tmp_path, GANFORGE_OWNER_QUOTAS=json.dumps(quotas)) as service:
        with service.client("key-a") as a, service.client("key-b") as b:
            # priority: above the owner's max_priority (default 50) is a 422 at `priority`; team-b may ask for 90.
            refused = a.post("/v1/jobs", json={**TINY_SPEC, "priority": 51})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["details"][0]["field"] == "priority"
            assert "50" in refused.json()["error"]["details"][0]["message"]
            allowed = b.post("/v1/jobs", params={"validate_only": "true"}, json={**TINY_SPEC, "priority": 90})
            assert allowed.status_code == 200 and allowed.json()["spec"]["priority"] == 90, allowed.text

            ids = [a.post("/v1/jobs", json=TINY_SPEC).json()["id"] for _ in range(6)]
            single = b.post("/v1/jobs", json=TINY_SPEC).json()
            # POST answers queue_reason as GET does (9085db6); team-a's six queued jobs are not counted in it; no
            # worker runs yet, which it says too (named queues, tests/test_queues.py)
            free = "waiting for a free worker: no worker serves queue"
            assert single["priority"] == 50 and single["queue_reason"].startswith(free), single
            waiting = b.get(f"/v1/jobs/{single['id']}").json()
            assert waiting["queue_reason"].startswith(free), waiting
            sixth = a.get(f"/v1/jobs/{ids[5]}").json()  # team-a's quota of one running job holds it
            assert sixth["queue_reason"] == (
                "waiting: owner has 0 of 1 running jobs and 5 queued ahead of this one (quota running_jobs)"
            ), sixth

            service.start_worker()
            service.start_worker()
            jobs_a = [wait_for(a, job_id, ("succeeded",), timeout=180) for job_id in ids]
            job_b = wait_for(b, single["id"], ("succeeded",), timeout=180)

    def started(job: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(job["started_at"])

    order = sorted([*jobs_a, job_b], key=started)
    assert order[1]["id"] == job_b["id"], [(job["owner"], job["started_at"]) for job in order]
    assert [job["id"] for job in jobs_a] == [job["id"] for job in order if job["owner"] == "team-a"]
    for earlier, later in zip(jobs_a, jobs_a[1:], strict=False):  # team-a's quota: one at a time
        assert started(later) >= datetime.fromisoformat(earlier["finished_at"]), (earlier, later)
