"""GET /v1/jobs/{id} requests/s of the real API against a bare FastAPI endpoint returning the same JSON bytes.

    python bench/api_throughput.py [--backend sqlite|postgres|both] [--seconds 5] [--rounds 2] [--connections 32]

The load generator is Debian's `wrk` (`apt-get install -y wrk`); the bench stops at once, saying so, without it.
For each backend (default both: the embedded SQLite store and PostgreSQL in a throwaway database on
127.0.0.1:5432, as the tests make one):

1. starts the real API as `ganforge api` does (one uvicorn process, `ganforge.supervisor.api_command`) on a fresh
   store with auth on through the store: one API key made with `ganforge keys create` (read,submit), sent as
   `Authorization: Bearer` on every request, the path a client of `ganforge up --auth` or production takes;
2. submits a tiny job and has a real `ganforge worker` run it to `succeeded` (its progress, metrics and timestamps
   in the answer), stops the worker, then submits another that stays `queued` (every GET of it computes its
   `queue_reason`);
3. starts a bare FastAPI app (`bare_app` below: one `async def` route at the same path returning the API's own
   answer for each job as fixed bytes) with the same uvicorn command line and settings;
4. for each job, alternates `wrk -t2 -c32 -d<seconds>s --latency` on the bare app and on the API, `--rounds`
   times each (alternating spreads another process's load on this machine over both), all requests checked 2xx;
   then the API `--rounds` times more with a query string the route ignores (UNCACHED), which the job read cache
   (api/jobcache.py) leaves to the route: every such GET reads the store, the cost of a miss.

Prints, per backend and job: requests/s (all requests over all rounds' time), p50 (the mean of the rounds') and
p99 (the worst round's) for both, the job read cache's hits and misses during the API's runs (from its /metrics),
the ratio of the API's requests/s to the bare endpoint's (the goal of issue 14: at least 0.5), and the same for
the uncached GETs. On a machine whose cores are shared, wrk and the server compete for them: print `uptime` with
the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from tests.service import (  # noqa: E402
    TINY_SPEC,
    Service,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    service_env,
    wait_for,
)

# A query string the route ignores: the job read cache (api/jobcache.py) keeps only plain GETs, so this GET is
# answered by the route and the store every time, the cost of a miss.
UNCACHED = "?uncached=1"
BODIES_ENV = "GANFORGE_BENCH_BODIES"  # the bare app's answers: a JSON file of {job id: the API's body as text}
OWNER = "bench"


def bare_app() -> object:
    """The baseline: FastAPI with one `async def` route at the API's path answering each job id with the API's own
    body (fixed bytes, read once from the file $GANFORGE_BENCH_BODIES names); 404 for other ids. No store, no
    auth, no middleware: what FastAPI and uvicorn alone cost for the same answer."""
    from fastapi import FastAPI, Response

    bodies = {job_id: body.encode() for job_id, body in json.loads(Path(os.environ[BODIES_ENV]).read_text()).items()}
    app = FastAPI()

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> Response:
        body = bodies.get(job_id)
        if body is None:
            return Response(status_code=404)
        return Response(body, media_type="application/json")

    return app


@dataclass
class Load:
    """One wrk run: requests, seconds, p50 and p99 latency in ms."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(url: str, key: str, seconds: float, connections: int, threads: int) -> Load:
    """Drive GET `url` with wrk; raise RuntimeError when any answer is not 2xx/3xx or a socket error occurs."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-H",
        f"Authorization: Bearer {key}",
        url,
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if "Non-2xx or 3xx responses" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failed requests on {url}:\n{out}")
    done = re.search(r"(\d+) requests in ([0-9.]+)([a-z]+),", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (done and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return Load(int(done[1]), _ms(done[2] + done[3]) / 1000, _ms(p50[1]), _ms(p99[1]))


def summary(loads: list[Load]) -> tuple[float, float, float]:
    """(requests/s over all rounds, mean of the rounds' p50, worst round's p99)."""
    rps = sum(load.requests for load in loads) / sum(load.seconds for load in loads)
    return rps, sum(load.p50_ms for load in loads) / len(loads), max(load.p99_ms for load in loads)


def start_bare(env: dict[str, str], folder: Path, bodies: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """The bare app under the API's own uvicorn command line (api_command), on a free port; (process, URL)."""
    from ganforge.supervisor import api_command

    (folder / "bodies.json").write_text(json.dumps(bodies))
    port = free_port()
    command = api_command("127.0.0.1", port, env)
    command[command.index("api.app:app")] = "api_throughput:bare_app"
    command += ["--factory", "--app-dir", str(Path(__file__).resolve().parent)]
    log = open(folder / "bare.log", "ab")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(
        command, env={**env, BODIES_ENV: str(folder / "bodies.json")}, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the bare app did not start:\n" + (folder / "bare.log").read_text())
        try:
            httpx.get(f"{url}/v1/jobs/none", timeout=2)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the bare app did not start:\n" + (folder / "bare.log").read_text())


def cache_counts(url: str, key: str) -> tuple[float, float]:
    """The API's job read cache hits and misses so far, from its /metrics."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30).raise_for_status().text
    counts = []
    for result in ("hit", "miss"):
        found = re.search(rf'^ganforge_job_cache_requests_total\{{result="{result}"\}} (\S+)$', text, re.M)
        counts.append(float(found[1]) if found else 0.0)
    return counts[0], counts[1]


def make_key(service: Service) -> str:
    """A read,submit store key for OWNER, made as an operator makes one (`ganforge keys create`)."""
    done = subprocess.run(
        [sys.executable, "-m", "ganforge", "keys", "create", "--owner", OWNER, "--scopes", "read,submit"],
        cwd=Path(__file__).resolve().parent.parent,
        env=service.env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1].strip()


def bench_backend(label: str, database_url: str | None, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = service_env(folder, database_url, None, GANFORGE_API_KEYS="")
        service = Service(env=env, data_dir=folder)
        bare: subprocess.Popen[bytes] | None = None
        try:
            service.migrate()
            key = make_key(service)
            service.start_api()
            with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
                service.start_worker()
                done_id = client.post("/v1/jobs", json=TINY_SPEC).raise_for_status().json()["id"]
                wait_for(client, done_id, ("succeeded",))
                service.kill_worker(service.workers.pop())
                queued_id = client.post("/v1/jobs", json=TINY_SPEC).raise_for_status().json()["id"]
                jobs = {"succeeded": done_id, "queued": queued_id}
                bodies = {}
                for job_id in jobs.values():
                    response = client.get(f"/v1/jobs/{job_id}").raise_for_status()
                    bodies[job_id] = response.text
            bare, bare_url = start_bare(env, folder, bodies)
            for state, job_id in jobs.items():
                path = f"/v1/jobs/{job_id}"
                with httpx.Client(timeout=30) as plain:  # the same bytes from both
                    assert plain.get(bare_url + path).content == bodies[job_id].encode()
                measured: dict[str, list[Load]] = {"bare": [], "api": [], "uncached": []}
                urls = {"bare": bare_url + path, "api": service.url + path, "uncached": service.url + path + UNCACHED}
                for url in urls.values():  # warm all three
                    run_wrk(url, key, 1, args.connections, args.threads)
                before = cache_counts(service.url, key)
                for _ in range(args.rounds):
                    for name in ("bare", "api"):
                        measured[name].append(run_wrk(urls[name], key, args.seconds, args.connections, args.threads))
                hit, miss = (after - first for after, first in zip(cache_counts(service.url, key), before, strict=True))
                for _ in range(args.rounds):
                    measured["uncached"].append(
                        run_wrk(urls["uncached"], key, args.seconds, args.connections, args.threads)
                    )
                api_rps, api_p50, api_p99 = summary(measured["api"])
                bare_rps, bare_p50, bare_p99 = summary(measured["bare"])
                raw_rps, raw_p50, raw_p99 = summary(measured["uncached"])
                print(
                    f"{label}, GET a {state} job ({len(bodies[job_id])} bytes), {args.connections} connections, "
                    f"{args.rounds} x {args.seconds:g} s each:\n"
                    f"  ganforge API: {api_rps:8.0f} req/s  p50 {api_p50:7.2f} ms  p99 {api_p99:7.2f} ms"
                    f"  (job read cache: {hit:.0f} hits, {miss:.0f} misses)\n"
                    f"  bare FastAPI: {bare_rps:8.0f} req/s  p50 {bare_p50:7.2f} ms  p99 {bare_p99:7.2f} ms\n"
                    f"  ratio API / bare: {api_rps / bare_rps:.2f} (goal >= 0.5)\n"
                    f"  every GET read from the store ({UNCACHED}: not kept): {raw_rps:8.0f} req/s  p50 {raw_p50:7.2f} ms"
                    f"  p99 {raw_p99:7.2f} ms, ratio {raw_rps / bare_rps:.2f}",
                    flush=True,
                )
        except Exception:
            print(service.logs(), file=sys.stderr)
            raise
        finally:
            if bare is not None:
                bare.terminate()
                bare.wait()
            service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of one wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per server, alternating")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/api_throughput.py needs the load generator wrk: apt-get install -y wrk (Debian, Ubuntu)")
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on {os.cpu_count()} cores", flush=True)
    if args.backend in ("sqlite", "both"):
        bench_backend("embedded SQLite", None, args)
    if args.backend in ("postgres", "both"):
        database, url = create_postgres_database()
        try:
            bench_backend("PostgreSQL", url, args)
        finally:
            drop_postgres_database(database)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} after", flush=True)


if __name__ == "__main__":
    main()
