"""One short job per loss and per architecture through the real service, so no wiring mistake can land."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from models.catalog import LOSS_CLASSES
from tests.service import Service, wait_for

POINTS = {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp", "hidden": 32, "depth": 2}}
IMAGES = {
    "dataset": {"builtin": "digits", "resize": 16},
    "architecture": {"name": "dcgan", "base_channels": 8, "latent_dim": 16},
}
RESNET = {
    "dataset": {"builtin": "digits", "resize": 16},
    "architecture": {"name": "resnet", "base_channels": 8, "latent_dim": 16},
}


def job(base: dict[str, object], loss: dict[str, object], **training: object) -> dict[str, object]:
    return {
        **base,
        "name": f"zoo-{loss['name']}",
        "loss": loss,
        "training": {"steps": 20, "batch_size": 32, **training},
        "every": {"metrics": 5, "samples": 20, "checkpoint": 20},
    }


SPECIFIC_METRICS = {
    "wgan": {"wasserstein"},
    "wgan-gp": {"wasserstein", "gradient_penalty"},
    "dragan": {"gradient_penalty"},
    "began": {"k_t", "m_global"},
    "infogan": {"mutual_info"},
}


def test_every_loss_trains_through_the_service(service: Service) -> None:
    specs = [job(POINTS, {"name": name}) for name in sorted(LOSS_CLASSES)]
    specs += [
        job(IMAGES, {"name": "wgan-gp"}),
        job(IMAGES, {"name": "began"}),
        job(IMAGES, {"name": "cgan", "base": "hinge"}, ema_decay=0.99),
        job(IMAGES, {"name": "infogan", "categorical_codes": [10], "continuous_codes": 2}),
        job(RESNET, {"name": "hinge"}),
        job(POINTS, {"name": "nsgan", "r1_gamma": 1.0, "r1_every": 4}, pack=2),
    ]
    with service.client() as client:
        ids = []
        for spec in specs:
            response = client.post("/v1/jobs", json=spec)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        for spec, job_id in zip(specs, ids, strict=True):
            done = wait_for(client, job_id, ("succeeded", "failed"), timeout=240)
            assert done["status"] == "succeeded", (spec, done["error"], service.logs())
            loss = spec["loss"]["name"]  # type: ignore[index]
            names = set(client.get(f"/v1/jobs/{job_id}/metrics").json()["series"])
            assert {"loss_g", "loss_d", "grad_norm_g", "grad_norm_d"} <= names, (loss, names)
            assert SPECIFIC_METRICS.get(loss, set()) <= names, (loss, names)
            if spec["loss"].get("r1_gamma"):  # type: ignore[union-attr]
                assert "r1" in names, names
            if spec["dataset"]["builtin"] == "ring8":  # type: ignore[index]
                # the PacGAN protocol, reverse KL over HQ samples and over all of them
                assert {"modes_covered", "hq_fraction", "reverse_kl", "reverse_kl_all"} <= names, names
            sample = client.get(f"/v1/jobs/{job_id}/samples").json()["samples"][-1]
            picture = Image.open(io.BytesIO(client.get(sample["png_url"]).content))
            batch = np.load(io.BytesIO(client.get(sample["npy_url"]).content))
            if spec["dataset"]["builtin"] == "digits":  # type: ignore[index]
                assert batch.shape == (64, 1, 16, 16) and picture.size[0] > 16 * 8
                if loss in ("cgan", "infogan"):
                    assert sample["labels"][:12] == [i % 10 for i in range(12)]
            else:
                assert batch.shape == (2500, 2)
                if loss == "cgan":
                    assert sample["labels"][:10] == [i % 8 for i in range(10)]
