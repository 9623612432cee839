"""`ganforge keys create|list|revoke`: API keys, on the service's job store itself (no API call, no key needed),
or with `--remote` over the API with your admin key; `ganforge whoami`: who your key is.

    ganforge keys create --owner team-a --scopes read,submit --ttl 30d   # prints the key once, on stdout
    ganforge keys list [--owner team-a] [--json]
    ganforge keys revoke gf_ab12cd34
    ganforge --data-dir ./gf-data keys list                              # the embedded default's store there
    ganforge --api-key $ADMIN keys create --remote --scopes submit        # over the API, for the key's own owner
    ganforge --api-key $KEY whoami

On the store: for the operator of a deployment (the same GANFORGE_* settings as `ganforge api`), to bootstrap
the first admin key (`ganforge up --auth` prints one too), make any team's keys, or recover when none is left. The
first key created turns auth on for a service started without GANFORGE_API_KEYS (api/deps.py Authenticator),
within KEY_CACHE_SECONDS. With --remote: a team's admin key manages its own owner's keys at /v1/keys; a key made
so is revoked with the key that made it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ganforge.cli import render
from ganforge.cli.context import ApiKey as ApiKeyOption
from ganforge.cli.context import Url, connect
from ganforge.cli.exits import NOT_FOUND, USAGE, fail
from ganforge.cli.server import DATA_DIR, _prepare

if TYPE_CHECKING:
    from models.records import ApiKey
    from models.store import JobStore

app = typer.Typer(
    help="Create, list and revoke API keys on the service's store (for its operator).",
    epilog="create [--owner TEAM] [--scopes SCOPES] [--ttl TTL] [--name NAME] [--json] [--remote] | "
    "list [--owner TEAM] [--json] [--remote] | revoke PREFIX [--remote]; each with [--data-dir DIR]",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
OWNER_REMOTE = "with --remote: your key's own owner or left out (--owner TEAM is for the command on the store)"
Json = Annotated[bool, typer.Option("--json", help="print JSON (for scripts)")]
# --data-dir after the command too (`ganforge keys create --data-dir DIR ...`), as for the server commands.
DataDir = Annotated[Path | None, DATA_DIR]
Remote = Annotated[
    bool,
    typer.Option(
        "--remote", help="over the API (--url) with your admin key (--api-key), for its own owner; not on the store"
    ),
]


@contextmanager
def opened_store(ctx: typer.Context, data_dir: Path | None = None) -> Iterator[JobStore]:
    """The deployment's job store (GANFORGE_* settings; `--data-dir DIR`, before or after `keys ...`, sets the data
    dir), checked to be at the schema this version needs."""
    _prepare(ctx, data_dir, "keys")
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
        str | None,
        typer.Option(
            "--owner",
            metavar="TEAM",
            help="the team the key acts for (default: anonymous, who owns everything made while auth was off; "
            "with --remote, the admin key's own owner, the only one allowed)",
            show_default=False,
        ),
    ] = None,
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
    remote: Remote = False,
    url: Url = None,
    api_key: ApiKeyOption = None,
    data_dir: DataDir = None,
) -> None:
    """Create a key; print it once on stdout (only its SHA-256 is stored: it cannot be shown again)."""
    from models.settings import OWNER_MAX_LENGTH
    from models.spec import unwanted_character
    from models.store import utcnow
    from models.store.keys import normalize_scopes, parse_ttl

    if remote:
        create_remote(ctx, owner, scopes, ttl, name, json_output, url, api_key)
        return
    owner = "anonymous" if owner is None else owner
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
    with opened_store(ctx, data_dir) as store:
        record, key = store.create_key(owner=owner, scopes=normalized, name=name, expires_at=expires_at)
    if json_output:
        render.print_json({**key_json(record), "key": key})
        return
    say_created(key_json(record), key)


def say_created(record: dict[str, Any], key: str) -> None:
    """The key alone on stdout (for `KEY=$(ganforge keys create ...)`), what it is on stderr."""
    print(key, flush=True)
    expiry = f"expires {record['expires_at']}" if record["expires_at"] else "never expires"
    render.stderr().print(
        f"key {record['prefix']} for {record['owner']} (scopes {', '.join(record['scopes'])}; {expiry}): "
        "shown only now, store it safely; send it as 'Authorization: Bearer <key>' or --api-key",
        soft_wrap=True,
    )


def create_remote(
    ctx: typer.Context,
    owner: str | None,
    scopes: str,
    ttl: str | None,
    name: str,
    json_output: bool,
    url: str | None,
    api_key: str | None,
) -> None:
    """`keys create --remote`: POST /v1/keys with the caller's admin key (the API checks every field)."""
    with connect(ctx, url, api_key) as client:
        if owner is not None and owner != client.whoami().owner:
            fail(
                "cannot create the key: fix these options",
                USAGE,
                [("--owner", OWNER_REMOTE)],
            )
        created = client.keys.create([part for part in scopes.split(",") if part.strip()], name=name, ttl=ttl)
    record = created.model_dump(mode="json")
    if json_output:
        render.print_json(record)
        return
    say_created(record, created.key)


@app.command("list")
def list_keys(
    ctx: typer.Context,
    owner: Annotated[str | None, typer.Option("--owner", metavar="TEAM", help="this team's keys only")] = None,
    json_output: Json = False,
    remote: Remote = False,
    url: Url = None,
    api_key: ApiKeyOption = None,
    data_dir: DataDir = None,
) -> None:
    """List keys, newest first (revoked and expired ones too); never a key or its hash. --json: a JSON list, as
    `ganforge jobs --json` prints. With --remote, --owner is the key's own owner or left out (else exit 2)."""
    if remote:
        with connect(ctx, url, api_key) as client:
            # The API lists the admin key's own owner's keys only: another --owner would print an empty table.
            if owner is not None and owner != client.whoami().owner:
                fail("cannot list the keys: fix these options", USAGE, [("--owner", OWNER_REMOTE)])
            keys = [key.model_dump(mode="json") for key in client.keys.list()]
    else:
        with opened_store(ctx, data_dir) as store:
            keys = [key_json(record) for record in store.list_keys(owner=owner)]
    if json_output:
        render.print_json(keys)
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
    remote: Remote = False,
    url: Url = None,
    api_key: ApiKeyOption = None,
    data_dir: DataDir = None,
) -> None:
    """Revoke a key and the keys made through it (POST /v1/keys), transitively: API processes refuse them within
    KEY_CACHE_SECONDS (5 s), the one that revoked them (--remote) at once; they stay listed, revoked."""
    if remote:
        with connect(ctx, url, api_key) as client:
            answer = client.keys.revoke(prefix.strip())
        owner, children = answer.owner, answer.also_revoked
    else:
        with opened_store(ctx, data_dir) as store:
            found = store.revoke_key(prefix=prefix.strip())
        if found is None:
            fail(f"no API key {prefix!r} (see `ganforge keys list`)", NOT_FOUND)
        record, revoked = found
        owner, children = record.owner, [child for child in revoked if child != record.prefix]
    also = f", and the {len(children)} key(s) made through it: {', '.join(children)}" if children else ""
    render.stdout().print(f"key {prefix.strip()} of {owner} revoked{also}", soft_wrap=True)


def whoami(ctx: typer.Context, json_output: Json = False, url: Url = None, api_key: ApiKeyOption = None) -> None:
    """Who your API key is: its owner, id (prefix, or env:<owner>), scopes and expiry."""
    with connect(ctx, url, api_key) as client:
        me = client.whoami()
    if json_output:
        render.print_json(me.model_dump(mode="json"))
        return
    if not me.auth:
        render.stdout().print("auth is off: every caller is anonymous, with every scope", soft_wrap=True)
        return
    expiry = f"expires {me.model_dump(mode='json')['expires_at']}" if me.expires_at else "never expires"
    render.stdout().print(f"{me.owner}: key {me.key} (scopes {', '.join(me.scopes)}; {expiry})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `keys` (this module's commands) and `whoami` to `app`."""
    app.add_typer(globals()["app"], name="keys", rich_help_panel="Run the service")
    app.command("whoami", rich_help_panel="Use the service")(whoami)
