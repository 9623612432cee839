"""Exit statuses of `ganforge`, and the one place that turns an error into a message and a status.

    0  ok
    1  the job failed or was cancelled; or the service refused for another reason (409 conflict, 429, 5xx)
    2  usage: a bad option or argument, a spec the API refuses (422), a file that cannot be read or written
    3  not found: no such job, data set, sample, checkpoint or catalog entry (404)
    4  auth: the API key is missing or wrong (401), or lacks the scope the request needs (403)
    5  the service could not be reached at its URL (nothing listening, DNS, timeout), or what answers there is
       not a ganforge API

An error is printed to stderr as one line, then one line per invalid field (its path and
what is wrong), control characters escaped and a URL's password masked; never a traceback.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, NoReturn

import typer

from ganforge.cli.text import clean, mask_url

if TYPE_CHECKING:
    from ganforge.client.errors import GanforgeError

OK = 0
JOB_FAILED = 1
USAGE = 2
NOT_FOUND = 3
AUTH = 4
UNREACHABLE = 5


def say(message: str, fields: list[tuple[str, str]] | None = None) -> None:
    """`ganforge: message`, then `  field: why` per field, on stderr; control characters escaped (text.clean)."""
    print(f"ganforge: {clean(message)}", file=sys.stderr)
    for field, why in fields or []:
        print(f"  {clean(field)}: {clean(why)}", file=sys.stderr)


def fail(message: str, status: int, fields: list[tuple[str, str]] | None = None) -> NoReturn:
    """Print `message` (and the fields) as `say` does, then exit with `status` (raises typer.Exit)."""
    say(message, fields)
    raise typer.Exit(status)


def report_local(message: str) -> int:
    """Print a local failure (a file that cannot be read or written); its exit status, 2."""
    say(message)
    return USAGE


def report(error: GanforgeError, url: str) -> int:
    """Print an SDK error (`url`: the service it was talking to, its password masked here); its exit status."""
    from ganforge.client import errors

    shown = mask_url(url)
    message = error.message.replace(url, shown)
    if isinstance(error, errors.UnexpectedResponse):
        say(f"{message} (is {shown} a ganforge service? see --url / GANFORGE_URL)")
        return UNREACHABLE
    if isinstance(error, errors.ConnectionFailed):
        bare = re.sub(r"//[^/@]*@", "//", url)  # httpx names the URL without its user info
        where = "" if shown in message or bare in message else f" at {shown}"
        say(f"{message}{where} (is the service running? see --url / GANFORGE_URL)")
        return UNREACHABLE
    fields = [(field.field or "(body)", field.message) for field in error.fields]
    if isinstance(error, errors.ValidationFailed) and fields:
        # The API's message repeats the first field's; the fields alone say it all.
        say(f"the service refused the request ({error.status}): fix these fields", fields)
        return USAGE
    say(message, fields if len(fields) > 1 else None)
    if isinstance(error, errors.ValidationFailed):
        return USAGE
    if isinstance(error, errors.NotFound):
        return NOT_FOUND
    if isinstance(error, errors.Unauthorized):
        say("pass --api-key KEY or set GANFORGE_API_KEY" if error.status == 401 else "this key may not do that")
        return AUTH
    return JOB_FAILED
