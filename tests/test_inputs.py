"""Input a hostile tester sent: field paths without pydantic's union labels, invisible characters in stored text,
repeated query parameters, numbers sent as text or booleans, and `bench/study.py --report` rewriting a tracked file.

Against a real API (uvicorn, no worker: nothing here trains) on both backends.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import pytest
import yaml
from fastapi import Depends, FastAPI, Query
from fastapi.testclient import TestClient

from api import errors
from api.app import one_value_per_query_parameter
from tests.conftest import BACKENDS, api_only
from tests.service import ROOT, Service
from tests.service import TINY_SPEC as BASE

STUDY: dict[str, Any] = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 16, "depth": 1},
    "losses": ["nsgan"],
    "seeds": 1,
    "training": {"steps": 5, "batch_size": 8},
}
# Bidirectional override and isolate, zero-width space, BOM, soft hyphen, line and paragraph separators, a tag
# character (Cf, invisible): each is invisible or changes how the text around it reads.
INVISIBLE = ["\u202e", "\u2066", "\u200b", "\ufeff", "\u00ad", "\u2028", "\u2029", "\U000e0041"]


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with api_only(request.param, tmp_path_factory.mktemp(f"inputs-{request.param}")) as deployment:
        yield deployment


def post_json(client: httpx.Client, path: str, body: Any, **params: str) -> httpx.Response:
    """POST `body` with \\u escapes, as a client in any language sends invisible characters."""
    content = json.dumps(body, ensure_ascii=True)
    return client.post(path, content=content, params=params, headers={"Content-Type": "application/json"})


def details(response: httpx.Response) -> dict[str, str]:
    """{field: message} of an error answer."""
    return {d["field"]: d["message"] for d in response.json()["error"]["details"]}


def npz_points() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
    return buffer.getvalue()


# --------------------------------------------------------------------------- 1: field paths


def test_field_paths_name_the_fields_not_the_union_members(api: Service) -> None:
    with api.client() as client:
        job = client.post("/v1/jobs", json=BASE).json()
        generate = f"/v1/jobs/{job['id']}/generate"
        # labels: int | list[int]: pydantic said labels.int, labels.list[int].0 and labels.list[int].1.
        response = client.post(generate, json={"count": 2, "labels": ["a", 1.5]})
        assert response.status_code == 422, response.text
        assert list(details(response)) == ["labels.0", "labels.1"], response.text
        # No member got inside the value: one error on the field, saying what each member wanted.
        response = client.post(generate, json={"count": 2, "labels": "x"})
        assert response.status_code == 422, response.text
        assert list(details(response)) == ["labels"], response.text
        assert "integer" in details(response)["labels"] and "list" in details(response)["labels"], response.text
        # A key that reads like a label (a type or class name) is the client's key: kept.
        response = post_json(client, "/v1/jobs", {**BASE, "tags": {"int": "\u202e", "Team": "\u202e"}})
        assert response.status_code == 422, response.text
        assert set(details(response)) == {"tags.int", "tags.Team"}, response.text
        # A ValueError's text without pydantic's "Value error, " in front.
        response = client.post("/v1/jobs", json={**BASE, "init_from": {"job": "x", "step": 1.5}})
        assert details(response) == {"init_from.step": "must be 'latest' or a step number from 0 to 10000000"}, (
            response.text
        )
        for response in (client.post(generate, json={"count": 2, "labels": ["a"], "step": -1}),):
            for field in details(response):
                assert "[" not in field and "function-" not in field and "int" not in field.split("."), field


def test_union_errors_become_one_per_field() -> None:
    """The conversion itself, on pydantic's shapes: a member's class name, a bracketed schema, a constrained type."""
    raw = [
        {"type": "missing", "loc": ("body", "c", "InitFrom", "job"), "msg": "Field required", "input": {}},
        {"type": "int_type", "loc": ("body", "c", "int"), "msg": "Input should be a valid integer", "input": {}},
        {"type": "literal_error", "loc": ("body", "e", "literal['x']"), "msg": "Input should be 'x'", "input": -1},
        {
            "type": "greater_than_equal",
            "loc": ("body", "e", "constrained-int"),
            "msg": "Input should be greater than or equal to 0",
            "input": -1,
        },
    ]
    plain = errors.plain_errors(raw, {"c": {}, "e": -1})
    assert [(errors.field_path(e["loc"]), e["msg"]) for e in plain] == [
        ("c.job", "Field required"),
        ("e", "Input should be 'x', or greater than or equal to 0"),
    ]


# --------------------------------------------------------------------------- 2: invisible characters


@pytest.mark.parametrize("char", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_invisible_and_line_breaking_characters_are_refused_in_stored_text(api: Service, char: str) -> None:
    code = f"U+{ord(char):04X}"
    cases = [
        ("/v1/jobs", {**BASE, "name": f"run{char}1"}, "name"),
        ("/v1/jobs", {**BASE, "tags": {"team": f"vi{char}sion"}}, "tags.team"),
        ("/v1/jobs", {**BASE, "tags": {f"te{char}am": "vision"}}, f"tags.te{char}am.[key]"),
        ("/v1/studies", {**STUDY, "name": f"cmp{char}"}, "name"),
        ("/v1/studies", {**STUDY, "tags": {"team": f"a{char}b"}}, "tags.team"),
    ]
    with api.client() as client:
        jobs_before = client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        for path, body, field in cases:
            response = post_json(client, path, body)
            assert response.status_code == 422, (path, field, response.text)
            assert code in details(response).get(field, ""), (field, response.text)
            assert "not allowed" in details(response)[field], response.text
        response = client.post(
            "/v1/datasets", files={"file": ("pts.npz", npz_points())}, data={"name": f"poi{char}nts"}
        )
        assert response.status_code == 422, response.text
        assert code in details(response).get("name", ""), response.text
        assert client.get("/v1/jobs", params={"limit": 500}).json()["jobs"] == jobs_before
        assert client.get("/v1/studies").json()["studies"] == []
        assert client.get("/v1/datasets").json()["datasets"] == []


def test_joiners_in_emoji_and_scripts_are_kept(api: Service) -> None:
    """U+200D (zero-width joiner) and U+200C are format characters too, but 👩‍💻 and Persian spelling need them."""
    with api.client() as client:
        name = "👩\u200d💻 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
        response = post_json(client, "/v1/jobs", {**BASE, "name": name, "tags": {"by": name}}, validate_only="true")
        assert response.status_code == 200, response.text
        assert response.json()["spec"]["name"] == name


# --------------------------------------------------------------------------- 3: repeated query parameters


def test_a_repeated_single_valued_query_parameter_is_422(api: Service) -> None:
    with api.client() as client:
        job = client.post("/v1/jobs", json=BASE).json()
        calls = [
            ("GET", "/v1/jobs?limit=5&limit=500", "query.limit", 2),
            ("GET", "/v1/jobs?status=queued&status=failed&status=running", "query.status", 3),
            ("GET", "/v1/datasets?limit=1&limit=2", "query.limit", 2),
            ("GET", "/v1/studies?limit=1&limit=2", "query.limit", 2),
            ("GET", f"/v1/jobs/{job['id']}/metrics?names=loss_d&names=loss_g", "query.names", 2),
            ("POST", "/v1/jobs?validate_only=true&validate_only=false", "query.validate_only", 2),
        ]
        for method, path, field, times in calls:
            response = client.request(method, path, json=BASE if method == "POST" else None)
            assert response.status_code == 422, (path, response.text)
            assert details(response) == {field: f"given {times} times: give it once"}, response.text
        # Nothing was submitted by the refused POST (a last-wins validate_only=false would have stored a job).
        assert client.get("/v1/jobs").json()["jobs"][0]["id"] == job["id"]
        # Once is fine, and a parameter no route reads may repeat (it is not read either way).
        assert client.get("/v1/jobs?limit=5").status_code == 200
        assert client.get("/v1/jobs?limit=5&utm=a&utm=b").status_code == 200


def _names(name: Annotated[list[str] | None, Query()] = None) -> list[str]:
    return name or []


def _items(name: Annotated[list[str], Depends(_names)], limit: int = 10) -> dict[str, Any]:
    return {"names": name, "limit": limit}


def test_a_list_valued_query_parameter_may_repeat() -> None:
    """The same dependency on a route that declares a list: its values repeat, its other parameters may not."""
    app = FastAPI(dependencies=[Depends(one_value_per_query_parameter)])
    errors.install(app)
    app.get("/items")(_items)
    client = TestClient(app)
    assert client.get("/items?name=a&name=b&limit=3").json() == {"names": ["a", "b"], "limit": 3}
    response = client.get("/items?name=a&limit=3&limit=4")
    assert response.status_code == 422 and details(response) == {"query.limit": "given 2 times: give it once"}


# --------------------------------------------------------------------------- 5: numbers are JSON numbers


def test_numbers_are_json_numbers_in_every_field_of_a_spec(api: Service) -> None:
    """Text, booleans and 5.0 were numbers in some fields (training.steps: "5" ran 5 steps, seed: true was seed 1)
    and refused in others (init_from.step): now refused in all, with what to send."""
    body = {
        **BASE,
        "dataset": {"builtin": "ring8", "resize": 8.0},
        "architecture": {"name": "mlp", "hidden": "16", "depth": True},
        "loss": {"name": "wgan-gp", "lr_d": "1e-4", "gp_weight": True, "betas": [0, "0.9"], "n_critic": 5.0},
        "training": {"steps": "5", "batch_size": 8.0, "seed": True, "ema_decay": "0.9"},
        "every": {"metrics": "1"},
    }
    expected = {
        "dataset.resize": "integer",
        "architecture.hidden": "not text",
        "architecture.depth": "not a boolean",
        "loss.lr_d": "in YAML write 1.0e-4",
        "loss.gp_weight": "not a boolean",
        "loss.betas.1": "not text",
        "loss.n_critic": "not 5.0",
        "training.steps": "not text",
        "training.batch_size": "not 8.0",
        "training.seed": "not a boolean",
        "training.ema_decay": "not text",
        "every.metrics": "not text",
    }
    with api.client() as client:
        response = client.post("/v1/jobs", json=body, params={"validate_only": "true"})
        assert response.status_code == 422, response.text
        found = details(response)
        assert set(found) == set(expected), response.text
        for field, words in expected.items():
            assert words in found[field], (field, found[field])
        # An integer is a number where a float is wanted, as in JSON.
        response = client.post(
            "/v1/jobs", json={**BASE, "loss": {"name": "lsgan", "lr_d": 1, "a": 0}}, params={"validate_only": "true"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["spec"]["loss"]["lr_d"] == 1.0
        # A study's settings are the spec's: the same rule.
        response = client.post("/v1/studies", json={**STUDY, "training": {"steps": "5"}})
        assert response.status_code == 422 and "training.steps" in details(response), response.text
        response = client.post(
            "/v1/jobs",
            json={**BASE, "loss": {"name": "infogan", "categorical_codes": [10, 3.0, "4"]}},
            params={"validate_only": "true"},
        )
        assert set(details(response)) == {"loss.categorical_codes.1", "loss.categorical_codes.2"}, response.text


def test_booleans_are_json_booleans_in_a_spec_a_study_and_a_generate_request(api: Service) -> None:
    """ "on", 1, "no" and 0 were read as booleans (spectral_norm: "on" was true, watch.collapse: "no" was false):
    now a 422 at the field, saying to send true or false."""
    body = {
        **BASE,
        "architecture": {"name": "mlp", "hidden": 16, "depth": 1, "spectral_norm": "on"},
        "loss": {"name": "wgan", "critic_boost": 1},
        "training": {"steps": 5, "batch_size": 8, "watch": {"collapse": "no", "divergence": 0}},
    }
    switches = {
        "architecture.spectral_norm",
        "loss.critic_boost",
        "training.watch.collapse",
        "training.watch.divergence",
    }
    with api.client() as client:
        response = client.post("/v1/jobs", json=body, params={"validate_only": "true"})
        assert response.status_code == 422, response.text
        found = details(response)
        assert set(found) == switches, response.text
        assert all("must be true or false" in message for message in found.values()), response.text
        wrapped = {**BASE, "loss": {"name": "cgan", "base": "wgan", "critic_boost": "yes"}}
        response = client.post("/v1/jobs", json=wrapped, params={"validate_only": "true"})
        assert response.status_code == 422, response.text
        assert "must be true or false" in details(response)["loss.critic_boost"], response.text
        # JSON booleans still are.
        body["architecture"]["spectral_norm"], body["loss"]["critic_boost"] = True, False
        body["training"]["watch"] = {"collapse": False, "divergence": True}
        response = client.post("/v1/jobs", json=body, params={"validate_only": "true"})
        assert response.status_code == 200, response.text
        assert response.json()["spec"]["architecture"]["spectral_norm"] is True
        # A study's settings and overrides are the spec's: the same rule, at the study's paths.
        study = {
            **STUDY,
            "losses": ["wgan"],
            "architecture": {"name": "mlp", "hidden": 16, "depth": 1, "spectral_norm": 1},
            "training": {"steps": 5, "batch_size": 8, "watch": {"divergence": "off"}},
        }
        response = client.post("/v1/studies", json=study)
        assert response.status_code == 422, response.text
        found = details(response)
        assert set(found) == {"architecture.spectral_norm", "training.watch.divergence"}, response.text
        assert all("must be true or false" in message for message in found.values()), response.text
        response = client.post(
            "/v1/studies", json={**STUDY, "losses": ["wgan"], "overrides": {"wgan": {"critic_boost": "on"}}}
        )
        assert response.status_code == 422, response.text
        assert "must be true or false" in details(response)["overrides.wgan.critic_boost"], response.text
        # generate's ema (no worker here: the body is refused before anything is queued).
        job = client.post("/v1/jobs", json=BASE).json()
        for ema in ("no", 0):
            response = client.post(f"/v1/jobs/{job['id']}/generate", json={"count": 1, "ema": ema})
            assert response.status_code == 422, response.text
            assert "must be true or false" in details(response)["ema"], response.text


def test_a_study_grid_value_is_as_strict_as_its_field(api: Service) -> None:
    """A job with training.steps 10.0 is a 422; the same 10.0 as a grid value of training.steps ran 10 steps."""
    with api.client() as client:
        grid = [{"param": "training.steps", "values": [10, 20.0]}, {"param": "architecture.hidden", "values": [16.0]}]
        response = client.post("/v1/studies", json={**STUDY, "grid": grid})
        assert response.status_code == 422, response.text
        found = details(response)
        assert set(found) == {"grid.0.values.1", "grid.1.values.0"}, response.text
        assert "must be an integer, not 20.0" in found["grid.0.values.1"], response.text
        # lr_multiplier is a number: an integer is one.
        lr = {**STUDY, "grid": [{"param": "lr_multiplier", "values": [1, 0.5]}]}
        response = client.post("/v1/studies", json=lr, params={"validate_only": "true"})
        assert response.status_code == 200 and response.json()["job_count"] == 2, response.text


# --------------------------------------------------------------------------- 4: bench/study.py --report


def _bench_study() -> Any:
    spec = importlib.util.spec_from_file_location("bench_study_inputs", ROOT / "bench" / "study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_study_inputs"] = module
    spec.loader.exec_module(module)
    return module


def test_study_report_prints_and_writes_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _bench_study()
    name = f"inputs-{uuid.uuid4().hex[:8]}"
    spec_file = tmp_path / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump({**STUDY, "name": name}))
    tracked = ROOT / "bench" / "studies" / f"{name}.md"
    results = tmp_path / "results"
    results.mkdir()
    try:
        study.main([str(spec_file), "--report", "--results", str(results)])
        assert "Finished 0 of 1 runs" in capsys.readouterr().out
        assert not tracked.exists()  # printed only
        study.main([str(spec_file), "--report", "--write", "--results", str(results)])
        assert tracked.read_text().startswith(f"# Study `{name}`")
    finally:
        tracked.unlink(missing_ok=True)
