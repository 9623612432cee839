"""Hostile input, by kind: nothing a client sends is a 500, nothing unstorable reaches SQL, answers stay small.

Each test names the tester's finding it holds (H2, M1, M2, M3, M5, M6, L) and tries
several inputs of the kind, on both backends (real uvicorn through the `service`
fixture; the store on PostgreSQL and SQLite).
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from functools import partial
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import update

from models.admission import SpecRejected, admit
from models.records import Job
from models.spec import FLOAT32_MAX, JobSpec
from models.store import DatasetGone, DatasetInUse, JobStore
from tests.race import at_once
from tests.service import TINY_SPEC as BASE
from tests.service import Service, wait_for

# C0 (NUL, a control in the middle, US), DEL, C1 (NEL, APC), and a lone surrogate: none may be stored.
CONTROL = ["\x00", "\x01", "\x1f", "\x7f", "\x85", "\x9f", "\ud800"]
# Strings that are no id (uuid4 today; the alphabet is letters, digits, '-', '_', 1..64 long).
NOT_IDS = ["a\x00b", "\x00", "a\x01b", "a\x7fb", "a\x85b", "a b", "d\u00f6gn", "x" * 65, "a;b", "a'b"]


def post_raw(client: httpx.Client, path: str, body: Any, **params: str) -> httpx.Response:
    """POST `body` as JSON with \\u escapes, so control characters and lone surrogates travel as any client sends them."""
    content = json.dumps(body, ensure_ascii=True)
    return client.post(path, content=content, params=params, headers={"Content-Type": "application/json"})


def fields_of(response: httpx.Response) -> list[str]:
    return [detail["field"] for detail in response.json()["error"]["details"]]


def npz_points(n: int = 64, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32))
    return buffer.getvalue()


# --------------------------------------------------------------------------- H2: path ids


def test_ids_outside_the_id_alphabet_are_404_on_every_path(service: Service) -> None:
    """H2: `GET /v1/jobs/a%00b` (and every job and data set path) was a 500 on PostgreSQL."""
    with service.client() as client:
        for bad in NOT_IDS:
            ident = quote(bad, safe="")
            calls = [("GET", f"/v1/jobs/{ident}{tail}") for tail in ("", "/events", "/metrics", "/samples")]
            calls += [("GET", f"/v1/jobs/{ident}{tail}") for tail in ("/samples/1.png", "/samples/1.npy")]
            calls += [("GET", f"/v1/jobs/{ident}{tail}") for tail in ("/checkpoints", "/checkpoints/latest")]
            calls += [("POST", f"/v1/jobs/{ident}/cancel"), ("GET", f"/v1/datasets/{ident}")]
            calls += [("DELETE", f"/v1/datasets/{ident}"), ("GET", f"/v1/datasets/{ident}/preview.png")]
            for method, path in calls:
                response = client.request(method, path)
                assert response.status_code == 404, (bad, method, path, response.text)
                assert response.json()["error"]["code"] == "not_found", (path, response.text)


# --------------------------------------------------------------------------- H2: body and query text


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
def test_spec_text_with_control_characters_is_422_naming_the_field(service: Service, char: str) -> None:
    """H2: `"name": "a\\u0000b"` was valid for validate_only and a 500 on submission (also dataset.id, init_from.job)."""
    cases = [
        ({**BASE, "name": f"a{char}b"}, "name"),
        ({**BASE, "tags": {"team": f"v{char}"}}, "tags.team"),
        # pydantic names a key with a lone surrogate lossily (U+FFFD), so only the ends of that path are compared.
        ({**BASE, "tags": {f"k{char}": "v"}}, "tags.k*.[key]"),
        ({**BASE, "dataset": {"id": char}}, "dataset.id"),
        ({**BASE, "dataset": {"id": f"a{char}b"}}, "dataset.id"),
        ({**BASE, "init_from": {"job": char}}, "init_from.job"),
    ]
    with service.client() as client:
        before = client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        for body, field in cases:
            for params in ({"validate_only": "true"}, {}):
                response = post_raw(client, "/v1/jobs", body, **params)
                assert response.status_code == 422, (field, params, response.text)
                head, _, tail = field.partition("*")
                named = [f for f in fields_of(response) if f.startswith(head) and f.endswith(tail)]
                assert named if tail else field in fields_of(response), (field, response.text)
        assert client.get("/v1/jobs", params={"limit": 500}).json()["jobs"] == before  # nothing was stored


def test_query_text_with_control_characters_is_422_naming_the_parameter(service: Service) -> None:
    """H2: `GET /v1/jobs/$J/metrics?names=%00` was a 500 on PostgreSQL; `tag` is client text too."""
    with service.client() as client:
        job = client.post("/v1/jobs", json=BASE).json()
        for char in CONTROL[:-1]:  # a lone surrogate cannot be percent-encoded as UTF-8
            for names in (char, f"loss_d,{char}", f"a{char}b"):
                response = client.get(f"/v1/jobs/{job['id']}/metrics", params={"names": names})
                assert response.status_code == 422, (names, response.text)
                assert fields_of(response) == ["query.names"], response.text
            response = client.get("/v1/jobs", params={"tag": f"team:{char}"})
            assert response.status_code == 422 and fields_of(response) == ["query.tag"], response.text
        # Names that are plain text but name no series are a 404 on query.names (listing the series), not a 500.
        response = client.get(f"/v1/jobs/{job['id']}/metrics", params={"names": "x" * 300})
        assert response.status_code == 404 and fields_of(response) == ["query.names"], response.text


# --------------------------------------------------------------------------- L: Idempotency-Key


def test_idempotency_key_must_be_printable_ascii(service: Service) -> None:
    """L: `Idempotency-Key: ""` was taken as a real key."""
    with service.client() as client:
        # (DEL and other controls but tab are refused by uvicorn itself, 400, before the app.)
        for key in ("", "a" * 256, "d\u00f6gn", "a\tb", "\x80", "\xff"):
            response = client.post("/v1/jobs", json=BASE, headers={"Idempotency-Key": key.encode("latin-1")})
            assert response.status_code == 422, (key, response.text)
            assert fields_of(response) == ["header.idempotency-key"], response.text
        key = f"retry {uuid.uuid4()} ~!"
        first = client.post("/v1/jobs", json=BASE, headers={"Idempotency-Key": key})
        again = client.post("/v1/jobs", json=BASE, headers={"Idempotency-Key": key})
        assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]


# --------------------------------------------------------------------------- M2: multipart


@pytest.mark.parametrize(
    ("content_type", "field"),
    [
        ("multipart/form-data; boundary=" + "b" * 300, "header.content-type"),
        ("multipart/form-data; boundary=" + "b" * 71, "header.content-type"),
        ("multipart/form-data; boundary=", "header.content-type"),
        ('multipart/form-data; boundary=""', "header.content-type"),
        ("multipart/form-data; boundary=abc", "body"),
    ],
)
def test_every_multipart_parser_error_is_a_400(service: Service, content_type: str, field: str) -> None:
    """M2: a boundary over 256 characters was a 500 (FormParserError outside the caught MultipartParseError)."""
    body = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.npz"\r\n\r\nabc\r\n--xyz--\r\n'
    with service.client() as client:
        response = client.post("/v1/datasets", content=body, headers={"Content-Type": content_type})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "malformed_body" and [d["field"] for d in error["details"]] == [field], error


# --------------------------------------------------------------------------- M3: floats torch can use


def _is_float(annotation: Any) -> bool:
    """Whether a field's type is float, float | None, or an Annotated float (of either)."""
    if annotation is float:
        return True
    if get_origin(annotation) is Annotated:
        return _is_float(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return any(_is_float(arg) for arg in get_args(annotation))
    return False


def _float_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, info in model.model_fields.items() if _is_float(info.annotation)]


def _loss_classes() -> list[type[BaseModel]]:
    return list(get_args(JobSpec.model_fields["loss"].annotation))


def test_every_float_of_the_spec_is_bounded_to_float32() -> None:
    """M3: every float of every loss (and training.ema_decay) refuses what float32 cannot hold."""
    checked = 0
    for loss in _loss_classes():
        name = loss.model_fields["name"].annotation.__args__[0]  # type: ignore[union-attr]
        for field in _float_fields(loss):
            for value in (1e39, -1e39, 1e308, -1e308):
                with pytest.raises(ValidationError) as refused:
                    JobSpec.model_validate({**BASE, "loss": {"name": name, field: value}})
                assert [e["loc"][-1] for e in refused.value.errors()] == [field], (name, field, value)
            checked += 1
        for betas, index in (([1, 0.5], 0), ([0.5, 1], 1), ([1.5, 0.5], 0), ([-0.1, 0.5], 0)):
            with pytest.raises(ValidationError) as refused:
                JobSpec.model_validate({**BASE, "loss": {"name": name, "betas": betas}})
            assert [e["loc"][-2:] for e in refused.value.errors()] == [("betas", index)], (name, betas)
    assert checked > 40  # every loss's learning rates, penalties and coefficients were tried
    for value in (1.0, 1e39):
        with pytest.raises(ValidationError):
            JobSpec.model_validate({**BASE, "training": {"ema_decay": value}})
    # The edge itself is float32's largest value, so it is accepted; lr 1e30 stays (the divergence test uses it).
    spec = JobSpec.model_validate({**BASE, "loss": {"name": "lsgan", "a": -FLOAT32_MAX, "lr_g": 1e30, "lr_d": 1e30}})
    assert spec.loss.a == -FLOAT32_MAX  # type: ignore[union-attr]


def test_floats_torch_cannot_use_are_422_naming_the_field(service: Service) -> None:
    """M3: `betas: [1, 1]` and `lr_d: 1e308` were accepted and failed at step 0 with a raw torch error."""
    cases = [
        ({"name": "nsgan", "betas": [1, 1]}, ["loss.betas.0", "loss.betas.1"]),
        ({"name": "cgan", "betas": [0.5, 1]}, ["loss.betas.1"]),
        ({"name": "wgan-gp", "lr_d": 1e308}, ["loss.lr_d"]),
        ({"name": "nsgan", "lr_g": 1e308, "lr_d": 1e30}, ["loss.lr_g"]),
        ({"name": "lsgan", "a": -1e300}, ["loss.a"]),
        ({"name": "dragan", "gp_weight": 1e39}, ["loss.gp_weight"]),
        # Within float32, but Adam's first step is lr / (1 - beta1) = 6e38: the pair is refused, at the loss.
        ({"name": "nsgan", "lr_g": 3e38}, ["loss"]),
    ]
    with service.client() as client:
        for loss, fields in cases:
            for params in ({"validate_only": "true"}, {}):
                response = client.post("/v1/jobs", json={**BASE, "loss": loss}, params=params)
                assert response.status_code == 422, (loss, response.text)
                assert fields_of(response) == fields, response.text
        accepted = client.post("/v1/jobs", json={**BASE, "loss": {"name": "lsgan", "lr_g": 1e30, "lr_d": 1e30}})
        assert accepted.status_code == 201, accepted.text


# --------------------------------------------------------------------------- M5: small errors


def test_validation_errors_list_at_most_50_fields(service: Service) -> None:
    """M5: a 759 KB body of 70,000 unknown fields came back as a 6 MB 422."""
    body = {**BASE, **{f"u{i}": 0 for i in range(70_000)}}
    huge_key = {**BASE, "k" * 500_000: 1}
    with service.client() as client:
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 422, response.text[:500]
        error = response.json()["error"]
        assert len(error["details"]) == 50 and error["details_omitted"] == 70_000 - 50
        assert error["details"][0]["field"] == "u0" and "69950 more" in error["message"]
        assert len(response.content) < 20_000, len(response.content)
        response = client.post("/v1/jobs", json=huge_key)
        assert response.status_code == 422 and len(response.content) < 5_000, len(response.content)
        assert response.json()["error"]["details"][0]["field"].startswith("kkkk")


# --------------------------------------------------------------------------- M6: files gone from disk


def test_records_whose_files_are_gone_are_404_not_500(service: Service) -> None:
    """M6: a sample, checkpoint or preview whose file was deleted while its row exists was a 500."""
    artifacts = service.data_dir / "artifacts"
    with service.client() as client:
        job = client.post("/v1/jobs", json=BASE).json()
        wait_for(client, job["id"], ("succeeded",))
        assert client.get(f"/v1/jobs/{job['id']}/samples/5.npy").status_code == 200
        removed = [p for p in artifacts.rglob("*") if p.is_dir() and p.name == job["id"]]
        assert removed, list(artifacts.rglob("*"))[:20]
        for folder in removed:
            shutil.rmtree(folder)
        paths = ["/samples/5.png", "/samples/5.npy", "/checkpoints/5", "/checkpoints/latest"]
        paths += ["/checkpoints/latest?file=state"]
        for path in paths:
            response = client.get(f"/v1/jobs/{job['id']}{path}")
            assert response.status_code == 404, (path, response.text)
            error = response.json()["error"]
            assert error["code"] == "artifact_missing" and "missing from the artifact store" in error["message"]
        dataset = client.post("/v1/datasets", files={"file": ("pts.npz", npz_points(seed=7))})
        assert dataset.status_code in (200, 201), dataset.text
        preview = dataset.json()["preview_url"]
        assert client.get(preview).status_code == 200
        for found in artifacts.rglob("preview.png"):
            if dataset.json()["id"] in str(found):
                found.unlink()
        response = client.get(preview)
        assert response.status_code == 404 and response.json()["error"]["code"] == "artifact_missing", response.text


# --------------------------------------------------------------------------- H2: the store itself


def test_the_store_treats_unstorable_text_as_not_found(store: JobStore) -> None:
    """H2, defence in depth: no client string with NUL (or a lone surrogate) is sent to the database."""
    job, _ = store.create_job(owner="a", spec=JobSpec.model_validate(BASE), idempotency_key=None)
    for bad in ("a\x00b", "\x00", "\ud800", f"{job.id}\x00"):
        assert store.get_job(job_id=bad) is None and store.get_job(job_id=job.id, owner=bad) is None
        assert store.request_cancel(job_id=bad, owner="a") is None
        assert store.get_dataset(dataset_id=bad) is None and store.find_dataset(owner=bad, content_hash=bad) is None
        assert store.delete_dataset(dataset_id=bad, owner="a") is None
        assert store.events_after(job_id=bad, after=0) == [] and store.metric_names(job_id=bad) == []
        assert store.metric_series(job_id=job.id, name=bad, since_step=0, max_points=10) == ([], [], False)
        assert store.list_samples(job_id=bad) == [] and store.get_sample(job_id=bad, step=1) is None
        assert store.list_checkpoints(job_id=bad) == [] and store.get_checkpoint(job_id=bad, step=None) is None
        assert store.list_jobs(owner="a", status=bad) == ([], None) and store.list_jobs(owner=bad) == ([], None)
        with pytest.raises(ValueError, match="cannot hold"):
            store.create_dataset(
                dataset_id="d1",
                owner="a",
                name=bad,
                format="npz",
                info={},
                content_hash="h",
                size_bytes=1,
                data_key="datasets/d1",
                preview_key=None,
            )
        # A spec built without validation cannot smuggle it in either: refused before any SQL.
        unchecked = JobSpec.model_validate(BASE).model_copy(update={"name": bad})
        with pytest.raises(ValueError, match="cannot hold"):
            store.create_job(owner="a", spec=unchecked, idempotency_key=None)
        with pytest.raises(ValueError, match="cannot hold"):
            store.create_job(owner="a", spec=JobSpec.model_validate(BASE), idempotency_key=bad)
    assert store.get_job(job_id=job.id) is not None


# --------------------------------------------------------------------------- M1: delete vs submit


def test_deleting_a_data_set_and_submitting_a_job_on_it_never_both_succeed(store: JobStore) -> None:
    """M1: concurrent create_job on a data set and delete_dataset of it both succeeded on PostgreSQL (3 of 6)."""
    outcomes: set[tuple[str, str]] = set()
    for round_ in range(40):
        dataset_id = str(uuid.uuid4())
        store.create_dataset(
            dataset_id=dataset_id,
            owner="a",
            name="pts",
            format="npz",
            info={"kind": "points", "shape": [2], "num_classes": None, "size": 64},
            content_hash=dataset_id,
            size_bytes=1,
            data_key=f"datasets/{dataset_id}",
            preview_key=None,
        )
        spec = JobSpec.model_validate({**BASE, "dataset": {"id": dataset_id}})
        created, deleted = at_once(
            partial(store.create_job, owner="a", spec=spec, idempotency_key=None),
            partial(store.delete_dataset, dataset_id=dataset_id, owner="a"),
        )
        if isinstance(created, DatasetGone):
            assert deleted is not None and not isinstance(deleted, Exception), (round_, deleted)
            assert store.get_dataset(dataset_id=dataset_id) is None
            outcomes.add(("gone", "deleted"))
        else:
            assert isinstance(created, tuple), (round_, created)
            assert isinstance(deleted, DatasetInUse) and deleted.job_ids == [created[0].id], (round_, deleted)
            assert store.get_dataset(dataset_id=dataset_id) is not None
            outcomes.add(("created", "in use"))
    assert outcomes  # every round ended in one of the two consistent outcomes


def test_a_warm_start_from_a_job_stored_under_the_looser_schema_is_422(store: JobStore) -> None:
    """M3/H2: a job stored before betas < 1 and plain-text names (betas [0.5, 1], a tab in its name) is no source."""
    job, _ = store.create_job(owner="a", spec=JobSpec.model_validate(BASE), idempotency_key=None)
    store.add_checkpoint(job_id=job.id, step=5, weights_key="w", state_key="s", size_bytes=1)
    for old in ({"loss": {**job.spec["loss"], "betas": [0.5, 1.0]}}, {"name": "ring\ttest"}):
        with store.session() as session, session.begin():
            session.execute(update(Job).where(Job.id == job.id).values(spec={**job.spec, **old}))
        with pytest.raises(SpecRejected) as refused:
            admit(spec=JobSpec.model_validate({**BASE, "init_from": {"job": job.id}}), owner="a", store=store)
        assert [p.loc for p in refused.value.problems] == [("init_from", "job")], refused.value
        assert "no longer valid" in refused.value.problems[0].message


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
@pytest.mark.parametrize("betas", [(0.5, 0.999), (0.0, 0.9), (0.999, 0.999), (0.999999, 0.9)])
def test_the_largest_rates_the_spec_accepts_step_in_torch(optimizer: str, betas: tuple[float, float]) -> None:
    """M3: what the spec accepts, torch's optimiser steps with in float32; twice that, the spec refuses."""
    import torch

    largest = FLOAT32_MAX * (1 - betas[0]) * 0.999999 if optimizer == "adam" else FLOAT32_MAX
    loss = {"name": "nsgan", "optimizer": optimizer, "betas": list(betas), "lr_g": largest, "lr_d": largest}
    spec = JobSpec.model_validate({**BASE, "loss": loss})
    weights = torch.nn.Parameter(torch.randn(4))
    options = {"betas": spec.loss.betas} if optimizer == "adam" else {}  # type: ignore[union-attr]
    step = (torch.optim.Adam if optimizer == "adam" else torch.optim.RMSprop)([weights], lr=spec.loss.lr_g, **options)  # type: ignore[union-attr]
    for _ in range(3):
        step.zero_grad()
        (weights**2).sum().backward()
        step.step()  # raises "value cannot be converted to type float without overflow" past float32
    if optimizer == "adam" and largest * 2 <= FLOAT32_MAX:
        with pytest.raises(ValidationError, match="overflows float32"):
            JobSpec.model_validate({**BASE, "loss": {**loss, "lr_g": largest * 2}})
