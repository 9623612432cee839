"""The Celery worker: `celery -A worker.celery_app worker` (or `ganforge worker`).

One training job per worker process: prefork pool, prefetch 1, late acks (models/queue.py).
"""

from __future__ import annotations

from models.queue import make_celery
from models.settings import get_settings

app = make_celery(get_settings())
app.conf.update(include=["worker.tasks"], worker_concurrency=1)
