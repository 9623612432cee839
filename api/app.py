"""The FastAPI app: `uvicorn api.app:app` (or `ganforge api`). Never imports torch."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from api import errors, events, openapi, security, telemetry
from api.deps import KeylessProduction, refuse_keyless_production
from api.gate import RequestGate
from api.jobcache import JobCacheMiddleware, JobReadCache
from api.reconciler import Reconciler
from api.routes import ROUTERS
from api.webhooks import WebhookSender
from migrations import schema_problem
from models.artifacts import ArtifactStore, keep_files_private
from models.db import make_engine
from models.logs import configure_logging
from models.queue import make_celery
from models.settings import Settings, get_settings
from models.store import JobStore

log = logging.getLogger("ganforge.api")


class SchemaNotCurrent(RuntimeError):
    """The store's schema is not the revision this version needs; the message says which and what to run."""


def check_schema(store: JobStore) -> None:
    """Raise SchemaNotCurrent unless the store is at the head revision; an unreachable store is left to /readyz."""
    try:
        problem = schema_problem(store.engine)
    except SQLAlchemyError as exc:
        if store.engine.dialect.name == "sqlite":  # a file that cannot be opened does not come up by waiting
            reason = getattr(exc, "orig", None) or exc
            raise SchemaNotCurrent(f"cannot open the job store ({reason}): run `ganforge migrate`") from exc
        # A server may come up after the API (a PostgreSQL restart); /readyz reports it until then.
        log.warning("cannot check the job store's schema (%s): starting, /readyz reports the store", type(exc).__name__)
        return
    if problem:
        raise SchemaNotCurrent(problem)


def _is_list(annotation: Any) -> bool:
    """Whether a parameter's type takes several values (list[str], set[int] | None, Annotated[list[str], ...])."""
    if get_origin(annotation) is Annotated:
        return _is_list(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return any(_is_list(arg) for arg in get_args(annotation))
    origin = get_origin(annotation) or annotation
    return (
        isinstance(origin, type) and issubclass(origin, list | set | frozenset | tuple | Sequence) and origin is not str
    )


def _single_valued_query(route: APIRoute) -> frozenset[str]:
    """The query parameters `route` (and its dependencies) read as one value (a walk of a few nodes: not cached)."""
    single: set[str] = set()
    dependants = [route.dependant]
    while dependants:
        dependant = dependants.pop()
        single |= {p.alias for p in dependant.query_params if not _is_list(p.field_info.annotation)}
        dependants += dependant.dependencies
    return frozenset(single)


async def one_value_per_query_parameter(request: Request) -> None:
    """422 at query.<name> when a parameter the route reads as one value is given more than once.

    Starlette keeps every value and FastAPI reads the last (`?limit=5&limit=500` was a limit of 500): which one
    the client meant is a guess. Parameters the route does not read, or reads as a list, may repeat.
    """
    route = request.scope.get("route")
    if not request.scope.get("query_string") or not isinstance(route, APIRoute):
        return
    single = _single_valued_query(route)
    counts = Counter(name for name, _ in request.query_params.multi_items() if name in single)
    errors = [
        {"type": "repeated", "loc": ("query", name), "msg": f"given {count} times: give it once", "input": None}
        for name, count in counts.items()
        if count > 1
    ]
    if errors:
        raise RequestValidationError(errors)


def create_app(settings: Settings | None = None, *, reconcile: bool = True) -> FastAPI:
    """The API for `settings` (default: the environment's).

    Raises pydantic.ValidationError for unsafe settings, SchemaNotCurrent when the store needs `ganforge migrate`,
    api.deps.KeylessProduction for production with no key at all.
    """
    settings = settings or get_settings()
    # Before anything is opened or created: the data dir holds every owner's data sets and checkpoints.
    keep_files_private()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reconciler = Reconciler(app.state.store, app.state.celery, settings) if reconcile else None
        if reconciler:
            reconciler.start()
            app.state.webhook_sender.start()
        app.state.event_hub.start(listen=settings.sse_listen)
        yield
        await app.state.event_hub.stop()
        await app.state.job_cache.close()
        if reconciler:
            app.state.webhook_sender.stop()
            reconciler.stop()
        app.state.store.engine.dispose()

    app = FastAPI(
        title="ganforge",
        version="1.0",
        summary="GAN training as a service",
        lifespan=lifespan,
        # /docs is served by api.routes.dashboard with Swagger UI's files from this service (no CDN: works
        # offline); ReDoc, CDN-only, is off.
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(one_value_per_query_parameter), Depends(telemetry.job_id_on_log_lines)],
        # /v1/jobs/ is a 404 that says to drop the slash, not a 307 to a URL built from the Host header.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.store = JobStore(make_engine(settings.database_url))
    # Without this every /v1 call would be a 500 ("no such table") behind a /readyz that says ready.
    # Before the schema check: production without keys is refused even on a store that cannot be read.
    refuse_keyless_production(settings, app.state.store)
    check_schema(app.state.store)
    app.state.artifacts = ArtifactStore(settings.artifacts_url, settings.artifacts_options)
    app.state.celery = make_celery(settings)
    app.state.registry = CollectorRegistry()
    app.state.job_cache = JobReadCache(app.state.store.engine, app.state.registry)
    app.state.event_hub = events.EventHub(app.state.store, app.state.registry)
    app.state.webhook_sender = WebhookSender(app.state.store, settings, app.state.registry)
    errors.install(app)
    # Inside the gate: only an authenticated, authorised caller's GET is answered from memory.
    app.add_middleware(JobCacheMiddleware, cache=app.state.job_cache)
    # In front of the routers: a request is authenticated and size-checked before its body is read.
    app.add_middleware(RequestGate, settings=settings)
    for router in ROUTERS:
        app.include_router(router)
    # Outside the gate: its 401s and 413s are counted under the route they were for.
    app.state.store_figures = telemetry.install(app, app.state.registry, app.state.store, settings)
    openapi.install(app)
    # Outside everything, the gate's and the server errors' answers included.
    security.install(app)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.app:app` builds the app on first access, from the environment's settings.
    if name == "app":
        try:
            configure_logging(get_settings().log_format)
            created = create_app()
        except ValidationError as exc:  # settings that would fail open or run unsafely: refuse to start
            configure_logging()
            log.critical("refusing to start: invalid settings\n%s", exc)
            raise SystemExit(2) from None
        except SchemaNotCurrent as exc:
            log.critical("refusing to start: %s", exc)
            raise SystemExit(2) from None
        except KeylessProduction as exc:  # its message says "refusing to start" and what to do
            log.critical("%s", exc)
            raise SystemExit(2) from None
        globals()["app"] = created
        return created
    raise AttributeError(name)
