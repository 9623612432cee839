"""Packaging: what pyproject.toml declares is enough for each side, and a plain install is the client.

A plain `pip install ganforge` (or of the checkout) is the client: the SDK and the command line, on
httpx, pydantic, typer, rich and pyyaml, without torch or any server library. The extras add the
sides: `api` (no torch), `worker`, `all` (both).

The fast checks follow the import graph of the production code (models, api, worker, ganforge,
migrations) from each side's entry points and find, for every third-party module it reaches, the
distribution that provides it among what that side's install declares. The slow ones install the
project as a user does into fresh venvs: the client alone (no torch, fastapi, sqlalchemy in it)
submits a job to a live service and runs `ganforge --help`; and `.[all]` (the CPU torch wheel first,
no test extras), from a folder outside the repository, runs `ganforge migrate`, `api` and `worker`
against PostgreSQL and Redis, trains a job, serves the dashboard's packaged files, and its API module
imports no torch even where torch is installed (that `.[api]` holds no torch is the import-graph check's).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
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

from tests.conftest import api_only
from tests.service import REDIS_URL, ROOT, create_postgres_database, drop_postgres_database, free_port, service_env

PRODUCTION = ("models", "api", "worker", "ganforge", "migrations")
TORCH = "torch==2.13.0"  # the CPU wheel the Makefile installs (no download: pip's find-links)
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Where each side starts. The client's modules are imported whole (their module-level imports); a
# server's are followed into function bodies too, since a running server calls them.
CLIENT_ENTRIES = ("ganforge", "ganforge.__main__", "ganforge.cli", "ganforge.client")
API_ENTRIES = ("api.app", "migrations")
WORKER_ENTRIES = ("worker.celery_app", "worker.tasks", "worker.generate", "ganforge.generator")
# A server's import graph that reaches these would make the `api` extra pull the worker's weight.
TORCH_SIDE = {"torch", "sklearn", "safetensors"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


def declared(*extras: str) -> set[str]:
    """The distributions `pip install <repo>[extras]` installs by name (our own extras expanded)."""
    names, todo, seen = set(), [*PROJECT["dependencies"]], set()
    for extra in extras:
        todo += PROJECT["optional-dependencies"][extra]
    while todo:
        requirement = todo.pop()
        name = requirement_name(requirement)
        if name != "ganforge":
            names.add(name)
            continue
        for extra in re.findall(r"\[([^\]]*)\]", requirement)[0].split(","):
            if extra.strip() not in seen:
                seen.add(extra.strip())
                todo += PROJECT["optional-dependencies"][extra.strip()]
    return names


def _module_files() -> dict[str, Path]:
    files = {}
    for package in PRODUCTION:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


MODULES = _module_files()


def _imports(module: str, *, in_functions: bool) -> list[str]:
    """Absolute names a module imports (`a.b` and `a.b.name` for `from a.b import name`); TYPE_CHECKING skipped."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if in_function and isinstance(child, ast.Try) and any(_catches_import_error(h) for h in child.handlers):
                continue  # an optional library, imported on use: the function says what to install
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if not inside or in_functions:
                if isinstance(child, ast.Import):
                    found.extend(alias.name for alias in child.names)
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join([*parent, *([child.module] if child.module else [])])
                    found.append(base)
                    found.extend(f"{base}.{alias.name}" for alias in child.names)
            visit(child, inside)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    return handler.type is not None and bool(
        {"ImportError", "ModuleNotFoundError"} & set(re.findall(r"\w+", ast.unparse(handler.type)))
    )


def third_party(entries: tuple[str, ...], *, in_functions: bool) -> dict[str, str]:
    """Top-level third-party module → an import chain from an entry point that reaches it."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    todo = [(entry, entry) for entry in entries]
    while todo:
        module, chain = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [(".".join(parts[:i]), chain) for i in range(1, len(parts))]  # parent packages run first
        if module not in MODULES:
            continue
        for name in _imports(module, in_functions=in_functions):
            top = name.split(".")[0]
            if top in PRODUCTION:
                todo.append((name, f"{chain} > {name}"))
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, chain)
    return found


def undeclared(modules: dict[str, str], wanted: set[str]) -> list[str]:
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, chain in sorted(modules.items()):
        distributions = {canonical(d) for d in providers.get(module, [])}
        if not distributions & wanted:
            missing.append(f"{module} (via {chain}; provided by {sorted(distributions) or 'nothing installed'})")
    return missing


def test_the_client_imports_only_the_plain_install() -> None:
    modules = third_party(CLIENT_ENTRIES, in_functions=False)
    assert {"httpx", "pydantic"} <= set(modules), modules  # the walk found the client
    missing = undeclared(modules, declared())
    assert not missing, "the client imports what a plain install lacks: " + "; ".join(missing)


def test_the_api_imports_only_its_extra_and_never_torch() -> None:
    modules = third_party(API_ENTRIES, in_functions=True)
    assert {"fastapi", "sqlalchemy"} <= set(modules), modules
    assert not TORCH_SIDE & set(modules), {m: modules[m] for m in TORCH_SIDE & set(modules)}
    missing = undeclared(modules, declared("api"))
    assert not missing, "the API imports what `.[api]` lacks: " + "; ".join(missing)
    assert not TORCH_SIDE & {requirement_name(r) for r in PROJECT["optional-dependencies"]["api"]}


def test_the_worker_imports_only_its_extra() -> None:
    modules = third_party(WORKER_ENTRIES, in_functions=True)
    assert {"torch", "celery"} <= set(modules), modules
    missing = undeclared(modules, declared("worker"))
    assert not missing, "the worker imports what `.[worker]` lacks: " + "; ".join(missing)


def test_every_module_the_production_code_imports_is_in_all() -> None:
    modules = third_party(tuple(MODULES), in_functions=True)
    missing = undeclared(modules, declared("all"))
    assert not missing, "imported but not declared in `.[all]`: " + "; ".join(missing)


def test_the_plain_install_holds_no_server_library() -> None:
    # pydantic-core: pydantic's own compiled core (pydantic pins it), declared because models/ import it
    assert declared() == {"httpx", "httpx-sse", "pydantic", "pydantic-core", "typer", "rich", "pyyaml"}, declared()
    assert {"torch", "fastapi", "sqlalchemy", "celery"} <= declared("all")


def test_the_redis_broker_is_declared_with_its_transport_extra() -> None:
    # kombu's Redis transport needs `redis` and `packaging`: only celery[redis] declares both.
    for extra in ("api", "worker"):
        requirements = PROJECT["optional-dependencies"][extra]
        assert any(re.match(r"celery\[[^\]]*\bredis\b[^\]]*\]", r) for r in requirements), (extra, requirements)


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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once from a copy of the checkout (building in the shared tree leaves
    build/ and *.egg-info behind); without build isolation when setuptools is at hand (much faster)."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "__pycache__", "*.egg-info", "build", "tests", "bench", "ganforge-data", "gf-data"
        ),
    )
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation, "-w", str(folder), str(source)])
    (built,) = folder.glob("ganforge-*.whl")
    return built


def _venv(tmp_path: Path) -> tuple[Path, list[str]]:
    """A fresh venv and the pip command that installs into it."""
    venv = tmp_path / "venv"
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
    return venv, pip


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without its venv on PATH and without GANFORGE_* settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GANFORGE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return {**env, **extra}


CLIENT_SNIPPET = """
import json, sys
from ganforge.client import Client
spec = json.loads(sys.argv[1])
with Client(sys.argv[2], api_key="key-a") as client:
    job = client.submit(spec)
    again = client.get(job.id)
    print(json.dumps({"id": job.id, "got": again.id, "status": again.status, "steps": again.spec["training"]["steps"]}))
"""


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_plain_install_is_a_client_without_torch_that_submits_a_job(tmp_path: Path, wheel: Path) -> None:
    started = time.monotonic()
    venv, pip = _venv(tmp_path)
    python, outside = str(venv / "bin" / "python"), tmp_path / "elsewhere"
    outside.mkdir()
    _run([*pip, str(wheel)])
    installed = time.monotonic() - started
    env = _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    for server_side in ("torch", "fastapi", "sqlalchemy", "celery", "uvicorn", "numpy"):
        probe = subprocess.run([python, "-c", f"import {server_side}"], cwd=outside, env=env, capture_output=True)
        assert probe.returncode == 1 and b"ModuleNotFoundError" in probe.stderr, f"{server_side} is installed"
    usage = _run([str(venv / "bin" / "ganforge"), "--help"], cwd=outside, env=env).stdout
    assert "submit" in usage and "worker" in usage, usage

    with api_only("embedded", tmp_path / "service") as service:
        answer = _run([python, "-c", CLIENT_SNIPPET, json.dumps(SPEC), service.url], cwd=outside, env=env)
        job = json.loads(answer.stdout)
        assert job["got"] == job["id"] and job["status"] == "queued" and job["steps"] == 30, job
        with service.client() as client:  # the service has it: the client's submit reached it
            assert client.get(f"/v1/jobs/{job['id']}").json()["spec"]["loss"]["name"] == "nsgan"

    print(f"\nclient install {installed:.0f} s; with its checks {time.monotonic() - started:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_clean_install_of_all_without_test_extras_trains_a_job_on_postgres_and_redis(
    tmp_path: Path, wheel: Path
) -> None:
    started = time.monotonic()
    venv, pip = _venv(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _run([*pip, TORCH])
    _run([*pip, f"{wheel}[all]"])
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

        def logs() -> str:
            return "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("*.log")))

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
            # the dashboard and /docs assets are package data: the installed API serves them
            for path in (
                "/",
                "/docs",
                "/static/vendor/swagger-ui/swagger-ui-bundle.js",
                "/static/vendor/uplot/LICENSE",
            ):
                assert client.get(path, timeout=30).status_code == 200, path
        # torch is installed here, and still the API does not import it (the api extra has none: see the
        # import-graph tests above)
        python = str(venv / "bin" / "python")
        loaded = _run([python, "-c", "import sys, api.app; print('torch' in sys.modules)"], cwd=outside, env=env)
        assert loaded.stdout.strip() == "False"
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
