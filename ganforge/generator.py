"""Use a trained generator: `load_generator(checkpoint file or job id)` rebuilds it from its weights.

    import ganforge
    g = ganforge.load_generator("g.safetensors")          # or a job id: downloads its latest checkpoint
    x = g.generate(16, seed=0)                             # 16×2 points, or 16×C×H×W images in [-1, 1]

A checkpoint's safetensors metadata holds the job's spec and step (worker/checkpoints.py); the
network is rebuilt with the worker's own factory (worker.gan.build_gan), so it is the network the
job trained. Needs PyTorch: `pip install 'ganforge[worker]'`.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import torch
    from safetensors import SafetensorError, safe_open
except ImportError as exc:  # the plain install is the client only
    raise ImportError(
        f"ganforge.load_generator needs PyTorch and safetensors ({exc.name} is missing): pip install 'ganforge[worker]'"
    ) from exc

from models.datasets import BUILTIN_DATASETS, DatasetInfo
from models.spec import STORED_SPEC, JobSpec, is_id

if TYPE_CHECKING:
    from ganforge.client import Client

__all__ = ["Generator", "NotACheckpoint", "load_generator"]

MAX_SAMPLES = 1_000_000
MAX_ELEMENTS = 2**28  # one call's output: at most 1 GiB of float32; ask for more in batches

Labels = int | Sequence[int] | torch.Tensor
Codes = Mapping[str, Any]


class NotACheckpoint(ValueError):
    """The file is not a ganforge checkpoint (not safetensors, or without ganforge's metadata)."""


@dataclass(frozen=True)
class _Checkpoint:
    weights: dict[str, torch.Tensor]
    metadata: dict[str, str]


class Generator:
    """A trained generator, in eval mode on `device`; build it with `load_generator`.

    Attributes: `spec` (the job's JobSpec, every default filled in), `step` (the checkpoint's step),
    `job_id`, `shape` (one sample's shape: (D,) for points/rows, (C, H, W) for images),
    `latent_dim`, `num_classes` (cgan's classes; 0 otherwise), `categorical_codes` and
    `continuous_codes` (InfoGAN's codes: each categorical code's K, and how many continuous ones),
    `ema` (True when the weights are the EMA of G, `training.ema_decay`), `module` (the torch module).
    """

    def __init__(
        self,
        *,
        spec: JobSpec,
        step: int,
        job_id: str | None,
        info: DatasetInfo,
        weights: dict[str, torch.Tensor],
        device: torch.device,
        ema: bool | None = None,
    ) -> None:
        from worker.gan import build_gan  # the worker's one spec-to-networks factory

        self.spec, self.step, self.job_id, self.info = spec, step, job_id, info
        self.device = device
        gan = build_gan(spec, info, device)
        self.latent = gan.latent
        self.shape: tuple[int, ...] = tuple(info.shape)
        # Samples and checkpoints use the EMA copy of G when the job kept one (worker/gan/gan.py).
        kept = any(k.startswith("generator_ema.") for k in weights)
        if ema and not kept:
            raise ValueError("ema=True: this checkpoint holds no EMA weights (the job set no training.ema_decay)")
        prefix = "generator_ema." if kept and ema is not False else "generator."
        self.ema = prefix == "generator_ema."
        state = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
        if not state:
            raise NotACheckpoint("the checkpoint holds no generator weights (no 'generator.*' tensors)")
        try:
            gan.generator.load_state_dict(state)
        except RuntimeError as exc:
            raise NotACheckpoint(f"the weights do not fit the network the spec describes: {exc}") from exc
        self.module: torch.nn.Module = gan.generator.eval().requires_grad_(False)
        self._fixed_inputs = gan.fixed_inputs  # the job's snapshot latent batch (worker/trainer.py)

    @property
    def latent_dim(self) -> int:
        return self.latent.latent_dim

    @property
    def num_classes(self) -> int:
        return self.latent.num_classes

    @property
    def categorical_codes(self) -> tuple[int, ...]:
        return self.latent.categorical_codes

    @property
    def continuous_codes(self) -> int:
        return self.latent.continuous_codes

    @property
    def class_names(self) -> tuple[str, ...]:
        """The data set's class names (cgan labels index them), when it has them."""
        return tuple(self.info.class_names)

    def __repr__(self) -> str:
        return (
            f"<Generator {self.spec.architecture.name}/{self.spec.loss.name} step {self.step} "
            f"shape {self.shape} latent {self.latent_dim} classes {self.num_classes}{' ema' if self.ema else ''}>"
        )

    def generate(
        self, n: int, *, seed: int | None = None, labels: Labels | None = None, codes: Codes | None = None
    ) -> torch.Tensor:
        """n samples: an n×D tensor of points/rows, or n×C×H×W images in [-1, 1], float32 on `device`.

        z ~ N(0, I) (and any condition not given) is drawn on the CPU from `seed` (random when
        None), so a seed gives the same samples on every device.
        `labels` (cgan only): the class index of every sample (an int) or of each (n of them), in
        0..num_classes-1; when None they are drawn uniformly, as in training.
        `codes` (infogan only): {"categorical": an int or n ints for the first categorical code, or an
        n×len(categorical_codes) array for all of them; "continuous": continuous_codes floats for every
        sample or an n×continuous_codes array (training drew them from [-1, 1])}; a code not given is
        drawn from its prior.
        Raises ValueError for n < 1, n over MAX_SAMPLES or an output over MAX_ELEMENTS values, labels or
        codes out of range or of the wrong shape, or labels/codes the generator does not take.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, not {n!r}")
        if n > MAX_SAMPLES or n * math.prod(self.shape) > MAX_ELEMENTS:
            most = min(MAX_SAMPLES, MAX_ELEMENTS // math.prod(self.shape))
            raise ValueError(f"n={n} is too many for one call: at most {most} samples of shape {self.shape}")
        rng = torch.Generator(device="cpu").manual_seed(secrets.randbits(63) if seed is None else int(seed))
        inputs = self.latent.sample(n, torch.device("cpu"), rng)
        if labels is not None:
            inputs["labels"] = self._labels(labels, n)
        if codes is not None:
            inputs.update(self._codes(codes, n, inputs))
        return self._run(inputs)

    def snapshot(self) -> torch.Tensor:
        """The job's own sample snapshot at this step: its fixed latent batch through these weights.

        The same batch as GET /v1/jobs/{id}/samples/{step}.npy (up to float rounding across devices):
        `training.sample_count` samples (2,500 points or 64 images by default) drawn from seed + 2.
        """
        count = self.spec.training.sample_count or (64 if self.info.kind == "images" else 2500)
        rng = torch.Generator(device="cpu").manual_seed(self.spec.training.seed + 2)
        return self._run(self._fixed_inputs(count, rng))

    def _run(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = self.module(**{name: t.to(self.device) for name, t in inputs.items()})
        # Conv nets run channels_last (worker/gan/factory.py); callers get the plain NCHW layout they may .view().
        return out.float().contiguous()

    def _labels(self, labels: Labels, n: int) -> torch.Tensor:
        if not self.num_classes:
            raise ValueError(f"labels apply to a cgan generator; this one is {self.spec.loss.name}")
        return _indices("labels", labels, n, self.num_classes)

    def _codes(self, codes: Codes, n: int, drawn: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not (self.categorical_codes or self.continuous_codes):
            raise ValueError(f"codes apply to an infogan generator; this one is {self.spec.loss.name}")
        unknown = set(codes) - {"categorical", "continuous"}
        if unknown:
            raise ValueError(f"codes: unknown keys {sorted(unknown)}; give 'categorical' and/or 'continuous'")
        out: dict[str, torch.Tensor] = {}
        if codes.get("categorical") is not None:
            ks, value = self.categorical_codes, torch.as_tensor(codes["categorical"])
            if not ks:
                raise ValueError("codes.categorical: this generator has no categorical code")
            categorical = drawn["categorical"].clone()
            if value.ndim == 2:
                if tuple(value.shape) != (n, len(ks)):
                    raise ValueError(f"codes.categorical: expected shape ({n}, {len(ks)}), got {tuple(value.shape)}")
                for i, k in enumerate(ks):
                    categorical[:, i] = _indices(f"codes.categorical[:, {i}]", value[:, i], n, k)
            else:
                categorical[:, 0] = _indices("codes.categorical", value, n, ks[0])
            out["categorical"] = categorical
        if codes.get("continuous") is not None:
            c = self.continuous_codes
            value = torch.as_tensor(codes["continuous"], dtype=torch.float32)
            if not c:
                raise ValueError("codes.continuous: this generator has no continuous code")
            if tuple(value.shape) == (c,):
                value = value.expand(n, c)
            if tuple(value.shape) != (n, c):
                raise ValueError(f"codes.continuous: expected {c} values or shape ({n}, {c}), got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError("codes.continuous: values must be finite")
            out["continuous"] = value.contiguous()
        return out


def _indices(field: str, value: Labels, n: int, k: int) -> torch.Tensor:
    """n int64 indices in 0..k-1 from an int or n of them; ValueError naming `field` otherwise."""
    tensor = torch.as_tensor(value)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{field}: expected integer indices, got {tensor.dtype}")
    if tensor.ndim == 0:
        tensor = tensor.expand(n)
    if tuple(tensor.shape) != (n,):
        raise ValueError(f"{field}: expected one index or {n} of them, got shape {tuple(tensor.shape)}")
    bad = (tensor < 0) | (tensor >= k)
    if bad.any():
        raise ValueError(f"{field}: {int(tensor[bad][0])} is out of range: indices are 0..{k - 1}")
    return tensor.to(torch.int64).contiguous()


def load_generator(
    source: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    api: Client | None = None,
    step: int | str = "latest",
    ema: bool | None = None,
) -> Generator:
    """The generator of a ganforge checkpoint, ready to `generate`.

    `source`: a downloaded checkpoint file (GET /v1/jobs/{id}/checkpoints/{step}, `ganforge download`)
    or a job id, whose checkpoint at `step` ("latest" by default) is downloaded through
    `api` (a ganforge.client.Client; by default one from GANFORGE_URL and GANFORGE_API_KEY).
    `device`: where the network runs ("cpu", "cuda", "cuda:1", ...).
    `ema`: the EMA copy of G (True), the trained G itself (False), or the EMA copy when the checkpoint has one
    (None); True for a checkpoint without one is a ValueError.
    Raises FileNotFoundError for a missing file, NotACheckpoint (a ValueError) for a file that is not
    a ganforge checkpoint, ganforge.client errors (NotFound, Unauthorized, ...) from the service, and
    ValueError when the data set's shape cannot be known (an uploaded data set, a checkpoint written
    before ganforge stored it, and no service to ask).
    """
    target = torch.device(device)
    text = os.fspath(source)
    if isinstance(source, str) and not os.path.exists(text) and is_id(text):
        client = api if api is not None else _client()
        try:
            with tempfile.TemporaryDirectory(prefix="ganforge-") as folder:
                path = client.download_checkpoint(text, step=step, path=Path(folder) / "checkpoint.safetensors")
                checkpoint = _read(Path(path))
            return _build(checkpoint, target, api=client, ema=ema)
        finally:
            if api is None:  # ours: close its connections
                client.close()
    if not os.path.exists(text):
        raise FileNotFoundError(f"{text}: no such checkpoint file (nor a job id: {text!r} is not one)")
    return _build(_read(Path(text)), target, api=api, ema=ema)


def _client() -> Client:
    from ganforge.client import Client

    return Client()


def _read(path: Path) -> _Checkpoint:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            weights = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise NotACheckpoint(f"{path} is not a safetensors file: {exc}") from exc
    if metadata.get("format") != "ganforge" or "spec" not in metadata or "step" not in metadata:
        raise NotACheckpoint(f"{path} is a safetensors file but not a ganforge checkpoint (no ganforge metadata)")
    return _Checkpoint(weights=weights, metadata=metadata)


def _build(checkpoint: _Checkpoint, device: torch.device, *, api: Client | None, ema: bool | None = None) -> Generator:
    metadata = checkpoint.metadata
    try:
        spec = JobSpec.model_validate(json.loads(metadata["spec"]), context=STORED_SPEC)  # as it was admitted
        step = int(metadata["step"])
    except ValueError as exc:  # pydantic's ValidationError and json's errors are ValueErrors
        raise NotACheckpoint(f"the checkpoint's spec or step does not read: {exc}") from exc
    return Generator(
        spec=spec,
        step=step,
        job_id=metadata.get("job_id"),
        info=_dataset_info(spec, metadata, api),
        weights=checkpoint.weights,
        device=device,
        ema=ema,
    )


def _dataset_info(spec: JobSpec, metadata: dict[str, str], api: Client | None) -> DatasetInfo:
    """The data set's shape and classes as the job trained on them (after `dataset.resize`)."""
    ref = spec.dataset
    if "dataset" in metadata:  # newer checkpoints say it themselves
        return DatasetInfo.model_validate_json(metadata["dataset"])
    if ref.builtin is not None:
        info = BUILTIN_DATASETS[ref.builtin]
    else:
        assert ref.id is not None
        if api is None and not os.environ.get("GANFORGE_URL"):
            raise ValueError(
                f"this checkpoint's job trained on uploaded data set {ref.id} and the file does not say its "
                "shape: pass api=Client(...) (or set GANFORGE_URL) so it can be read from the service"
            )
        client = api if api is not None else _client()
        try:
            info = DatasetInfo.model_validate(client.datasets.get(ref.id).info)
        finally:
            if api is None:
                client.close()
    if info.kind == "images" and ref.resize is not None:
        info = info.model_copy(update={"shape": (info.shape[0], ref.resize, ref.resize)})
    return info
