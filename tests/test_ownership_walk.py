"""Ownership of every route, walked from /openapi.json, so a route added later without its owner check fails here.

Owner A (key-a) creates one object of each kind a path takes an id of: a job (queued: no worker runs), a data set
upload, a study, a generate request (A's job gets a sample and a checkpoint as the trainer would record them, so
the result routes have something to serve) and a store API key. Then every operation whose path has a `{...}`
parameter is called with A's objects:

- as owner B (key-b): 404, the same answer as for an id that does not exist, naming nothing of A's (a 200, 403,
  409 or 500 there is an ownership bug); B's cancels, revocations and deletes change nothing of A's;
- with no key, a wrong key, A's revoked store key and A's expired store key (both seen working first): 401;
- as A: not a 401, 403, 404 or 5xx, so B's 404 is ownership, not a missing object or a wrong URL.

A path parameter this file has no value for fails the test: a new route's author adds its id kind here. B's job
and study bodies naming A's data set or job (as dataset.id, init_from.job) get the answer a missing id gets. Every
/v1 operation without path parameters answers 401 to the same four keys too. One API-only uvicorn per backend: nothing trains.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.artifacts import ArtifactStore
from models.db import make_engine
from models.store import JobStore
from tests.conftest import BACKENDS, api_only
from tests.service import TINY_SPEC, Service

# In every name A gives its objects: B's answers must never contain it.
MARKER = f"walk-secret-{uuid.uuid4().hex[:8]}"
OWNER_A = "team-a"  # tests/service.py KEYS: key-a is team-a's, key-b team-b's
WRONG_KEY = "key-a-but-wrong"
# A's expiring store key lives this long: long enough to be seen working once on a loaded machine.
EXPIRING_SECONDS = 6
# The kind of object each id-like path parameter names; a route with a parameter in neither table fails the walk.
ID_KINDS = {
    "job_id": "job",
    "dataset_id": "dataset",
    "study_id": "study",
    "generation_id": "generation",
    "prefix": "key",  # /v1/keys/{prefix}: a store API key's prefix (api/routes/keys.py)
    "webhook_id": "webhook",
    "delivery_id": "delivery",  # one of A's webhook's deliveries (of A's job's submission)
}
# Path parameters that are no object id: a value that exists for A's job (its seeded sample and checkpoint).
STEP = 5
OTHER_PARAMS = {"step": str(STEP), "extension": "png"}
# The JSON body of each operation with a path parameter that takes one: a valid one, so that B's 404 can only be
# ownership. An operation with a request body missing here fails the walk.
BODIES: dict[tuple[str, str], dict[str, Any]] = {("POST", "/v1/jobs/{job_id}/generate"): {"count": 1}}
STUDY = {
    "name": MARKER,
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 8, "depth": 1},
    "losses": ["nsgan"],
    "seeds": 1,
    "training": {"steps": 10, "batch_size": 16},
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the OpenAPI template, e.g. /v1/jobs/{job_id}/cancel
    operation: dict[str, Any]

    @property
    def path_params(self) -> list[str]:
        return [p["name"] for p in self.operation.get("parameters", []) if p["in"] == "path"]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An API with no worker (jobs stay queued); a generate POST answers 202 at once."""
    data_dir = tmp_path_factory.mktemp(f"walk-{request.param}")
    with api_only(
        request.param, data_dir, GANFORGE_GENERATE_WAIT_SECONDS="0", GANFORGE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1"
    ) as deployment:
        yield deployment


@dataclass(frozen=True)
class DeadKeys:
    """Two store keys of A's with every scope: one revoked, one that expires at `expires_at` (time.time())."""

    revoked: str
    expired: str
    expires_at: float

    def clients(self, service: Service) -> list[tuple[str, httpx.Client]]:
        """(what, client) for each, once the expired one has expired: call only after `expires_at`."""
        time.sleep(max(0.0, self.expires_at - time.time() + 0.1))
        return [("a revoked key", service.client(self.revoked)), ("an expired key", service.client(self.expired))]


@pytest.fixture(scope="module")
def dead_keys(api: Service) -> DeadKeys:
    """A's revoked key and A's soon-expired key, each seen working first (so their 401 is the revocation and the
    expiry, not a key that never worked). The expiry leaves EXPIRING_SECONDS for that first call."""
    with api.client("key-a") as a:
        revoked = a.post("/v1/keys", json={"scopes": ["admin"], "name": MARKER})
        expired = a.post("/v1/keys", json={"scopes": ["admin"], "name": MARKER, "ttl": f"{EXPIRING_SECONDS}s"})
        assert revoked.status_code == 201 and expired.status_code == 201, (revoked.text, expired.text)
        expires_at = datetime.fromisoformat(expired.json()["expires_at"]).timestamp()  # the server's, same clock
        for key in (revoked.json(), expired.json()):
            with api.client(key["key"]) as client:
                works = client.get("/v1/jobs")
            late = " (past its expiry: raise EXPIRING_SECONDS)" if time.time() >= expires_at else ""
            assert works.status_code == 200, f"{key['prefix']} before it was revoked or expired{late}: {works.text}"
        gone = a.delete(f"/v1/keys/{revoked.json()['prefix']}")
        assert gone.status_code == 200 and gone.json()["revoked"], gone.text
    return DeadKeys(revoked.json()["key"], expired.json()["key"], expires_at)


def operations(service: Service) -> list[Operation]:
    schema = httpx.get(f"{service.url}/openapi.json", timeout=30).json()
    return [
        Operation(method.upper(), path, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def seed_results(service: Service, job_id: str) -> None:
    """A sample and a checkpoint at STEP for `job_id`, recorded in the store and artifact folder as the trainer's
    sink would (worker/sink.py), sparing a worker. The API streams these files; it never loads them."""
    artifacts = ArtifactStore(service.env.get("GANFORGE_ARTIFACTS_URL") or str(service.data_dir / "artifacts"))
    prefix = f"jobs/{job_id}"
    npy = io.BytesIO()
    np.save(npy, np.zeros((4, 2), dtype=np.float32))
    keys = {name: f"{prefix}/{name}" for name in ("sample.png", "sample.npy", "weights.safetensors", "state.pt")}
    for name, key in keys.items():
        artifacts.put_bytes(key, npy.getvalue() if name.endswith(".npy") else b"\x89PNG\r\n\x1a\n" + name.encode())
    url = service.env.get("GANFORGE_DATABASE_URL") or f"sqlite:///{service.data_dir / 'ganforge.db'}"
    engine = make_engine(url)
    try:
        store = JobStore(engine)
        store.add_sample(
            job_id=job_id,
            step=STEP,
            count=4,
            png_key=keys["sample.png"],
            npy_key=keys["sample.npy"],
            labels=None,
            evaluation=None,
        )
        store.add_checkpoint(
            job_id=job_id,
            step=STEP,
            weights_key=keys["weights.safetensors"],
            state_key=keys["state.pt"],
            size_bytes=len(keys["weights.safetensors"]),
        )
    finally:
        engine.dispose()


def missing_ids() -> dict[str, str]:
    """An id of each kind in ID_KINDS that names nothing (of the kind's form: a key prefix is gf_ and 8 of a-z0-9)."""
    return {**{kind: str(uuid.uuid4()) for kind in ID_KINDS.values()}, "key": f"gf_{uuid.uuid4().hex[:8]}"}


def create_objects(service: Service) -> dict[str, str]:
    """One object of each kind in ID_KINDS, owner A's, through the API; kind -> id."""
    with service.client("key-a") as a:
        # Made first, so A's job's submission queues a delivery to it (port 9: nothing answers; it stays failed).
        webhook = a.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/walk", "events": ["job.status"]})
        assert webhook.status_code == 201, webhook.text
        job = a.post("/v1/jobs", json={**TINY_SPEC, "name": MARKER})
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        points = io.BytesIO()
        np.savez(points, x=np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
        dataset = a.post("/v1/datasets", files={"file": ("walk.npz", points.getvalue())}, data={"name": MARKER})
        assert dataset.status_code == 201, dataset.text
        study = a.post("/v1/studies", json=STUDY)
        assert study.status_code == 201, study.text
        seed_results(service, job_id)
        generation = a.post(f"/v1/jobs/{job_id}/generate", json={"count": 1})
        assert generation.status_code == 202, generation.text
        ids = {
            "job": job_id,
            "dataset": dataset.json()["id"],
            "study": study.json()["id"],
            "generation": generation.json()["id"],
        }
        key = a.post("/v1/keys", json={"scopes": ["read"], "name": MARKER})  # A's env key has the admin scope
        assert key.status_code == 201, key.text
        ids["key"] = key.json()["prefix"]
        ids["webhook"] = webhook.json()["id"]
        deliveries = a.get(f"/v1/webhooks/{ids['webhook']}/deliveries")
        assert deliveries.status_code == 200 and deliveries.json()["deliveries"], deliveries.text
        ids["delivery"] = deliveries.json()["deliveries"][0]["id"]
    return ids


def body_references(ids: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of POSTs whose body names an object by id (`ids`: kind -> id): no path parameter shows them."""
    return [
        ("/v1/jobs", {**TINY_SPEC, "dataset": {"id": ids["dataset"]}}),
        ("/v1/studies", {**STUDY, "dataset": {"id": ids["dataset"]}}),
        ("/v1/jobs", {**TINY_SPEC, "init_from": {"job": ids["job"], "step": STEP}}),
    ]


def with_ids(text: str, missing: dict[str, str], ids: dict[str, str]) -> str:
    """`text` (an answer about the `missing` ids) with `ids` in their place: what it says of A's objects."""
    for kind, value in ids.items():
        text = text.replace(missing[kind], value)
    return text


def url_of(operation: Operation, ids: dict[str, str]) -> str:
    """The operation's path with `ids` (kind -> id) and OTHER_PARAMS filled in; fails on a parameter it cannot fill."""
    path = operation.path
    for name in operation.path_params:
        if name in ID_KINDS:
            value = ids[ID_KINDS[name]]
        elif name in OTHER_PARAMS:
            value = OTHER_PARAMS[name]
        else:
            pytest.fail(
                f"{operation}: path parameter {name!r} is unknown to the ownership walk: add it to ID_KINDS (an "
                f"object id: create one of A's in create_objects) or OTHER_PARAMS in {Path(__file__).name}"
            )
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"{operation}: a path parameter OpenAPI does not list: {path}"
    return path


def body_of(operation: Operation) -> dict[str, Any] | None:
    if "requestBody" not in operation.operation:
        return None
    if (operation.method, operation.path) not in BODIES:
        pytest.fail(f"{operation} takes a request body: add a valid one to BODIES in {Path(__file__).name}")
    return BODIES[(operation.method, operation.path)]


def call(client: httpx.Client, method: str, url: str, body: dict[str, Any] | None) -> tuple[int, str]:
    """Status and body text; an event stream's body is not read (it stays open while the job can still change)."""
    with client.stream(method, url, json=body) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, ""
        return response.status_code, response.read().decode("utf-8", "replace")


def unauthorized(status: int, text: str) -> bool:
    return status == 401 and '"unauthorized"' in text and MARKER not in text


def test_every_route_with_an_id_is_404_to_another_owner_and_401_without_a_key(
    api: Service, dead_keys: DeadKeys
) -> None:
    walked = [op for op in operations(api) if op.path_params]
    missing = missing_ids()
    for op in walked:  # an unknown path parameter or body fails before anything is created
        url_of(op, missing)
        body_of(op)
    ids = create_objects(api)
    failures: list[str] = []
    kinds_walked: set[str] = set()
    with (
        api.client("key-b") as b,
        api.client(WRONG_KEY) as wrong,
        httpx.Client(base_url=api.url, timeout=30) as anonymous,
    ):
        keyless = [("no key", anonymous), ("a wrong key", wrong), *dead_keys.clients(api)]
        for op in walked:
            kinds_walked |= {ID_KINDS[name] for name in op.path_params if name in ID_KINDS}
            url, body = url_of(op, ids), body_of(op)
            status, text = call(b, op.method, url, body)
            # As missing as a missing object: the same answer as for fresh ids, A's ids in place of them.
            absent_status, absent_text = call(b, op.method, url_of(op, missing), body)
            absent_text = with_ids(absent_text, missing, ids)
            if status != 404 or '"not_found"' not in text or MARKER in text or OWNER_A in text:
                failures.append(f"{op} as owner B: {status} {text[:300]!r} (want 404 not_found, nothing of A's)")
            elif (status, text) != (absent_status, absent_text):
                failures.append(f"{op} as owner B: {text[:300]!r}, for a missing id {absent_text[:300]!r}")
            for name, client in keyless:
                status, text = call(client, op.method, url, body)
                if not unauthorized(status, text):
                    failures.append(f"{op} with {name}: {status} {text[:300]!r} (want 401 unauthorized)")
        # Ids in a body: B's job or study neither trains on A's data set nor starts from A's checkpoint.
        for (path, body), (_, absent_body) in zip(body_references(ids), body_references(missing), strict=True):
            status, text = call(b, "POST", path, body)
            absent_status, absent_text = call(b, "POST", path, absent_body)
            if (status, text) != (absent_status, with_ids(absent_text, missing, ids)) or not 400 <= status < 500:
                failures.append(
                    f"POST {path} {body} as owner B: {status} {text[:300]!r}, for a missing id "
                    f"{absent_status} {absent_text[:300]!r} (want the same 4xx)"
                )
        for _, client in keyless:
            client.close()
    assert not failures, "\n".join(failures)

    with api.client("key-a") as a:
        # B's cancels and deletes changed nothing of A's.
        assert a.get(f"/v1/jobs/{ids['job']}").json()["status"] == "queued"
        assert a.get(f"/v1/studies/{ids['study']}").json()["status"] == "queued"
        assert a.get(f"/v1/datasets/{ids['dataset']}").status_code == 200
        assert a.get(f"/v1/generations/{ids['generation']}").json()["status"] == "queued"
        if "key" in ids:
            keys = {key["prefix"]: key for key in a.get("/v1/keys").json()["keys"]}
            assert keys[ids["key"]]["active"], keys[ids["key"]]
        # A reaches every one of them (reads first, then what changes or deletes the objects).
        order = sorted(walked, key=lambda op: (op.method != "GET", op.method == "DELETE", -len(op.path), op.path))
        for op in order:  # deletes last, a checkpoint before its job (the longer path first)
            status, text = call(a, op.method, url_of(op, ids), body_of(op))
            if status in (401, 403, 404) or status >= 500:
                failures.append(f"{op} as owner A: {status} {text[:300]!r} (A's own object: want it found)")
    assert not failures, "\n".join(failures)
    assert kinds_walked == set(ids), f"no route took an id of {set(ids) - kinds_walked}"
    print(
        f"routes covered by the ownership walk: {len(walked)} operations with a path id (B 404, no/wrong/dead key 401)"
    )


def test_every_v1_route_without_an_id_is_401_without_a_key(api: Service, dead_keys: DeadKeys) -> None:
    walked = [op for op in operations(api) if not op.path_params and op.path.startswith("/v1/")]
    assert walked, "no /v1 operation in /openapi.json"
    failures = []
    with api.client(WRONG_KEY) as wrong, httpx.Client(base_url=api.url, timeout=30) as anonymous:
        keyless = [("no key", anonymous), ("a wrong key", wrong), *dead_keys.clients(api)]
        for op in walked:
            for name, client in keyless:
                status, text = call(client, op.method, op.path, None)
                if not unauthorized(status, text):
                    failures.append(f"{op} with {name}: {status} {text[:300]!r} (want 401 unauthorized)")
        for _, client in keyless:
            client.close()
    assert not failures, "\n".join(failures)
    print(
        f"routes covered by the ownership walk: {len(walked)} /v1 operations without a path id (no/wrong/dead key 401)"
    )
