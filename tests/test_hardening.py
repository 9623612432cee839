"""Contract and hardening (OWASP API8): security headers on every answer, an OpenAPI that declares the errors each
operation really gives, /metrics behind a key, and a data dir that only its owner can read."""

from __future__ import annotations

import io
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import BACKENDS, api_only
from tests.service import KEYS, TINY_SPEC, Service

# A well-formed id (models.spec.ID_PATTERN) that names nothing; a step and an extension for the results' paths.
PATH_VALUES = {"step": "5", "extension": "png"}
MISSING_ID = "no-such-object-0"


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An API-only service with keys, its data dir created by ganforge itself (the tests' logs live beside it)."""
    folder = tmp_path_factory.mktemp(f"hardening-{request.param}")
    with api_only(request.param, folder, GANFORGE_DATA_DIR=str(folder / "data")) as deployment:
        yield deployment


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The answer's error object, after checking its status and the one error shape."""
    assert response.status_code == status, (response.request.method, response.request.url, response.text[:300])
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "details"} <= set(body["error"]), body
    assert all({"field", "message"} <= set(detail) for detail in body["error"]["details"]), body
    return body["error"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- security headers


def test_every_answer_has_security_headers_and_v1_is_not_stored(service: Service) -> None:
    key = {"Authorization": f"Bearer {next(iter(KEYS))}"}
    answers = {
        "page": httpx.get(f"{service.url}/"),
        "docs": httpx.get(f"{service.url}/docs"),
        "static file": httpx.get(f"{service.url}/static/app.js"),
        "schema": httpx.get(f"{service.url}/openapi.json"),
        "health": httpx.get(f"{service.url}/healthz"),
        "unknown path": httpx.get(f"{service.url}/no/such/page"),
        "gate's 401": httpx.get(f"{service.url}/v1/jobs"),
        "gate's 400": httpx.get(f"{service.url}/v1/jobs", headers=[("Authorization", "a"), ("Authorization", "b")]),
        "list": httpx.get(f"{service.url}/v1/jobs", headers=key),
        "route's 404": httpx.get(f"{service.url}/v1/jobs/{MISSING_ID}", headers=key),
        "metrics": httpx.get(f"{service.url}/metrics", headers=key),
    }
    assert [answers[name].status_code for name in ("gate's 401", "gate's 400", "list", "route's 404")] == [
        401,
        400,
        200,
        404,
    ]
    for name, answer in answers.items():
        headers = answer.headers
        assert headers.get("x-content-type-options") == "nosniff", name
        assert headers.get("referrer-policy") == "no-referrer", name
        assert headers.get("x-frame-options") == "DENY", name
        policy = {part.split()[0]: part.split()[1:] for part in headers["content-security-policy"].split(";")}
        assert policy["frame-ancestors"] == ["'none'"] and policy["script-src"] == ["'self'"], name
        assert headers.get_list("content-security-policy") == [headers["content-security-policy"]], name  # once
        private = str(answer.url.path).startswith(("/v1/", "/metrics"))
        assert (headers.get("cache-control") == "no-store") == private, (name, headers.get("cache-control"))
    # The dashboard's files are revalidated by ETag, not stored for ever, nor never.
    assert answers["static file"].headers["cache-control"] == "no-cache"


# --------------------------------------------------------------------------- OpenAPI


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        if path.startswith("/v1/"):
            for method, operation in methods.items():
                yield method, path, operation


def concrete(path: str) -> str:
    """`path` with every {parameter} filled: ids that name nothing, a step, an extension."""
    for name in (part[1:-1] for part in path.replace(".", "/").split("/") if part.startswith("{")):
        path = path.replace("{" + name + "}", PATH_VALUES.get(name, MISSING_ID))
    return path


def bad_body(operation: dict[str, Any]) -> dict[str, Any]:
    """httpx arguments for a body of the operation's media type that no operation accepts."""
    if "multipart/form-data" in operation["requestBody"]["content"]:
        return {"files": {"no_such_field": ("x.txt", b"x")}}
    return {"json": {"no_such_field": 1}}


def test_openapi_declares_the_errors_each_operation_gives_in_the_error_shape(service: Service) -> None:
    schema = httpx.get(f"{service.url}/openapi.json").json()
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and "HTTPValidationError" not in schema["components"]["schemas"]
    probed = {401: 0, 404: 0, 422: 0}
    with service.client() as client:
        for method, path, operation in operations(schema):
            declared = {int(status) for status in operation["responses"]}
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    media = answer["content"]["application/json"]["schema"]
                    assert media == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            url = concrete(path)
            probes = [(httpx.request(method, service.url + url), 401)]  # no key
            if "{" in path:
                probes.append(
                    (client.request(method, url, **({"json": {}} if "requestBody" in operation else {})), 404)
                )
            if "requestBody" in operation:
                probes.append((client.request(method, url, **bad_body(operation)), 404 if "{" in path else 422))
            for got, expected in probes:
                assert got.status_code in declared, (method, path, got.status_code, sorted(declared))
                error_of(got, expected)
                probed[expected] += 1
    assert all(probed.values()), probed


def test_openapi_declares_the_validate_only_answer(service: Service) -> None:
    schema = httpx.get(f"{service.url}/openapi.json").json()
    answers = schema["paths"]["/v1/jobs"]["post"]["responses"]
    assert answers["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobOut"}
    ok = answers["200"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/ValidatedSpec"} in ok and {"$ref": "#/components/schemas/JobOut"} in ok
    with service.client() as client:
        checked = client.post("/v1/jobs", params={"validate_only": "true"}, json=TINY_SPEC)
        assert checked.status_code == 200, checked.text
        assert set(checked.json()) == set(schema["components"]["schemas"]["ValidatedSpec"]["properties"])
        assert client.get("/v1/jobs").json()["jobs"] == []  # nothing created


# --------------------------------------------------------------------------- /metrics


def test_metrics_needs_a_key_of_any_owner(service: Service) -> None:
    assert error_of(httpx.get(f"{service.url}/metrics"), 401)["code"] == "unauthorized"
    assert error_of(httpx.get(f"{service.url}/metrics", headers={"Authorization": "Bearer nope"}), 401)
    for key in KEYS:
        with service.client(key) as client:
            scraped = client.get("/metrics")
        assert scraped.status_code == 200 and "ganforge_jobs{" in scraped.text, key


@pytest.mark.parametrize("backend", BACKENDS)
def test_metrics_stay_open_when_auth_is_off(backend: str, tmp_path: Path) -> None:
    with api_only(backend, tmp_path, GANFORGE_API_KEYS="") as open_service:
        scraped = httpx.get(f"{open_service.url}/metrics")
    assert scraped.status_code == 200 and "ganforge_jobs{" in scraped.text


# --------------------------------------------------------------------------- the data dir


def test_data_dir_holds_nothing_group_or_other_can_read(service: Service) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
    with service.client() as client:
        uploaded = client.post("/v1/datasets", files={"file": ("points.npz", buffer.getvalue())})
        assert uploaded.status_code == 201, uploaded.text
        job = client.post("/v1/jobs", json={**TINY_SPEC, "dataset": {"id": uploaded.json()["id"]}})
        assert job.status_code == 201, job.text  # queued: a broker message (a file on the embedded default)
    data_dir = service.data_dir / "data"
    found = [data_dir, *data_dir.rglob("*")]
    assert len(found) > 5, found  # the store, the artifacts with the upload, the broker or scratch folders
    readable = {str(path.relative_to(data_dir)): stat.filemode(path.stat().st_mode) for path in found}
    shared = {name: mode for name, mode in readable.items() if mode[4:] != "------"}
    assert not shared, shared
