"""What the API's request metrics (api/telemetry.py RequestMetrics) cost a request, against the same request without.

    .venv/bin/python bench/telemetry_overhead.py [--requests 20000]

Both sides run in this process on the same ASGI app, called directly (no sockets, no server), alternating in rounds
so machine load hits both alike:
- bare: a plain ASGI endpoint answering a small JSON body;
- metered: the same endpoint behind RequestMetrics (count, latency histogram, route template).
Prints the median microseconds per request of each and the ratio metered / bare, then the cost of one worker step's
telemetry (worker/telemetry.py step(): a histogram observation and the steps/s window) in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from api.telemetry import RequestMetrics

BODY = b'{"id": "0b6c", "status": "running", "step": 1200}'


def endpoint_app() -> FastAPI:
    """A FastAPI app whose one route `/v1/jobs/{job_id}` is what RequestMetrics resolves templates from."""
    app = FastAPI()

    @app.get("/v1/jobs/{job_id}")
    def job(job_id: str) -> dict[str, str]:  # never called: the bare endpoint below answers
        return {"id": job_id}

    return app


async def bare(_scope: Scope, _receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


async def run(app: object, requests: int, route: object) -> float:
    """Median microseconds per request over rounds of 1000 calls of `app`; `route` is what routing would have put in
    the scope (RequestMetrics reads its template)."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/jobs/0b6c",
        "headers": [],
        "query_string": b"",
        "route": route,
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: object) -> None:
        return None

    rounds = []
    for _ in range(max(1, requests // 1000)):
        started = time.perf_counter()
        for _ in range(1000):
            await app(dict(scope), receive, send)  # type: ignore[operator]
        rounds.append((time.perf_counter() - started) / 1000 * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    fastapi = endpoint_app()
    route = next(r for r in fastapi.router.routes if getattr(r, "path_format", "") == "/v1/jobs/{job_id}")
    metered = RequestMetrics(bare, fastapi=fastapi, registry=CollectorRegistry())
    bare_us: list[float] = []
    metered_us: list[float] = []
    for _ in range(5):  # alternate: load on the machine falls on both sides alike
        bare_us.append(asyncio.run(run(bare, args.requests // 5, route)))
        metered_us.append(asyncio.run(run(metered, args.requests // 5, route)))
    b, m = statistics.median(bare_us), statistics.median(metered_us)
    print(f"bare ASGI endpoint:       {b:8.2f} us/request")
    print(f"behind RequestMetrics:    {m:8.2f} us/request (+{m - b:.2f} us)")
    print(f"ratio metered / bare:     {m / b:8.2f}")

    from worker import telemetry

    telemetry._enabled = True  # as serve() sets it when a metrics port is configured
    telemetry.job_started("bench", 1)
    steps = 200_000
    started = time.perf_counter()
    for _ in range(steps):
        telemetry.step()
    per_step = (time.perf_counter() - started) / steps * 1e6
    print(f"worker step() telemetry:  {per_step:8.2f} us/step")


if __name__ == "__main__":
    main()
