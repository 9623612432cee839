"""Health, readiness, Prometheus metrics and the catalog of losses, architectures and data sets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import BrokerDep, CurrentOwner, StoreDep
from migrations import schema_problem
from models.catalog import catalog as catalog_body

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(store: StoreDep, broker: BrokerDep) -> JSONResponse:
    """Ready when the job store answers at the schema revision this version needs and the broker answers."""
    checks: dict[str, str] = {}
    try:
        store.ping()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"error: {type(exc).__name__}"
    if checks["store"] == "ok":
        try:
            # The schema can fall behind while the API runs (a downgrade); every /v1 call would then fail.
            checks["schema"] = schema_problem(store.engine) or "ok"
        except Exception as exc:
            checks["schema"] = f"error: {type(exc).__name__}"
    try:
        with broker.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503, content={"status": "ready" if ready else "not ready", "checks": checks}
    )


@router.get("/metrics", include_in_schema=False)
def prometheus(request: Request, _owner: CurrentOwner) -> Response:
    """Prometheus metrics (api/telemetry.py: jobs by status and queue, queue depth and wait, requests by route and
    status, event streams). When API keys are configured, any valid key (`Authorization: Bearer <key>`), else 401:
    the figures describe every owner's use of the service. Open when auth is off. The store's figures are read at
    most once per api.telemetry.FIGURES_TTL_SECONDS, however often this is scraped."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/catalog")
def catalog() -> dict[str, Any]:
    """Every loss, architecture (with its initialisation) and built-in data set with its parameters, defaults and paper;
    `quality`: which figure a job on each kind of data reports (fid/kid when the worker running it has Inception
    weights: this process cannot see the workers' settings, so a job's own metrics say what it reported)."""
    return catalog_body()
