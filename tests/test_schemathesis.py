"""schemathesis (4.x) against a real uvicorn on both backends: no answer is a 5xx, every answer is one /openapi.json
declares (status, content type, headers, body schema), and a request the schema forbids is refused.

One run of schemathesis's `st` command line per backend with all four phases: examples; coverage (each
parameter's and body field's boundary and invalid values); fuzzing (MAX_EXAMPLES per operation); stateful (the
links api/openapi.py declares, POST /v1/jobs -> GET /v1/jobs/{job_id} and the rest, plus the ones schemathesis
infers). Deterministic (--generation-deterministic: derandomized, no example database), so a failure in CI reproduces with
the same command; `st_command` is that command, and README's "Fuzzing the API" gives it for a local service.
Before the run owner A (key-a, whose key the fuzzer sends) has one object of each kind: a job with a sample and a
checkpoint as the trainer records them, a data set and a study, so operations on an id get past the 404. API-only:
nothing trains the jobs the fuzzer submits. About 50 s per backend on this 2-core machine at load 2-3 (setup 5 s,
schemathesis 45 s: 25 CPU-s of its own, 16-20 of the API's); 100-190 s while five other test runs share the cores.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import api_only
from tests.service import TINY_SPEC, Service
from tests.test_ownership_walk import seed_results

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    # A request the schema forbids is a 4xx: reliable once /openapi.json stopped listing Authorization as a
    # header parameter (schemathesis sent a header the schema "forbade" next to it; test_fuzz_regressions.py).
    "negative_data_rejection",
    # A 405 lists every method of the path in Allow (it named one: test_fuzz_regressions.py), and is the answer
    # to a method the schema does not list.
    "allow_header_conformance",
    "unsupported_method",
    # A required header left out is a 4xx. Without the key: 401, never the data. After a DELETE the object is gone (404); a created one is there.
    "missing_required_header",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
]
# Not checked: positive_data_acceptance. Validators that JSON Schema cannot state refuse some schema-valid
# requests with a 422 naming the field (a cursor the API never returned, a grid value that makes an invalid job,
# codes for a loss that has none).
# Examples per operation in the fuzzing phase (the coverage phase's cases are a fixed set; stateful runs its
# scenarios too): 30 keeps a backend's run near 40 s on two cores.
MAX_EXAMPLES = 30
# Not fuzzed: the job's Server-Sent Events. The stream stays open until the job ends (no worker here: never), and
# schemathesis reads an answer whole, so every case would only wait for its request timeout.
# test_the_event_stream_answers_as_declared reads it briefly instead.
EVENTS = "/v1/jobs/{job_id}/events"
# The rates are off: at their defaults most submissions and uploads are 429s and the routes behind them go
# untested, and schemathesis's own requests without a key soon meet the per-address limit on failed
# authentications (a 429 where ignored_auth expects the 401). tests/test_rate_limits.py tests the limits.
NO_RATE_LIMITS = {"GANFORGE_RATE_SUBMIT": "", "GANFORGE_RATE_UPLOAD": "", "GANFORGE_RATE_UNAUTHENTICATED": ""}
STUDY = {
    "name": "fuzz",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 8, "depth": 1},
    "losses": ["nsgan"],
    "seeds": 1,
    "training": {"steps": 10, "batch_size": 16},
}


def st_command(url: str, report_dir: Path, key: str = "key-a") -> list[str]:
    """The schemathesis run against the service at `url`, a JSON report written into `report_dir`."""
    return [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",  # derandomized, and no example database
        "--exclude-path",
        EVENTS,
        "--workers",
        "1",
        "--request-timeout",  # a loaded CI machine, not a slow route: none takes a second alone
        "30",
        "--continue-on-failure",
        "--no-color",
        "--report",
        "json",
        "--report-dir",
        str(report_dir),
    ]


# PostgreSQL only (the suite's time: 1.5-3 minutes a backend): the schema and the validation are the same code on
# both; what differs between the stores is tested store by store (tests/test_store.py, test_fuzz_regressions.py).
@pytest.fixture(scope="module", params=["postgres"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An API with no worker and no rate limits, and owner A's objects of every kind."""
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with api_only(request.param, folder, **NO_RATE_LIMITS) as deployment:
        with deployment.client() as client:
            job = client.post("/v1/jobs", json=TINY_SPEC)
            assert job.status_code == 201, job.text
            seed_results(deployment, job.json()["id"])
            points = io.BytesIO()
            np.savez(points, x=np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
            dataset = client.post("/v1/datasets", files={"file": ("fuzz.npz", points.getvalue())})
            assert dataset.status_code == 201, dataset.text
            study = client.post("/v1/studies", json=STUDY)
            assert study.status_code == 201, study.text
        yield deployment


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(api: Service, tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    started = time.monotonic()
    # cwd: schemathesis reads a schemathesis.toml from it; the test's own folder has none.
    run = subprocess.run(
        st_command(api.url, report_dir), cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    reports = list(report_dir.glob("json-*.json"))
    assert len(reports) == 1, output
    report: dict[str, Any] = json.loads(reports[0].read_text())
    operations, cases = report["operations"], report["test_cases"]
    print(
        f"schemathesis: {operations['tested']} operations, {cases['generated']} cases, "
        f"{len(report['failures'])} failures, {elapsed:.1f} s"
    )
    assert run.returncode == 0 and not report["failures"] and not report["errors"], output[-20000:] + api.logs()
    # A run that tested little passes too: the schema, the key and the phases must all have reached the API.
    assert operations["tested"] == operations["selected"] >= 25, operations
    assert {name: phase["status"] for name, phase in report["phases"].items()} == dict.fromkeys(
        ("examples", "coverage", "fuzzing", "stateful"), "success"
    ), report["phases"]
    assert cases["generated"] >= 1000, cases


def test_the_event_stream_answers_as_declared(api: Service) -> None:
    """The operation the fuzzer skips: a followed job's stream (read only to its first line), a finished job's
    replay and its 204 at the end, a missing job and a malformed position, each a status the schema declares."""
    schema = httpx.get(f"{api.url}/openapi.json").json()
    declared = {int(status) for status in schema["paths"][EVENTS]["get"]["responses"]}
    stream_media = schema["paths"][EVENTS]["get"]["responses"]["200"]["content"]
    with api.client() as client:
        job_id = client.post("/v1/jobs", json=TINY_SPEC).json()["id"]
        with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=10) as followed:  # queued: it stays open
            assert followed.status_code == 200
            assert followed.headers["content-type"].split(";")[0] in stream_media
            assert next(followed.iter_lines()).startswith("retry:")
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        replay = client.get(f"/v1/jobs/{job_id}/events", timeout=10)  # cancelled while queued: final, it ends
        assert replay.status_code == 200, replay.text
        last = [line.removeprefix("id:").strip() for line in replay.text.splitlines() if line.startswith("id:")][-1]
        answers = {
            "replay": (replay, 200),
            "at the end": (client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last}), 204),
            "missing job": (client.get("/v1/jobs/00000000-0000-0000-0000-000000000000/events"), 404),
            "bad position": (client.get(f"/v1/jobs/{job_id}/events", params={"after": "-1"}), 422),
        }
    for name, (response, status) in answers.items():
        assert response.status_code == status and status in declared, (name, response.status_code, response.text)
        if status >= 400:
            assert set(response.json()) == {"error"}, (name, response.text)
