"""`ganforge keys create|list|revoke`: API keys, on the service's job store itself (no API call, no key needed).

    ganforge keys create --owner team-a --scopes read,submit --ttl 30d   # prints the key once, on stdout
    ganforge keys list [--owner team-a] [--json]
    ganforge keys revoke gf_ab12cd34
    ganforge --data-dir ./gf-data keys list                              # the embedded default's store there

For the operator of a deployment (the same GANFORGE_* settings as `ganforge api`): bootstrap the first admin key,
or recover when none is left. With the API, an admin key manages its own owner's keys at /v1/keys. The first key
created turns auth on for a service started without GANFORGE_API_KEYS (api/deps.py Authenticator), within
KEY_CACHE_SECONDS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ganforge.cli import render
from ganforge.cli.exits import NOT_FOUND, USAGE, fail
from ganforge.cli.server import _prepare

if TYPE_CHECKING:
    from models.records import ApiKey
    from models.store import JobStore

app = typer.Typer(
    help="Create, list and revoke API keys on the service's store (for its operator).",
    epilog="create [--owner TEAM] [--scopes SCOPES] [--ttl TTL] [--name NAME] [--json] | "
    "list [--owner TEAM] [--json] | revoke PREFIX",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
Json = Annotated[bool, typer.Option("--json", help="print JSON (for scripts)")]


@contextmanager
def opened_store(ctx: typer.Context) -> Iterator[JobStore]:
    """The deployment's job store (GANFORGE_* settings; `ganforge --data-dir DIR keys ...` sets the data dir),
    checked to be at the schema this version needs."""
    _prepare(ctx, None, "keys")
    from sqlalchemy.exc import SQLAlchemyError

    from migrations import schema_problem
    from models.db import make_engine
    from models.settings import get_settings
    from models.store import JobStore

    engine = make_engine(get_settings().database_url)
    try:
        try:
            problem = schema_problem(engine)
        except SQLAlchemyError as exc:
            fail(
                f"cannot open the job store ({type(exc).__name__}): is it there and migrated (ganforge migrate)?", USAGE
            )
        if problem:
            fail(problem, USAGE)
        yield JobStore(engine)
    finally:
        engine.dispose()


def key_json(record: ApiKey) -> dict[str, Any]:
    """A key as the API lists it (never the key or its hash)."""
    from models.store import as_utc
    from models.store.keys import is_active

    def iso(value: Any) -> str | None:
        return None if value is None else as_utc(value).isoformat().replace("+00:00", "Z")

    return {
        "prefix": record.prefix,
        "owner": record.owner,
        "name": record.name,
        "scopes": list(record.scopes),
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "last_used_at": iso(record.last_used_at),
        "revoked_at": iso(record.revoked_at),
        "revoked": record.revoked_at is not None,
        "active": is_active(record),
        "parent_prefix": record.parent_prefix,
    }


@app.command()
def create(
    ctx: typer.Context,
    owner: Annotated[
        str,
        typer.Option(
            "--owner",
            metavar="TEAM",
            help="the team the key acts for (default: anonymous, who owns everything made while auth was off)",
        ),
    ] = "anonymous",
    scopes: Annotated[
        str,
        typer.Option(
            "--scopes", metavar="SCOPES", help="comma-separated of read, submit, admin (each includes the ones before)"
        ),
    ] = "read,submit",
    ttl: Annotated[
        str | None, typer.Option("--ttl", metavar="TTL", help="expire after 3600s, 90m, 12h, 30d, 2w (default never)")
    ] = None,
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="what the key is for")] = "",
    json_output: Json = False,
) -> None:
    """Create a key; print it once on stdout (only its SHA-256 is stored: it cannot be shown again)."""
    from models.settings import OWNER_MAX_LENGTH
    from models.spec import unwanted_character
    from models.store import utcnow
    from models.store.keys import normalize_scopes, parse_ttl

    fields: list[tuple[str, str]] = []
    normalized: list[str] = []
    if not owner.strip() or len(owner) > OWNER_MAX_LENGTH or unwanted_character(owner) is not None:
        fields.append(("--owner", f"must be 1 to {OWNER_MAX_LENGTH} characters, no control characters"))
    if len(name) > 200 or unwanted_character(name) is not None:
        fields.append(("--name", "must be at most 200 characters, no control characters"))
    try:
        normalized = normalize_scopes(part for part in scopes.split(",") if part.strip())
    except ValueError as exc:
        fields.append(("--scopes", str(exc)))
    expires_at = None
    if ttl is not None:
        try:
            expires_at = utcnow() + parse_ttl(ttl)
        except ValueError as exc:
            fields.append(("--ttl", str(exc)))
    if fields:
        fail("cannot create the key: fix these options", USAGE, fields)
    with opened_store(ctx) as store:
        record, key = store.create_key(owner=owner, scopes=normalized, name=name, expires_at=expires_at)
    if json_output:
        render.print_json({**key_json(record), "key": key})
        return
    print(key, flush=True)
    expiry = f"expires {key_json(record)['expires_at']}" if expires_at else "never expires"
    render.stderr().print(
        f"key {record.prefix} for {record.owner} (scopes {', '.join(record.scopes)}; {expiry}): "
        "shown only now, store it safely; send it as 'Authorization: Bearer <key>' or --api-key",
        soft_wrap=True,
    )


@app.command("list")
def list_keys(
    ctx: typer.Context,
    owner: Annotated[str | None, typer.Option("--owner", metavar="TEAM", help="this team's keys only")] = None,
    json_output: Json = False,
) -> None:
    """List keys, newest first (revoked and expired ones too); never a key or its hash."""
    with opened_store(ctx) as store:
        keys = [key_json(record) for record in store.list_keys(owner=owner)]
    if json_output:
        render.print_json({"keys": keys})
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for header in ("PREFIX", "OWNER", "NAME", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "STATE"):
        table.add_column(header, no_wrap=True)
    for key in keys:
        state = "revoked" if key["revoked"] else "active" if key["active"] else "expired"
        table.add_row(
            key["prefix"],
            key["owner"],
            key["name"] or "-",
            ",".join(key["scopes"]),
            render.when(key["created_at"]),
            render.when(key["expires_at"]) if key["expires_at"] else "never",
            render.when(key["last_used_at"]) if key["last_used_at"] else "-",
            state,
        )
    render.stdout().print(table)


@app.command()
def revoke(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(metavar="PREFIX", help="the key's prefix (gf_ and 8 letters or digits)")],
) -> None:
    """Revoke a key and the keys made through it (POST /v1/keys), transitively: API processes refuse them within
    KEY_CACHE_SECONDS (5 s); they stay listed, revoked."""
    with opened_store(ctx) as store:
        found = store.revoke_key(prefix=prefix.strip())
    if found is None:
        fail(f"no API key {prefix!r} (see `ganforge keys list`)", NOT_FOUND)
    record, revoked = found
    children = [child for child in revoked if child != record.prefix]
    also = f", and the {len(children)} key(s) made through it: {', '.join(children)}" if children else ""
    render.stdout().print(f"key {record.prefix} of {record.owner} revoked{also}", soft_wrap=True)
