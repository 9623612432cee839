"""The global options (`--url`, `--api-key`, `--data-dir`) and the SDK client the client commands share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ganforge.client import Client

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Options:
    """What was given before the command: `ganforge [--url URL] [--api-key KEY] [--data-dir DIR] COMMAND`."""

    url: str | None = None  # --url, else GANFORGE_URL (typer reads it)
    api_key: str | None = None  # --api-key, else GANFORGE_API_KEY
    data_dir: Path | None = None  # --data-dir given before a server command


def options(ctx: typer.Context) -> Options:
    found = ctx.find_object(Options)
    return found if found is not None else Options()


@contextmanager
def connect(ctx: typer.Context) -> Iterator[Client]:
    """A `ganforge.client.Client` for the global options; an SDK error inside becomes its message and exit status.

    Raises typer.Exit with the status of ganforge/cli/exits.py (2 refused input or a local file that
    cannot be read or written, 3 not found, 4 auth, 5 unreachable, 1 any other refusal).
    """
    from ganforge.cli.exits import report, report_local
    from ganforge.client import Client
    from ganforge.client.errors import GanforgeError

    given = options(ctx)
    url = given.url or DEFAULT_URL
    try:
        with Client(url, given.api_key) as client:
            yield client
    except GanforgeError as error:
        raise typer.Exit(report(error, url)) from None
    except OSError as error:  # a local file (-o FILE, an upload) that cannot be written or read
        where = f"{error.filename}: " if error.filename else ""
        raise typer.Exit(report_local(f"{where}{error.strerror or error}")) from None
