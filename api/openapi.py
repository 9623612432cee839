"""/openapi.json as the service answers: FastAPI's schema, finished once by `install`'s post-processing.

FastAPI infers the success answers and a 422 in its own shape; what it cannot see is added here:
- the error answers each /v1 operation really gives, in the one error shape (api/errors.py `error_body`,
  components/schemas/Error): 400 (a repeated Authorization, Content-Type, Content-Length, Idempotency-Key or
  Last-Event-ID: api/gate.py) on every /v1 operation; 401 and 403 (auth is on once a key exists, in
  GANFORGE_API_KEYS or the store); 404 where a path names an object (ownership: another owner's is missing too) or
  `ROUTE_ERRORS` says so; 413 on every /v1 operation (a body over its limit, whatever the method); 415 where there
  is a body; 422 where there are parameters or a body; 429 with
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
- each operation's id its function's name (`submit_job`, not FastAPI's `submit_job_v1_jobs_post`): the name of
  the function a generated client gives it;
- a summary (`SUMMARIES`) where the route gives none of its own (FastAPI's default is the function's name), an
  example on every answer (api/examples.py: real answers of the service; `ERROR_EXAMPLES` for the errors) and on
  every JSON request body (`REQUEST_EXAMPLES`), and a binary schema on every file answer (`FILES`), so a client
  generated from the schema (openapi-python-client) reads each answer as what it is;
- links from each create to the operations that take the created object's id (`LINKS`: what a client, or
  schemathesis's stateful phase, follows next); the `Authorization` header is the bearer scheme, not a parameter
  (OpenAPI ignores a header parameter of that name; FastAPI lists it from the dependency that reads it).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
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
    rate: str | None = Field(default=None, description="rate_limited: the rate reached, e.g. `10 per 1 minute`")


class Readiness(BaseModel):
    """GET /readyz's answer, 200 or 503 alike (api/routes/system.py readyz)."""

    status: str = Field(description="`ready` (200) or `not ready` (503)")
    checks: dict[str, str] = Field(
        description="store, schema, broker: `ok`, or why not (`error: OperationalError`, the schema revision to "
        "migrate to)"
    )


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
    _declare_readiness(schema, components)
    _name_operations(schema)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            _declare_summary(method, path, operation)
            _declare_files(method, path, operation)
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
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            _declare_examples(method, path, operation)
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


def _declare_readiness(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """GET /readyz: its body as the Readiness model, and the 503 it answers while the store or broker is not."""
    _add_models(components, Readiness)
    responses = schema["paths"]["/readyz"]["get"]["responses"]
    body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{Readiness.__name__}"}}}
    responses["200"]["content"] = body
    responses["503"] = {"description": "not ready: `checks` says which part is not", "content": copy.deepcopy(body)}


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
    statuses = {400, 401, 403, 413}  # 413: the gate refuses an over-limit body on any operation, even a GET's
    if "{" in path:
        statuses.add(404)
    if "requestBody" in operation:
        statuses |= {413, 415, 422}
    if any(_can_be_invalid(parameter) for parameter in operation.get("parameters", [])):
        statuses.add(422)  # an invalid or repeated parameter (api/app.py one_value_per_query_parameter)
    extra = ROUTE_ERRORS.get((method, path), {})
    if 422 not in statuses | set(extra) and responses.get("422", {}).get("description") == "Validation Error":
        del responses["422"]  # FastAPI's for a path id that any text passes (an unknown one is a 404)
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


def _can_be_invalid(parameter: dict[str, Any]) -> bool:
    """Whether a value of the parameter can be refused (422): any query or header parameter (a repeated one is),
    a path parameter with a type or constraint beyond plain text (a step's pattern, an extension's names)."""
    if parameter["name"] == "authorization":
        return False
    schema = parameter.get("schema", {})
    return (
        parameter["in"] != "path"
        or set(schema) - {"type", "title", "description"} != set()
        or schema.get("type") != "string"
    )


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


# What each operation does in a line, where the route's decorator gives no summary of its own.
SUMMARIES: dict[tuple[str, str], str] = {
    ("post", "/v1/jobs"): "Submit a training job",
    ("get", "/v1/jobs"): "List your jobs",
    ("get", _JOB): "Get a job",
    ("post", f"{_JOB}/cancel"): "Cancel a job",
    ("get", f"{_JOB}/metrics"): "A job's metric series",
    ("get", f"{_JOB}/samples"): "List a job's sample snapshots",
    ("get", f"{_JOB}/samples/{{step}}.{{extension}}"): "Download a sample snapshot (PNG or .npy)",
    ("get", f"{_JOB}/checkpoints"): "List a job's checkpoints",
    ("get", f"{_JOB}/checkpoints/{{step}}"): "Download a checkpoint",
    ("get", f"{_JOB}/events"): "Follow a job's events (Server-Sent Events)",
    ("post", f"{_JOB}/generate"): "Generate samples from a checkpoint",
    ("post", "/v1/datasets"): "Upload a data set",
    ("get", "/v1/datasets"): "List your data sets",
    ("get", _DATASET): "Get a data set",
    ("delete", _DATASET): "Delete a data set",
    ("get", f"{_DATASET}/preview.png"): "A data set's preview image",
    ("get", _GENERATION): "Get a generate request",
    ("get", f"{_GENERATION}/result"): "Download a generate request's samples",
    ("post", "/v1/keys"): "Create an API key",
    ("get", "/v1/keys"): "List your owner's API keys",
    ("delete", "/v1/keys/{prefix}"): "Revoke an API key",
    ("get", "/v1/whoami"): "The key you are calling with",
    ("get", "/v1/catalog"): "Losses, architectures and built-in data sets",
    ("get", "/healthz"): "Liveness",
    ("get", "/readyz"): "Readiness: the store, its schema and the broker",
    ("delete", _JOB): "Delete a finished job",
    ("delete", f"{_JOB}/checkpoints/{{step}}"): "Delete a checkpoint",
}
# The same for the description, where the route has no docstring.
OPERATION_DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("get", _DATASET): "The data set: its format, what ingestion found in it (`info`: kind, shape, classes, size), its "
    "content hash, stored size and preview URL.",
}
# Answers that are files: (method, path) → the media types of its 200 (each a binary string in the schema).
FILES: dict[tuple[str, str], tuple[str, ...]] = {
    ("get", f"{_JOB}/checkpoints/{{step}}"): ("application/octet-stream",),  # safetensors, or ?file=state torch
    ("get", f"{_JOB}/samples/{{step}}.{{extension}}"): ("image/png", "application/octet-stream"),  # .npy
    # `format` png or npy; FastAPI adds application/json, which these never answer with
    ("post", f"{_JOB}/generate"): ("image/png", "application/x-npy"),
    ("get", f"{_GENERATION}/result"): ("image/png", "application/x-npy"),
}
BINARY = {"type": "string", "format": "binary"}

# The JSON body of each operation that takes one, as a client would send it: (method, path) → body. A route's own
# `openapi_examples` (POST /v1/studies) is kept.
REQUEST_EXAMPLES: dict[tuple[str, str], Any] = {
    ("post", "/v1/jobs"): {
        "name": "ring-nsgan",
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 16, "depth": 1},
        "loss": {"name": "nsgan"},
        "training": {"steps": 5, "batch_size": 8},
        "every": {"metrics": 1, "samples": 5, "checkpoint": 5},
        "tags": {"team": "vision"},
    },
    ("post", f"{_JOB}/generate"): {"count": 4, "seed": 0, "step": "latest", "format": "npy"},
    ("post", "/v1/keys"): {"name": "ci", "scopes": ["read"], "ttl": "30d"},
    ("post", "/v1/datasets"): {"file": "(the bytes of points.npz)", "name": "points"},  # multipart/form-data
    ("post", "/v1/webhooks"): {
        "url": "https://hooks.example.com/ganforge",
        "events": ["job.status", "study.finished"],
        "description": "platform",
    },
}


def _error(code: str, message: str, details: list[dict[str, str]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or [], **extra}}


def _field_error(code: str, field: str, message: str) -> dict[str, Any]:
    return _error(code, message, [{"field": field, "message": message}])


_MISSING_CHECKPOINT = "no checkpoint at step 999; this job's checkpoints: steps 5 (or 'latest')"
# An example of each error answer (the service's own words), by status; ROUTE_ERROR_EXAMPLES where a route's differ.
ERROR_EXAMPLES: dict[int, list[dict[str, Any]]] = {
    400: [_error("repeated_header", "header content-type given more than once: give it once")],
    401: [
        _error(
            "unauthorized",
            "missing, unknown, expired or revoked API key: send 'Authorization: Bearer <key>' (`ganforge keys list` "
            "shows a store key's state)",
        )
    ],
    403: [_error("insufficient_scope", "this API key lacks the 'submit' scope, which POST, PUT and DELETE need")],
    404: [_error("not_found", "no job '0c5a2a92-833a-446e-9068-3b371795f7b6'")],
    410: [_error("expired", "the generation expired: its result was deleted")],
    413: [_error("body_too_large", "the request body is larger than the limit of 1048576 bytes")],
    415: [
        _field_error(
            "unsupported_media_type",
            "header.content-type",
            "this endpoint takes a JSON body: send `Content-Type: application/json` (got text/plain)",
        )
    ],
    422: [
        _error(
            "validation_error",
            "query.limit: Input should be greater than or equal to 1",
            [
                {
                    "field": "query.limit",
                    "message": "Input should be greater than or equal to 1",
                    "type": "greater_than_equal",
                }
            ],
        )
    ],
    429: [
        _error(
            "rate_limited",
            "rate limit reached: 10 requests per 1 minute from this address with a missing or bad key "
            "(GANFORGE_RATE_UNAUTHENTICATED); retry after 42 s",
            rate="10 per 1 minute",
            setting="GANFORGE_RATE_UNAUTHENTICATED",
        )
    ],
    503: [_error("broker_unavailable", "the queue could not be reached: try again shortly")],
}
_QUOTA = _error(
    "quota_exceeded",
    "queued_jobs quota: 1000 of 1000 jobs queued; wait for some to start or cancel some (GANFORGE_QUOTA_QUEUED_JOBS, "
    "or the owner's entry in GANFORGE_OWNER_QUOTAS)",
    quota="queued_jobs",
    limit=1000,
    used=1000,
    requested=1,
    setting="GANFORGE_QUOTA_QUEUED_JOBS",
)
_SPEC_422 = _error(
    "validation_error",
    "architecture: Field required; loss: Field required",
    [
        {"field": "architecture", "message": "Field required", "type": "missing"},
        {"field": "loss", "message": "Field required", "type": "missing"},
    ],
)
ROUTE_ERROR_EXAMPLES: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {
    ("post", "/v1/jobs"): {
        403: [*ERROR_EXAMPLES[403], _QUOTA],
        404: [_field_error("not_found", "dataset.id", "no data set '2bd11507-c44f-4b05-a1a3-d3e17e03a63d'")],
        409: [_error("idempotency_conflict", "this Idempotency-Key was used with a different spec")],
        422: [_SPEC_422],
    },
    ("post", f"{_JOB}/cancel"): {409: [_error("already_finished", "job is already succeeded")]},
    ("get", f"{_JOB}/checkpoints/{{step}}"): {
        404: [*ERROR_EXAMPLES[404], _field_error("not_found", "path.step", _MISSING_CHECKPOINT)]
    },
    ("delete", _DATASET): {
        409: [
            _field_error(
                "dataset_in_use", "dataset_id", "a queued or running job uses this data set: cancel it or wait for it"
            )
        ]
    },
    ("post", "/v1/studies"): {
        403: [*ERROR_EXAMPLES[403], _QUOTA],
        409: [_error("idempotency_conflict", "this Idempotency-Key was used with a different study")],
    },
    ("post", f"{_STUDY}/cancel"): {409: [_error("already_finished", "study is already succeeded")]},
    ("post", f"{_JOB}/generate"): {
        409: [_field_error("no_checkpoint", "step", "the job has no checkpoint yet: wait for its first one")]
    },
    ("get", f"{_GENERATION}/result"): {
        409: [
            _error(
                "not_ready",
                "the generation is queued: poll GET /v1/generations/af0fea64-5cb2-4266-8cc8-1de351443da9 until it "
                "succeeded",
            )
        ]
    },
    ("delete", "/v1/keys/{prefix}"): {404: [_error("not_found", "no API key 'gf_r0wgk4z9'")]},
    ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): {
        409: [
            _error("endpoint_disabled", "the endpoint is disabled: enable it first (POST .../enable)"),
            _error(
                "redelivery_pending",
                "delivery '9b0d3c7e-55a1-4f0e-8d8b-2f6a4c1e7d90' of this event is still waiting to be sent (pending "
                "or failed): wait for it (GET .../deliveries?status=failed shows its next attempt)",
                delivery_id="9b0d3c7e-55a1-4f0e-8d8b-2f6a4c1e7d90",
            ),
            _error(
                "too_many_pending",
                "the endpoint has 1000 deliveries waiting to be sent (pending or failed): redeliver once they are "
                "sent or dead",
                limit=1000,
            ),
        ]
    },
}


def _name_operations(schema: dict[str, Any]) -> None:
    """Each operation's id without the path and method FastAPI appends to its function's name (fastapi.utils
    generate_unique_id), where no other operation's function has that name (ids must stay unique)."""
    short = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            suffix = re.sub(r"\W", "_", path) + "_" + method
            name = operation.get("operationId", "")
            if name.endswith(suffix) and len(name) > len(suffix):
                short[name] = name.removesuffix(suffix)
    taken = Counter(short.values())
    for operations in schema["paths"].values():
        for operation in operations.values():
            name = short.get(operation.get("operationId", ""))
            if name and taken[name] == 1:
                operation["operationId"] = name


def _is_fastapi_summary(operation: dict[str, Any]) -> bool:
    """Whether the operation's summary is FastAPI's default (its function's name, title-cased), or none."""
    summary = operation.get("summary", "")
    return not summary or operation.get("operationId", "").startswith(summary.lower().replace(" ", "_"))


def _declare_summary(method: str, path: str, operation: dict[str, Any]) -> None:
    """`SUMMARIES` and `OPERATION_DESCRIPTIONS` where the route gives none."""
    if (method, path) in SUMMARIES and _is_fastapi_summary(operation):
        operation["summary"] = SUMMARIES[method, path]
    if (method, path) in OPERATION_DESCRIPTIONS and not operation.get("description"):
        operation["description"] = OPERATION_DESCRIPTIONS[method, path]


def _declare_files(method: str, path: str, operation: dict[str, Any]) -> None:
    """`FILES`' media types on the 200; every other media type without a schema (a PNG, an .npy) a binary string,
    Server-Sent Events a text."""
    if (method, path) in FILES:
        answer = operation["responses"]["200"]
        answer["content"] = {media: {"schema": dict(BINARY)} for media in FILES[method, path]}
    for answer in operation["responses"].values():
        for media, content in answer.get("content", {}).items():
            if not content.get("schema") and media != "application/json":
                content["schema"] = {"type": "string"} if media.startswith("text/") else dict(BINARY)


def _declare_examples(method: str, path: str, operation: dict[str, Any]) -> None:
    """An example on the request body (`REQUEST_EXAMPLES`), on each answer api/examples.py recorded, and on
    each error answer (`ROUTE_ERROR_EXAMPLES`, else `ERROR_EXAMPLES`); examples a route gives itself are kept."""
    from api.examples import RESPONSES

    for body in operation.get("requestBody", {}).get("content", {}).values():
        if (method, path) in REQUEST_EXAMPLES and not body.get("examples"):
            body.setdefault("example", REQUEST_EXAMPLES[method, path])
    recorded = RESPONSES.get((method, path), {})
    own_errors = ROUTE_ERROR_EXAMPLES.get((method, path), {})
    for code, answer in operation.get("responses", {}).items():
        status = int(code) if code.isdigit() else 0
        for media, content in answer.get("content", {}).items():
            if content.get("example") is not None or content.get("examples"):
                continue
            if status in recorded and (media == "application/json") == (not isinstance(recorded[status], str)):
                content["example"] = recorded[status]
            elif status >= 400 and media == "application/json":
                bodies = own_errors.get(status) or _generic_errors(path, status)
                if len(bodies) == 1:
                    content["example"] = bodies[0]
                elif bodies:
                    content["examples"] = {body["error"]["code"]: {"value": body} for body in bodies}


# What a 404 names for the object in the path (api/deps.py not_found): path parameter → its words.
_OBJECTS = {
    "job_id": "job",
    "dataset_id": "data set",
    "study_id": "study",
    "generation_id": "generation",
    "webhook_id": "webhook",
}


def _generic_errors(path: str, status: int) -> list[dict[str, Any]]:
    """`ERROR_EXAMPLES[status]`; a 404 names the kind of object of the path's first parameter."""
    if status == 404:
        for parameter, words in _OBJECTS.items():
            if "{" + parameter + "}" in path:
                return [_error("not_found", f"no {words} '0c5a2a92-833a-446e-9068-3b371795f7b6'")]
    return ERROR_EXAMPLES.get(status, [])
