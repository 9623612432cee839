"""Memory (issue 12): a spec that cannot fit a worker is refused at submission; running out of memory ends a job.

models/memory.py estimates a job's memory from its spec without torch; here the real networks are built
(worker/gan/factory.py) and counted, one real training step's peak memory is measured against the estimate,
the issue's spec is a 422 through a real API on both backends, the project's own specs still pass, and a
worker whose address space is limited (GANFORGE_WORKER_ADDRESS_SPACE_BYTES) ends a job that runs out of it
`failed` with "out of memory", without a retry.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from models.admission import SpecRejected, admit, fill_defaults, largest_batch, memory_estimate, network_signature
from models.datasets import BUILTIN_DATASETS, DatasetInfo
from models.memory import GIB, estimate_memory, gib
from models.settings import Settings
from models.spec import JobSpec
from models.study import StudySpec, expand
from tests.conftest import BACKENDS, api_only
from tests.service import ROOT, TINY_SPEC, Service, wait_for
from worker.gan.factory import build_gan

BUDGET = 8 * GIB
ISSUE_SPEC: dict[str, Any] = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 8192, "depth": 16, "latent_dim": 1024},
    "loss": {"name": "nsgan"},
    "training": {"batch_size": 65536, "max_attempts": 20},
}
README_DEMO: dict[str, Any] = {
    "name": "ring-wgan-gp",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 128},
    "loss": {"name": "wgan-gp"},
    "training": {"steps": 300, "batch_size": 256, "seed": 0},
    "every": {"metrics": 10, "samples": 100, "checkpoint": 150},
}
UPLOAD = DatasetInfo(kind="images", shape=(3, 32, 32), num_classes=5, size=1000)


class NoStore:
    """Admission's store for built-in data without a warm start: never asked."""

    def get_dataset(self, **_: Any) -> None:
        raise AssertionError("not asked for built-in data")

    get_job = get_checkpoint = get_dataset


def filled(body: dict[str, Any], info: DatasetInfo) -> JobSpec:
    return fill_defaults(JobSpec.model_validate(body), info)


# --------------------------------------------------------------------------- the estimate against real networks

NETWORKS: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("ring8", {"name": "mlp"}, {"name": "nsgan"}, {}),
    ("ring8", {"name": "mlp", "depth": 2, "spectral_norm": True}, {"name": "wgan-gp"}, {"pack": 4}),
    ("ring8", {"name": "mlp"}, {"name": "cgan", "conditioning": "concat"}, {}),
    ("ring8", {"name": "mlp"}, {"name": "cgan"}, {"pack": 2}),
    ("ring8", {"name": "mlp"}, {"name": "infogan"}, {}),
    ("ring8", {"name": "mlp"}, {"name": "began"}, {}),
    ("digits", {"name": "mlp"}, {"name": "began"}, {}),
    ("upload32", {"name": "dcgan"}, {"name": "nsgan"}, {}),
    ("upload32", {"name": "dcgan"}, {"name": "wgan-gp"}, {"pack": 2}),
    ("upload32", {"name": "dcgan"}, {"name": "began"}, {}),
    ("upload32", {"name": "dcgan"}, {"name": "cgan", "conditioning": "concat"}, {}),
    ("upload32", {"name": "dcgan"}, {"name": "infogan"}, {}),
    ("upload16", {"name": "dcgan", "base_channels": 16}, {"name": "lsgan"}, {}),
    ("upload64", {"name": "dcgan", "base_channels": 16}, {"name": "lsgan"}, {}),
    ("upload32", {"name": "resnet", "base_channels": 32}, {"name": "hinge"}, {}),
    ("upload32", {"name": "resnet", "base_channels": 32}, {"name": "wgan-gp"}, {}),
    ("upload32", {"name": "resnet", "base_channels": 32, "spectral_norm": False}, {"name": "cgan"}, {}),
    ("upload16", {"name": "resnet", "base_channels": 16}, {"name": "nsgan", "r1_gamma": 1.0}, {}),
    ("upload64", {"name": "resnet", "base_channels": 16}, {"name": "infogan"}, {}),
]


def _data(name: str) -> tuple[dict[str, Any], DatasetInfo]:
    if name.startswith("upload"):
        size = int(name.removeprefix("upload"))
        return {"id": "upload"}, UPLOAD.model_copy(update={"shape": (3, size, size)})
    return {"builtin": name}, BUILTIN_DATASETS[name]


@pytest.mark.parametrize(("data", "arch", "loss", "training"), NETWORKS)
def test_the_parameter_count_is_that_of_the_built_networks(
    data: str, arch: dict[str, Any], loss: dict[str, Any], training: dict[str, Any]
) -> None:
    ref, info = _data(data)
    spec = filled({"dataset": ref, "architecture": arch, "loss": loss, "training": training}, info)
    estimate = estimate_memory(spec, network_signature(spec, info), examples=info.size, labelled=True)
    gan = build_gan(spec, info, torch.device("cpu"))
    real_g = sum(p.numel() for p in gan.generator.parameters())
    real_d = sum(p.numel() for p in gan.discriminator.parameters())
    # Counted layer by layer as the factory builds them: the same number (well within the issue's 0.5-2x).
    assert (estimate.generator.parameters, estimate.discriminator.parameters) == (real_g, real_d)
    assert estimate.parts["parameters"] == 4 * (real_g + real_d)
    assert estimate.parts["ema"] == 4 * real_g  # EMA is on by default
    assert estimate.parts["optimizer_state"] == 4 * (real_g + real_d) * (1 if spec.loss.optimizer == "rmsprop" else 2)


# One real training step, its peak memory measured in a fresh process: /proc's VmHWM, reset (clear_refs 5) after a
# warm-up step of a tiny copy, so torch's code and kernels paged in on first use are not counted.
MEASURE = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from models.admission import fill_defaults, memory_estimate
    from models.datasets import DatasetInfo
    from models.spec import JobSpec
    from worker.data import Batches
    from worker.gan.factory import build_gan

    def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

    def step(body, measure):
        info = DatasetInfo(kind="images", shape=(3, 32, 32), size=2000)
        spec = fill_defaults(JobSpec.model_validate(body), info)
        if measure:
            open("/proc/self/clear_refs", "w").write("5")
        before = status("VmRSS")
        x = torch.rand(2000, 3, 32, 32)
        gan = build_gan(spec, info, torch.device("cpu"))
        batches = Batches(x, None, spec.training.batch_size, torch.device("cpu"), 0)
        for _ in range(2):
            gan.train_step(batches.next)
        estimate = memory_estimate(spec, info)
        return status("VmHWM") - before, estimate.static_bytes + estimate.peak_phase_bytes, estimate.total_bytes

    body = json.loads(sys.argv[1])
    step({**body, "architecture": {**body["architecture"], "base_channels": 4}, "training": {"batch_size": 2}}, False)
    print(json.dumps(step(body, True)))
    """
)


def test_the_estimate_is_within_a_factor_of_two_of_a_measured_training_step() -> None:
    # DCGAN with R1 on every D step: convolutions, batch norm and a double backward in one step.
    body = {
        "dataset": {"id": "upload"},
        "architecture": {"name": "dcgan"},
        "loss": {"name": "nsgan", "r1_gamma": 10.0, "r1_every": 1},
        "training": {"batch_size": 128},
    }
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(body)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    measured, counted, total = json.loads(run.stdout)
    # Measured 250 MiB against 212 counted when written (0.85; the MLP, DCGAN and ResNet steps measured 0.85-1.3).
    assert 0.5 <= counted / measured <= 2, (measured, counted)
    assert total >= measured, (measured, total)  # with the safety factor it covers the step


# --------------------------------------------------------------------------- admission


def test_the_issue_spec_is_refused_at_the_architecture_with_its_estimate_and_the_budget() -> None:
    with pytest.raises(SpecRejected) as caught:
        admit(spec=JobSpec.model_validate(ISSUE_SPEC), owner="team-a", store=NoStore(), memory_budget=BUDGET)
    [problem] = caught.value.problems
    estimate = memory_estimate(filled(ISSUE_SPEC, BUILTIN_DATASETS["ring8"]), BUILTIN_DATASETS["ring8"])
    # ≈ 34 GiB of weights, gradients, Adam state and EMA, as the issue says, before any activation.
    networks = sum(estimate.parts[k] for k in ("parameters", "gradients", "optimizer_state", "ema"))
    assert 33 * GIB < networks < 35 * GIB, gib(networks)
    assert problem.loc == ("architecture",), problem
    assert f"about {gib(estimate.total_bytes)}" in problem.message and "8.0 GiB" in problem.message, problem
    assert gib(networks) in problem.message and "the networks alone do not fit" in problem.message, problem


def test_a_batch_too_large_is_refused_at_the_batch_size_with_the_largest_that_fits() -> None:
    body = {**ISSUE_SPEC, "architecture": {"name": "mlp", "hidden": 2048, "depth": 4}}
    info = BUILTIN_DATASETS["ring8"]
    with pytest.raises(SpecRejected) as caught:
        admit(spec=JobSpec.model_validate(body), owner="team-a", store=NoStore(), memory_budget=BUDGET)
    [problem] = caught.value.problems
    fits = largest_batch(filled(body, info), info, BUDGET)
    assert problem.loc == ("training", "batch_size") and f"a batch of at most {fits} fits" in problem.message
    assert 0 < fits < 65536
    at = {**body, "training": {**body["training"], "batch_size": fits}}
    assert admit(spec=JobSpec.model_validate(at), owner="team-a", store=NoStore(), memory_budget=BUDGET)
    over = {**body, "training": {**body["training"], "batch_size": fits + 1}}
    with pytest.raises(SpecRejected):
        admit(spec=JobSpec.model_validate(over), owner="team-a", store=NoStore(), memory_budget=BUDGET)


def test_the_default_budget_is_the_setting() -> None:
    assert Settings().worker_memory_bytes == BUDGET
    assert Settings(worker_memory_bytes=GIB).worker_memory_bytes == GIB


def _study_cells() -> Iterator[tuple[str, JobSpec, DatasetInfo]]:
    for path in sorted((ROOT / "bench" / "studies").glob("*.yaml")):
        study = StudySpec.model_validate(yaml.safe_load(path.read_text()))
        info = BUILTIN_DATASETS[study.dataset.builtin or ""]
        for cell in expand(study, "check"):
            yield f"{path.name} {cell.spec.name}", fill_defaults(cell.spec, info), info


def test_the_projects_own_specs_fit_the_default_budget() -> None:
    ring8, digits = BUILTIN_DATASETS["ring8"], BUILTIN_DATASETS["digits"]
    readme_digits = {
        "dataset": {"id": "digits"},
        "architecture": {"name": "dcgan", "base_channels": 32},
        "loss": {"name": "nsgan"},
        "training": {"steps": 300, "batch_size": 64},
    }
    specs = [
        ("README demo", filled(README_DEMO, ring8), ring8),
        ("README digits", filled(readme_digits, digits.model_copy(update={"shape": (1, 16, 16)})), digits),
        ("tests' tiny spec", filled(TINY_SPEC, ring8), ring8),
        *_study_cells(),
    ]
    # Every loss on each architecture at its defaults (batch 256, base channels 64 / 128) on 32 px images.
    for arch in ("mlp", "dcgan", "resnet"):
        for loss in ("nsgan", "wgan-gp", "dragan", "hinge", "began" if arch != "resnet" else "cgan", "infogan"):
            body = {"dataset": {"id": "x"}, "architecture": {"name": arch}, "loss": {"name": loss}}
            specs.append((f"{arch} {loss}", filled(body, UPLOAD), UPLOAD))
    assert len(specs) > 30
    for name, spec, info in specs:
        estimate = memory_estimate(spec, info)
        assert estimate.total_bytes < BUDGET, (name, gib(estimate.total_bytes))


# --------------------------------------------------------------------------- through the API


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real API process (no worker) with the default memory budget."""
    with api_only(request.param, tmp_path_factory.mktemp(f"ganforge-memory-{request.param}")) as deployment:
        yield deployment


def test_the_api_refuses_the_issue_spec_with_a_422_and_admits_the_readme_demo(api: Service) -> None:
    with api.client() as client:
        refused = client.post("/v1/jobs", json=ISSUE_SPEC)
        assert refused.status_code == 422, refused.text
        [detail] = refused.json()["error"]["details"]
        assert detail["field"] == "architecture", detail
        assert "GiB of memory, more than a worker's 8.0 GiB" in detail["message"], detail
        assert client.get("/v1/jobs").json()["jobs"] == []  # nothing was created
        demo = client.post("/v1/jobs?validate_only=true", json=README_DEMO)
        assert demo.status_code == 200, demo.text
        batch = {**ISSUE_SPEC, "architecture": {"name": "mlp", "hidden": 2048, "depth": 4}}
        refused = client.post("/v1/jobs?validate_only=true", json=batch)
        assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "training.batch_size"


def test_a_study_whose_jobs_cannot_fit_is_refused_like_a_job(api: Service) -> None:
    study = {
        "dataset": {"builtin": "ring8"},
        "architecture": ISSUE_SPEC["architecture"],
        "losses": ["nsgan", "lsgan"],
        "seeds": 1,
        "training": ISSUE_SPEC["training"],
    }
    with api.client() as client:
        for query in ("?validate_only=true", ""):
            refused = client.post(f"/v1/studies{query}", json=study)
            assert refused.status_code == 422, refused.text
            [detail] = refused.json()["error"]["details"]  # said once, not once per job
            assert detail["field"] == "architecture" and "more than a worker's 8.0 GiB" in detail["message"], detail
        assert client.get("/v1/studies").json()["studies"] == []


# --------------------------------------------------------------------------- running out of memory on a worker

ADDRESS_SPACE = 3 * GIB
# Admitted (the API's budget is raised for it) but far past the worker's address space: one 65,536 × 8,192
# float32 activation is 2 GiB.
TOO_BIG: dict[str, Any] = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 8192, "depth": 2},
    "loss": {"name": "nsgan"},
    "training": {"steps": 2, "batch_size": 65536, "max_attempts": 5, "sample_count": 10},
    "every": {"metrics": 1, "samples": 2, "checkpoint": 2},
}


def _pool_children(worker_pid: int) -> list[int]:
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def _address_space_limit(pid: int) -> str:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max address space"))
    return line.split()[3]


@pytest.mark.slow
def test_a_job_that_runs_out_of_memory_fails_at_once_without_a_retry(bare_service: Service) -> None:
    service = bare_service
    service.env["GANFORGE_WORKER_MEMORY_BYTES"] = str(1024 * GIB)  # the API admits it; the worker cannot run it
    service.start_api()
    worker = service.start_worker(GANFORGE_WORKER_ADDRESS_SPACE_BYTES=str(ADDRESS_SPACE))
    with service.client() as client:
        # An ordinary job trains under the limit, and the limit is in force in the pool process after it.
        tiny = client.post("/v1/jobs", json=TINY_SPEC).json()
        assert wait_for(client, tiny["id"], ("succeeded", "failed"), timeout=120)["status"] == "succeeded"
        [child] = _pool_children(worker.pid)
        assert _address_space_limit(child) == str(ADDRESS_SPACE)
        started = time.monotonic()
        job = client.post("/v1/jobs", json=TOO_BIG).json()
        ended = wait_for(client, job["id"], ("succeeded", "failed"), timeout=120)
        assert ended["status"] == "failed", ended
        assert ended["attempt"] == 1, ended  # not re-queued: the same spec would run out again
        events = client.get(f"/v1/jobs/{job['id']}/events", timeout=30)
        statuses = [
            json.loads(line.removeprefix("data: "))
            for line in events.text.splitlines()
            if line.startswith("data: ") and '"to"' in line
        ]
        assert [s["to"] for s in statuses] == ["queued", "running", "failed"], statuses
        reason = statuses[-1]["reason"]
        assert reason.startswith("out of memory (GANFORGE_WORKER_ADDRESS_SPACE_BYTES: 3.0 GiB): "), reason
        assert time.monotonic() - started < 60
        # The pool process lives on and trains the next job.
        again = client.post("/v1/jobs", json=TINY_SPEC).json()
        assert wait_for(client, again["id"], ("succeeded", "failed"), timeout=120)["status"] == "succeeded"
        assert _pool_children(worker.pid) == [child]
