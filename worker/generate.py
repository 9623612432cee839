"""The generate task: sample a trained job's generator for one POST /v1/jobs/{id}/generate request.

Consumed only by generate workers (`ganforge worker --generate`, queue `<queue>.generate`), so a request never
waits behind a training job. The broker message names the request; the claim is a conditional UPDATE (a
duplicate message is a no-op). The checkpoint's weights are read from the artifact store into a temporary file
and rebuilt by ganforge.generator.load_generator (the same network the job trained); the last CACHED generators
of this process are kept, so asking the same job again skips the load. The result goes to
`generations/{id}.npy` (float32: count×D in the data's coordinates, not clamped; or count×C×H×W) or `.png` (a grid
of images, a scatter plot of points over the real data for a built-in 2-D data set), and the request ends succeeded
or failed with a reason a user can read (never a path, a host or an exception's message: an unexpected exception is
its builtin class and a reference to the worker's log line that has the rest). Once its result is stored, the
owner's results past GANFORGE_GENERATE_MAX_RESULTS_PER_OWNER (oldest first) or their TTL are expired and their files
deleted here, so the cap holds without waiting for the API's reconciler (which also sweeps every owner).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from celery.signals import worker_process_init

from ganforge.generator import Generator, NotACheckpoint, load_generator
from models.artifacts import ArtifactMissing, ArtifactStore
from models.generation import MEDIA_TYPES
from models.pictures import image_grid, npy_bytes, scatter
from models.queue import GENERATE_TASK, generate_queue
from models.records import Generation
from models.settings import get_settings
from models.store import JobStore
from models.store.generations import delete_generation_results
from worker.celery_app import app
from worker.tasks import failure_category, failure_ref, stores
from worker.trainer import resolve_device

log = logging.getLogger(__name__)

CACHED = 4  # generators kept per process, keyed by (weights key, ema)
_generators: OrderedDict[tuple[str, bool], Generator] = OrderedDict()


def _warm_up(**_kwargs: Any) -> None:
    """In a generate worker's pool process, in the background while it waits for its first request: the first
    optimiser torch builds (build_gan makes G's and D's) imports torch._dynamo, seconds of CPU that would otherwise
    fall on the first request and outlast the API's wait."""
    if generate_queue(get_settings()) in sys.argv:
        threading.Thread(
            target=lambda: torch.optim.Adam([torch.zeros(1, requires_grad=True)]), name="warm-up", daemon=True
        ).start()


worker_process_init.connect(_warm_up, weak=False)


class GenerationError(Exception):
    """A request that cannot be served, with the reason the user reads."""


def cached_generator(artifacts: ArtifactStore, weights_key: str, ema: bool) -> Generator:
    """The generator of the checkpoint at `weights_key` (EMA copy when `ema`), from this process's cache when
    it is there; raises GenerationError when the file is missing or is not a checkpoint."""
    key = (weights_key, ema)
    if key in _generators:
        _generators.move_to_end(key)
        return _generators[key]
    folder = tempfile.mkdtemp(prefix="ganforge-generate-")
    try:
        path = os.path.join(folder, "checkpoint.safetensors")
        with artifacts.open(weights_key) as source, open(path, "wb") as target:
            shutil.copyfileobj(source, target)
        generator = load_generator(path, device=resolve_device("auto"), ema=ema)
    except ArtifactMissing:
        raise GenerationError("the checkpoint's file is missing from the artifact store (deleted?)") from None
    except NotACheckpoint:
        log.exception("checkpoint %s does not load", weights_key)
        raise GenerationError("the checkpoint's file does not load as this job's generator") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _generators[key] = generator
    while len(_generators) > CACHED:
        _generators.popitem(last=False)
    return generator


@lru_cache(maxsize=4)
def _real_points(name: str) -> np.ndarray:
    from worker.gan import load_builtin

    return load_builtin(name).x[:2500].numpy()


def picture(generator: Generator, samples: np.ndarray, labels: list[int] | None, title: str) -> bytes:
    """PNG of `samples`: an image grid (captioned with the class names of the labels asked for) or a scatter plot
    (over the real points of a built-in data set)."""
    if samples.ndim == 4:
        captions: dict[str, Any] = {}
        if labels is not None:
            captions = {"labels": labels, "class_names": generator.class_names}
        return image_grid(samples, title=title, **captions)
    builtin = generator.spec.dataset.builtin
    background = _real_points(builtin) if builtin is not None else None
    return scatter(samples, background, title=title)


def run(generation: Generation, store: JobStore, artifacts: ArtifactStore) -> tuple[bytes, str, str]:
    """The result of `generation`: (bytes, media type, file extension); raises GenerationError."""
    params = generation.params
    checkpoint = store.get_checkpoint(job_id=generation.job_id, step=int(params["step"]))
    if checkpoint is None:
        raise GenerationError(f"the job has no checkpoint at step {params['step']} any more")
    generator = cached_generator(artifacts, checkpoint.weights_key, bool(params.get("ema")))
    count = int(params["count"])
    labels = params.get("labels")
    label_list = ([labels] * count if isinstance(labels, int) else labels) if labels is not None else None
    try:
        samples = generator.generate(count, seed=int(params.get("seed", 0)), labels=labels, codes=params.get("codes"))
    except ValueError as exc:  # labels or codes the API could not check (an upload's record gone): say which
        raise GenerationError(str(exc)) from None
    array = samples.cpu().numpy().astype(np.float32)
    if not np.isfinite(array).all():
        raise GenerationError("the generator produced non-finite values at this checkpoint")
    if params.get("format") == "png":
        title = f"step {checkpoint.step}, seed {params.get('seed', 0)}"
        return picture(generator, array, label_list, title), MEDIA_TYPES["png"], "png"
    return npy_bytes(array), MEDIA_TYPES["npy"], "npy"


@app.task(name=GENERATE_TASK, ignore_result=True)  # type: ignore[untyped-decorator]  # Celery ships no types
def generate(generation_id: str) -> str:
    """Serve one generate request; returns what happened (for logs)."""
    store, artifacts = stores()
    generation = store.claim_generation(generation_id=generation_id)
    if generation is None:
        log.info("generation %s not claimable (taken, ended or unknown): message dropped", generation_id)
        return "not claimed"
    try:
        data, media_type, extension = run(generation, store, artifacts)
    except GenerationError as exc:
        store.fail_generation(generation_id=generation_id, error=str(exc))
        return "failed"
    except Exception as exc:
        ref = failure_ref()
        log.exception("generation %s failed (ref %s)", generation_id, ref)
        error = f"generating raised an unexpected {failure_category(exc)} (ref {ref}); the worker's log has the details"
        store.fail_generation(generation_id=generation_id, error=error)
        return "failed"
    key = f"generations/{generation_id}.{extension}"
    artifacts.put_bytes(key, data)
    # Room first: once this result reads succeeded, its owner already holds no more than the cap.
    delete_generation_results(store, artifacts, get_settings(), generation.owner, make_room=True)
    if not store.finish_generation(generation_id=generation_id, result_key=key, media_type=media_type):
        log.warning("generation %s ended before its result was written (expired)", generation_id)
        artifacts.delete(key)  # no row points at it
        return "expired"
    return "succeeded"
