"""Studies through the real service (API + one worker) on both backends: fan-out, comparison, cancel, errors."""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.event import listen, remove

from api.routes.studies import StudySummary
from models.records import Job
from models.store import IdempotencyConflict, JobStore, MetricPoint, as_utc
from models.store.results import write_metrics
from models.store.studies import StudyFinished
from models.study import StudyRejected, StudySpec, expand, parse_point
from tests.service import Service

FINAL = ("succeeded", "failed", "cancelled")


def small_study(**changes: Any) -> dict[str, Any]:
    """Two losses × two seeds × a 2-point grid = 8 tiny jobs of 60 steps."""
    body: dict[str, Any] = {
        "name": "small",
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
        "losses": ["nsgan", "wgan-gp"],
        "seeds": 2,
        "grid": [{"param": "lr_multiplier", "values": [0.5, 1]}],
        "training": {"steps": 60, "batch_size": 64},
        "every": {"metrics": 10, "samples": 30, "checkpoint": 60},
        "tags": {"suite": "studies"},
    }
    body.update(changes)
    return body


def wait_for_study(service: Service, client: httpx.Client, study_id: str, timeout: float = 150.0) -> dict[str, Any]:
    """Poll the study until every job is final (its status is then final too)."""
    deadline = time.monotonic() + timeout
    study: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = client.get(f"/v1/studies/{study_id}")
        assert answer.status_code == 200, answer.text
        study = answer.json()
        if all(job["status"] in FINAL for job in study["jobs"]):
            return study
        time.sleep(0.5)
    raise AssertionError(f"study {study_id} not finished after {timeout} s: {study.get('counts')}\n{service.logs()}")


def fields(answer: httpx.Response) -> dict[str, str]:
    assert answer.status_code == 422, answer.text
    return {d["field"]: d["message"] for d in answer.json()["error"]["details"]}


def test_bad_studies_are_422s_at_their_field_paths(service: Service) -> None:
    with service.client() as client:
        before = client.get("/v1/studies").json()["studies"]

        checked = client.post("/v1/studies", params={"validate_only": "true"}, json=small_study(losses=None))
        assert checked.status_code == 200, checked.text
        # every loss that can train on ring8 with an MLP (cgan: ring8 is labelled; began: the MLP auto-encoder)
        assert checked.json()["spec"]["losses"] == [
            "minimax", "nsgan", "lsgan", "wgan", "wgan-gp", "dragan", "hinge", "began", "cgan", "infogan"
        ]  # fmt: skip
        assert checked.json()["job_count"] == 10 * 2 * 2
        assert client.get("/v1/studies").json()["studies"] == before  # validate_only creates nothing

        unknown = fields(client.post("/v1/studies", json=small_study(losses=["nsgan", "wgam"])))
        assert "did you mean 'wgan'" in unknown["losses.1"]
        assert "seeds" in fields(client.post("/v1/studies", json=small_study(seeds=0)))
        too_many = fields(
            client.post(
                "/v1/studies",
                json=small_study(losses=None, seeds=10, grid=[{"param": "lr_multiplier", "values": [0.1, 1, 10]}]),
            )
        )
        assert "10 losses × 3 grid points × 10 seeds = 300 jobs" in too_many["grid"]
        bad_param = client.post("/v1/studies", json=small_study(grid=[{"param": "architecture.width", "values": [1]}]))
        assert "grid.0.param" in fields(bad_param)
        not_for_mlp = small_study(grid=[{"param": "architecture.base_channels", "values": [8]}])
        assert (
            "'mlp' has no field 'base_channels'" in fields(client.post("/v1/studies", json=not_for_mlp))["grid.0.param"]
        )
        # a grid value that makes an invalid job names that value, once for all the losses and seeds
        huge = small_study(grid=[{"param": "lr_multiplier", "values": [1, 1e43]}])
        assert list(fields(client.post("/v1/studies", json=huge))) == ["grid.0.values.1"]
        override = fields(client.post("/v1/studies", json=small_study(overrides={"wgan-gp": {"lr_d": -1}})))
        assert list(override) == ["overrides.wgan-gp.lr_d"]
        spiral = small_study(dataset={"builtin": "spiral"}, losses=["nsgan", "cgan"])
        assert "labelled" in fields(client.post("/v1/studies", json=spiral))["losses.1"]
        missing = client.post("/v1/studies", json=small_study(dataset={"id": "no-such-data"}))
        assert missing.status_code == 404 and missing.json()["error"]["details"][0]["field"] == "dataset.id"


def test_another_owner_sees_no_study_and_the_list_pages(service: Service) -> None:
    with service.client("key-b") as mine, service.client("key-a") as theirs:
        one_job = small_study(losses=["nsgan"], seeds=1, grid=[], training={"steps": 5})
        ids = []
        for i in range(3):
            created = mine.post("/v1/studies", json={**one_job, "name": f"page {i}"})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
            # cancelled at once while queued (5 steps, should the worker have taken it first)
            assert mine.post(f"/v1/studies/{ids[-1]}/cancel").status_code == 202
        for path in (f"/v1/studies/{ids[0]}", f"/v1/studies/{ids[0]}/curves"):
            assert theirs.get(path).status_code == 404
        assert theirs.post(f"/v1/studies/{ids[0]}/cancel").status_code == 404
        assert ids[0] not in [s["id"] for s in theirs.get("/v1/studies").json()["studies"]]

        first = mine.get("/v1/studies", params={"limit": 2}).json()
        assert [s["id"] for s in first["studies"]] == ids[:0:-1]  # newest first
        newest = first["studies"][0]
        # cancelling while the worker has a job of it it took before the cancel (it stops at its next step)
        stopping = any(newest["counts"].get(status) for status in ("queued", "running", "cancelling"))
        assert newest["status"] == ("cancelling" if stopping else "cancelled"), newest
        rest = mine.get("/v1/studies", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [s["id"] for s in rest["studies"]] == [ids[0]] and rest["next_cursor"] is None
        assert "query.cursor" in fields(mine.get("/v1/studies", params={"cursor": "x1"}))


@pytest.mark.slow
def test_a_study_runs_its_jobs_and_its_table_matches_them(service: Service) -> None:
    with service.client() as client:
        body = small_study()
        created = client.post("/v1/studies", json=body, headers={"Idempotency-Key": "study-1"})
        assert created.status_code == 201, created.text
        study = created.json()
        assert study["job_count"] == 8 and len(study["jobs"]) == 8
        replay = client.post("/v1/studies", json=body, headers={"Idempotency-Key": "study-1"})
        assert replay.status_code == 200 and replay.json()["id"] == study["id"]
        other = client.post("/v1/studies", json=small_study(seeds=1), headers={"Idempotency-Key": "study-1"})
        assert other.status_code == 409

        # Ordinary jobs, tagged with the study and their cell.
        tagged = client.get("/v1/jobs", params={"tag": f"study:{study['id']}"}).json()["jobs"]
        assert sorted(job["id"] for job in tagged) == sorted(job["id"] for job in study["jobs"])
        job = next(j for j in tagged if j["tags"]["study_loss"] == "wgan-gp" and j["tags"]["study_seed"] == "1")
        assert job["study_id"] == study["id"] and job["tags"]["suite"] == "studies"
        assert job["spec"]["training"]["seed"] == 1 and job["spec"]["loss"]["gp_weight"] == 0.1  # admitted
        if job["tags"]["study_point"] == "lr_multiplier=0.5":
            assert job["spec"]["loss"]["lr_g"] == pytest.approx(0.5 * 1e-4)  # WGAN-GP's 1e-4, halved
            assert job["name"] == "small/wgan-gp/lr_multiplier=0.5/seed1"

        done = wait_for_study(service, client, study["id"])
        assert done["status"] == "succeeded", (done["counts"], service.logs())
        assert done["counts"] == {"succeeded": 8}
        assert done["progress"] == {
            "steps_done": 480, "steps_total": 480, "fraction": 1.0, "jobs_final": 8, "jobs_total": 8
        }  # fmt: skip
        assert done["data_kind"] == "points" and done["measures"][0] == "modes_covered"

        # The table is recomputed from each job's own metrics: modes covered at its last snapshot.
        rows = {(row["loss"], row["point"]["lr_multiplier"]): row for row in done["comparison"]}
        assert sorted(rows) == [("nsgan", 0.5), ("nsgan", 1.0), ("wgan-gp", 0.5), ("wgan-gp", 1.0)]
        for job in done["jobs"]:
            assert job["step"] == job["total_steps"] == 60
        for (loss, multiplier), row in rows.items():
            cell = [j for j in done["jobs"] if j["loss"] == loss and j["point"]["lr_multiplier"] == multiplier]
            assert sorted(j["seed"] for j in cell) == [0, 1] and row["runs"] == row["finished"] == 2
            last = []
            for job in cell:
                series = client.get(f"/v1/jobs/{job['id']}/metrics", params={"names": "modes_covered"}).json()
                steps, values = series["series"]["modes_covered"]["steps"], series["series"]["modes_covered"]["values"]
                assert steps == [30, 60]
                last.append(values[-1])
            quality = row["quality"]["modes_covered"]
            assert quality["n"] == 2
            assert quality["mean"] == pytest.approx(statistics.mean(last))
            assert quality["std"] == pytest.approx(statistics.stdev(last))
            assert row["wall_seconds"]["n"] == 2 and row["wall_seconds"]["mean"] > 0

        curves = client.get(f"/v1/studies/{study['id']}/curves", params={"names": "modes_covered,loss_g"}).json()
        assert curves["names"] == ["modes_covered", "loss_g"]
        for name in curves["names"]:
            entries = curves["curves"][name]
            assert len(entries) == 4 and all(entry["runs"] == 2 for entry in entries)
        assert curves["curves"]["modes_covered"][0]["steps"] == [30, 60]
        assert "query.names" in fields(client.get(f"/v1/studies/{study['id']}/curves", params={"names": "a,,b"}))


@pytest.mark.slow
def test_cancelling_a_study_cancels_every_job(service: Service) -> None:
    with service.client() as client:
        long = small_study(
            seeds=3,
            grid=[],
            losses=["nsgan"],
            training={"steps": 1_000_000, "batch_size": 64},
            every={"metrics": 100, "samples": 5_000, "checkpoint": 5_000},
        )
        created = client.post("/v1/studies", json=long)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/v1/studies/{study_id}").json()["status"] != "running":
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.2)

        cancelled = client.post(f"/v1/studies/{study_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        # cancelling while a job has not stopped yet (a running one stops at its next step), then cancelled
        answer = cancelled.json()
        stopped = all(job["status"] in FINAL for job in answer["jobs"])
        assert answer["status"] == ("cancelled" if stopped else "cancelling"), answer["jobs"]
        assert "running" not in {job["status"] for job in answer["jobs"]}
        done = wait_for_study(service, client, study_id, timeout=60)
        assert [job["status"] for job in done["jobs"]] == ["cancelled"] * 3
        assert done["status"] == "cancelled" and done["cancelled_at"]
        assert done["progress"]["fraction"] < 1 and done["progress"]["jobs_final"] == 3
        assert client.post(f"/v1/studies/{study_id}/cancel").status_code == 202  # idempotent


def test_expand_fans_out_loss_by_grid_point_by_seed() -> None:
    study = StudySpec.model_validate(
        small_study(
            name="n" * 200,
            losses=["nsgan", "cgan"],
            seeds=[7, 3, 5],
            overrides={"cgan": {"base": "wgan"}},
            grid=[
                {"param": "lr_multiplier", "values": [0.1, 10]},
                {"param": "architecture.hidden", "values": [16, 32]},
            ],
        )
    )
    cells = expand(study, "s1")
    assert len(cells) == 2 * 4 * 3
    assert [(c.loss, c.point, c.seed) for c in cells[:4]] == [
        ("nsgan", {"lr_multiplier": 0.1, "architecture.hidden": 16}, 7),
        ("nsgan", {"lr_multiplier": 0.1, "architecture.hidden": 16}, 3),
        ("nsgan", {"lr_multiplier": 0.1, "architecture.hidden": 16}, 5),
        ("nsgan", {"lr_multiplier": 0.1, "architecture.hidden": 32}, 7),
    ]
    last = cells[-1]
    # cgan on wgan takes WGAN's RMSProp 5e-5, then the grid's ×10; the width is the grid's, as an integer
    assert last.spec.loss.lr_g == pytest.approx(5e-4) and last.spec.loss.lr_d == pytest.approx(5e-4)
    assert last.spec.architecture.model_dump()["hidden"] == 32 and last.spec.training.seed == 5
    label = "lr_multiplier=10.0,architecture.hidden=32"
    assert last.spec.tags == {
        "suite": "studies", "study": "s1", "study_loss": "cgan", "study_point": label, "study_seed": "5"
    }  # fmt: skip
    assert parse_point(label) == last.point
    assert len(last.spec.name) == 200 and last.spec.name.endswith(f"/cgan/{label}/seed5")


def test_the_runs_read_is_bounded_and_keeps_each_last_snapshot(store: JobStore) -> None:
    study = StudySpec.model_validate(small_study(losses=["nsgan"], seeds=2, grid=[]))
    jobs = [cell.spec for cell in expand(study, "s1")]
    body = study.model_dump(mode="json")
    created, fresh = store.create_study(
        study_id="s1", owner="a", name="s", spec_json=body, request_json=body, jobs=jobs, idempotency_key="k"
    )
    assert fresh and created.job_count == 2
    again, fresh = store.create_study(
        study_id="s2", owner="a", name="s", spec_json=body, request_json=body, jobs=jobs, idempotency_key="k"
    )
    assert not fresh and again.id == "s1"
    with pytest.raises(IdempotencyConflict):
        store.create_study(
            study_id="s3", owner="a", name="s", spec_json=body, request_json={}, jobs=jobs, idempotency_key="k"
        )
    first, second = (job.id for job in store.study_jobs(study_id="s1"))
    with store.session() as session, session.begin():
        write_metrics(session, first, [MetricPoint("loss_g", step, step / 2) for step in range(1, 5002)])
        write_metrics(session, first, [MetricPoint("modes_covered", step, 8.0) for step in range(500, 5001, 500)])
    read = store.study_series(job_ids=[first, second], names=["loss_g", "modes_covered", "fd"], max_points=100)
    assert list(read) == [first] and set(read[first]) == {"loss_g", "modes_covered"}
    steps, values = read[first]["loss_g"]
    assert len(steps) <= 100 and steps[0] == 1 and steps[-1] == 5001 and values[-1] == 2500.5
    assert {b - a for a, b in zip(steps, steps[1:-1], strict=False)} == {51}  # every k-th point: evenly spaced
    assert read[first]["modes_covered"] == (list(range(500, 5001, 500)), [8.0] * 10)  # short: whole


def _stored_study(store: JobStore, study_id: str, **changes: Any) -> list[str]:
    """A study stored (not run): its job ids in fan-out order."""
    study = StudySpec.model_validate(small_study(**changes))
    body = study.model_dump(mode="json")
    jobs = [cell.spec for cell in expand(study, study_id)]
    store.create_study(
        study_id=study_id, owner="a", name="s", spec_json=body, request_json=body, jobs=jobs, idempotency_key=None
    )
    return [job.id for job in store.study_jobs(study_id=study_id)]


def _set(store: JobStore, job_id: str, **values: Any) -> None:
    """Move a job as a worker would (status, step), without its events: the test reads only what cancel adds."""
    with store.session() as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _summary(store: JobStore, study_id: str) -> StudySummary:
    study = store.get_study(study_id=study_id)
    assert study is not None
    return StudySummary.of(study, store.study_job_stats(study_ids=[study_id]).get(study_id))


def test_cancel_is_one_transaction_and_writes_each_jobs_status_event_as_a_job_cancel_does(store: JobStore) -> None:
    ids = _stored_study(store, "s1", losses=["nsgan", "wgan-gp"], seeds=2, grid=[])  # 4 jobs of 60 steps
    running, done, queued, also_running = ids
    _set(store, running, status="running", step=20)
    _set(store, done, status="succeeded", step=60)
    _set(store, also_running, status="running", step=5)
    # The same moves made one job at a time (POST /v1/jobs/{id}/cancel), to compare the events with.
    alone = _stored_study(store, "s2", losses=["nsgan"], seeds=2, grid=[])
    _set(store, alone[0], status="running")
    for job_id in alone:
        store.request_cancel(job_id=job_id, owner="a")
    expected = {
        status: store.events_after(job_id=job_id, after=1)[-1].data for job_id, status in zip(alone, "RQ", strict=True)
    }

    commits: list[int] = []

    def counted(_connection: Any) -> None:
        commits.append(1)

    listen(store.engine, "commit", counted)
    try:
        cancelled = store.cancel_study(study_id="s1", owner="a")
    finally:
        remove(store.engine, "commit", counted)
    assert cancelled is not None and cancelled.cancelled_at is not None
    assert len(commits) == 1  # one transaction for the study, whatever its size
    statuses = {job.id: job.status for job in store.study_jobs(study_id="s1")}
    assert [statuses[i] for i in ids] == ["cancelling", "succeeded", "cancelled", "cancelling"]
    for job_id, kind in ((running, "R"), (queued, "Q"), (also_running, "R")):
        events = store.events_after(job_id=job_id, after=0)
        assert [e.seq for e in events] == [1, 2] and events[-1].kind == "status"
        assert events[-1].data == expected[kind]
    assert store.events_after(job_id=done, after=1) == []  # a finished job is left as it is
    queued_job = store.get_job(job_id=queued)
    assert queued_job is not None and queued_job.finished_at is not None

    # Not every job has stopped: the study is cancelling, not yet cancelled (a waiter keeps waiting).
    summary = _summary(store, "s1")
    assert summary.status == "cancelling"
    # Steps actually trained: 20 + 60 + 0 + 5 of 240, not the cancelled job's 60 unrun steps.
    assert summary.progress.model_dump() == {
        "steps_done": 85, "steps_total": 240, "fraction": 85 / 240, "jobs_final": 2, "jobs_total": 4
    }  # fmt: skip
    _set(store, running, status="cancelled")
    _set(store, also_running, status="cancelled")
    summary = _summary(store, "s1")
    assert summary.status == "cancelled" and summary.progress.fraction == 85 / 240
    assert summary.progress.jobs_final == 4
    # Idempotent: a second cancel moves nothing and keeps the first cancel time.
    again = store.cancel_study(study_id="s1", owner="a")
    assert again is not None and as_utc(again.cancelled_at) == as_utc(cancelled.cancelled_at)


def test_a_finished_study_is_not_cancelled_by_a_late_cancel(store: JobStore) -> None:
    ids = _stored_study(store, "s1", losses=["nsgan"], seeds=2, grid=[])
    _set(store, ids[0], status="succeeded", step=60)
    _set(store, ids[1], status="failed", step=30)
    with pytest.raises(StudyFinished, match="already failed"):
        store.cancel_study(study_id="s1", owner="a")
    summary = _summary(store, "s1")
    assert summary.status == "failed" and summary.cancelled_at is None
    # A failed job counts the steps it ran, not its whole plan.
    assert (summary.progress.steps_done, summary.progress.steps_total) == (90, 120)


def test_a_cancel_that_stopped_no_job_leaves_the_study_as_its_jobs_ended(store: JobStore) -> None:
    """Cancel answered while the last jobs were finishing (running → cancelling → succeeded): no job ended
    cancelled, so the study reads succeeded (or failed), not cancelled."""
    for study_id, last in (("s1", "succeeded"), ("s2", "failed")):
        first, second = _stored_study(store, study_id, losses=["nsgan"], seeds=2, grid=[])
        _set(store, first, status="succeeded", step=60)
        _set(store, second, status="running", step=50)
        cancelled = store.cancel_study(study_id=study_id, owner="a")
        assert cancelled is not None and cancelled.cancelled_at is not None
        assert _summary(store, study_id).status == "cancelling"
        _set(store, second, status=last, step=60)  # its worker finished before it read the cancel
        assert _summary(store, study_id).status == last
    # A job the cancel did stop: cancelled.
    first, second = _stored_study(store, "s3", losses=["nsgan"], seeds=2, grid=[])
    _set(store, first, status="succeeded", step=60)
    _set(store, second, status="running", step=20)
    store.cancel_study(study_id="s3", owner="a")
    _set(store, second, status="cancelled")
    assert _summary(store, "s3").status == "cancelled"


def test_a_grid_value_is_as_strict_as_its_field() -> None:
    """training.steps 10.0 is a 422 in a job: as a grid value too (it was read as 10), at grid.<k>.values.<j>."""
    study = StudySpec.model_validate(
        small_study(
            grid=[
                {"param": "training.steps", "values": [10, 20.0]},
                {"param": "lr_multiplier", "values": [1, 0.5]},  # a number: an integer is one
            ]
        )
    )
    with pytest.raises(StudyRejected) as rejected:
        expand(study, "s1")
    problems = {problem.loc: problem.message for problem in rejected.value.problems}
    assert list(problems) == [("grid", 0, "values", 1)], problems
    assert "must be an integer, not 20.0" in problems[("grid", 0, "values", 1)]


def test_every_problem_of_a_study_body_comes_back_in_one_422_without_pydantics_prefix(service: Service) -> None:
    with service.client() as client:
        body = small_study(
            seeds=0,  # refused by the model
            name="x" * 201,  # refused by the model
            overrides={"wgan-gp": {"lr_d": -1}},  # refused by the study's own checks (expand)
            grid=[{"param": "architecture.base_channels", "values": [8]}],  # expand: the MLP has no such field
        )
        answer = client.post("/v1/studies", json=body)
        found = fields(answer)
        assert {"seeds", "name", "overrides.wgan-gp.lr_d", "grid.0.param"} <= set(found), found
        assert not any("Value error" in message for message in found.values()), found
        assert found["seeds"].startswith("a count of seeds must be 1 to 10"), found
        assert not any(message.startswith("Value error") for message in found.values())
        # A field left at its default for the second checks adds no problem of its own (the job count of
        # every default loss, "not one of this study's losses" when the losses are refused).
        refused_losses = small_study(losses=["nsgan", "wgam"], seeds=10, overrides={"wgan-gp": {"lr_d": 1e-4}})
        found = fields(client.post("/v1/studies", json=refused_losses))
        assert list(found) == ["losses.1"], found


def test_a_finished_study_keeps_its_status_when_cancelled_and_curves_name_their_series(service: Service) -> None:
    with service.client() as client:
        created = client.post(
            "/v1/studies", json=small_study(losses=["nsgan"], seeds=1, grid=[], training={"steps": 5})
        )
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        done = wait_for_study(service, client, study_id, timeout=120)
        assert done["status"] == "succeeded", (done["counts"], service.logs())
        refused = client.post(f"/v1/studies/{study_id}/cancel")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "already_finished"
        assert "already succeeded" in refused.json()["error"]["message"]
        after = client.get(f"/v1/studies/{study_id}").json()
        assert after["status"] == "succeeded" and after["cancelled_at"] is None
        assert after["progress"] == {
            "steps_done": 5, "steps_total": 5, "fraction": 1.0, "jobs_final": 1, "jobs_total": 1
        }  # fmt: skip

        unknown = fields(client.get(f"/v1/studies/{study_id}/curves", params={"names": "loss_g,modes_coverd"}))
        assert "'modes_coverd'" in unknown["query.names"] and "modes_covered" in unknown["query.names"], unknown
        assert client.get(f"/v1/studies/{study_id}/curves", params={"names": "loss_g"}).status_code == 200


def test_an_unlabelled_points_upload_compares_no_quality_measure(service: Service) -> None:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(512, 2)).astype(np.float32))
    with service.client() as client:
        uploaded = client.post("/v1/datasets", files={"file": ("blob.npz", buffer.getvalue())}, data={"name": "blob"})
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["info"]["num_classes"] == 0
        body = small_study(dataset={"id": uploaded.json()["id"]}, losses=["nsgan"], seeds=1, grid=[])
        created = client.post("/v1/studies", json={**body, "training": {"steps": 20, "batch_size": 64}})
        assert created.status_code == 201, created.text
        # The worker reports PacGAN's figures on ring8 and grid25 only (worker/quality.py): none here.
        assert created.json()["measures"] == []
        done = wait_for_study(service, client, created.json()["id"], timeout=120)
        assert done["status"] == "succeeded", (done["counts"], service.logs())
        assert done["measures"] == [] and done["data_kind"] == "points"
        [row] = done["comparison"]
        assert row["quality"] == {} and row["steps_to_threshold"] == {} and row["failed"] == 0
        assert row["stability"]["vanishing_grad_fraction"]["n"] == 1  # the run's own series still compare
        curves = client.get(f"/v1/studies/{done['id']}/curves").json()
        assert curves["names"] == ["loss_g", "grad_norm_g"]


def test_openapi_gives_the_study_body_its_schema_and_every_ref_resolves(service: Service) -> None:
    """The route reads its body as a plain object (to report every problem at once); /openapi.json still describes
    it as StudySpec, so generated clients and Swagger UI know its fields."""
    openapi = httpx.get(f"{service.url}/openapi.json").json()
    body = openapi["paths"]["/v1/studies"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/StudySpec"}
    schemas = openapi["components"]["schemas"]
    assert set(StudySpec.model_fields) == set(schemas["StudySpec"]["properties"])

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [node["$ref"]] if "$ref" in node else [r for value in node.values() for r in refs(value)]
        return [r for value in node for r in refs(value)] if isinstance(node, list) else []

    assert [r for r in refs(openapi) if r.removeprefix("#/components/schemas/") not in schemas] == []
