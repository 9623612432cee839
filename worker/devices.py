"""Which GPUs a worker process sees: `ganforge worker --gpu I` (GANFORGE_WORKER_GPU).

One training job per GPU: a worker started for GPU i sets CUDA_VISIBLE_DEVICES=i before anything
initialises CUDA (worker/celery_app.py calls `select_gpus` at import, before the pool forks), so it and
its pool process see that GPU alone, as cuda:0. A job with resources.gpus N needs a worker that sees N
GPUs (`--gpu 0,1,2,3`, or no --gpu on a machine with N): worker/ddp.py runs rank r on cuda:r.
"""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger(__name__)

GPU_LIST = re.compile(r"^[0-9]+(,[0-9]+)*$")


def select_gpus(setting: str) -> None:
    """Set CUDA_VISIBLE_DEVICES to `setting` (comma-separated GPU indices; "" leaves it as it is).

    Raises ValueError for anything but indices. Call before CUDA is initialised in this process."""
    if not setting:
        return
    if GPU_LIST.fullmatch(setting) is None:
        raise ValueError(f"GANFORGE_WORKER_GPU {setting!r}: comma-separated GPU indices, such as 0 or 0,1")
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    if previous not in (None, setting):
        log.info("GANFORGE_WORKER_GPU=%s replaces CUDA_VISIBLE_DEVICES=%s", setting, previous)
    os.environ["CUDA_VISIBLE_DEVICES"] = setting
