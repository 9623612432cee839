"""The global options (`--url`, `--api-key`, `--data-dir`) and the SDK client the client commands share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer

from ganforge.cli.text import mask_url

if TYPE_CHECKING:
    from ganforge.client import Client

DEFAULT_URL = "http://127.0.0.1:8000"
SDK_DIR = Path(__file__).resolve().parent.parent / "client"


@dataclass(frozen=True)
class Options:
    """What was given before the command: `ganforge [--url URL] [--api-key KEY] [--data-dir DIR] COMMAND`."""

    url: str | None = None  # --url, else GANFORGE_URL (typer reads it)
    api_key: str | None = None  # --api-key, else GANFORGE_API_KEY
    data_dir: Path | None = None  # --data-dir given before a server command


def options(ctx: typer.Context) -> Options:
    found = ctx.find_object(Options)
    return found if found is not None else Options()


# The same options after the command (`ganforge jobs --url URL`): no envvar here, so one given before the
# command is not overridden by the environment; given after, they win over the ones before.
GLOBAL_PANEL = "Global options (before or after the command)"
Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        metavar="URL",
        help=f"the service (default GANFORGE_URL, else {DEFAULT_URL})",
        rich_help_panel=GLOBAL_PANEL,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", metavar="KEY", help="API key (default GANFORGE_API_KEY)", rich_help_panel=GLOBAL_PANEL),
]


def _raised_by_sdk(error: BaseException) -> bool:
    """Whether `error` was raised in ganforge.client's own code: its refusal of an argument, not a bug of ours."""
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and Path(traceback.tb_frame.f_code.co_filename).parent == SDK_DIR


def _say_retry(message: str) -> None:
    """The SDK's `on_retry`: why and how long it waits, dim on stderr, so a slow retry is never a silent one."""
    from ganforge.cli import render

    render.stderr().print(message, style="dim", soft_wrap=True)


@contextmanager
def connect(ctx: typer.Context, url: str | None = None, api_key: str | None = None) -> Iterator[Client]:
    """A `ganforge.client.Client` for `url`/`api_key` (given after the command), else the global options; an SDK
    error inside becomes its message and exit status. Each retry is said on stderr ("retrying GET /v1/jobs in
    1.0 s (503)"); connecting gives up after 5 s a try (the SDK's connect timeout).

    Raises typer.Exit with the status of ganforge/cli/exits.py (2 refused input, an argument the SDK refuses
    (ValueError: a malformed URL, key or id) or a local file that cannot be read or written, 3 not found,
    4 auth, 5 unreachable, 1 any other refusal).
    """
    from ganforge.cli.exits import USAGE, report, report_local, say
    from ganforge.client import Client
    from ganforge.client.errors import GanforgeError

    given = options(ctx)
    url = url or given.url or DEFAULT_URL
    try:
        with Client(url, api_key or given.api_key, on_retry=_say_retry) as client:
            yield client
    except GanforgeError as error:
        raise typer.Exit(report(error, url)) from None
    except OSError as error:  # a local file (-o FILE, an upload) that cannot be written or read
        where = f"{error.filename}: " if error.filename else ""
        raise typer.Exit(report_local(f"{where}{error.strerror or error}")) from None
    except httpx.InvalidURL as error:  # an argument that makes the request's URL impossible ("URL too long")
        say(f"cannot make a request of these arguments: {error}")
        raise typer.Exit(USAGE) from None
    except ValueError as error:
        if not _raised_by_sdk(error):
            raise  # a bug, not the user's input: keep its traceback
        say(str(error).replace(url, mask_url(url)))
        raise typer.Exit(USAGE) from None
