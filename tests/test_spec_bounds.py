"""Bounds that keep one job's output finite, and hostile strings and numbers in every body the API validates.

Most tests are pure model validation: each walks a full body of a job spec, a study spec or a generate request
(every loss and architecture, every optional section set) and spoils one string or number at a time; the body
must be refused naming that place. A few go through a real API process on both backends (no worker).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from api.errors import clean_loc
from models.catalog import ARCHITECTURE_CLASSES, LOSS_CLASSES
from models.generation import GenerateRequest
from models.ingest.errors import IngestError
from models.ingest.options import MAX_UPSCALE, RESIZE_RANGE, check_upscale
from models.records import DB_INT_MAX
from models.spec import (
    MAX_CHECKPOINTS,
    MAX_METRIC_READINGS,
    MAX_SAMPLE_SNAPSHOTS,
    STORED_SPEC,
    JobSpec,
    output_problems,
)
from models.study import StudyRejected, StudySpec, expand
from tests.conftest import BACKENDS, api_only
from tests.service import Service

Loc = tuple[str | int, ...]
BASE: dict[str, Any] = {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}}
BENCH_STUDIES = sorted((Path(__file__).parent.parent / "bench" / "studies").glob("*.yaml"))


def refusals(validate: Callable[[dict[str, Any]], object], body: dict[str, Any]) -> list[Loc]:
    """The field paths at which `validate(body)` refuses it, as the API names them ([] when it is accepted)."""
    try:
        validate(body)
    except ValidationError as exc:
        return [clean_loc(("body", *error["loc"]), {"body": body})[0][1:] for error in exc.errors()]
    except StudyRejected as rejected:
        return [tuple(problem.loc) for problem in rejected.problems]
    return []


def job(body: dict[str, Any]) -> object:
    return JobSpec.model_validate(body)


def study(body: dict[str, Any]) -> object:
    """What POST /v1/studies checks: the model, then the fan-out (overrides and grid values are checked there)."""
    return expand(StudySpec.model_validate(body), "check")


def generate(body: dict[str, Any]) -> object:
    return GenerateRequest.model_validate(body)


# --------------------------------------------------------------------------- full bodies


def job_bodies() -> list[dict[str, Any]]:
    """Valid job specs that together hold every loss, architecture and optional section, as a client sends them."""
    bodies = []
    for loss in LOSS_CLASSES:
        arch = "resnet" if loss == "began" else "mlp"
        data: dict[str, Any] = {"builtin": "digits", "resize": 16} if arch != "mlp" else {"builtin": "ring8"}
        spec = JobSpec.model_validate({**BASE, "dataset": data, "architecture": {"name": arch}, "loss": {"name": loss}})
        bodies.append(spec.model_dump(mode="json", exclude_none=True))
    for arch in ARCHITECTURE_CLASSES:
        data = {"id": "ds-1", "resize": 32} if arch != "mlp" else {"id": "ds-1"}
        spec = JobSpec.model_validate(
            {
                **BASE,
                "name": "run one",
                "dataset": data,
                "architecture": {"name": arch},
                "loss": {"name": "cgan", "base": "wgan-gp", "gp_weight": 10.0},
                "training": {"sample_count": 64, "ema_decay": 0.999},
                "init_from": {"job": "job-1", "step": 100},
                "tags": {"team": "vision", "sweep": "lr-1"},
            }
        )
        bodies.append(spec.model_dump(mode="json", exclude_none=True))
    return bodies


STUDY_BODY: dict[str, Any] = {
    "name": "ring8 losses",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 32},
    "losses": ["nsgan", "wgan"],
    "seeds": [0, 1],
    "training": {"steps": 100, "batch_size": 64},
    "every": {"metrics": 10, "samples": 50, "checkpoint": 100},
    "overrides": {"wgan": {"lr_d": 1e-4, "optimizer": "rmsprop", "n_critic": 5}},
    "grid": [{"param": "lr_multiplier", "values": [0.5, 2.0]}, {"param": "training.batch_size", "values": [32, 64]}],
    "tags": {"team": "vision"},
}
GENERATE_BODIES: list[dict[str, Any]] = [
    {"count": 4, "seed": 1, "step": 100, "labels": [0, 1, 2, 3], "format": "png", "ema": True},
    {"count": 2, "step": "latest", "labels": 3, "codes": {"categorical": [[1, 2], [3, 4]], "continuous": [0.5, -0.5]}},
    {"count": 2, "codes": {"categorical": 1, "continuous": [[0.5, 1.0], [0.0, -1.0]]}},
]
CASES: list[tuple[str, Callable[[dict[str, Any]], object], dict[str, Any]]] = [
    *[(f"job-{i}", job, body) for i, body in enumerate(job_bodies())],
    ("study", study, STUDY_BODY),
    *[(f"generate-{i}", generate, body) for i, body in enumerate(GENERATE_BODIES)],
]
CASE_IDS = [name for name, _, _ in CASES]


def test_the_full_bodies_are_valid() -> None:
    for name, validate, body in CASES:
        assert refusals(validate, body) == [], name


# --------------------------------------------------------------------------- walking a body


def places(node: Any, loc: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """(path, value) of every value in a JSON body, depth first; a dict's keys as (path of the dict, key) pairs too,
    marked by a path ending in the key itself with the value KEY."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*loc, key), KEY
            yield from places(value, (*loc, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from places(value, (*loc, index))
    else:
        yield loc, node


KEY = object()


def spoiled(body: Any, loc: Loc, value: Any, *, key: bool = False) -> Any:
    """A deep copy of `body` with `value` at `loc` (with key=True: the last key of `loc` renamed to `value`)."""
    copy = json.loads(json.dumps(body))
    node = copy
    for part in loc[:-1]:
        node = node[part]
    if key:
        node[value] = node.pop(loc[-1])
    else:
        node[loc[-1]] = value
    return copy


def named(locs: list[Loc], where: Loc, *, tag: bool = False) -> bool:
    """Whether one refusal names `where`: the place itself, or the list that holds it (a list of seeds is checked
    as one field), or with `tag` (where is a union's discriminator, `name`) the union — never a field far above."""
    holder = where[:-1] if where and (isinstance(where[-1], int) or tag) else where
    return any(loc[: len(where)] == where or loc == holder for loc in locs)


def strings(body: dict[str, Any]) -> Iterator[tuple[Loc, str | object]]:
    yield from ((loc, value) for loc, value in places(body) if value is KEY or isinstance(value, str))


@pytest.mark.parametrize(("name", "validate", "body"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("bad", ["\x00", "\x07", "\x7f", "\x85", "\u202e", "\u2028", "\ud800"], ids=repr)
def test_every_string_with_a_control_character_is_refused_at_its_path(
    name: str, validate: Callable[[dict[str, Any]], object], body: dict[str, Any], bad: str
) -> None:
    """Names, tags' keys and values, ids, literals, the keys of every object: none may carry a control, invisible
    format or line-separator character (PostgreSQL refuses NUL: a 500 if one got through)."""
    checked = 0
    for loc, value in strings(body):
        if bad == "\ud800":
            # pydantic names a lone surrogate lossily (U+FFFD), or not at all in an object's own keys: only refused.
            spoilt = (
                spoiled(body, loc, f"{loc[-1]}{bad}", key=True) if value is KEY else spoiled(body, loc, f"{value}{bad}")
            )
            assert refusals(validate, spoilt), (name, loc)
        elif value is KEY:
            key = f"{loc[-1]}{bad}"
            locs = refusals(validate, spoiled(body, loc, key, key=True))
            assert named(locs, (*loc[:-1], key), tag=loc[-1] == "name"), (name, loc, locs)
        else:
            locs = refusals(validate, spoiled(body, loc, f"{value}{bad}"))
            assert named(locs, loc, tag=loc[-1] == "name"), (name, loc, value, locs)
        checked += 1
    assert checked >= 4, name  # the walk found the body's strings


@pytest.mark.parametrize(("name", "validate", "body"), CASES, ids=CASE_IDS)
def test_every_string_is_bounded_in_length(
    name: str, validate: Callable[[dict[str, Any]], object], body: dict[str, Any]
) -> None:
    for loc, value in strings(body):
        long = "x" * 100_000
        if value is KEY:
            locs = refusals(validate, spoiled(body, loc, long, key=True))
            assert named(locs, (*loc[:-1], long), tag=loc[-1] == "name"), (name, loc, locs)
        else:
            locs = refusals(validate, spoiled(body, loc, long))
            assert named(locs, loc, tag=loc[-1] == "name"), (name, loc, value, locs)


# Past float's range and past float32 (every float reaches torch as float32), as an integer and as floats.
PAST_FLOAT32 = [10**400, -(10**400), 1e39, 1e308, -1e308]
# Past a BIGINT, past 2^64, and their negatives: no integer field holds them.
PAST_BIGINT = [DB_INT_MAX + 1, 2**64, -(DB_INT_MAX + 1), -(2**64)]


@pytest.mark.parametrize(("name", "validate", "body"), CASES, ids=CASE_IDS)
def test_every_number_past_the_bounds_is_refused_at_its_path(
    name: str, validate: Callable[[dict[str, Any]], object], body: dict[str, Any]
) -> None:
    """No integer past what the store holds and no float past float32 is taken anywhere, nor is any a 500 (a study's
    lr_multiplier of 10**400 was an OverflowError)."""
    numbers = [(loc, v) for loc, v in places(body) if isinstance(v, int | float) and not isinstance(v, bool)]
    assert len(numbers) >= 3, name
    for loc, value in numbers:
        for huge in PAST_FLOAT32 + (PAST_BIGINT if isinstance(value, int) else []):
            assert named(refusals(validate, spoiled(body, loc, huge)), loc), (name, loc, huge)


# --------------------------------------------------------------------------- output bounds


@pytest.mark.parametrize(
    ("field", "interval", "steps", "count", "bound", "least"),
    [
        ("samples", 10, 100_000, "10,000 sample snapshots", MAX_SAMPLE_SNAPSHOTS, 500),
        ("checkpoint", 1, 1_000, "1,000 checkpoints", MAX_CHECKPOINTS, 5),
        ("metrics", 1, 1_000_000, "1,000,000 readings of each metric series", MAX_METRIC_READINGS, 10),
    ],
)
def test_an_every_that_writes_too_much_is_refused_with_the_numbers(
    field: str, interval: int, steps: int, count: str, bound: int, least: int
) -> None:
    every = {"metrics": steps, "samples": steps, "checkpoint": steps, field: interval}
    body = {**BASE, "training": {"steps": steps}, "every": every}
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(body)
    [error] = caught.value.errors()
    assert error["loc"] == ("every", field)
    assert f"{interval:,} gives {count} for {steps:,} steps" in error["msg"], error["msg"]
    assert f"at most {bound:,}" in error["msg"] and f"every.{field} ≥ {least:,}" in error["msg"], error["msg"]
    # The interval it proposes is the least one that fits, and fits.
    assert JobSpec.model_validate({**body, "every": {**every, field: least}}).every.model_dump()[field] == least
    assert refusals(job, {**body, "every": {**every, field: least - 1}}) == [("every", field)]


def test_the_bounds_count_the_final_write_and_are_inclusive() -> None:
    # worker/trainer.py writes at each multiple and at the last step: ceil(steps / every).
    fits = {**BASE, "training": {"steps": 200 * 500}, "every": {"samples": 500, "checkpoint": 500, "metrics": 1000}}
    assert refusals(job, fits) == []
    over = {**fits, "training": {"steps": 200 * 500 + 1}}
    assert refusals(job, over) == [("every", "samples"), ("every", "checkpoint")]


def test_intervals_left_out_are_fitted_to_a_long_run_and_given_ones_past_the_bounds_say_what_to_change() -> None:
    assert refusals(job, BASE) == []
    every = JobSpec.model_validate(BASE).every.model_dump(exclude={"keep_last", "keep_every"})  # retention: elsewhere
    assert every == {"metrics": 10, "samples": 500, "checkpoint": 1000}
    long = {**BASE, "training": {"steps": 10_000_000}}
    assert refusals(job, long) == []
    # The stored spec says what runs: each left-out interval widened just enough for its bound.
    assert JobSpec.model_validate(long).every.model_dump(exclude={"keep_last", "keep_every"}) == {
        "metrics": 100,
        "samples": 50_000,
        "checkpoint": 50_000,
    }
    partly = {**long, "every": {"samples": 100_000}}
    assert JobSpec.model_validate(partly).every.model_dump(exclude={"keep_last", "keep_every"}) == {
        "metrics": 100,
        "samples": 100_000,
        "checkpoint": 50_000,
    }
    given = {**long, "every": {"metrics": 10, "samples": 500, "checkpoint": 1000}}
    assert refusals(job, given) == [("every", "metrics"), ("every", "samples"), ("every", "checkpoint")]
    assert [
        why.split(": use ")[1]
        for _, why in output_problems(10_000_000, JobSpec.model_validate(given, context=STORED_SPEC).every)
    ] == [
        "every.metrics ≥ 100 or fewer steps",
        "every.samples ≥ 50,000 or fewer steps",
        "every.checkpoint ≥ 50,000 or fewer steps",
    ]


def test_a_stored_spec_from_before_the_bounds_still_loads() -> None:
    stored = {**BASE, "training": {"steps": 1_000_000}, "every": {"samples": 100, "checkpoint": 100}}
    assert refusals(job, stored) != []
    assert JobSpec.model_validate(stored, context=STORED_SPEC).every.samples == 100


@pytest.mark.parametrize("path", BENCH_STUDIES, ids=lambda p: p.name)
def test_the_bench_studies_fit_the_bounds(path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    assert refusals(study, body) == [], path


def test_a_study_names_its_own_every_and_the_grid_value_that_writes_too_much() -> None:
    base = {k: v for k, v in STUDY_BODY.items() if k not in ("overrides", "grid")} | {"losses": ["nsgan"]}
    assert refusals(study, {**base, "every": {"samples": 1}, "training": {"steps": 1000}}) == [("every", "samples")]
    grid = [{"param": "training.steps", "values": [100, 20_000]}]
    with pytest.raises(StudyRejected) as caught:
        study({**base, "grid": grid})
    [problem] = caught.value.problems
    assert problem.loc == ("grid", 0, "values", 1) and "400 sample snapshots" in problem.message, problem
    # With a grid over training.steps no job runs the study's base steps: only the grid's values count.
    short = {**base, "every": {"checkpoint": 1}, "grid": [{"param": "training.steps", "values": [10, 20]}]}
    assert refusals(study, short) == []


def test_sample_count_is_bounded() -> None:
    assert refusals(job, {**BASE, "training": {"sample_count": 10_000}}) == []
    assert refusals(job, {**BASE, "training": {"sample_count": 10_001}}) == [("training", "sample_count")]


@pytest.mark.parametrize(
    ("side", "source", "refused"),
    [(64, (8, 8), False), (65, (8, 8), True), (1024, (4, 4), True), (32, (4, 8), False), (33, (8, 4), True)],
)
def test_an_upload_is_enlarged_at_most_max_upscale_times(side: int, source: tuple[int, int], refused: bool) -> None:
    assert MAX_UPSCALE == 8 and RESIZE_RANGE[1] > MAX_UPSCALE * RESIZE_RANGE[0]  # the form's range alone allows more
    if not refused:
        check_upscale(side, source, "x's images")
        return
    with pytest.raises(IngestError) as caught:
        check_upscale(side, source, "x's images")
    assert caught.value.field == "resize", caught.value
    assert f"use resize ≤ {MAX_UPSCALE * min(source)}" in str(caught.value), caught.value


# --------------------------------------------------------------------------- through the API


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with api_only(request.param, tmp_path_factory.mktemp(f"ganforge-bounds-{request.param}")) as deployment:
        yield deployment


def post_raw(client: httpx.Client, path: str, body: Any, **params: str) -> httpx.Response:
    """POST `body` as JSON with \\u escapes, as a client sends a NUL."""
    content = json.dumps(body, ensure_ascii=True)
    return client.post(path, content=content, params=params, headers={"Content-Type": "application/json"})


def fields_of(response: httpx.Response) -> list[str]:
    return [detail["field"] for detail in response.json()["error"]["details"]]


def test_the_api_refuses_nul_and_too_much_output_at_the_field(api: Service) -> None:
    cases = [
        ({**BASE, "name": "a\x00b"}, "name"),
        ({**BASE, "tags": {"team": "v\x00"}}, "tags.team"),
        ({**BASE, "tags": {"te\x00am": "v"}}, "tags.te\x00am.[key]"),
        ({**BASE, "training": {"steps": 100_000}, "every": {"samples": 10}}, "every.samples"),
    ]
    with api.client() as client:
        before = client.get("/v1/jobs").json()["jobs"]
        for body, field in cases:
            for params in ({"validate_only": "true"}, {}):
                response = post_raw(client, "/v1/jobs", body, **params)
                assert response.status_code == 422, (field, response.text)
                assert fields_of(response) == [field], response.text
        message = post_raw(client, "/v1/jobs", cases[-1][0]).json()["error"]["details"][0]["message"]
        assert "10 gives 10,000 sample snapshots for 100,000 steps" in message and "≥ 500" in message, message
        assert client.get("/v1/jobs").json()["jobs"] == before  # nothing was stored


def test_the_api_refuses_a_study_that_writes_too_much_or_a_huge_grid_value(api: Service) -> None:
    base = {k: v for k, v in STUDY_BODY.items() if k not in ("overrides", "grid")} | {"losses": ["nsgan"]}
    cases = [
        ({**base, "name": "s\x00"}, ["name"]),
        ({**base, "training": {"steps": 100_000}, "every": {"samples": 10}}, ["every.samples"]),
        ({**base, "grid": [{"param": "lr_multiplier", "values": [10**400]}]}, ["grid.0.values.0"]),
        ({**base, "overrides": {"nsgan": {"lr_g\x00": 1}}}, ["overrides.nsgan.lr_g\x00.[key]"]),
    ]
    with api.client() as client:
        for body, fields in cases:
            response = post_raw(client, "/v1/studies", body)
            assert response.status_code == 422, (fields, response.text)
            assert fields_of(response) == fields, response.text
        assert client.get("/v1/studies").json()["studies"] == []


def png(side: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_api_refuses_an_upload_enlarged_past_max_upscale(api: Service) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(4):
            zf.writestr(f"a/{i}.png", png(4, i))
    npz = io.BytesIO()
    np.savez(npz, x=np.random.default_rng(0).integers(0, 256, (4, 4, 4), dtype=np.uint8))
    with api.client() as client:
        for name, content in (("tiny.zip", archive.getvalue()), ("tiny.npz", npz.getvalue())):
            files = {"file": (name, content, "application/octet-stream")}
            refused = client.post("/v1/datasets", files=files, data={"resize": str(4 * MAX_UPSCALE + 1)})
            assert refused.status_code == 422 and fields_of(refused) == ["resize"], (name, refused.text)
            assert f"at most {MAX_UPSCALE} times" in refused.json()["error"]["message"], refused.text
            accepted = client.post("/v1/datasets", files=files, data={"resize": str(4 * MAX_UPSCALE)})
            assert accepted.status_code == 201, (name, accepted.text)
            assert accepted.json()["info"]["shape"][1:] == [4 * MAX_UPSCALE] * 2, accepted.text
