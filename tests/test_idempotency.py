"""Idempotent submission over real HTTP: concurrent retries with one Idempotency-Key get one job (fault 3)."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import httpx

from tests.race import at_once
from tests.service import Service

SPEC: dict[str, Any] = {
    "name": "idempotent",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 16, "depth": 2},
    "loss": {"name": "nsgan"},
    "training": {"steps": 20, "batch_size": 16},
    "every": {"metrics": 10, "samples": 20, "checkpoint": 20},
}


def _post_at_once(service: Service, calls: int, body: dict[str, Any], key: str) -> list[Any]:
    """`calls` POST /v1/jobs sent together, one connected client each (so the requests really overlap)."""
    clients = [service.client() for _ in range(calls)]
    try:
        for client in clients:
            client.get("/healthz")
        posts = [partial(client.post, "/v1/jobs", json=body, headers={"Idempotency-Key": key}) for client in clients]
        return at_once(*posts)
    finally:
        for client in clients:
            client.close()


def test_concurrent_retries_with_one_idempotency_key_get_one_job(service: Service) -> None:
    for _ in range(3):  # several rounds, so the race is met on every run
        key = f"submit-{uuid.uuid4()}"
        responses = _post_at_once(service, 8, SPEC, key)
        codes = sorted(r.status_code if isinstance(r, httpx.Response) else repr(r) for r in responses)
        assert codes == [200] * 7 + [201], [r.text for r in responses if isinstance(r, httpx.Response)]
        job_ids = {r.json()["id"] for r in responses}
        assert len(job_ids) == 1
        # The same key with a different body is a conflict, also when the retries race.
        conflicts = _post_at_once(service, 4, {**SPEC, "name": "something else"}, key)
        assert [r.status_code for r in conflicts] == [409] * 4
        assert {r.json()["error"]["code"] for r in conflicts} == {"idempotency_conflict"}
    with service.client() as client:
        # Exactly one job was stored for the key; listing shows no duplicates.
        listed = [job["id"] for job in client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]]
        assert job_ids <= set(listed) and len(listed) == len(set(listed))
