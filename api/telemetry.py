"""What the API's /metrics exports beyond the event hub's figures, and the job id on the API's log lines.

    telemetry.install(app, registry, store, settings)   # in create_app, after the routers are added

- `ganforge_jobs{status,queue}`, `ganforge_queue_depth{queue}`, `ganforge_queue_oldest_age_seconds{queue}`:
  read from the store at most once per FIGURES_TTL_SECONDS however often Prometheus (or anyone with a key)
  scrapes; a store that does not answer leaves the last figures in place. Queue names come from job specs, so
  the labels are bounded (models/store/figures.py bounded): the default queue, those live workers serve, and the
  50 holding the most queued or running jobs; the rest are summed as `queue="_other"`.
- `ganforge_http_requests_total{method,route,status}` and `ganforge_http_request_duration_seconds{method,route,
  status}`: `route` is the route's template (`/v1/jobs/{job_id}`), never the path, so the number of series is
  bounded by the routes; a request no route matches is `route="unmatched"`, a method outside HTTP's usual seven
  `method="other"`. Event streams are counted but not
  timed (they last as long as the client stays).
- `ganforge_sse_connections`: event streams open on this process now.
- `ganforge_metrics_store_reads_total`: the store reads those figures took.

Names follow Prometheus's conventions (https://prometheus.io/docs/practices/naming/): base units, `_total` for
counters, `_seconds` for durations.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.logs import bind
from models.records import JobStatus
from models.settings import Settings
from models.store import JobStore
from models.store.figures import QueueFigures, bounded, queue_figures

log = logging.getLogger(__name__)

FIGURES_TTL_SECONDS = 5.0
UNMATCHED = "unmatched"
# A client picks the method: any other is counted as "other", so it cannot add series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Request latencies: 5 ms to 30 s (an upload or a download of a large checkpoint takes long).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StoreFigures(Collector):
    """Jobs by status and queue, queue depth and the oldest queued job's age, from the store, cached.

    One scrape at a time reads the store; the others within FIGURES_TTL_SECONDS get the same answer.
    """

    def __init__(
        self,
        store: JobStore,
        default_queue: str,
        registry: CollectorRegistry,
        ttl_seconds: float = FIGURES_TTL_SECONDS,
        worker_within: timedelta = timedelta(seconds=60),
    ) -> None:
        self.store, self.default_queue, self.ttl = store, default_queue, ttl_seconds
        self.worker_within = worker_within  # a worker unseen for this long is gone (two heartbeats)
        self._lock = threading.Lock()
        self._figures: QueueFigures | None = None
        self._read_at = float("-inf")
        self.reads = Counter(
            "ganforge_metrics_store_reads", "job-store reads made for /metrics (at most one per 5 s)", registry=registry
        )

    def figures(self) -> QueueFigures | None:
        """The cached figures, read again when older than the TTL; the last ones when the store does not answer."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl:
                self._read_at = time.monotonic()  # a store that is away is asked again after the TTL, not per scrape
                try:
                    self.reads.inc()
                    served = self.store.served_queues(within=self.worker_within)
                    self._figures = bounded(queue_figures(self.store), keep={self.default_queue, *served})
                except Exception as exc:
                    log.warning("/metrics: the job store did not answer (%s); the last job figures stay", exc)
            return self._figures

    def describe(self) -> Iterable[Metric]:
        # Not read from the store at registration (collect would be called otherwise).
        return self._families()

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("ganforge_jobs", "jobs by status and named queue", labels=["status", "queue"]),
            GaugeMetricFamily("ganforge_queue_depth", "queued jobs per named queue", labels=["queue"]),
            GaugeMetricFamily(
                "ganforge_queue_oldest_age_seconds",
                "seconds the longest-waiting queued job of each named queue has waited (0: none waits)",
                labels=["queue"],
            ),
        )

    def collect(self) -> Iterator[Metric]:
        figures = self.figures()
        if figures is None:
            return
        jobs, depth, oldest = self._families()
        queues = sorted({self.default_queue, *(queue for _status, queue in figures.jobs)})
        for queue in queues:
            for status in JobStatus.ALL:
                jobs.add_metric([status, queue], figures.jobs.get((status, queue), 0))
            depth.add_metric([queue], figures.depth.get(queue, 0))
            oldest.add_metric([queue], figures.oldest_seconds.get(queue, 0.0))
        yield from (jobs, depth, oldest)


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, registry: CollectorRegistry) -> None:
        self.app, self.fastapi = app, fastapi
        self._templates: list[tuple[re.Pattern[str], set[str] | None, str]] | None = None
        self._series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        labels = ["method", "route", "status"]
        self.requests = Counter(
            "ganforge_http_requests", "HTTP requests answered, by route template", labels, registry=registry
        )
        self.latency = Histogram(
            "ganforge_http_request_duration_seconds",
            "seconds from a request's arrival to the end of its answer (event streams excluded)",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.streams = Gauge("ganforge_sse_connections", "event streams open on this API process", registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, streaming = 500, False

        async def sending(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = dict(message.get("headers") or [])
                streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
                if streaming:
                    self.streams.inc()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if streaming:
                self.streams.dec()
            method = scope["method"] if scope["method"] in METHODS else "other"
            labels = (method, self._route(scope), str(status))
            series = self._series.get(labels)
            if series is None:  # labels() checks and locks each time: keep each series' children
                series = self._series[labels] = (self.requests.labels(*labels), self.latency.labels(*labels))
            series[0].inc()
            if not streaming:
                series[1].observe(time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        """The template of the route that served `scope`, or that would have (a request the gate answered)."""
        template = getattr(scope.get("route"), "path_format", None)
        if isinstance(template, str):
            return template
        if self._templates is None:
            self._templates = list(_route_templates(self.fastapi.router.routes, ""))
        path, method = scope["path"], scope["method"]
        matched = [(methods, template) for regex, methods, template in self._templates if regex.match(path)]
        chosen = next((t for methods, t in matched if methods is None or method in methods), None)
        return chosen or (matched[0][1] if matched else UNMATCHED)


def _route_templates(
    routes: Iterable[BaseRoute], prefix: str
) -> Iterator[tuple[re.Pattern[str], set[str] | None, str]]:
    """(path regex, methods or None for any, template) of every route, through included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included router (0.16x)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from _route_templates(included.routes, prefix + str(getattr(context, "prefix", "") or ""))
        elif isinstance(getattr(route, "path", None), str):
            regex, template, _convertors = compile_path(prefix + route.path)  # type: ignore[attr-defined]
            yield regex, getattr(route, "methods", None), template


async def job_id_on_log_lines(request: Request) -> None:
    """An app dependency: a route with a {job_id} puts it on every line logged while it answers."""
    job_id = request.path_params.get("job_id")
    if isinstance(job_id, str):
        bind(job_id=job_id[:64])


def install(app: FastAPI, registry: CollectorRegistry, store: JobStore, settings: Settings) -> StoreFigures:
    """Register the store's figures and the request metrics on `registry`; returns the figures' collector."""
    within = timedelta(seconds=2 * settings.worker_heartbeat_seconds)
    figures = StoreFigures(store, settings.queue, registry, worker_within=within)
    registry.register(figures)
    app.add_middleware(RequestMetrics, fastapi=app, registry=registry)
    return figures
