"""Hostile input at the route level, every route at once: control characters, over-long text and odd numbers in
every path and query parameter (walked from /openapi.json), malformed Last-Event-ID headers, SSE limits and paged
result lists, on both backends (an API-only uvicorn per backend: nothing here trains)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ganforge.client import AsyncClient, Client, calls
from models.db import make_engine
from models.settings import Settings
from models.store import JobStore
from tests.conftest import BACKENDS, api_only
from tests.service import TINY_SPEC, Service

# C0 (NUL, SOH, US), DEL, C1 (NEL, APC), a lone surrogate (percent-encoded as its invalid UTF-8 bytes) and text
# far over any bound.
HOSTILE = ["\x00", "a\x00b", "\x01", "\x1f", "\x7f", "\x85", "\x9f", "%ED%A0%80", "x" * 5000, "1" * 5000]
# Integers in a query as no client means them: pydantic alone read "1.0" as 1.
ODD_INTEGERS = ["1.0", "1e1", "+5", " 5", "5 ", "1_0", "\u0663", "0x10", "-0"]
# Last-Event-ID values no EventSource writes: non-ASCII digits, signs, exponents, beyond a BIGINT.
BAD_EVENT_IDS = [
    b"\xc2\xb2",
    "²".encode("latin-1"),
    b"-1",
    b"+1",
    b"1e3",
    b"1.0",
    b"1 2",
    b"9" * 19,
    b"9" * 400,
    b"abc",
]

STUDY = {
    "name": "hostile",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 8, "depth": 1},
    "losses": ["nsgan"],
    "seeds": 1,
    "training": {"steps": 10, "batch_size": 16},
}


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An API with no worker: jobs stay queued."""
    with api_only(request.param, tmp_path_factory.mktemp(f"routes-{request.param}")) as deployment:
        yield deployment


def fields_of(response: httpx.Response) -> list[str]:
    return [detail["field"] for detail in response.json()["error"]["details"]]


def _ids(client: httpx.Client) -> dict[str, str]:
    """A real id for every kind of path id, so that a route gets as far as its query parameters."""
    job = client.post("/v1/jobs", json=TINY_SPEC)
    assert job.status_code == 201, job.text
    study = client.post("/v1/studies", json=STUDY)
    assert study.status_code == 201, study.text
    return {
        "job_id": job.json()["id"],
        "study_id": study.json()["id"],
        "dataset_id": str(uuid.uuid4()),
        "generation_id": str(uuid.uuid4()),
        "step": "latest",
        "extension": "png",
    }


def _operations(client: httpx.Client) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation.get("parameters", [])


def _url(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value if value.startswith("%") else quote(value, safe=""))
    return path


def test_no_path_or_query_parameter_of_any_route_is_a_500(api: Service) -> None:
    """Every path and query parameter of every route in /openapi.json, given each hostile value, is a 4xx; a
    query parameter's 422 names it (query.<name>); a path id is a 404 or a 422 naming it."""
    tried = 0
    failures = []
    with api.client() as client:
        ids = _ids(client)
        for method, path, parameters in _operations(client):
            for parameter in parameters:
                where, name = parameter["in"], parameter["name"]
                if where not in ("path", "query"):
                    continue
                for value in HOSTILE:
                    if where == "path":
                        url, params = _url(path, {**ids, name: value}), ""
                    else:
                        encoded = value if value.startswith("%") else quote(value, safe="")
                        url, params = _url(path, ids), f"?{name}={encoded}"
                    response = client.request(method, url + params, json={} if method == "POST" else None)
                    tried += 1
                    ok = 400 <= response.status_code < 500
                    if ok and where == "query" and response.status_code == 422:
                        ok = f"query.{name}" in fields_of(response)
                    if ok and where == "path" and response.status_code not in (404,):
                        ok = f"path.{name}" in fields_of(response)
                    if not ok:
                        failures.append(
                            (method, path, where, name, value[:20], response.status_code, response.text[:300])
                        )
    assert tried > 100
    assert not failures, "\n".join(map(str, failures))


def test_query_integers_are_plain_decimal_digits(api: Service) -> None:
    """`?limit=1.0` was a limit of 1: every integer query parameter takes ASCII digits only (422 naming it)."""
    tried = 0
    with api.client() as client:
        ids = _ids(client)
        for method, path, parameters in _operations(client):
            for parameter in parameters:
                types = {parameter["schema"].get("type")} | {
                    s.get("type") for s in parameter["schema"].get("anyOf", [])
                }
                if parameter["in"] != "query" or "integer" not in types or path.endswith("/events"):
                    continue
                for value in ODD_INTEGERS:
                    response = client.request(method, _url(path, ids), params={parameter["name"]: value})
                    assert response.status_code == 422, (path, parameter["name"], value, response.text)
                    assert f"query.{parameter['name']}" in fields_of(response), response.text
                    tried += 1
    assert tried >= 8 * len(ODD_INTEGERS)


def test_malformed_last_event_id_is_422_naming_the_header(api: Service) -> None:
    """`Last-Event-ID: ²` was a 500: a header or ?after= that is no event id is a 422 naming it."""
    with api.client() as client:
        job = client.post("/v1/jobs", json=TINY_SPEC).json()
        for value in BAD_EVENT_IDS:
            response = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": value})
            assert response.status_code == 422, (value, response.text)
            assert fields_of(response) == ["header.last-event-id"], response.text
            after = value.decode("latin-1")
            response = client.get(f"/v1/jobs/{job['id']}/events", params={"after": after})
            assert response.status_code == 422 and fields_of(response) == ["query.after"], (value, response.text)


def test_a_5000_digit_integer_in_a_body_is_422_at_its_field(api: Service) -> None:
    """A 5000-digit integer was "the body could not be read as JSON": it is out of range at its field."""
    huge = "9" * 5000
    with api.client() as client:
        job = client.post("/v1/jobs", json=TINY_SPEC).json()
        cases = [
            ("/v1/jobs", '{"name": "x", "training": {"steps": ' + huge + "}}", "training.steps"),
            ("/v1/jobs?validate_only=true", '{"training": {"batch_size": -' + huge + "}}", "training.batch_size"),
            ("/v1/studies", '{"name": "s", "seeds": ' + huge + "}", "seeds"),
            (f"/v1/jobs/{job['id']}/generate", '{"count": ' + huge + "}", "count"),
            ("/v1/jobs", '{"tags": {"a": [1, ' + huge + "]}}", "tags.a.1"),
            ("/v1/jobs", "[" + huge + "]", "0"),
        ]
        for path, body, field in cases:
            response = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (path, response.text)
            error = response.json()["error"]
            assert fields_of(response) == [field], (path, response.text)
            assert "out of range" in error["message"] and "5000 digits" in error["message"], error


def test_an_invalid_cursor_is_422_on_query_cursor_on_every_list(api: Service) -> None:
    with api.client() as client:
        job = client.post("/v1/jobs", json=TINY_SPEC).json()
        lists = ["/v1/jobs", "/v1/datasets", "/v1/studies", f"/v1/jobs/{job['id']}/samples"]
        lists.append(f"/v1/jobs/{job['id']}/checkpoints")
        for path in lists:
            for cursor in ("abc", "-1", "01", "\u0663", "9" * 20, "1.0"):
                response = client.get(path, params={"cursor": cursor})
                assert response.status_code == 422, (path, cursor, response.text)
                assert fields_of(response) == ["query.cursor"], response.text
                assert response.json()["error"]["message"].startswith("query.cursor: not a cursor"), response.text


def test_wait_must_be_a_finite_number(api: Service) -> None:
    """`?wait=nan` said "less than or equal to 60"."""
    with api.client() as client:
        job = client.post("/v1/jobs", json=TINY_SPEC).json()
        for wait in ("nan", "NaN", "inf", "-inf", "infinity"):
            response = client.post(f"/v1/jobs/{job['id']}/generate", params={"wait": wait}, json={"count": 1})
            assert response.status_code == 422 and "query.wait" in fields_of(response), (wait, response.text)
            assert "finite" in response.json()["error"]["message"], response.text


def test_metric_names_are_deduplicated_and_capped(api: Service) -> None:
    with api.client() as client:
        job = client.post("/v1/jobs", json=TINY_SPEC).json()
        metrics = f"/v1/jobs/{job['id']}/metrics"
        response = client.get(metrics, params={"names": ",".join(["loss_d"] * 200)})
        assert response.status_code == 200 and list(response.json()["series"]) == ["loss_d"], response.text
        response = client.get(metrics, params={"names": ",".join(f"n{i}" for i in range(65))})
        assert response.status_code == 422 and fields_of(response) == ["query.names"], response.text
        assert "at most 64" in response.json()["error"]["message"], response.text


def _store(service: Service) -> JobStore:
    url = service.env.get("GANFORGE_DATABASE_URL") or f"sqlite:///{service.data_dir / 'ganforge.db'}"
    return JobStore(make_engine(url))


def test_samples_and_checkpoints_are_paged_in_step_order(api: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET .../samples and .../checkpoints were one unbounded list: pages of `limit`, oldest step first."""
    steps = [0, *range(5, 120, 5)]  # 24 steps, step 0 included (its cursor is "0")
    with api.client() as client:
        job = client.post("/v1/jobs", json=TINY_SPEC).json()
        store = _store(api)
        try:
            for step in reversed(steps):
                store.add_sample(
                    job_id=job["id"], step=step, count=4, png_key="k", npy_key="k", labels=None, evaluation=None
                )
                store.add_checkpoint(job_id=job["id"], step=step, weights_key="k", state_key="k", size_bytes=1)
        finally:
            store.engine.dispose()
        for what in ("samples", "checkpoints"):
            path = f"/v1/jobs/{job['id']}/{what}"
            assert [row["step"] for row in client.get(path).json()[what]] == steps  # default page: all 24
            for limit in (1, 5, 7, 24, 500):
                seen, cursor, pages = [], None, 0
                while True:
                    params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
                    page = client.get(path, params=params)
                    assert page.status_code == 200, page.text
                    seen += [row["step"] for row in page.json()[what]]
                    cursor, pages = page.json()["next_cursor"], pages + 1
                    if cursor is None:
                        break
                assert seen == steps and pages == -(-len(steps) // limit), (what, limit)
            for limit in ("0", "501", "1.0"):
                response = client.get(path, params={"limit": limit})
                assert response.status_code == 422 and fields_of(response) == ["query.limit"], response.text
    # The SDK reads every page (here of 5 rows) and gives one list, as before the lists were paged.
    monkeypatch.setattr(calls, "RESULTS_PAGE", 5)
    with Client(api.url, "key-a") as sdk:
        assert [sample.step for sample in sdk.samples(job["id"])] == steps
        assert [checkpoint.step for checkpoint in sdk.checkpoints(job["id"])] == steps

    async def read_async() -> tuple[list[int], list[int]]:
        async with AsyncClient(api.url, "key-a") as sdk:
            samples, checkpoints = await sdk.samples(job["id"]), await sdk.checkpoints(job["id"])
        return [s.step for s in samples], [c.step for c in checkpoints]

    assert asyncio.run(read_async()) == (steps, steps)


def test_event_streams_per_owner_are_capped(api: Service) -> None:
    """One owner held any number of SSE streams (each a connection and a poller): the 17th is a 429 with
    Retry-After; another owner is not affected; a closed stream frees its place."""
    with api.client() as client, api.client("key-b") as other:
        job = client.post("/v1/jobs", json=TINY_SPEC).json()
        theirs = other.post("/v1/jobs", json=TINY_SPEC).json()
        path = f"/v1/jobs/{job['id']}/events"
        streams = []
        try:
            for _ in range(16):
                stream = client.stream("GET", path)
                response = stream.__enter__()
                streams.append(stream)
                assert response.status_code == 200, response.read()
            refused = client.get(path)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_streams" and int(refused.headers["Retry-After"]) > 0
            with other.stream("GET", f"/v1/jobs/{theirs['id']}/events") as response:
                assert response.status_code == 200
            streams.pop().__exit__(None, None, None)
            deadline = time.monotonic() + 10
            while (again := client.stream("GET", path)).__enter__().status_code == 429:
                again.__exit__(None, None, None)
                assert time.monotonic() < deadline, "a closed stream did not free its place"
                time.sleep(0.2)
            streams.append(again)
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)


def test_a_404_for_a_trailing_slash_names_the_route_without_it(api: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """redirect_slashes is off (no 307 to another URL): `/v1/jobs/` is a 404 that says to drop the slash; any
    other unknown path is a plain 404 that shows the path escaped (a NUL, a lone surrogate)."""
    for name, value in api.env.items():
        if name.startswith("GANFORGE_"):
            monkeypatch.setenv(name, value)
    # The real service: no 307 to a URL built from the Host header.
    slash = httpx.get(f"{api.url}/v1/jobs/", headers={"Authorization": "Bearer key-a"}, follow_redirects=False)
    assert slash.status_code == 404 and "drop the trailing slash" in slash.json()["error"]["message"], slash.text
    app = create_app(Settings(), reconcile=False)
    with TestClient(app, headers={"Authorization": "Bearer key-a"}) as client:
        for path in ("/v1/jobs/", "/v1/datasets/", "/healthz/", "/v1/jobs/abc/metrics/"):
            response = client.get(path)
            assert response.status_code == 404, response.text
            assert "drop the trailing slash" in response.json()["error"]["message"], response.text
        for path in ("/v1/nope/", "/v1/a%00b", "/v1/%ED%A0%80", "/v1/" + "x" * 3000):
            response = client.get(path)
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", response.text
            assert "trailing slash" not in response.json()["error"]["message"], response.text
