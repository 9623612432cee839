"""Run a server's command-line entry point (uvicorn, celery) with this installation's packages, whatever the
current directory holds.

    python -P -m ganforge.child uvicorn api.app:app --port 8000
    python -P -m ganforge.child celery -A worker.celery_app worker

uvicorn puts its --app-dir (default: the current directory) first on sys.path, and Celery imports the -A app with
the current directory on it: started from a project with its own `models/` or `api/` folder (common in ML
projects), the service imported that folder instead of its own. `-P` keeps the current directory off sys.path
while this module imports ganforge's top-level packages, and a package once imported is not looked up again, so
`api.app` and `worker.celery_app` come from this installation. Pinning loads their `__init__` files only (empty
but for migrations', which loads Alembic where the install has it).
"""

from __future__ import annotations

import importlib
import runpy
import sys

# ganforge's top-level packages (pyproject.toml [tool.setuptools.packages.find]).
PACKAGES = ("api", "worker", "models", "migrations", "ganforge")


def pin_packages() -> list[str]:
    """Import each of PACKAGES that this install can import; returns those imported.

    A package whose own libraries this install leaves out is skipped (migrations needs Alembic, which the worker
    extra does not bring): the server started here does not import it either. Raises ImportError when one of
    ganforge's own packages is missing (a broken install)."""
    pinned = []
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if exc.name == name:
                raise
            continue
        pinned.append(name)
    return pinned


def main() -> None:
    """argv: the module to run as __main__ (uvicorn, celery), then its arguments."""
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -P -m ganforge.child MODULE [ARGS...]")
    pin_packages()
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
