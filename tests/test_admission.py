"""Admission: data-dependent defaults filled in, warm starts checked against the networks, bounded integers.

The warm-start check is held to the worker's factory: for every pair of spec
variants it accepts, both networks are built (worker.gan.build_gan) and the
source's weights load strictly into the target (worker.trainer.load_weights).
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

import pytest
import torch

from models.admission import DatasetNotFound, SpecRejected, admit, check_warm_start, fill_defaults, network_signature
from models.catalog import DEFAULT_IMAGE_SAMPLES, DEFAULT_POINT_SAMPLES, PAPER_GP_WEIGHT, TOY_GP_WEIGHT
from models.datasets import BUILTIN_DATASETS, DatasetInfo
from models.spec import BASE_LOSS_CLASSES, JobSpec
from models.store import JobStore
from tests.service import Service, wait_for
from tests.test_spec import INTEGER_CASES, INTEGER_IDS
from worker.gan import GAN, build_gan, load_builtin
from worker.gan.objectives import objective_from_spec
from worker.trainer import load_weights

CPU = torch.device("cpu")


def make(dataset: str, arch: dict[str, Any], loss: dict[str, Any], **parts: Any) -> JobSpec:
    resize = {"resize": parts.pop("resize")} if "resize" in parts else {}
    body = {"dataset": {"builtin": dataset, **resize}, "architecture": arch, "loss": loss, **parts}
    return JobSpec.model_validate(body)


# --------------------------------------------------------------------------- data-dependent defaults


@pytest.mark.parametrize(
    ("dataset", "arch", "loss", "resize", "gp_weight"),
    [
        ("ring8", "mlp", {"name": "wgan-gp"}, None, TOY_GP_WEIGHT),
        ("grid25", "mlp", {"name": "dragan"}, None, TOY_GP_WEIGHT),
        ("ring8", "mlp", {"name": "cgan", "base": "wgan-gp"}, None, TOY_GP_WEIGHT),
        ("spiral", "mlp", {"name": "infogan", "base": "dragan"}, None, TOY_GP_WEIGHT),
        ("digits", "dcgan", {"name": "wgan-gp"}, 16, PAPER_GP_WEIGHT),
        ("digits", "resnet", {"name": "cgan", "base": "dragan"}, 32, PAPER_GP_WEIGHT),
        ("ring8", "mlp", {"name": "wgan-gp", "gp_weight": 3.0}, None, 3.0),
        ("digits", "dcgan", {"name": "dragan", "gp_weight": 0.0}, 16, 0.0),
        ("ring8", "mlp", {"name": "nsgan"}, None, None),
        ("ring8", "mlp", {"name": "cgan", "base": "hinge"}, None, None),
    ],
)
def test_the_penalty_weight_is_filled_in_as_the_worker_would_take_it(
    dataset: str, arch: str, loss: dict[str, Any], resize: int | None, gp_weight: float | None
) -> None:
    parts = {"resize": resize} if resize else {}
    spec = make(dataset, {"name": arch}, loss, **parts)
    info = BUILTIN_DATASETS[dataset]
    filled = fill_defaults(spec, info)
    base = filled.loss.base_loss() if filled.loss.name in ("cgan", "infogan") else filled.loss  # type: ignore[union-attr]
    assert getattr(base, "gp_weight", None) == gp_weight
    # The stored spec round-trips, and the worker runs the same λ from it as from the spec as sent.
    assert JobSpec.model_validate(filled.model_dump(mode="json")) == filled
    shape = load_builtin(dataset, resize).info.shape
    assert (
        objective_from_spec(filled.loss, shape).penalty_weight == objective_from_spec(spec.loss, shape).penalty_weight
    )


@pytest.mark.parametrize(
    ("dataset", "arch", "training", "count"),
    [
        ("ring8", {"name": "mlp"}, {}, DEFAULT_POINT_SAMPLES),
        ("digits", {"name": "dcgan"}, {}, DEFAULT_IMAGE_SAMPLES),
        ("digits", {"name": "dcgan"}, {"sample_count": 9}, 9),
    ],
)
def test_the_sample_count_is_filled_in(
    dataset: str, arch: dict[str, Any], training: dict[str, Any], count: int
) -> None:
    parts: dict[str, Any] = {"resize": 16} if dataset == "digits" else {}
    spec = make(dataset, arch, {"name": "nsgan"}, training=training, **parts)
    assert fill_defaults(spec, BUILTIN_DATASETS[dataset]).training.sample_count == count
    assert (DEFAULT_POINT_SAMPLES, DEFAULT_IMAGE_SAMPLES) == (2500, 64)


@pytest.mark.parametrize("wrapper", ["cgan", "infogan"])
@pytest.mark.parametrize("base", sorted(BASE_LOSS_CLASSES))
def test_the_worker_runs_a_wrapped_loss_with_its_bases_optimiser(wrapper: str, base: str) -> None:
    spec = fill_defaults(make("ring8", {"name": "mlp"}, {"name": wrapper, "base": base}), BUILTIN_DATASETS["ring8"])
    base_loss = BASE_LOSS_CLASSES[base](name=base)  # type: ignore[call-arg]
    expected = {"name": base_loss.optimizer, "lr_g": base_loss.lr_g, "lr_d": base_loss.lr_d, "betas": base_loss.betas}
    if (wrapper, base) == ("infogan", "nsgan"):
        expected = {"name": "adam", "lr_g": 1e-3, "lr_d": 2e-4, "betas": (0.5, 0.999)}
    objective = objective_from_spec(spec.loss, (2,))
    assert objective.optimizer == expected
    assert objective.n_critic == base_loss.n_critic


# --------------------------------------------------------------------------- warm start: the signature against the factory

MLP = {"name": "mlp", "hidden": 16, "depth": 2}
DCGAN = {"name": "dcgan", "latent_dim": 16, "base_channels": 8}
RESNET = {"name": "resnet", "latent_dim": 16, "base_channels": 8}

VARIANTS: dict[str, JobSpec] = {
    "ring8-nsgan": make("ring8", MLP, {"name": "nsgan"}),
    "ring8-nsgan-lr": make("ring8", MLP, {"name": "nsgan", "lr_g": 1e-3, "n_critic": 3}, training={"seed": 5}),
    "ring8-wgan-gp": make("ring8", MLP, {"name": "wgan-gp"}),
    "ring8-nsgan-r1": make("ring8", MLP, {"name": "nsgan", "r1_gamma": 1.0}),
    "ring8-hinge-ema": make("ring8", MLP, {"name": "hinge"}, training={"ema_decay": 0.9}),
    "grid25-nsgan": make("grid25", MLP, {"name": "nsgan"}),
    "spiral-lsgan": make("spiral", MLP, {"name": "lsgan"}),
    "ring8-nsgan-wide": make("ring8", {**MLP, "hidden": 32}, {"name": "nsgan"}),
    "ring8-nsgan-latent4": make("ring8", {**MLP, "latent_dim": 4}, {"name": "nsgan"}),
    "ring8-nsgan-sn": make("ring8", {**MLP, "spectral_norm": True}, {"name": "nsgan"}),
    "ring8-nsgan-pack2": make("ring8", MLP, {"name": "nsgan"}, training={"pack": 2}),
    "ring8-cgan": make("ring8", MLP, {"name": "cgan"}),
    "ring8-cgan-wgan-gp": make("ring8", MLP, {"name": "cgan", "base": "wgan-gp"}),
    "ring8-cgan-concat": make("ring8", MLP, {"name": "cgan", "conditioning": "concat"}),
    "grid25-cgan": make("grid25", MLP, {"name": "cgan"}),
    "ring8-infogan": make("ring8", MLP, {"name": "infogan"}),
    "ring8-infogan-wgan": make("ring8", MLP, {"name": "infogan", "base": "wgan"}),
    "ring8-infogan-5x2": make("ring8", MLP, {"name": "infogan", "categorical_codes": [5, 5]}),
    "ring8-infogan-3cont": make("ring8", MLP, {"name": "infogan", "continuous_codes": 3}),
    "ring8-began": make("ring8", MLP, {"name": "began"}),
    "digits16-dcgan-nsgan": make("digits", DCGAN, {"name": "nsgan"}, resize=16),
    "digits16-dcgan-nsgan-r1": make("digits", DCGAN, {"name": "nsgan", "r1_gamma": 1.0}, resize=16),
    "digits16-dcgan-wgan-gp": make("digits", DCGAN, {"name": "wgan-gp"}, resize=16),
    "digits16-dcgan-dragan": make("digits", DCGAN, {"name": "dragan"}, resize=16),
    "digits16-dcgan-lsgan-pack2": make("digits", DCGAN, {"name": "lsgan"}, resize=16, training={"pack": 2}),
    "digits32-dcgan-nsgan": make("digits", DCGAN, {"name": "nsgan"}, resize=32),
    "digits16-dcgan-cgan": make("digits", DCGAN, {"name": "cgan"}, resize=16),
    "digits16-dcgan-infogan": make("digits", DCGAN, {"name": "infogan"}, resize=16),
    "digits16-dcgan-began": make("digits", DCGAN, {"name": "began"}, resize=16),
    "digits16-resnet-hinge": make("digits", RESNET, {"name": "hinge"}, resize=16),
    "digits16-resnet-nsgan": make("digits", RESNET, {"name": "nsgan"}, resize=16),
    "digits16-resnet-wgan-gp": make("digits", RESNET, {"name": "wgan-gp"}, resize=16),
    "digits16-resnet-nsgan-nosn": make("digits", {**RESNET, "spectral_norm": False}, {"name": "nsgan"}, resize=16),
}


@cache
def _info(dataset: str, resize: int | None) -> DatasetInfo:
    return load_builtin(dataset, resize).info  # as the worker sees it: shape after resize


@cache
def _gan(name: str) -> GAN:
    spec = VARIANTS[name]
    torch.manual_seed(0)
    return build_gan(spec, _info(spec.dataset.builtin or "", spec.dataset.resize), CPU)


def _loads(source: str, target: str) -> bool:
    try:
        load_weights(_gan(target), _gan(source).weights())
    except RuntimeError:  # load_state_dict's missing / unexpected keys and size mismatches
        return False
    return True


def _accepted(source: str, target: str) -> bool:
    spec, origin = VARIANTS[target], VARIANTS[source]
    # Admission sees the stored description (before resize); the signature applies the resize itself.
    info = BUILTIN_DATASETS[spec.dataset.builtin or ""]
    return check_warm_start(spec, info, origin, BUILTIN_DATASETS[origin.dataset.builtin or ""]) == []


PAIRS = list(itertools.product(VARIANTS, repeat=2))


@pytest.mark.slow
def test_every_warm_start_the_check_accepts_loads_strictly() -> None:
    accepted = [(s, t) for s, t in PAIRS if _accepted(s, t)]
    assert [(s, t) for s, t in accepted if not _loads(s, t)] == []
    # The check is not vacuous: more than the identical pairs pass, and far from all pairs do.
    assert len(accepted) > len(VARIANTS) and len(accepted) < len(PAIRS) // 4


@pytest.mark.slow
def test_the_check_refuses_only_what_cannot_load_or_changes_the_codes_meaning() -> None:
    refused_but_loading = [(s, t) for s, t in PAIRS if not _accepted(s, t) and _loads(s, t)]
    # The one kind refused though it loads: InfoGAN codes split differently (10 categories vs 5+5) —
    # same tensor sizes, but the code the source learned would mean something else.
    assert sorted(refused_but_loading) == [
        ("ring8-infogan", "ring8-infogan-5x2"),
        ("ring8-infogan-5x2", "ring8-infogan"),
        ("ring8-infogan-5x2", "ring8-infogan-wgan"),
        ("ring8-infogan-wgan", "ring8-infogan-5x2"),
    ]


def _fields(source: str, target: str) -> list[str]:
    spec, origin = VARIANTS[target], VARIANTS[source]
    info, source_info = BUILTIN_DATASETS[spec.dataset.builtin or ""], BUILTIN_DATASETS[origin.dataset.builtin or ""]
    return [".".join(map(str, p.loc)) for p in check_warm_start(spec, info, origin, source_info)]


@pytest.mark.parametrize(
    ("source", "target", "fields"),
    [
        # The examples: D's normalisation changes (R1 rules out batch norm), the class count changes.
        ("digits16-dcgan-nsgan", "digits16-dcgan-nsgan-r1", ["loss.r1_gamma"]),
        ("ring8-cgan", "grid25-cgan", ["dataset.builtin"]),
        ("digits16-dcgan-nsgan", "digits16-dcgan-wgan-gp", ["loss.name"]),
        ("digits16-dcgan-nsgan", "digits32-dcgan-nsgan", ["dataset.resize"]),
        ("ring8-nsgan", "ring8-nsgan-wide", ["architecture.hidden"]),
        ("ring8-nsgan", "ring8-nsgan-sn", ["architecture.spectral_norm"]),
        ("ring8-nsgan", "ring8-nsgan-pack2", ["training.pack"]),
        ("ring8-cgan", "ring8-cgan-concat", ["loss.conditioning"]),
        ("ring8-infogan", "ring8-infogan-3cont", ["loss.continuous_codes"]),
        ("ring8-nsgan", "ring8-began", ["loss.name"]),
        ("ring8-nsgan", "ring8-cgan", ["loss.name"]),
        ("digits16-resnet-hinge", "digits16-dcgan-nsgan", ["architecture.name", "architecture.spectral_norm"]),
        # What does not touch the networks passes: optimiser, rates, seeds, penalties on an MLP, EMA.
        ("ring8-nsgan", "ring8-nsgan-lr", []),
        ("ring8-nsgan", "ring8-wgan-gp", []),
        ("ring8-nsgan", "grid25-nsgan", []),
        ("ring8-nsgan", "ring8-hinge-ema", []),
        ("ring8-cgan", "ring8-cgan-wgan-gp", []),
        ("ring8-infogan", "ring8-infogan-wgan", []),
        ("digits16-resnet-hinge", "digits16-resnet-nsgan", []),
        ("digits16-dcgan-wgan-gp", "digits16-dcgan-dragan", []),
    ],
)
def test_a_refused_warm_start_names_the_field(source: str, target: str, fields: list[str]) -> None:
    assert _fields(source, target) == fields


def test_the_signature_leaves_out_what_does_not_shape_the_networks() -> None:
    info = BUILTIN_DATASETS["ring8"]
    assert network_signature(VARIANTS["ring8-nsgan"], info) == network_signature(VARIANTS["ring8-nsgan-lr"], info)
    assert "lr_g" not in str(network_signature(VARIANTS["ring8-nsgan"], info))


# --------------------------------------------------------------------------- uploads, through the store (PostgreSQL and SQLite)


def _upload(store: JobStore, dataset_id: str, owner: str, info: DatasetInfo) -> None:
    store.create_dataset(
        dataset_id=dataset_id,
        owner=owner,
        name=dataset_id,
        format="npz",
        info=info.model_dump(mode="json"),
        content_hash=dataset_id,
        size_bytes=1,
        data_key=f"datasets/{dataset_id}",
        preview_key=None,
    )


def _finished_job(store: JobStore, owner: str, spec: JobSpec) -> str:
    job, _ = store.create_job(owner=owner, spec=spec, idempotency_key=None)
    store.add_checkpoint(job_id=job.id, step=2, weights_key="w", state_key="s", size_bytes=1)
    return job.id


def warm(spec: JobSpec, **init_from: Any) -> JobSpec:
    return JobSpec.model_validate({**spec.model_dump(), "init_from": init_from})


def _refused(spec: JobSpec, owner: str, store: JobStore) -> list[str]:
    with pytest.raises(SpecRejected) as refused:
        admit(spec=spec, owner=owner, store=store)
    return [".".join(map(str, p.loc)) for p in refused.value.problems]


def test_admission_resolves_the_owners_upload_and_checks_a_warm_start_from_it(store: JobStore) -> None:
    faces = DatasetInfo(kind="images", shape=(3, 32, 32), num_classes=4, size=100)
    rows = DatasetInfo(kind="points", shape=(5,), num_classes=3, size=100)
    _upload(store, "faces", "team-a", faces)
    _upload(store, "faces6", "team-a", faces.model_copy(update={"num_classes": 6}))
    _upload(store, "rows", "team-a", rows)

    def on(dataset_id: str, **loss: Any) -> JobSpec:
        arch = {"name": "dcgan"} if dataset_id.startswith("faces") else {"name": "mlp"}
        return JobSpec.model_validate({"dataset": {"id": dataset_id}, "architecture": arch, "loss": loss})

    # Defaults come from the upload's description: images → λ 10 and 64 samples; 5-D rows → λ 10, 2,500.
    admitted = admit(spec=on("faces", name="wgan-gp"), owner="team-a", store=store)
    assert (admitted.loss.gp_weight, admitted.training.sample_count) == (PAPER_GP_WEIGHT, 64)  # type: ignore[union-attr]
    admitted = admit(spec=on("rows", name="dragan"), owner="team-a", store=store)
    assert (admitted.loss.gp_weight, admitted.training.sample_count) == (PAPER_GP_WEIGHT, 2500)  # type: ignore[union-attr]
    # Another owner's upload is as missing as a missing one.
    for owner, dataset_id in (("team-b", "faces"), ("team-a", "nope")):
        with pytest.raises(DatasetNotFound):
            admit(spec=on(dataset_id, name="nsgan"), owner=owner, store=store)
    # Every problem at once: an image architecture on rows and a warm start from another owner's job.
    source = _finished_job(store, "team-a", admit(spec=on("faces", name="cgan"), owner="team-a", store=store))
    _upload(store, "rows-b", "team-b", rows)
    wrong = warm(
        on("rows-b", name="nsgan").model_copy(update={"architecture": on("faces", name="nsgan").architecture}),
        job=source,
    )
    assert _refused(wrong, "team-b", store) == ["architecture.name", "init_from.job"]
    # A cgan from 4 classes into 6: refused at the field that changes them; the same data set loads.
    assert _refused(warm(on("faces6", name="cgan"), job=source), "team-a", store) == ["dataset.id"]
    same = warm(on("faces", name="cgan", lr_g=1e-5), job=source, step=2)
    assert admit(spec=same, owner="team-a", store=store).init_from == same.init_from
    assert _refused(warm(same, job=source, step=3), "team-a", store) == ["init_from.step"]
    # The source's data set deleted after the job ended: its networks' shapes are unknown, so no warm start.
    assert store.request_cancel(job_id=source, owner="team-a") is not None
    assert store.delete_dataset(dataset_id="faces", owner="team-a") is not None
    assert _refused(warm(on("faces6", name="nsgan"), job=source), "team-a", store) == ["init_from.job"]


# --------------------------------------------------------------------------- on the real service

SMALL_DIGITS: dict[str, Any] = {
    "dataset": {"builtin": "digits", "resize": 16},
    "architecture": {"name": "dcgan", "latent_dim": 16, "base_channels": 8},
    "loss": {"name": "nsgan"},
    "training": {"steps": 2, "batch_size": 16},
    "every": {"metrics": 1, "samples": 2, "checkpoint": 2},
}


def _problem_fields(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    return [detail["field"] for detail in response.json()["error"]["details"]]


def test_a_warm_start_into_other_networks_is_refused_at_submission(service: Service) -> None:
    with service.client() as client:
        source = client.post("/v1/jobs", json=SMALL_DIGITS)
        assert source.status_code == 201, source.text
        assert wait_for(client, source.json()["id"], ("succeeded", "failed"))["status"] == "succeeded"
        init_from = {"job": source.json()["id"]}
        r1 = {**SMALL_DIGITS, "loss": {"name": "nsgan", "r1_gamma": 1}, "init_from": init_from}
        assert _problem_fields(client.post("/v1/jobs", params={"validate_only": "true"}, json=r1)) == ["loss.r1_gamma"]
        refused = client.post("/v1/jobs", json=r1)
        assert _problem_fields(refused) == ["loss.r1_gamma"]
        assert "normalisation" in refused.json()["error"]["details"][0]["message"]
        # The same networks with other optimiser settings do warm-start, and the worker loads them.
        warm = client.post(
            "/v1/jobs", json={**SMALL_DIGITS, "loss": {"name": "nsgan", "lr_g": 1e-5}, "init_from": init_from}
        )
        assert warm.status_code == 201, warm.text
        assert wait_for(client, warm.json()["id"], ("succeeded", "failed"))["status"] == "succeeded"


def test_a_cgan_warm_start_across_class_counts_is_refused(service: Service) -> None:
    ring = {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 16, "depth": 2},
        "loss": {"name": "cgan"},
        "training": {"steps": 2, "batch_size": 16},
        "every": {"metrics": 1, "samples": 2, "checkpoint": 2},
    }
    with service.client() as client:
        source = client.post("/v1/jobs", json=ring).json()
        assert wait_for(client, source["id"], ("succeeded", "failed"))["status"] == "succeeded"
        grid = {**ring, "dataset": {"builtin": "grid25"}, "init_from": {"job": source["id"]}}
        assert _problem_fields(client.post("/v1/jobs", json=grid)) == ["dataset.builtin"]


def test_the_stored_spec_shows_the_data_dependent_defaults(service: Service) -> None:
    body = {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp"},
        "loss": {"name": "cgan", "base": "wgan-gp"},
        "training": {"steps": 1, "batch_size": 8},
    }
    with service.client() as client:
        checked = client.post("/v1/jobs", params={"validate_only": "true"}, json=body)
        assert checked.status_code == 200, checked.text
        created = client.post("/v1/jobs", json=body)
        assert created.status_code == 201, created.text
        stored = client.get(f"/v1/jobs/{created.json()['id']}").json()["spec"]
    for spec in (checked.json()["spec"], created.json()["spec"], stored):
        assert (spec["loss"]["gp_weight"], spec["training"]["sample_count"]) == (TOY_GP_WEIGHT, DEFAULT_POINT_SAMPLES)
        assert (spec["loss"]["optimizer"], spec["loss"]["lr_g"], spec["loss"]["n_critic"]) == ("adam", 1e-4, 5)


def test_an_integer_past_what_the_store_holds_is_a_422_with_its_field(service: Service) -> None:
    with service.client() as client:
        for (body, path), case in zip(INTEGER_CASES, INTEGER_IDS, strict=True):
            response = client.post("/v1/jobs", params={"validate_only": "true"}, json=body)
            assert response.status_code == 422, (case, response.text)
            assert [d["field"] for d in response.json()["error"]["details"]] == [path], case


def test_the_catalog_says_how_each_architecture_initialises(service: Service) -> None:
    with service.client() as client:
        catalog = client.get("/v1/catalog").json()
    init = {name: entry["init"] for name, entry in catalog["architectures"].items()}
    assert init == {
        "dcgan": "N(0, 0.02) conv/linear weights, batch-norm weights N(1, 0.02), biases 0 (Radford et al. 2015)",
        "resnet": "as the SNGAN official code (Glorot uniform, gain √2 in residual blocks)",
        "mlp": "PyTorch default (Kaiming uniform), as the WGAN-GP toy code's Linear layers",
    }
    assert catalog["architectures"]["dcgan"]["discriminator_norm"] == {"default": "batch", "gradient_penalty": "layer"}
    # Each loss keeps its paper and defaults; a wrapper shows its paper base's settings.
    assert catalog["losses"]["infogan"]["defaults"]["lr_g"] == 1e-3
    assert "1606.03657" in catalog["losses"]["infogan"]["paper"]
