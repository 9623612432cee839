"""Studies through the real service (API + one worker) on both backends: fan-out, comparison, cancel, errors."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx
import pytest

from models.store import IdempotencyConflict, JobStore, MetricPoint
from models.store.results import write_metrics
from models.study import StudySpec, expand, parse_point
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
        assert first["studies"][0]["status"] == "cancelled"
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
        assert done["progress"] == {"steps_done": 480, "steps_total": 480, "fraction": 1.0}
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
        long = small_study(seeds=3, grid=[], losses=["nsgan"], training={"steps": 1_000_000, "batch_size": 64})
        created = client.post("/v1/studies", json=long)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/v1/studies/{study_id}").json()["status"] != "running":
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.2)

        cancelled = client.post(f"/v1/studies/{study_id}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        done = wait_for_study(service, client, study_id, timeout=60)
        assert [job["status"] for job in done["jobs"]] == ["cancelled"] * 3
        assert done["status"] == "cancelled" and done["cancelled_at"]
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
                {"param": "architecture.hidden", "values": [16, 32.0]},
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
