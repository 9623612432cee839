"""The API's routers; `ROUTERS` is the list api/app.py includes, in this order (a new module adds itself here)."""

from __future__ import annotations

from fastapi import APIRouter

from api import events
from api.routes import dashboard, datasets, generations, jobs, keys, quota, results, studies, system, webhooks

ROUTERS: tuple[APIRouter, ...] = (
    jobs.router,
    datasets.router,
    results.router,
    events.router,
    system.router,
    dashboard.router,
    generations.router,
    studies.router,
    keys.router,
    keys.whoami_router,
    quota.router,
    webhooks.router,
)
