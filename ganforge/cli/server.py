"""The service's processes: `ganforge up`, `api`, `worker`, `migrate`.

    ganforge up --demo                          # embedded default: migrate, API + one worker, a demo job
    ganforge up --data-dir ./gf-data --port 8011

Settings come from GANFORGE_* environment variables (models/settings.py); `--data-dir`
sets GANFORGE_DATA_DIR for every process the command starts, given before or after the
command. The server's dependencies (uvicorn, SQLAlchemy, Celery, torch) are imported
when one of these commands runs, never by `ganforge --help` or a client command.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ganforge.cli.context import options
from ganforge.cli.exits import USAGE, fail

DATA_DIR = typer.Option(
    "--data-dir",
    metavar="DIR",
    help="GANFORGE_DATA_DIR for this command and the processes it starts (default ./ganforge-data)",
    show_default=False,
)
DataDir = Annotated[Path | None, DATA_DIR]
Host = Annotated[str, typer.Option("--host", metavar="HOST", help="address to listen on")]
Port = Annotated[int, typer.Option("--port", metavar="PORT", min=1, max=65535, help="TCP port")]


# What each command runs on, and the extra that installs it: a client-only install says so instead of a traceback.
NEEDS = {
    "api": (("fastapi", "uvicorn", "sqlalchemy", "pydantic_settings"), "api"),
    "migrate": (("alembic", "sqlalchemy", "pydantic_settings"), "api"),
    "worker": (("celery", "torch", "sqlalchemy", "pydantic_settings"), "worker"),
    "up": (("fastapi", "uvicorn", "alembic", "celery", "torch", "pydantic_settings"), "all"),
    "keys": (("alembic", "sqlalchemy", "pydantic_settings"), "api"),  # ganforge/cli/keys.py: on the store itself
}


def _prepare(ctx: typer.Context, data_dir: Path | None, command: str | None = None) -> None:
    """Check the server's dependencies are installed, set GANFORGE_DATA_DIR (the command's --data-dir, else the
    one before the command), log at INFO, and check the settings. A missing dependency or invalid settings are
    one line on stderr and exit 2, before anything starts. `command`: the NEEDS entry (default: ctx's name)."""
    name = command or ctx.info_name or "up"
    modules, extra = NEEDS[name]
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        fail(
            f"`ganforge {name}` runs the service, and this install is the client only "
            f"({', '.join(missing)} missing): pip install 'ganforge[{extra}]'",
            USAGE,
        )
    chosen = data_dir if data_dir is not None else options(ctx).data_dir
    if chosen is not None:
        os.environ["GANFORGE_DATA_DIR"] = str(chosen.expanduser().resolve())
    from pydantic import ValidationError

    from models.settings import get_settings  # after GANFORGE_DATA_DIR is set: settings are read once

    try:
        get_settings()
    except ValueError as exc:  # pydantic's ValidationError, or pydantic-settings' SettingsError (not JSON)
        # One readable refusal instead of a traceback from whichever process reads the settings first.
        reasons = settings_problems(exc) if isinstance(exc, ValidationError) else unparsed_setting(exc)
        if reasons is None:
            raise
        print(f"ganforge: refusing to start, the GANFORGE_* settings are invalid: {reasons}", file=sys.stderr)
        raise typer.Exit(USAGE) from None
    from models.logs import configure_logging

    configure_logging(get_settings().log_format)  # GANFORGE_LOG_FORMAT: text or json


def settings_problems(exc: Any) -> str:
    """A pydantic ValidationError of Settings as `GANFORGE_X: why; ...`. A validator that already names the
    variable (`GANFORGE_OWNER_QUOTAS at vision.queued_job: ...`) is said as it is, not under pydantic's location."""
    reasons = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message.replace("Extra inputs are not permitted", "no such field")
        if message.startswith("GANFORGE_") or not error["loc"]:
            reasons.append(message)
        else:
            reasons.append(f"GANFORGE_{'_'.join(map(str, error['loc'])).upper()}: {message}")
    return "; ".join(reasons)


def unparsed_setting(exc: ValueError) -> str | None:
    """pydantic-settings' SettingsError for a JSON setting that is not JSON (GANFORGE_OWNER_QUOTAS='{bad') as
    `GANFORGE_OWNER_QUOTAS: not valid JSON (why)`; None for any other ValueError (a bug: keep its traceback)."""
    found = re.match(r'error (?:parsing|getting) value for field "(\w+)"', str(exc))
    if found is None:
        return None
    cause = exc.__cause__
    why = f" ({cause})" if cause is not None and str(cause) else ""
    return f"GANFORGE_{found.group(1).upper()}: not valid JSON{why}"


def up(
    ctx: typer.Context,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    data_dir: DataDir = None,
    demo: Annotated[bool, typer.Option("--demo", help="submit a small ring8 job once the API is ready")] = False,
    auth: Annotated[
        bool, typer.Option("--auth", help="turn auth on: print a first admin key if the store has no active one")
    ] = False,
    admin_owner: Annotated[
        str, typer.Option("--admin-owner", metavar="TEAM", help="the owner of that first admin key")
    ] = "admin",
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            max=256,
            help="training worker processes on the default queue; each gets cores ÷ N torch threads unless "
            "GANFORGE_WORKER_THREADS is set",
        ),
    ] = 1,
) -> None:
    """Migrate, then run the API, one training worker and one generate worker (each restarted if it dies) until
    Ctrl-C. With auth on and no admin key to manage keys, print a first admin key once (see first_admin_key)."""
    from models.settings import OWNER_MAX_LENGTH
    from models.spec import unwanted_character

    if not admin_owner.strip() or len(admin_owner) > OWNER_MAX_LENGTH or unwanted_character(admin_owner) is not None:
        fail(f"--admin-owner must be 1 to {OWNER_MAX_LENGTH} characters, no control characters", USAGE)
    _prepare(ctx, data_dir)
    from ganforge import supervisor

    raise typer.Exit(supervisor.Up(host, port, workers).run(demo, lambda: first_admin_key(admin_owner, auth)))


def first_admin_key(owner: str, auth: bool) -> str | None:
    """The first admin key, made for `owner` and printed once on stdout (never logged), or None.

    Made when auth is on through the store (`--auth`, GANFORGE_ENVIRONMENT=production, or the store already holds
    a key, revoked or expired ones too) and no active store key has the admin scope. GANFORGE_API_KEYS set: None
    (each environment key has every scope already). Call after migrating, before the API starts.
    """
    from models.db import make_engine
    from models.settings import get_settings
    from models.store import JobStore

    settings = get_settings()
    if settings.api_keys:
        return None
    engine = make_engine(settings.database_url)
    try:
        store = JobStore(engine)
        if not (auth or settings.environment == "production" or store.has_keys()):
            return None
        if store.has_usable_key(scope="admin"):
            return None
        record, key = store.create_key(owner=owner, scopes=["admin"], name="first admin key (ganforge up)")
    finally:
        engine.dispose()
    from models.hints import store_command, store_note

    store_keys = store_command(settings.data_dir, "keys")
    print(
        f"\nauth is on. The first admin key, for owner {record.owner!r} (shown only now: the store keeps its hash):\n"
        f"  {key}\n"
        "Send it as 'Authorization: Bearer <key>' or `ganforge --api-key <key> ...`. Make a team's keys on this\n"
        f"machine with `{store_keys} create --owner TEAM --scopes read,submit`{store_note()} (--scopes admin: a key\n"
        "that makes its team's keys with `ganforge keys create --remote`);\n"
        f"`{store_keys} revoke PREFIX` revokes one.\n",
        flush=True,
    )
    return key


def api(ctx: typer.Context, host: Host = "127.0.0.1", port: Port = 8000, data_dir: DataDir = None) -> None:
    """Run the HTTP API (uvicorn) alone."""
    _prepare(ctx, data_dir)
    from ganforge import supervisor

    command = supervisor.api_command(host, port)
    os.execv(command[0], command)


def worker(
    ctx: typer.Context,
    data_dir: DataDir = None,
    generate: Annotated[
        bool,
        typer.Option(
            "--generate", help="serve generate requests (POST /v1/jobs/{id}/generate) on their own queue, not training"
        ),
    ] = False,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            metavar="NAME",
            help="a named queue to take jobs from (a job's resources.queue); repeat for several "
            "(default: GANFORGE_WORKER_QUEUES, else GANFORGE_QUEUE)",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            metavar="N",
            min=1,
            help="torch intra-op threads (default: GANFORGE_WORKER_THREADS, else all cores)",
            show_default=False,
        ),
    ] = None,
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu",
            metavar="I",
            help="train on GPU I alone (its CUDA_VISIBLE_DEVICES; several: 0,1 for a job with resources.gpus 2); "
            "default: GANFORGE_WORKER_GPU, else every GPU the process sees",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            metavar="PORT",
            min=1,
            max=65535,
            help="serve this training worker's Prometheus metrics on PORT (default: GANFORGE_WORKER_METRICS_PORT, "
            "else off); the address is GANFORGE_WORKER_METRICS_HOST (127.0.0.1)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run one Celery training worker (one job at a time) on its named queues, or with --generate one generate
    worker."""
    names = _queue_names(queue or [])
    if names:
        os.environ["GANFORGE_WORKER_QUEUES"] = ",".join(names)  # before the settings are read
    if threads is not None:
        os.environ["GANFORGE_WORKER_THREADS"] = str(threads)
    if metrics_port is not None:
        os.environ["GANFORGE_WORKER_METRICS_PORT"] = str(metrics_port)
    if gpu is not None:
        if re.fullmatch(r"[0-9]+(,[0-9]+)*", gpu) is None:
            fail(f"--gpu {gpu!r}: a GPU index, or several separated by commas (0 or 0,1)", USAGE)
        os.environ["GANFORGE_WORKER_GPU"] = gpu  # worker/celery_app.py makes it CUDA_VISIBLE_DEVICES
    _prepare(ctx, data_dir)
    from ganforge import supervisor

    command = supervisor.worker_command(generate=generate)
    os.execv(command[0], command)


def _queue_names(names: list[str]) -> list[str]:
    """The --queue names, each checked against a job's resources.queue pattern (else one line and exit 2)."""
    from models.spec import QUEUE_NAME, reserved_queue

    for name in names:
        if re.fullmatch(QUEUE_NAME, name) is None:
            fail(f"--queue {name!r}: a queue name is 1 to 63 of a-z 0-9 . _ - (starting with a letter or digit)", USAGE)
        if (problem := reserved_queue(name)) is not None:
            fail(f"--queue {problem}", USAGE)
    return list(dict.fromkeys(names))


def migrate(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """Bring the job store's schema to the latest revision."""
    _prepare(ctx, data_dir)
    from ganforge import supervisor

    supervisor.migrate()


COMMANDS: dict[str, Callable[..., None]] = {"up": up, "api": api, "worker": worker, "migrate": migrate}


def register(app: typer.Typer) -> None:
    """Add the server commands to `app`."""
    for name, function in COMMANDS.items():
        app.command(name, rich_help_panel="Run the service")(function)
