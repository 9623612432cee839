"""Each API call as data (method, path, query, body, whether it may be retried, what answer it expects), shared by
the sync and async clients so both send exactly the same requests.

An id (job, data set) longer than 200 characters or holding a control character, or a step that is not a
non-negative int or "latest", is refused before anything is sent: `ValueError` naming the argument.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from ganforge.client.specs import SpecLike, spec_body

Step = int | str
"""A training step, or "latest" (the newest)."""

MAX_ID = 200  # characters: the API's ids are far shorter; a longer one cannot name anything

# The media type (Content-Type) the API sends for each file (api/routes/results.py, datasets.py).
PNG, OCTETS = "image/png", "application/octet-stream"


@dataclass(frozen=True)
class Call:
    """One request. idempotent: None lets the transport decide (GET, or POST with an Idempotency-Key)."""

    method: str
    path: str
    params: dict[str, str | int] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool | None = None
    expect: str | None = None  # a file's media type; None: JSON (checked by parsing)


def check_id(value: str, name: str) -> str:
    """`value` when it can be an id; ValueError naming `name` when it is empty, longer than MAX_ID characters or
    holds a control character."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}"[:300])
    if len(value) > MAX_ID:
        raise ValueError(f"{name} is {len(value)} characters long; an id has at most {MAX_ID}")
    if not value.isprintable():
        raise ValueError(f"{name} contains a control character: {value!r}")
    return value


def _segment(value: str, name: str) -> str:
    # Ids go into the path quoted: an id like "../x" stays one segment (the API answers 404).
    return quote(check_id(value, name), safe="")


def job_path(job_id: str, *rest: str) -> str:
    return "/".join(["/v1/jobs", _segment(job_id, "job_id"), *rest]).rstrip("/")


def step_segment(step: Step) -> str:
    """`step` as the path segment: a non-negative int or "latest"; ValueError otherwise."""
    if isinstance(step, str) and (step == "latest" or (step.isascii() and step.isdigit())):
        return step
    if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
        return str(step)
    raise ValueError(f'step must be a non-negative int or "latest", got {step!r}')


def submit(spec: SpecLike, idempotency_key: str | None) -> Call:
    """POST /v1/jobs with a fresh Idempotency-Key unless one is given: a retry cannot create a second job."""
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    return Call("POST", "/v1/jobs", json=spec_body(spec), headers={"Idempotency-Key": key})


def validate(spec: SpecLike) -> Call:
    # validate_only creates nothing: safe to send again.
    return Call("POST", "/v1/jobs", params={"validate_only": "true"}, json=spec_body(spec), idempotent=True)


def get_job(job_id: str) -> Call:
    return Call("GET", job_path(job_id))


def list_jobs(status: str | None, tag: str | None, limit: int, cursor: str | None) -> Call:
    params: dict[str, str | int] = {"limit": limit}
    if status is not None:
        params["status"] = status
    if tag is not None:
        params["tag"] = tag
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/jobs", params=params)


def cancel(job_id: str) -> Call:
    # The API's cancel only ever moves a job towards cancelled: sending it twice has the effect of sending it once.
    return Call("POST", job_path(job_id, "cancel"), idempotent=True)


def delete_job(job_id: str) -> Call:
    # Not retried: a second DELETE after a lost answer would report a 404 for a delete that worked.
    return Call("DELETE", job_path(job_id), idempotent=False)


def delete_checkpoint(job_id: str, step: int) -> Call:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    return Call("DELETE", job_path(job_id, "checkpoints", str(step)), idempotent=False)


def events(job_id: str, headers: dict[str, str]) -> Call:
    return Call("GET", job_path(job_id, "events"), headers={"Accept": "text/event-stream", **headers})


def metrics(job_id: str, names: Iterable[str] | str | None, since_step: int | None, max_points: int | None) -> Call:
    params: dict[str, str | int] = {}
    joined = names if isinstance(names, str) or names is None else ",".join(names)
    if joined:  # None, "" or []: every series (the API refuses an empty name)
        params["names"] = joined
    if since_step is not None:
        params["since_step"] = since_step
    if max_points is not None:
        params["max_points"] = max_points
    return Call("GET", job_path(job_id, "metrics"), params=params)


# Rows per page when the SDK reads a whole list of samples or checkpoints (the API's largest page).
RESULTS_PAGE = 500


def _page(cursor: str | None) -> dict[str, str | int]:
    return {"limit": RESULTS_PAGE, **({"cursor": cursor} if cursor else {})}


def samples(job_id: str, cursor: str | None = None) -> Call:
    """One page of GET /v1/jobs/{id}/samples ({"samples": [...], "next_cursor"})."""
    return Call("GET", job_path(job_id, "samples"), params=_page(cursor))


def sample_file(job_id: str, step: Step, extension: str) -> Call:
    return Call(
        "GET",
        job_path(job_id, "samples", f"{step_segment(step)}.{extension}"),
        expect=PNG if extension == "png" else OCTETS,
    )


def checkpoints(job_id: str, cursor: str | None = None) -> Call:
    """One page of GET /v1/jobs/{id}/checkpoints ({"checkpoints": [...], "next_cursor"})."""
    return Call("GET", job_path(job_id, "checkpoints"), params=_page(cursor))


def checkpoint_file(job_id: str, step: Step, file: str) -> Call:
    if file not in ("weights", "state"):
        raise ValueError(f'file must be "weights" or "state", got {file!r}')
    params: dict[str, str | int] = {"file": file} if file != "weights" else {}
    return Call("GET", job_path(job_id, "checkpoints", step_segment(step)), params=params, expect=OCTETS)


def catalog() -> Call:
    return Call("GET", "/v1/catalog")


def list_datasets(limit: int, cursor: str | None) -> Call:
    params: dict[str, str | int] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/datasets", params=params)


def get_dataset(dataset_id: str) -> Call:
    return Call("GET", f"/v1/datasets/{_segment(dataset_id, 'dataset_id')}")


def delete_dataset(dataset_id: str) -> Call:
    # Not retried: a second DELETE after a lost answer would report a 404 for a delete that worked.
    return Call("DELETE", f"/v1/datasets/{_segment(dataset_id, 'dataset_id')}", idempotent=False)


def dataset_preview(dataset_id: str) -> Call:
    return Call("GET", f"/v1/datasets/{_segment(dataset_id, 'dataset_id')}/preview.png", expect=PNG)


def upload_fields(name: str | None, resize: int | None, value_range: tuple[float, float] | None) -> dict[str, str]:
    """The small form fields of `POST /v1/datasets` (api/multipart.py FIELDS) beside the file part."""
    fields: dict[str, str] = {}
    if name is not None:
        fields["name"] = name
    if resize is not None:
        fields["resize"] = str(resize)
    if value_range is not None:
        low, high = value_range
        fields["value_range"] = f"{low!r},{high!r}"
    return fields


# ---------------------------------------------------------------- studies (api/routes/studies.py)


def study_path(study_id: str, *rest: str) -> str:
    return "/".join(["/v1/studies", _segment(study_id, "study_id"), *rest]).rstrip("/")


def submit_study(spec: SpecLike, idempotency_key: str | None) -> Call:
    """POST /v1/studies with a fresh Idempotency-Key unless one is given: a retry cannot fan out a second study."""
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    return Call("POST", "/v1/studies", json=spec_body(spec), headers={"Idempotency-Key": key})


def validate_study(spec: SpecLike) -> Call:
    return Call("POST", "/v1/studies", params={"validate_only": "true"}, json=spec_body(spec), idempotent=True)


def get_study(study_id: str) -> Call:
    return Call("GET", study_path(study_id))


def list_studies(limit: int, cursor: str | None) -> Call:
    params: dict[str, str | int] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/studies", params=params)


def cancel_study(study_id: str) -> Call:
    # Cancelling a study only ever moves its jobs towards cancelled: sending it twice is sending it once.
    return Call("POST", study_path(study_id, "cancel"), idempotent=True)


def study_curves(study_id: str, names: Iterable[str] | str | None, points: int | None) -> Call:
    params: dict[str, str | int] = {}
    joined = names if isinstance(names, str) or names is None else ",".join(names)
    if joined:  # None, "" or []: the study's default measures
        params["names"] = joined
    if points is not None:
        params["points"] = points
    return Call("GET", study_path(study_id, "curves"), params=params)


# ---------------------------------------------------------------- generate (api/routes/generations.py)

NPY = "application/x-npy"
GENERATED_TYPES = {"png": PNG, "npy": NPY}


def generate(
    job_id: str,
    count: int,
    *,
    seed: int,
    step: Step,
    labels: int | Iterable[int] | None,
    codes: dict[str, Any] | None,
    format: str,
    ema: bool | None,
) -> Call:
    """POST /v1/jobs/{id}/generate. Sending it twice makes the same samples (a second request of the same seed), so
    it may be retried. ValueError for a format other than png/npy, a count or seed that is not an int."""
    if format not in GENERATED_TYPES:
        raise ValueError(f'format must be "png" or "npy", got {format!r}')
    for name, value in (("count", count), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}"[:300])
    body: dict[str, Any] = {"count": count, "seed": seed, "step": step_segment(step), "format": format}
    if body["step"] != "latest":
        body["step"] = int(body["step"])
    if labels is not None:
        body["labels"] = labels if isinstance(labels, int) else [int(label) for label in labels]
    if codes is not None:
        body["codes"] = codes
    if ema is not None:
        body["ema"] = ema
    # The API waits a few seconds for the result (GANFORGE_GENERATE_WAIT_SECONDS), then answers 202: the SDK polls.
    return Call("POST", job_path(job_id, "generate"), json=body, idempotent=True)


def generation(generation_id: str) -> Call:
    return Call("GET", f"/v1/generations/{_segment(generation_id, 'generation_id')}")


def generation_result(generation_id: str, format: str) -> Call:
    path = f"/v1/generations/{_segment(generation_id, 'generation_id')}/result"
    return Call("GET", path, expect=GENERATED_TYPES[format])


def whoami() -> Call:
    return Call("GET", "/v1/whoami")


def quota() -> Call:
    return Call("GET", "/v1/quota")


def create_key(scopes: Iterable[str] | str, name: str, ttl: str | None, expires_at: datetime | str | None) -> Call:
    """POST /v1/keys; never retried (a retry after a lost answer would make a second key, whose secret is lost)."""
    body: dict[str, Any] = {"scopes": [scopes] if isinstance(scopes, str) else list(scopes), "name": name}
    if ttl is not None:
        body["ttl"] = ttl
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat() if isinstance(expires_at, datetime) else expires_at
    return Call("POST", "/v1/keys", json=body, idempotent=False)


def list_keys() -> Call:
    return Call("GET", "/v1/keys")


def revoke_key(prefix: str) -> Call:
    # Revoking again answers the same: safe to send again.
    return Call("DELETE", f"/v1/keys/{_segment(prefix, 'prefix')}", idempotent=True)
