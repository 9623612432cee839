"""Health, readiness, Prometheus metrics and the catalog of losses, architectures and data sets."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import BrokerDep, StoreDep
from models.datasets import BUILTIN_DATASETS
from models.spec import ARCHITECTURE_CLASSES, LOSS_CLASSES, StrictModel

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(store: StoreDep, broker: BrokerDep) -> JSONResponse:
    """Ready when the job store and the broker both answer."""
    checks: dict[str, str] = {}
    try:
        store.ping()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"error: {type(exc).__name__}"
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
def prometheus(request: Request) -> Response:
    request.app.state.job_gauges.refresh()
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


def _describe(cls: type[StrictModel]) -> dict[str, Any]:
    schema = cls.model_json_schema()
    return {
        "paper": inspect.getdoc(cls),
        "defaults": _defaults(cls),
        "parameters": {k: v for k, v in schema.get("properties", {}).items() if k != "name"},
    }


def _defaults(cls: type[StrictModel]) -> dict[str, Any]:
    name = cls.model_fields["name"].annotation.__args__[0]  # type: ignore[union-attr]
    return {k: v for k, v in cls(name=name).model_dump(mode="json").items() if k != "name"}  # type: ignore[call-arg]


@router.get("/v1/catalog")
def catalog() -> dict[str, Any]:
    """Every loss, architecture and built-in data set with its parameters, defaults and paper."""
    return {
        "losses": {name: _describe(cls) for name, cls in LOSS_CLASSES.items()},
        "architectures": {name: _describe(cls) for name, cls in ARCHITECTURE_CLASSES.items()},
        "datasets": {name: info.model_dump(mode="json") for name, info in BUILTIN_DATASETS.items()},
    }
