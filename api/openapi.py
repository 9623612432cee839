"""/openapi.json as the service answers: FastAPI's schema, finished once by `install`'s post-processing.

FastAPI infers the success answers and a 422 in its own shape; what it cannot see is added here:
- the error answers each /v1 operation really gives, in the one error shape (api/errors.py `error_body`,
  components/schemas/Error): 400 (a repeated Authorization, Content-Type, Content-Length, Idempotency-Key or
  Last-Event-ID: api/gate.py) on every /v1 operation; 401 and 403 (auth is on once a key exists, in
  GANFORGE_API_KEYS or the store); 404 where a path names an object (ownership: another owner's is missing too) or
  `ROUTE_ERRORS` says so; 413 and 415 where there is a body; 422 where there are parameters or a body; 429 with
  Retry-After and the RateLimit headers on every /v1 operation (a client address over its rate of failed
  authentications) and for a key's rate on the operations api/ratelimit.py limits; the rest as `ROUTE_ERRORS` or a
  route's own `responses=` list them;
- the bearer scheme every /v1 operation takes (the check is api/gate.py's, outside FastAPI's dependencies; a
  store key can turn auth on while the service runs, so it is declared whether or not auth is on now);
- the model of a body a route reads as a plain object (to report every problem of it in one 422);
- both 200 answers of a create with `validate_only` (an idempotent replay, or the validated spec), and a 201
  that is only the created object;
- what a validator refuses that JSON Schema can say (`CONSTRAINTS`, `PARAMETER_CONSTRAINTS`: a data set is
  `builtin` or an `id` of the id alphabet; an Idempotency-Key is printable ASCII);
- links from each create to the operations that take the created object's id (`LINKS`: what a client, or
  schemathesis's stateful phase, follows next); the `Authorization` header is the bearer scheme, not a parameter
  (OpenAPI ignores a header parameter of that name; FastAPI lists it from the dependency that reads it).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from api.ratelimit import LIMITED_OPERATIONS
from models.spec import ID_PATTERN

ERROR_SCHEMA = "Error"
ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}


class ErrorDetail(BaseModel):
    field: str = Field(description="the field's path: `losses.1`, `query.limit`, `header.content-type`, `body`")
    message: str
    type: str | None = Field(default=None, description="pydantic's error type, on validation errors")


class ErrorInfo(BaseModel):
    code: str = Field(description="machine-readable: validation_error, unauthorized, not_found, already_finished, ...")
    message: str = Field(description="for a person: what is wrong and how to fix it")
    details: list[ErrorDetail] = Field(description="one entry per invalid field (at most 50)")
    details_omitted: int | None = Field(default=None, description="how many more details were not listed")
    quota: str | None = Field(default=None, description="quota_exceeded: the quota (a field of GET /v1/quota's quotas)")
    limit: int | None = Field(default=None, description="quota_exceeded: the quota's limit (jobs, uploads or bytes)")
    used: int | None = Field(default=None, description="quota_exceeded: what the owner uses of it")
    requested: int | None = Field(default=None, description="quota_exceeded on queued_jobs: the jobs the request adds")
    setting: str | None = Field(default=None, description="quota_exceeded, rate_limited: the setting that sets it")


class Error(BaseModel):
    """Every error answer of the service: `{"error": {"code", "message", "details": [{"field", "message"}]}}`."""

    error: ErrorInfo


# What each status means where the route does not say it better.
DESCRIPTIONS = {
    400: "a header read as one value (Authorization, Content-Type, Content-Length, Idempotency-Key, Last-Event-ID) "
    "given more than once "
    "(repeated_header), or a malformed body",
    401: "no API key, or an unknown, expired or revoked one: send `Authorization: Bearer <key>` (unauthorized)",
    403: "the key lacks the scope this needs: read, submit or admin (insufficient_scope)",
    404: "no such object of yours (another owner's is missing too)",
    409: "the object's state does not allow it",
    413: "the body is over its limit (body_too_large)",
    415: "the body is not of the media type the operation takes (unsupported_media_type)",
    422: "an invalid parameter or body; `details` names every invalid field (validation_error)",
    429: "too many requests of yours at once",
    503: "a service this needs (the broker) cannot be reached: try again shortly",
}
# Statuses a route answers that the rules above do not infer: (method, path) → {status: description}.
ROUTE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/v1/jobs"): {
        404: "the spec's data set (dataset.id) is not one of yours",
        409: "this Idempotency-Key was used with a different spec (idempotency_conflict)",
    },
    ("post", "/v1/jobs/{job_id}/cancel"): {409: "the job has already finished (already_finished)"},
    ("post", "/v1/studies"): {
        404: "the study's data set (dataset.id) is not one of yours",
        409: "this Idempotency-Key was used with a different study (idempotency_conflict)",
    },
    ("post", "/v1/jobs/{job_id}/generate"): {503: DESCRIPTIONS[503]},
}
# Creates whose 200 is an idempotent replay or, with ?validate_only=true, the validated spec: (created, validated).
VALIDATE_ONLY = {
    ("post", "/v1/jobs"): ("JobOut", "ValidatedSpec"),
    ("post", "/v1/studies"): ("StudyOut", "ValidatedStudy"),
}

# Where a created object's id goes next: (method, path of the create) → [(method, path, parameter)], the parameter
# taking `$response.body#/id` (`prefix` for a key) from every 2xx JSON answer of the create that carries it.
_JOB = "/v1/jobs/{job_id}"
_DATASET = "/v1/datasets/{dataset_id}"
_STUDY = "/v1/studies/{study_id}"
_GENERATION = "/v1/generations/{generation_id}"
LINKS: dict[tuple[str, str], list[tuple[str, str, str]]] = {
    ("post", "/v1/jobs"): [
        ("get", _JOB, "job_id"),
        ("post", f"{_JOB}/cancel", "job_id"),
        ("get", f"{_JOB}/metrics", "job_id"),
        ("get", f"{_JOB}/samples", "job_id"),
        ("get", f"{_JOB}/samples/{{step}}.{{extension}}", "job_id"),
        ("get", f"{_JOB}/checkpoints", "job_id"),
        ("get", f"{_JOB}/checkpoints/{{step}}", "job_id"),
        ("get", f"{_JOB}/events", "job_id"),
        ("post", f"{_JOB}/generate", "job_id"),
    ],
    ("post", "/v1/datasets"): [
        ("get", _DATASET, "dataset_id"),
        ("get", f"{_DATASET}/preview.png", "dataset_id"),
        ("delete", _DATASET, "dataset_id"),
    ],
    ("post", "/v1/studies"): [
        ("get", _STUDY, "study_id"),
        ("get", f"{_STUDY}/curves", "study_id"),
        ("post", f"{_STUDY}/cancel", "study_id"),
    ],
    ("post", f"{_JOB}/generate"): [
        ("get", _GENERATION, "generation_id"),
        ("get", f"{_GENERATION}/result", "generation_id"),
    ],
    ("post", "/v1/keys"): [("delete", "/v1/keys/{prefix}", "prefix")],
}

# What a model's validator refuses that its JSON schema can say too: component name → keywords added to it.
CONSTRAINTS: dict[str, dict[str, Any]] = {
    # models/spec.py DatasetRef._exactly_one
    "DatasetRef": {
        "oneOf": [
            {"required": ["builtin"], "properties": {"builtin": {"type": "string"}}},
            {"required": ["id"], "properties": {"id": {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}}},
        ]
    },
}
# The same for parameters: (in, name) → keywords added to the string branch of its schema.
PARAMETER_CONSTRAINTS: dict[tuple[str, str], dict[str, Any]] = {
    ("header", "idempotency-key"): {"pattern": "^[ -~]{1,255}$"},  # api/deps.py IdempotencyKey: printable ASCII
}


def install(app: FastAPI) -> None:
    """Serve FastAPI's schema of `app` finished by `finish` (built once, on the first request for it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def finish(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (FastAPI's, changed in place and returned) with what the module docstring lists."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _declare_raw_bodies(schema, components)
    _add_models(components, Error)
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            operation["security"] = [{"bearer": []}]
            _drop_authorization_parameter(operation)
            _constrain_parameters(operation)
            _declare_errors(method, path, operation)
            _declare_rate_limits(method, path, operation)
            if (method, path) in VALIDATE_ONLY:
                _declare_validate_only(operation, *VALIDATE_ONLY[method, path])
    _declare_links(schema)
    for name, keywords in CONSTRAINTS.items():
        components[name].update(keywords)
    schema["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "an API key (GANFORGE_API_KEYS or /v1/keys)"}
    }
    # FastAPI's 422 shape ({"detail": [...]}) is not what the service answers; nothing refers to it now.
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def _add_models(components: dict[str, Any], model: type[BaseModel]) -> None:
    """`model` and the models it uses into components/schemas, where FastAPI has not put them."""
    model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in model_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault(model.__name__, model_schema)


def _declare_raw_bodies(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """The model of each body a route reads as a plain object (so it can report every problem of it in one 422)."""
    from models.study import StudySpec

    for path, method, model in (("/v1/studies", "post", StudySpec),):
        _add_models(components, model)
        content = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
        content["schema"] = {"$ref": f"#/components/schemas/{model.__name__}"}


def _declare_errors(method: str, path: str, operation: dict[str, Any]) -> None:
    """Every error status the operation answers, each with the Error schema and a description."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    statuses = {400, 401, 403}
    if "{" in path:
        statuses.add(404)
    if "requestBody" in operation:
        statuses |= {413, 415, 422}
    if any(parameter["name"] != "authorization" for parameter in operation.get("parameters", [])):
        statuses.add(422)  # an invalid or repeated parameter (api/app.py one_value_per_query_parameter)
    extra = ROUTE_ERRORS.get((method, path), {})
    for status in sorted(statuses | set(extra)):
        answer = responses.setdefault(str(status), {})
        if status in extra:
            answer["description"] = extra[status]
        elif answer.get("description", "Validation Error") == "Validation Error":  # FastAPI's, or none
            answer["description"] = DESCRIPTIONS[status]
    for code, answer in responses.items():
        if code.isdigit() and int(code) >= 400:
            given = answer.get("content", {}).get("application/json", {}).get("schema")
            if not given or given.get("$ref", "").endswith("/HTTPValidationError"):
                answer["content"] = {"application/json": {"schema": ERROR_REF}}


# The 429s of the rate limits (api/ratelimit.py), and the headers that come with them.
RATE_LIMIT_DESCRIPTIONS = {
    "unauthenticated": "this client address sent too many requests with a missing or bad key "
    "(GANFORGE_RATE_UNAUTHENTICATED; rate_limited): wait Retry-After seconds",
    "submit": "this key's rate of submissions (POST /v1/jobs, /v1/studies, /v1/jobs/{job_id}/generate together) "
    "is reached (GANFORGE_RATE_SUBMIT; rate_limited): wait Retry-After seconds",
    "upload": "this key's rate of uploads is reached (GANFORGE_RATE_UPLOAD; rate_limited): wait Retry-After seconds",
}
_INTEGER = {"type": "integer", "minimum": 0}
RATE_LIMIT_HEADERS = {
    "Retry-After": {"description": "whole seconds to wait before sending again (1 or more)", "schema": _INTEGER},
    "RateLimit-Limit": {"description": "requests the window takes (IETF RateLimit headers)", "schema": _INTEGER},
    "RateLimit-Remaining": {"description": "requests the window takes now", "schema": _INTEGER},
    "RateLimit-Reset": {"description": "seconds until the window takes one more", "schema": _INTEGER},
}


def _declare_rate_limits(method: str, path: str, operation: dict[str, Any]) -> None:
    """429 on every /v1 operation (a client address over its rate of failed authentications), and on a limited
    operation for its key's rate; each with Retry-After and the RateLimit headers, beside a route's own 429."""
    answer = operation["responses"].setdefault("429", {})
    reasons = [answer["description"]] if answer.get("description") else []
    if (method, path) in LIMITED_OPERATIONS:
        reasons.append(RATE_LIMIT_DESCRIPTIONS[LIMITED_OPERATIONS[method, path]])
    reasons.append(RATE_LIMIT_DESCRIPTIONS["unauthenticated"])
    answer["description"] = "; or ".join(reasons)
    answer["headers"] = {**answer.get("headers", {}), **RATE_LIMIT_HEADERS}
    answer["content"] = {"application/json": {"schema": ERROR_REF}}


def _declare_validate_only(operation: dict[str, Any], created: str, validated: str) -> None:
    """201: the created object; 200: the same object again (an idempotent replay) or the validated spec."""
    responses = operation["responses"]
    ref = "#/components/schemas/{}".format
    responses["201"]["content"] = {"application/json": {"schema": {"$ref": ref(created)}}}
    responses["200"] = {
        "description": "an idempotent replay (the object the key created), or with ?validate_only=true the spec as "
        "it would run (defaults filled in), nothing created",
        "content": {"application/json": {"schema": {"anyOf": [{"$ref": ref(created)}, {"$ref": ref(validated)}]}}},
    }


def _drop_authorization_parameter(operation: dict[str, Any]) -> None:
    """The `authorization` header parameter out of `operation`: the bearer scheme says how a key is sent."""
    parameters = [
        p for p in operation.get("parameters", []) if (p["in"], p["name"].lower()) != ("header", "authorization")
    ]
    if parameters:
        operation["parameters"] = parameters
    else:
        operation.pop("parameters", None)


def _declare_links(schema: dict[str, Any]) -> None:
    """`LINKS` as OpenAPI links on each 2xx JSON answer of a create whose body has the id the link passes on."""
    components = schema["components"]["schemas"]
    paths = schema["paths"]
    for (method, path), targets in LINKS.items():
        for answer in paths[path][method]["responses"].values():
            body = answer.get("content", {}).get("application/json", {}).get("schema", {})
            properties = _properties(body, components)
            links = answer.setdefault("links", {}) if properties else {}
            for target_method, target_path, parameter in targets:
                field = "prefix" if parameter == "prefix" else "id"
                if field not in properties:
                    continue
                pointer = target_path.replace("~", "~0").replace("/", "~1")
                # A link's name follows a component name's rules (^[a-zA-Z0-9._-]+$): get_v1_jobs_job_id_cancel.
                name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{target_method}{target_path}").strip("_")
                links[name] = {
                    "operationRef": f"#/paths/{pointer}/{target_method}",
                    "parameters": {parameter: f"$response.body#/{field}"},
                }
            if not links:
                answer.pop("links", None)


def _properties(body: dict[str, Any], components: dict[str, Any]) -> set[str]:
    """The property names every branch of `body` (a $ref or anyOf of $refs) has in common; empty for another shape."""
    branches = body.get("anyOf", [body]) if body else []
    names: set[str] | None = None
    for branch in branches:
        ref = branch.get("$ref", "")
        if not ref.startswith("#/components/schemas/"):
            return set()
        found = set(components[ref.rsplit("/", 1)[1]].get("properties", {}))
        names = found if names is None else names & found
    return names or set()


def _constrain_parameters(operation: dict[str, Any]) -> None:
    """`PARAMETER_CONSTRAINTS` into the string branch of each parameter of `operation` they name."""
    for parameter in operation.get("parameters", []):
        keywords = PARAMETER_CONSTRAINTS.get((parameter["in"], parameter["name"].lower()))
        if keywords:
            for branch in parameter["schema"].get("anyOf", [parameter["schema"]]):
                if branch.get("type") == "string":
                    branch.update(keywords)
