"""The HTTP contract: validation with field paths, ownership, idempotency, pagination, catalog, health."""

from __future__ import annotations

import json

import pytest

from models.catalog import ARCHITECTURE_CLASSES, LOSS_CLASSES
from tests.service import Service, wait_for

BASE = {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}}


def with_(**parts: object) -> dict[str, object]:
    spec: dict[str, object] = {
        **BASE,
        "training": {"steps": 5, "batch_size": 8},
        "every": {"samples": 5, "checkpoint": 5},
    }
    spec.update(parts)
    return spec


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (with_(loss={"name": "bogus"}), "loss.name", "unknown loss name 'bogus' (valid names: minimax,"),
        (with_(training={"steps": -5}), "training.steps", "greater than or equal to 1"),
        (with_(loss={"name": "wgan-gp", "lr_d": "NaN"}), "loss.lr_d", "finite number"),
        (with_(loss={"name": "wgan-gp", "gp_weight": "Infinity"}), "loss.gp_weight", "finite number"),
        (with_(loss={"name": "nsgan", "surprise": 1}), "loss.surprise", "Extra inputs are not permitted"),
        (with_(extra_top_level=True), "extra_top_level", "Extra inputs are not permitted"),
        (with_(dataset={"builtin": "imagenet"}), "dataset.builtin", "Input should be"),
        (with_(dataset={}), "dataset", "exactly one of 'builtin' or 'id'"),
        ({"dataset": {"builtin": "ring8"}, "loss": {"name": "nsgan"}}, "architecture", "Field required"),
        (with_(architecture={"name": "dcgan"}), "architecture.name", "image architecture"),
        (with_(loss={"name": "cgan", "gp_weight": 3}), "loss", "gp_weight does not apply to base loss 'nsgan'"),
        (with_(dataset={"builtin": "spiral"}, loss={"name": "cgan"}), "loss.name", "needs a labelled data set"),
        (
            with_(dataset={"builtin": "digits", "resize": 32}, architecture={"name": "resnet"}, loss={"name": "began"}),
            "architecture.name",
            "auto-encoder",
        ),
        (with_(dataset={"builtin": "digits"}, architecture={"name": "dcgan"}), "dataset.resize", "16, 32 or 64"),
        (with_(training={"batch_size": 10, "pack": 4}), "training", "not a multiple of pack"),
    ],
)
def test_bad_specs_get_422_with_the_field_path(
    service: Service, body: dict[str, object], field: str, fragment: str
) -> None:
    with service.client() as client:
        before = client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        # NaN and Infinity travel as the bare tokens Python's json (and many clients) emit.
        raw = json.dumps(body).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
        response = client.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] in ("validation_error", "incompatible_spec")
        matching = [d for d in error["details"] if d["field"] == field]
        assert matching, error
        assert any(fragment in d["message"] for d in matching), error
        assert client.get("/v1/jobs", params={"limit": 500}).json()["jobs"] == before  # nothing was stored


def test_malformed_json_is_a_422_not_a_500(service: Service) -> None:
    with service.client() as client:
        response = client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"


def test_unknown_and_foreign_jobs_are_404(service: Service) -> None:
    with service.client("key-a") as owner, service.client("key-b") as stranger:
        job = owner.post("/v1/jobs", json=with_()).json()
        assert owner.get("/v1/jobs/does-not-exist").status_code == 404
        for path in ("", "/metrics", "/samples", "/checkpoints", "/checkpoints/latest", "/samples/5.png", "/events"):
            response = stranger.get(f"/v1/jobs/{job['id']}{path}")
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "not_found"
        assert stranger.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
        assert job["id"] not in [j["id"] for j in stranger.get("/v1/jobs").json()["jobs"]]
        wait_for(owner, job["id"], ("succeeded",))


def test_requests_without_a_key_are_401(service: Service) -> None:
    import httpx

    assert httpx.get(f"{service.url}/v1/jobs").status_code == 401
    assert httpx.get(f"{service.url}/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{service.url}/healthz").status_code == 200


def test_validate_only_creates_nothing_and_fills_defaults(service: Service) -> None:
    with service.client("key-b") as client:
        before = client.get("/v1/jobs").json()["jobs"]
        response = client.post("/v1/jobs", params={"validate_only": "true"}, json={**BASE, "loss": {"name": "wgan"}})
        assert response.status_code == 200
        loss = response.json()["spec"]["loss"]
        assert (loss["optimizer"], loss["lr_d"], loss["n_critic"], loss["clip_value"]) == ("rmsprop", 5e-5, 5, 0.01)
        assert client.get("/v1/jobs").json()["jobs"] == before


def test_idempotency_key_returns_the_same_job(service: Service) -> None:
    with service.client() as client:
        headers = {"Idempotency-Key": "retry-me-1"}
        first = client.post("/v1/jobs", json=with_(), headers=headers)
        second = client.post("/v1/jobs", json=with_(), headers=headers)
        assert first.status_code == 201 and second.status_code == 200
        assert first.json()["id"] == second.json()["id"]
        conflict = client.post("/v1/jobs", json=with_(name="other"), headers=headers)
        assert conflict.status_code == 409
        wait_for(client, first.json()["id"], ("succeeded",))


def test_list_is_newest_first_with_keyset_pages_and_filters(service: Service) -> None:
    with service.client("key-b") as client:
        ids = [
            client.post("/v1/jobs", json=with_(name=f"page-{i}", tags={"batch": "pages"})).json()["id"]
            for i in range(5)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, object] = {"limit": 2, "tag": "batch:pages"}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/jobs", params=params).json()
            seen += [job["id"] for job in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]
        for job_id in ids:
            wait_for(client, job_id, ("succeeded",))
        succeeded = client.get("/v1/jobs", params={"status": "succeeded", "limit": 500}).json()["jobs"]
        assert set(ids) <= {job["id"] for job in succeeded}
        assert client.get("/v1/jobs", params={"status": "queued", "tag": "batch:pages"}).json()["jobs"] == []
        assert client.get("/v1/jobs", params={"status": "nonsense"}).status_code == 422
        assert client.get("/v1/jobs", params={"cursor": "abc"}).status_code == 422


def test_catalog_lists_every_loss_architecture_and_dataset_with_defaults(service: Service) -> None:
    with service.client() as client:
        catalog = client.get("/v1/catalog").json()
    assert set(catalog["losses"]) == set(LOSS_CLASSES)
    assert set(catalog["architectures"]) == set(ARCHITECTURE_CLASSES)
    assert {"ring8", "grid25", "spiral", "digits"} <= set(catalog["datasets"])
    # λ is left unset by default and resolved per data set; the parameter says how
    assert catalog["losses"]["wgan-gp"]["defaults"]["gp_weight"] is None
    assert "0.1 on 2-D points" in catalog["losses"]["wgan-gp"]["parameters"]["gp_weight"]["description"]
    assert "1704.00028" in catalog["losses"]["wgan-gp"]["paper"]


def test_health_readiness_and_prometheus(service: Service) -> None:
    import httpx

    assert httpx.get(f"{service.url}/readyz").json()["checks"] == {"store": "ok", "schema": "ok", "broker": "ok"}
    metrics = httpx.get(f"{service.url}/metrics", headers={"Authorization": "Bearer key-a"}).text
    # By status and named queue (api/telemetry.py).
    assert any(line.startswith("ganforge_jobs{") and 'status="queued"' in line for line in metrics.splitlines())
    assert httpx.get(f"{service.url}/openapi.json").json()["info"]["title"] == "ganforge"
