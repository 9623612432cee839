"""Packaging: what pyproject.toml declares is enough to run the service.

A fast check reads every import of the production code (models, api, worker, ganforge,
migrations) and finds the distribution that provides it among the declared
dependencies. The slow one installs the project as a user does — a fresh venv, the CPU
torch wheel, then `pip install <repo>` (not editable, no test extras) — and from a
folder outside the repository runs `ganforge migrate`, `api` and `worker` against a
fresh PostgreSQL database and Redis, and trains a tiny job over HTTP.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.service import REDIS_URL, ROOT, create_postgres_database, drop_postgres_database, free_port, service_env

PRODUCTION = ("models", "api", "worker", "ganforge", "migrations")
TORCH = "torch==2.13.0"  # the CPU wheel the Makefile installs (no download: pip's find-links)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """The distributions `pip install <repo>` installs by name (no extras of ours)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonical(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]) for requirement in project["dependencies"]}


def imported_modules() -> dict[str, str]:
    """Top-level module → the first file that imports it, for every import in the production packages."""
    found: dict[str, str] = {}
    for package in PRODUCTION:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_module_the_production_code_imports_is_a_declared_dependency() -> None:
    providers = importlib.metadata.packages_distributions()
    wanted = declared()
    missing = []
    for module, where in sorted(imported_modules().items()):
        if module in sys.stdlib_module_names or module in PRODUCTION:
            continue
        distributions = {canonical(d) for d in providers.get(module, [])}
        if not distributions & wanted:
            missing.append(
                f"{module} (imported in {where}; provided by {sorted(distributions) or 'nothing installed'})"
            )
    assert not missing, "imported but not declared in pyproject.toml's dependencies: " + "; ".join(missing)


def test_the_redis_broker_is_declared_with_its_transport_extra() -> None:
    # kombu's Redis transport needs `redis` and `packaging`: only celery[redis] declares both.
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"celery\[[^\]]*\bredis\b[^\]]*\]", r) for r in requirements), requirements


SPEC = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
    "loss": {"name": "nsgan"},
    "training": {"steps": 30, "batch_size": 32},
    "every": {"metrics": 10, "samples": 30, "checkpoint": 30},
}


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_clean_install_without_test_extras_trains_a_job_on_postgres_and_redis(tmp_path: Path) -> None:
    started = time.monotonic()
    venv, outside = tmp_path / "venv", tmp_path / "elsewhere"
    outside.mkdir()
    _run([sys.executable, "-m", "venv", str(venv)])
    # --no-compile: byte-compiling torch at install time is most of the CPU an install takes.
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
    ]
    _run([*pip, TORCH])
    # A copy: building from the shared tree would leave build/ and *.egg-info behind in it.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "__pycache__", "*.egg-info", "build", "tests", "bench", "ganforge-data", "gf-data"
        ),
    )
    _run([*pip, str(source)])
    installed = time.monotonic() - started
    frozen = _run([str(venv / "bin" / "python"), "-m", "pip", "freeze"]).stdout.lower()
    assert not {"pytest", "ruff", "mypy"} & {line.split("==")[0] for line in frozen.splitlines()}, frozen

    database, url = create_postgres_database()
    processes: list[subprocess.Popen[bytes]] = []
    port = free_port()
    env = service_env(tmp_path / "data", url, REDIS_URL)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    ganforge = str(venv / "bin" / "ganforge")
    try:
        _run([ganforge, "migrate"], cwd=outside, env=env, timeout=120)
        for name, args in (("api", ["api", "--port", str(port)]), ("worker", ["worker"])):
            log = (tmp_path / f"{name}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [ganforge, *args],
                    cwd=outside,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        logs = lambda: "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("*.log")))  # noqa: E731
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer key-a"}) as client:
            deadline = time.monotonic() + 90
            while True:
                assert all(p.poll() is None for p in processes), logs()
                try:
                    if client.get("/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the installed API never became ready:\n" + logs()
                time.sleep(0.3)
            response = client.post("/v1/jobs", json=SPEC, timeout=30)
            assert response.status_code == 201, response.text
            job = response.json()
            deadline = time.monotonic() + 120
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline and all(p.poll() is None for p in processes), logs()
                time.sleep(0.3)
                job = client.get(f"/v1/jobs/{job['id']}", timeout=30).json()
            assert job["status"] == "succeeded", (job, logs())
            assert client.get(f"/v1/jobs/{job['id']}/checkpoints/latest", timeout=30).status_code == 200
        # the worker ran the installed code, not the repository's
        assert (
            str(venv)
            in _run([str(venv / "bin" / "python"), "-c", "import worker; print(worker.__file__)"], cwd=outside).stdout
        )
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
        drop_postgres_database(database)
    print(
        f"\nclean install {installed:.0f} s; install + migrate + api + worker + a job {time.monotonic() - started:.0f} s"
    )
