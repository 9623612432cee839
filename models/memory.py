"""How much memory a job needs on its worker, estimated from its spec before it runs.

    estimate = estimate_memory(spec, network_signature(spec, info), examples=info.size)
    estimate.total_bytes          # the figure admission holds against GANFORGE_WORKER_MEMORY_BYTES
    estimate.parts                # bytes of each part, before the safety factor

Pure arithmetic, no torch (the API process never imports it): G and D are walked layer by layer as
worker/gan/networks/*, generator.py, discriminator.py and factory.py build them, from the spec and its
network_signature (models/admission.py). tests/test_memory.py builds the real networks to hold the two in step.

What is counted, in float32 (4 bytes an element):
  - static, held for the whole run: the parameters of G and D, their gradients (kept between steps), the
    optimiser's state (Adam: 2 tensors per parameter, RMSProp: 1), G's EMA copy when on, and the data set
    (it lives on the training device, worker/data.py);
  - the largest of the phases that come and go: a training step's activations (what autograd keeps for
    backward over every forward of the D step, including the gradient penalty's double backward, or of the
    G step, whichever is larger), the optimiser's scratch while it steps, a snapshot's forward of
    `sample_count` samples, and the CPU copy of the weights a checkpoint makes.
The sum is multiplied by SAFETY_FACTOR for what the count leaves out (allocator rounding and fragmentation,
backward's temporaries, cuDNN workspaces, the quality evaluation's networks, small buffers).

A job with resources.gpus N > 1 trains as N data-parallel processes (worker/ddp.py), each holding all of the
above for its own batch of training.batch_size plus DistributedDataParallel's gradient buckets (one more copy
of the gradients, `ddp_buckets`). With training.device "cpu" the N processes share the worker's memory, so
the total is N times one process's; otherwise (cuda, auto) each has a GPU of its own and the estimate is per
GPU, held against the same budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.catalog import GRADIENT_PENALTY_LOSSES
from models.spec import DCGANArchitecture, JobSpec, MLPArchitecture, ResNetArchitecture

FLOAT_BYTES = 4
LABEL_BYTES = 8  # int64 labels, one per example of a labelled data set
SAFETY_FACTOR = 1.5
GIB = 1024**3

# Mirrors of the worker's constants (worker/gan/factory.py, discriminator.py); the test builds the nets.
MIN_LABEL_DIM, MAX_LABEL_DIM = 16, 128
Q_HIDDEN = 128

Architecture = MLPArchitecture | DCGANArchitecture | ResNetArchitecture


@dataclass(frozen=True)
class NetworkCost:
    """One network's size: `parameters` (trainable elements), and per network input (one critic input of a
    packed D): `saved`, the elements of every intermediate tensor one forward with grad keeps for backward
    (its input included), and `widest`, the largest of them (a forward without grad holds about two)."""

    parameters: int
    saved: int
    widest: int


class _Walk:
    """Adds up a network layer by layer: each layer's parameters and the tensor it outputs (elements per input)."""

    def __init__(self, input_elements: int) -> None:
        self.parameters, self.saved, self.widest = 0, input_elements, input_elements

    def layer(self, parameters: int = 0, out: int = 0) -> None:
        self.parameters += parameters
        self.saved += out
        self.widest = max(self.widest, out)

    def linear(self, fan_in: int, fan_out: int, bias: bool = True) -> None:
        self.layer(fan_in * fan_out + (fan_out if bias else 0), fan_out)

    def conv(self, c_in: int, c_out: int, kernel: int, size_out: int, bias: bool = True) -> None:
        """A Conv2d or ConvTranspose2d (same parameter count) with a square `kernel`, output size_out²."""
        self.layer(c_in * c_out * kernel * kernel + (c_out if bias else 0), c_out * size_out * size_out)

    def norm(self, kind: str, channels: int, size: int) -> None:
        """norm2d: batch norm or one-group GroupNorm (an affine pair per channel), or nothing."""
        if kind != "none":
            self.layer(2 * channels, channels * size * size)

    def elementwise(self, elements: int) -> None:
        """An activation, upsampling, pooling or sum: no parameters, one new tensor."""
        self.layer(0, elements)

    def cost(self) -> NetworkCost:
        return NetworkCost(self.parameters, self.saved, self.widest)


# --------------------------------------------------------------------------- bodies (worker/gan/networks)


def _doublings(size: int) -> int:
    return int(math.log2(size)) - 2  # from 4×4 to size×size


def _mlp_generator(walk: _Walk, arch: MLPArchitecture, in_dim: int, shape: tuple[int, ...]) -> None:
    width = in_dim
    for _ in range(arch.depth):
        walk.linear(width, arch.hidden)
        walk.elementwise(arch.hidden)
        width = arch.hidden
    walk.linear(width, math.prod(shape))


def _mlp_discriminator(walk: _Walk, arch: MLPArchitecture, in_shape: tuple[int, ...]) -> int:
    width = math.prod(in_shape)
    for _ in range(arch.depth):
        walk.linear(width, arch.hidden)
        walk.elementwise(arch.hidden)
        width = arch.hidden
    return width


def _dcgan_generator(walk: _Walk, arch: DCGANArchitecture, in_dim: int, shape: tuple[int, ...], norm: str) -> None:
    channels, ups, bias = shape[0], _doublings(shape[-1]), norm == "none"
    width, size = arch.base_channels * 2 ** (ups - 1), 4
    walk.conv(in_dim, width, 4, size, bias)
    walk.norm(norm, width, size)
    walk.elementwise(width * size * size)
    for _ in range(ups - 1):
        size *= 2
        walk.conv(width, width // 2, 4, size, bias)
        width //= 2
        walk.norm(norm, width, size)
        walk.elementwise(width * size * size)
    size *= 2
    walk.conv(width, channels, 4, size)
    walk.elementwise(channels * size * size)


def _dcgan_discriminator(walk: _Walk, arch: DCGANArchitecture, in_shape: tuple[int, ...], norm: str) -> int:
    channels, downs, bias = in_shape[0], _doublings(in_shape[-1]), norm == "none"
    width, size = arch.base_channels, in_shape[-1] // 2
    walk.conv(channels, width, 4, size)
    walk.elementwise(width * size * size)
    for _ in range(downs - 1):
        size //= 2
        walk.conv(width, width * 2, 4, size, bias)
        width *= 2
        walk.norm(norm, width, size)
        walk.elementwise(width * size * size)
    return width * 4 * 4


def _resnet_generator(walk: _Walk, arch: ResNetArchitecture, in_dim: int, shape: tuple[int, ...], norm: str) -> None:
    width, size = arch.base_channels, 4
    walk.linear(in_dim, width * 16)
    for _ in range(_doublings(shape[-1])):
        # GeneratorBlock: norm-ReLU-upsample-conv3-norm-ReLU-conv3, plus upsample-conv1 shortcut, summed
        walk.norm(norm, width, size)
        walk.elementwise(width * size * size)
        size *= 2
        plane = width * size * size
        walk.elementwise(plane)
        walk.conv(width, width, 3, size)
        walk.norm(norm, width, size)
        walk.elementwise(plane)
        walk.conv(width, width, 3, size)
        walk.elementwise(plane)
        walk.conv(width, width, 1, size)
        walk.elementwise(plane)
    walk.norm(norm, width, size)
    walk.elementwise(width * size * size)
    walk.conv(width, shape[0], 3, size)
    walk.elementwise(shape[0] * size * size)


def _resnet_block(walk: _Walk, c_in: int, c_out: int, size: int, down: bool, first: bool, norm: str) -> int:
    """DiscriminatorBlock at input size `size`; returns its output size."""
    out_size = size // 2 if down else size
    if not first:
        walk.elementwise(c_in * size * size)
    walk.conv(c_in, c_out, 3, size)
    walk.norm(norm, c_out, size)
    walk.elementwise(c_out * size * size)
    walk.conv(c_out, c_out, 3, size)
    if down:
        walk.elementwise(c_out * out_size * out_size)
    if c_in != c_out or down:  # a learnt 1×1 shortcut; the first block pools before it, the others after
        if first:
            walk.elementwise(c_in * out_size * out_size)
            walk.conv(c_in, c_out, 1, out_size)
        else:
            walk.conv(c_in, c_out, 1, size)
            walk.elementwise(c_out * out_size * out_size)
    walk.elementwise(c_out * out_size * out_size)
    return out_size


def _resnet_discriminator(walk: _Walk, arch: ResNetArchitecture, in_shape: tuple[int, ...], norm: str) -> int:
    norm = "none" if norm == "batch" else norm
    width = arch.base_channels
    size = _resnet_block(walk, in_shape[0], width, in_shape[-1], True, True, norm)
    while size > 8:
        size = _resnet_block(walk, width, width, size, True, False, norm)
    size = _resnet_block(walk, width, width, size, False, False, norm)
    walk.elementwise(width * size * size)  # ReLU before the sum over the plane
    return width


def _generator_body(walk: _Walk, arch: Architecture, in_dim: int, shape: tuple[int, ...], norm: str) -> None:
    if isinstance(arch, MLPArchitecture):
        _mlp_generator(walk, arch, in_dim, shape)
    elif isinstance(arch, DCGANArchitecture):
        _dcgan_generator(walk, arch, in_dim, shape, norm)
    else:
        _resnet_generator(walk, arch, in_dim, shape, norm)


def _discriminator_body(walk: _Walk, arch: Architecture, in_shape: tuple[int, ...], norm: str) -> int:
    if isinstance(arch, MLPArchitecture):
        return _mlp_discriminator(walk, arch, in_shape)
    if isinstance(arch, DCGANArchitecture):
        return _dcgan_discriminator(walk, arch, in_shape, norm)
    return _resnet_discriminator(walk, arch, in_shape, norm)


# --------------------------------------------------------------------------- G and D (generator.py, discriminator.py)


def generator_cost(arch: Architecture, signature: Mapping[str, Any]) -> NetworkCost:
    """G as worker/gan/factory.py builds it: latent z (+ label embedding, + InfoGAN codes) into the body."""
    shape, num_classes = tuple(signature["data_shape"]), signature["num_classes"]
    label_dim = min(MAX_LABEL_DIM, max(MIN_LABEL_DIM, num_classes)) if num_classes else 0
    in_dim = arch.latent_dim + label_dim + sum(signature["categorical_codes"]) + signature["continuous_codes"]
    walk = _Walk(in_dim)
    walk.layer(num_classes * label_dim)  # nn.Embedding(num_classes, label_dim)
    _generator_body(walk, arch, in_dim, shape, "batch")
    return walk.cost()


def discriminator_cost(arch: Architecture, signature: Mapping[str, Any]) -> NetworkCost:
    """D as worker/gan/factory.py builds it: per critic input (`pack` samples), with its head, projection and
    Q head; BEGAN's auto-encoder (encoder, bottleneck, decoder) for the "autoencoder" kind."""
    shape = tuple(signature["data_shape"])
    if signature["discriminator"] == "autoencoder":
        bottleneck = min(arch.latent_dim, max(1, math.prod(shape) // 2))
        walk = _Walk(math.prod(shape))
        features = _discriminator_body(walk, arch, shape, "none")
        walk.linear(features, bottleneck)
        _generator_body(walk, arch, bottleneck, shape, "none")
        walk.elementwise(math.prod(shape))  # the reconstruction's error
        return walk.cost()
    pack, num_classes, norm = signature["pack"], signature["num_classes"], signature["discriminator_norm"]
    concat = num_classes if signature["conditioning"] == "concat" else 0
    in_shape = ((shape[0] + concat) * pack, *shape[1:])
    walk = _Walk(math.prod(in_shape))
    if concat:
        walk.elementwise(pack * concat * math.prod(shape[1:]))  # the one-hot labels
    features = _discriminator_body(walk, arch, in_shape, norm)
    walk.linear(features, 1)  # the head
    if signature["conditioning"] == "projection" and num_classes:
        walk.layer(num_classes * features, pack * features)  # nn.Embedding(num_classes, features)
    codes = sum(signature["categorical_codes"]) + signature["continuous_codes"]
    if codes:  # InfoGAN's Q head
        walk.linear(features, Q_HIDDEN)
        walk.elementwise(Q_HIDDEN)
        walk.linear(Q_HIDDEN, codes)
    return walk.cost()


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class MemoryEstimate:
    """A job's memory on its worker, in bytes.

    `parts` holds each counted part before the safety factor: parameters, gradients, optimizer_state, ema and
    data (held throughout), and activations, optimizer_scratch, snapshot and checkpoint_copy (phases: only the
    largest counts). `static_bytes` is the held parts' sum, `peak_phase_bytes` the largest phase, and
    `total_bytes` = (static + peak phase) × SAFETY_FACTOR (× resources.gpus for a CPU job's processes). `generator` and `discriminator` are the networks.
    """

    generator: NetworkCost
    discriminator: NetworkCost
    parts: dict[str, int]
    static_bytes: int
    peak_phase_bytes: int
    total_bytes: int

    @property
    def parameters(self) -> int:
        """Trainable parameters of G and D (elements)."""
        return self.generator.parameters + self.discriminator.parameters


def activation_elements_per_sample(spec: JobSpec, generator: NetworkCost, discriminator: NetworkCost) -> float:
    """Elements a training step keeps for backward per sample of the batch, at its larger step.

    D step: D's forwards on the real and the fake batch (G's forward runs without grad), plus three more
    for a gradient penalty (its forward, and the backward kept with create_graph for the double backward)
    and two for R1 on every D step (forward and backward on the reals); lazy R1 (r1_every > 1) is a step of
    its own of three. G step: G's forward and D's on the fakes. Plus two of the widest tensor (backward's
    incoming and outgoing gradient).
    """
    loss = spec.loss
    base = getattr(loss, "base", loss.name)
    r1_gamma, r1_every = getattr(loss, "r1_gamma", 0) or 0, getattr(loss, "r1_every", 1) or 1
    per_sample_d = discriminator.saved / spec.training.pack
    d_forwards = 2 + (3 if base in GRADIENT_PENALTY_LOSSES else 0) + (2 if r1_gamma and r1_every == 1 else 0)
    lazy_r1 = 3 if r1_gamma and r1_every > 1 else 0
    g_step = generator.saved + per_sample_d
    widest = max(generator.widest, discriminator.widest / spec.training.pack)
    return max(d_forwards * per_sample_d, lazy_r1 * per_sample_d, g_step) + 2 * widest


def estimate_memory(spec: JobSpec, signature: Mapping[str, Any], *, examples: int, labelled: bool) -> MemoryEstimate:
    """The memory `spec` needs on a worker, from its `network_signature` (models/admission.py) and the
    data set's number of `examples` (`labelled`: with a label each). Pure arithmetic; never raises for a valid spec."""
    arch = spec.architecture
    g, d = generator_cost(arch, signature), discriminator_cost(arch, signature)
    params = g.parameters + d.parameters
    training = spec.training
    shape = tuple(signature["data_shape"])
    optimizer_tensors = 1 if spec.loss.optimizer == "rmsprop" else 2
    ema = g.parameters if training.ema_decay else 0
    spectral = getattr(arch, "spectral_norm", False)
    # A spectrally normalised D materialises W/σ in every forward; a D step has two to seven of them.
    spectral_weights = d.parameters * 4 if spectral else 0
    sample_count = training.sample_count or 0
    parts = {
        "parameters": params * FLOAT_BYTES,
        "gradients": params * FLOAT_BYTES,
        "optimizer_state": optimizer_tensors * params * FLOAT_BYTES,
        "ema": ema * FLOAT_BYTES,
        "data": examples * (math.prod(shape) * FLOAT_BYTES + (LABEL_BYTES if labelled else 0)),
        "ddp_buckets": params * FLOAT_BYTES if spec.resources.gpus > 1 else 0,
        "activations": math.ceil(
            training.batch_size * activation_elements_per_sample(spec, g, d) * FLOAT_BYTES
            + spectral_weights * FLOAT_BYTES
        ),
        "optimizer_scratch": max(g.parameters, d.parameters) * FLOAT_BYTES,
        "snapshot": sample_count * (2 * g.widest + math.prod(shape)) * FLOAT_BYTES,
        "checkpoint_copy": (params + ema) * FLOAT_BYTES,
    }
    static = sum(parts[k] for k in ("parameters", "gradients", "optimizer_state", "ema", "data", "ddp_buckets"))
    phase = max(parts[k] for k in ("activations", "optimizer_scratch", "snapshot", "checkpoint_copy"))
    return MemoryEstimate(
        generator=g,
        discriminator=d,
        parts=parts,
        static_bytes=static,
        peak_phase_bytes=phase,
        total_bytes=math.ceil((static + phase) * SAFETY_FACTOR * processes_sharing_memory(spec)),
    )


def processes_sharing_memory(spec: JobSpec) -> int:
    """How many of the job's processes share one memory budget: resources.gpus on a CPU job (its data-parallel
    ranks all run on the worker's host), else 1 (a GPU each)."""
    return spec.resources.gpus if spec.training.device == "cpu" else 1


def gib(n_bytes: float) -> str:
    """`n_bytes` in GiB for a message: '33.9 GiB' (two significant decimals under 1 GiB: '0.012 GiB')."""
    value = n_bytes / GIB
    return f"{value:.1f} GiB" if value >= 1 else f"{value:.2g} GiB"
