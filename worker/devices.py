"""Which GPUs a worker process sees: `ganforge worker --gpu I` (GANFORGE_WORKER_GPU).

One training job per GPU: a worker started for GPU i sets CUDA_VISIBLE_DEVICES=i before anything
initialises CUDA (worker/celery_app.py calls `select_gpus` at import, before the pool forks), so it and
its pool process see that GPU alone, as cuda:0. A job with resources.gpus N needs a worker that sees N
GPUs (`--gpu 0,1,2,3`, or no --gpu on a machine with N): worker/ddp.py runs rank r on cuda:r. Each pool
process records how many it sees (`visible_gpus`) in its heartbeat row (worker/presence.py), so the API can say
when no live worker of a job's queue sees enough.
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


def visible_gpus() -> int:
    """How many GPUs this process sees: torch.cuda.device_count(), which counts CUDA_VISIBLE_DEVICES (set by
    `select_gpus`) when set; 0 on a machine without CUDA or with a CPU build of torch. Called in each pool process
    after the fork (worker/presence.py start), like everything else that touches CUDA."""
    import torch  # here: worker/celery_app.py imports this module for select_gpus before anything loads torch

    return int(torch.cuda.device_count())
