"""Checkpoint retention and deletion (issue 14; issue 12's deferred deletion): the policy, the store on PostgreSQL
and SQLite (what is pruned, what is protected, what a deletion removes and frees), and a real worker pruning a
real job's files through the API (the shared service, both backends), with the routes, the SDK and the CLI.
S3 is tests/test_s3.py."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from ganforge.cli import main as cli_main
from ganforge.client import Client, Conflict, NotFound
from models.artifacts import ArtifactStore
from models.records import Job, JobStatus
from models.retention import Retention, retention_of
from models.spec import InitFrom, JobSpec
from models.store import JobStore
from models.store.errors import InitFromGone
from models.store.generations import GenerationSourceGone
from models.store.results import CheckpointInUse, JobInStudy, JobInUse, JobNotFinal
from tests.service import TINY_SPEC, Service, wait_for
from worker.checkpoints import CheckpointKeys, prune_checkpoints

SPEC = JobSpec.model_validate(
    {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}}
)


def test_policy_keeps_the_newest_the_multiples_and_the_latest() -> None:
    steps = range(100, 1100, 100)
    assert Retention(keep_last=3).kept(steps) == {800, 900, 1000}
    assert Retention(keep_last=1, keep_every=400).kept(steps) == {400, 800, 1000}
    assert Retention(keep_last=2).kept([250, 100, 1000, 200]) == {250, 1000}  # order given does not matter
    assert Retention(keep_last=0).kept(steps) == set(steps)  # 0 keeps all
    assert Retention(keep_last=2).pruned(steps, protected=[300]) == [100, 200, 400, 500, 600, 700, 800]
    assert Retention(keep_last=2).pruned([]) == []
    with pytest.raises(ValueError):
        Retention(keep_last=-1)


def test_the_spec_wins_over_the_service_default() -> None:
    assert retention_of({"every": {"keep_last": 5}}, keep_last=3, keep_every=0) == Retention(5, 0)
    assert retention_of({"every": {"keep_last": None, "keep_every": 50}}, keep_last=3, keep_every=0) == Retention(3, 50)
    assert retention_of({}, keep_last=2, keep_every=10) == Retention(2, 10)


def _job_with_checkpoints(store: JobStore, steps: list[int], **spec: Any) -> str:
    job, _ = store.create_job(owner="a", spec=SPEC.model_copy(update=spec) if spec else SPEC, idempotency_key=None)
    for step in steps:
        keys = CheckpointKeys.of(job.id, step)
        store.add_checkpoint(job_id=job.id, step=step, weights_key=keys.weights, state_key=keys.state, size_bytes=10)
    return job.id


def _keys(job_id: str, *steps: int) -> list[str]:
    return [
        key
        for step in steps
        for key in (CheckpointKeys.of(job_id, step).weights, CheckpointKeys.of(job_id, step).state)
    ]


def _steps(store: JobStore, job_id: str) -> list[int]:
    return [c.step for c in store.list_checkpoints(job_id=job_id)]


def test_store_prunes_all_but_what_retention_and_others_need(store: JobStore) -> None:
    source = _job_with_checkpoints(store, list(range(100, 1100, 100)))
    # A queued job starts from the source's step 300, and another from its latest.
    user = JobSpec.model_validate({**SPEC.model_dump(), "init_from": {"job": source, "step": 300}})
    warm, _ = store.create_job(owner="a", spec=user, idempotency_key=None)
    # A queued generate request reads step 600.
    generation = store.create_generation(job_id=source, owner="a", params={"step": 600, "count": 1})
    gone = store.prune_checkpoints(job_id=source, retention=Retention(keep_last=2, keep_every=400))
    assert [c.step for c in gone] == [100, 200, 500, 700]
    assert _steps(store, source) == [300, 400, 600, 800, 900, 1000]
    pruned = [e.data for e in store.events_after(job_id=source, after=0) if e.kind == "pruned"]
    assert pruned == [{"steps": [100, 200, 500, 700], "reason": "retention (keep_last 2, keep_every 400)", "key": None}]
    store.fail_generation(generation_id=generation.id, error="done with it")
    # Needed by the queued job: neither pruned nor deletable, and the source cannot be deleted.
    with pytest.raises(CheckpointInUse):
        store.delete_checkpoint(job_id=source, step=300)
    store.request_cancel(job_id=source, owner="a")
    with pytest.raises(JobInUse):
        store.delete_job(job_id=source, owner="a")
    store.request_cancel(job_id=warm.id, owner="a")  # no longer needed once it ended
    assert [c.step for c in store.prune_checkpoints(job_id=source, retention=Retention(keep_last=2))] == [
        300,
        400,
        600,
        800,
    ]
    assert _steps(store, source) == [900, 1000]
    assert store.prune_checkpoints(job_id=source, retention=Retention(keep_last=0)) == []  # 0 keeps all


def test_store_deletes_checkpoints_and_ended_jobs_only(store: JobStore) -> None:
    job_id = _job_with_checkpoints(store, [10, 20, 30])
    assert store.usage(owner="a").stored_bytes == 30
    with pytest.raises(CheckpointInUse, match="latest"):  # a resume of the queued job starts there
        store.delete_checkpoint(job_id=job_id, step=30)
    deleted = store.delete_checkpoint(job_id=job_id, step=10, key="gf_abc")
    assert deleted is not None and deleted.step == 10 and _steps(store, job_id) == [20, 30]
    assert store.delete_checkpoint(job_id=job_id, step=10) is None
    assert [e.data for e in store.events_after(job_id=job_id, after=0) if e.kind == "pruned"] == [
        {"steps": [10], "reason": "deleted", "key": "gf_abc"}
    ]
    with pytest.raises(JobNotFinal):
        store.delete_job(job_id=job_id, owner="a")
    store.request_cancel(job_id=job_id, owner="a")
    assert store.delete_job(job_id=job_id, owner="b") is None  # another owner's is missing
    result = store.delete_job(job_id=job_id, owner="a")
    assert result is not None and result.freed_bytes == 20
    assert sorted(result.keys) == sorted(_keys(job_id, 20, 30))
    assert store.get_job(job_id=job_id) is None and store.events_after(job_id=job_id, after=0) == []
    assert store.usage(owner="a").stored_bytes == 0


def test_a_generate_request_for_a_deleted_job_or_checkpoint_is_refused_not_stored(store: JobStore) -> None:
    # A hostile test raced generate against delete: the insert then hit a foreign key (a 500 on PostgreSQL).
    job_id = _job_with_checkpoints(store, [10, 20, 30])
    store.request_cancel(job_id=job_id, owner="a")
    assert store.delete_checkpoint(job_id=job_id, step=10) is not None
    with pytest.raises(GenerationSourceGone) as gone:
        store.create_generation(job_id=job_id, owner="a", params={"step": 10, "count": 4})
    assert gone.value.step == 10
    pending = store.create_generation(job_id=job_id, owner="a", params={"step": 20, "count": 4})
    with pytest.raises(CheckpointInUse):  # a pending request reads it
        store.delete_checkpoint(job_id=job_id, step=20)
    assert store.get_generation(generation_id=pending.id) is not None
    assert store.delete_job(job_id=job_id, owner="a") is not None
    with pytest.raises(GenerationSourceGone) as gone:
        store.create_generation(job_id=job_id, owner="a", params={"step": 30, "count": 4})
    assert gone.value.step is None


def test_a_job_submitted_from_a_deleted_job_or_checkpoint_is_refused_and_a_studys_job_stays(store: JobStore) -> None:
    # A hostile test raced init_from submissions against deletes: both won. The insert now holds the source job.
    source = _job_with_checkpoints(store, [10, 20])
    store.request_cancel(job_id=source, owner="a")
    assert store.delete_checkpoint(job_id=source, step=10) is not None

    def submit(step: int | str) -> None:
        spec = SPEC.model_copy(update={"init_from": InitFrom(job=source, step=step)})
        store.create_job(owner="a", spec=spec, idempotency_key=None)

    with pytest.raises(InitFromGone) as gone:
        submit(10)
    assert gone.value.field == "step"
    assert store.delete_job(job_id=source, owner="a") is not None
    with pytest.raises(InitFromGone) as gone:
        submit("latest")
    assert gone.value.field == "job"
    assert store.list_jobs(owner="a")[0] == []  # nothing was stored
    # A finished study's job: deleting it would rewrite the study's record.
    member = _job_with_checkpoints(store, [10])
    store.request_cancel(job_id=member, owner="a")
    with store.session() as session, session.begin():
        session.execute(update(Job).where(Job.id == member).values(study_id="6f1d0c1e-0000-4000-8000-000000000000"))
    with pytest.raises(JobInStudy):
        store.delete_job(job_id=member, owner="a")


def test_worker_level_prune_deletes_rows_then_files_and_strays(store: JobStore, tmp_path: Path) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    job_id = _job_with_checkpoints(store, [1, 2, 3, 4])
    for step in (1, 2, 3, 4, 5):  # 5: written, not yet registered (a hand-back): never touched
        keys = CheckpointKeys.of(job_id, step)
        artifacts.put_bytes(keys.weights, b"w")
        artifacts.put_bytes(keys.state, b"s")
    artifacts.put_bytes(CheckpointKeys.of(job_id, 0).weights, b"stray")  # a row lost before its files went
    assert prune_checkpoints(store, artifacts, job_id=job_id, retention=Retention(keep_last=2)) == [1, 2]
    assert artifacts.list(f"jobs/{job_id}/checkpoints") == sorted(_keys(job_id, 3, 4, 5))
    assert prune_checkpoints(store, artifacts, job_id=job_id, retention=Retention(keep_last=0)) == []


# ---------------------------------------------------------------- a real worker, through the API


def _files(service: Service, job_id: str) -> list[str]:
    folder = service.data_dir / "artifacts" / "jobs" / job_id / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.slow
def test_a_job_keeps_what_its_retention_says_and_deletes_through_the_api(service: Service) -> None:
    spec = {
        **TINY_SPEC,
        "training": {"steps": 12, "batch_size": 8},
        "every": {"metrics": 4, "samples": 12, "checkpoint": 2, "keep_last": 2, "keep_every": 8},
    }
    with service.client() as http, service.client("key-b") as other:
        job_id = http.post("/v1/jobs", json=spec).json()["id"]
        wait_for(http, job_id, ("succeeded",))
        listed = [c["step"] for c in http.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]]
        assert listed == [8, 10, 12]
        assert _files(service, job_id) == [f"{s:09d}{x}" for s in (8, 10, 12) for x in (".safetensors", ".state.pt")]
        pruned = http.get(f"/v1/jobs/{job_id}/checkpoints/4")
        assert pruned.status_code == 404 and pruned.json()["error"]["code"] == "not_found"
        assert http.get(f"/v1/jobs/{job_id}/checkpoints/8").status_code == 200

        # Another owner: 404 on both routes, nothing deleted.
        assert other.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert other.delete(f"/v1/jobs/{job_id}/checkpoints/8").status_code == 404
        bad = http.delete(f"/v1/jobs/{job_id}/checkpoints/latest")
        assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "path.step"
        missing = http.delete(f"/v1/jobs/{job_id}/checkpoints/9")
        assert missing.status_code == 404 and "8, 10, 12" in missing.json()["error"]["message"]

        used = http.get("/v1/quota").json()["usage"]["stored_bytes"]
        size8 = next(c for c in http.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"] if c["step"] == 8)
        assert http.delete(f"/v1/jobs/{job_id}/checkpoints/8").status_code == 204
        assert http.get(f"/v1/jobs/{job_id}/checkpoints/8").status_code == 404
        assert http.get("/v1/quota").json()["usage"]["stored_bytes"] == used - size8["size_bytes"]
        assert _files(service, job_id) == [f"{s:09d}{x}" for s in (10, 12) for x in (".safetensors", ".state.pt")]

        # The SDK and the CLI delete the job (an ended one); its folder and rows go, its bytes leave the quota.
        with Client(service.url, "key-a") as client:
            with pytest.raises(NotFound):
                client.delete_checkpoint(job_id, 9)
            client.delete_checkpoint(job_id, 10)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = cli_main(["--url", service.url, "--api-key", "key-a", "delete", job_id])
        assert status == 0 and f"deleted job {job_id}" in out.getvalue()
        assert http.get(f"/v1/jobs/{job_id}").status_code == 404
        assert http.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert not (service.data_dir / "artifacts" / "jobs" / job_id).exists()
        assert http.get("/v1/quota").json()["usage"]["stored_bytes"] < used


def test_a_job_that_has_not_ended_is_not_deleted(service: Service) -> None:
    spec = {**TINY_SPEC, "training": {"steps": 100000, "batch_size": 8}, "every": {"checkpoint": 50000}}
    with service.client() as http, Client(service.url, "key-a") as client:
        job_id = http.post("/v1/jobs", json=spec).json()["id"]
        try:
            refused = http.delete(f"/v1/jobs/{job_id}")
            assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_not_final"
            with pytest.raises(Conflict):
                client.delete(job_id)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                assert cli_main(["--url", service.url, "--api-key", "key-a", "delete", job_id]) == 1  # exits.py
            assert "cancel it first" in err.getvalue()
        finally:
            http.post(f"/v1/jobs/{job_id}/cancel")
        wait_for(http, job_id, JobStatus.FINAL)
        client.delete(job_id)
        assert http.get(f"/v1/jobs/{job_id}").status_code == 404
