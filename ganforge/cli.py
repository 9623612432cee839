"""The `ganforge` command line: `up`, `api`, `worker`, `migrate`.

    ganforge up --demo                          # embedded default: migrate, API + one worker, a demo job
    ganforge up --data-dir ./gf-data --port 8011

Settings come from GANFORGE_* environment variables (models/settings.py);
`--data-dir` sets GANFORGE_DATA_DIR for every process the command starts. It is
accepted before or after the subcommand, as every option a subcommand takes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("ganforge")

COMMANDS = ("up", "api", "worker", "migrate")


def port_number(text: str) -> int:
    """A TCP port, 1..65535; argparse turns the ValueError into a usage error naming --port."""
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(text)
    return port


port_number.__name__ = "port"  # argparse's message reads "invalid port value: '0'"


def build_parser() -> argparse.ArgumentParser:
    """The whole argument parser, every subcommand with its options; parsing starts nothing."""
    # SUPPRESS: an option given before the subcommand is not reset by the subcommand's default.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="GANFORGE_DATA_DIR for this command and the processes it starts (default ./ganforge-data)",
    )
    serving = argparse.ArgumentParser(add_help=False)
    serving.add_argument("--host", default="127.0.0.1", metavar="HOST", help="address to listen on (%(default)s)")
    serving.add_argument("--port", type=port_number, default=8000, metavar="PORT", help="TCP port (%(default)s)")

    parser = argparse.ArgumentParser(prog="ganforge", description="GAN training as a service", parents=[shared])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up",
        parents=[shared, serving],
        help="embedded default: migrate, then the API and one worker",
        description="Migrate, then run the API and one worker (restarted if it dies) until Ctrl-C.",
    )
    up.add_argument("--demo", action="store_true", help="submit a small ring8 job once the API is ready")
    commands.add_parser("api", parents=[shared, serving], help="run the HTTP API (uvicorn)")
    commands.add_parser("worker", parents=[shared], help="run one Celery training worker (one job at a time)")
    commands.add_parser("migrate", parents=[shared], help="bring the job store's schema to the latest revision")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `ganforge` with `argv` (default sys.argv[1:]); the exit status. `api` and `worker` exec.

    Exit status 2: a usage error, or settings that fail validation (nothing is started).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    data_dir: Path | None = getattr(args, "data_dir", None)
    if data_dir is not None:
        os.environ["GANFORGE_DATA_DIR"] = str(data_dir.expanduser().resolve())
    from pydantic import ValidationError

    from ganforge import supervisor  # after GANFORGE_DATA_DIR is set: settings are read once
    from models.settings import get_settings

    try:
        get_settings()
    except ValidationError as exc:
        # One readable refusal instead of a traceback from whichever process reads the settings first.
        reasons = "; ".join(
            f"GANFORGE_{'_'.join(map(str, error['loc'])).upper()}: {error['msg']}" if error["loc"] else error["msg"]
            for error in exc.errors()
        )
        print(f"ganforge: refusing to start, the GANFORGE_* settings are invalid: {reasons}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        supervisor.migrate()
        return 0
    if args.command == "up":
        return supervisor.Up(args.host, args.port).run(args.demo)
    command = supervisor.api_command(args.host, args.port) if args.command == "api" else supervisor.worker_command()
    os.execv(command[0], command)
    return 0  # not reached: execv replaces this process
