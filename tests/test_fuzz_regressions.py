"""What schemathesis found (tests/test_schemathesis.py), one test per kind, on both backends (API-only uvicorn):

- a 405 named only some of the path's methods in `Allow` (`OPTIONS /v1/jobs` said `Allow: POST`; Starlette names
  the first matching route's);
- /openapi.json listed `Authorization` as a header parameter of every operation besides the bearer scheme, so a
  client generated from it could send a key twice (OpenAPI ignores such a parameter);
- /openapi.json let a data set reference name both `builtin` and `id`, or neither, or an id outside the id
  alphabet, and an Idempotency-Key of any characters, which the API refuses (422);
- and the links the stateful phase follows (api/openapi.py LINKS) must stay true as routes change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.conftest import BACKENDS, api_only
from tests.service import TINY_SPEC, Service

METHODS = ("delete", "get", "patch", "post", "put")


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with api_only(request.param, tmp_path_factory.mktemp(f"fuzzfix-{request.param}")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def schema(api: Service) -> dict[str, Any]:
    response = httpx.get(f"{api.url}/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def concrete(path: str) -> str:
    """`path` with a value in each {parameter}: an id that names nothing, `5` for a step, `png` for an extension."""
    values = {"step": "5", "extension": "png"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "no-such-id"), path)


def test_a_405_allows_every_method_the_path_takes(api: Service, schema: dict[str, Any]) -> None:
    tried = 0
    with api.client() as client:
        for path, operations in schema["paths"].items():
            declared = {method.upper() for method in operations if method in METHODS}
            for method in ("OPTIONS", *sorted({m.upper() for m in METHODS} - declared)):
                response = client.request(method, concrete(path))
                assert response.status_code == 405, (method, path, response.status_code, response.text)
                assert set(response.headers["allow"].split(", ")) == declared, (method, path, response.headers)
                assert response.json()["error"]["code"] == "method_not_allowed", response.text
                tried += 1
    assert tried > 50, tried


def test_the_key_is_the_bearer_scheme_and_no_header_parameter(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            names = [(p["in"], p["name"].lower()) for p in operation.get("parameters", [])]
            assert ("header", "authorization") not in names, (method, path)
            if path.startswith("/v1/"):
                assert operation["security"] == [{"bearer": []}], (method, path)


@pytest.mark.parametrize(
    ("dataset", "valid"),
    [
        ({"builtin": "ring8"}, True),
        ({"id": "no-such-upload"}, True),  # valid in shape: the API's answer is a 404, not a 422
        ({"builtin": "ring8", "id": "no-such-upload"}, False),
        ({}, False),
        ({"builtin": None, "id": None}, False),
        ({"resize": 32}, False),
        ({"id": "a b"}, False),  # outside the id alphabet
    ],
)
def test_the_schema_refuses_the_data_set_references_the_api_refuses(
    api: Service, schema: dict[str, Any], dataset: dict[str, Any], valid: bool
) -> None:
    validator = jsonschema_rs.validator_for(schema["components"]["schemas"]["DatasetRef"])
    assert validator.is_valid(dataset) is valid
    with api.client() as client:
        response = client.post("/v1/jobs", params={"validate_only": "true"}, json={**TINY_SPEC, "dataset": dataset})
    if valid:
        assert response.status_code in (200, 404), response.text
    else:
        assert response.status_code == 422, response.text
        fields = [d["field"] for d in response.json()["error"]["details"]]
        assert any(field.split(".")[0] == "dataset" for field in fields), response.text


@pytest.mark.parametrize(("key", "valid"), [(b"retry-7 of ~this", True), (b"caf\xe9", False), (b"tab\there", False)])
def test_the_schema_refuses_the_idempotency_keys_the_api_refuses(
    api: Service, schema: dict[str, Any], key: bytes, valid: bool
) -> None:
    parameters = schema["paths"]["/v1/jobs"]["post"]["parameters"]
    declared = next(p["schema"] for p in parameters if p["name"] == "idempotency-key")
    assert jsonschema_rs.validator_for(declared).is_valid(key.decode("latin-1")) is valid
    with api.client() as client:
        response = client.post(
            "/v1/jobs", params={"validate_only": "true"}, json=TINY_SPEC, headers={b"Idempotency-Key": key}
        )
    if valid:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 422, response.text
        assert [d["field"] for d in response.json()["error"]["details"]] == ["header.idempotency-key"], response.text


def test_every_link_names_an_operation_its_parameter_and_a_field_of_the_answer(schema: dict[str, Any]) -> None:
    """A renamed path, path parameter or id field breaks a link silently (the stateful phase only stops using it)."""
    components = schema["components"]["schemas"]
    seen = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                for name, link in answer.get("links", {}).items():
                    assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
                    target_path, target_method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
                    target_path = target_path.replace("~1", "/").replace("~0", "~")
                    target = schema["paths"][target_path][target_method]
                    path_parameters = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                    body = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                    for parameter, expression in link["parameters"].items():
                        assert parameter in path_parameters, (method, path, status, name)
                        field = expression.removeprefix("$response.body#/")
                        assert field in components[body]["required"], (method, path, status, name)
                    seen += 1
    assert seen >= 15, seen
