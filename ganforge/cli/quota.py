"""`ganforge quota`: your owner's quotas and what you use of them now (GET /v1/quota)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ganforge.cli import render
from ganforge.cli.context import ApiKey, Url, connect

Json = Annotated[bool, typer.Option("--json", help="print the API's JSON answer (for scripts)")]
# At this share of a limit a row turns yellow; at the limit, red (the next request of that kind is refused).
NEAR = 0.8

# (usage field, quota field, label, how a value reads)
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("running_jobs", "running_jobs", "running jobs", "count"),
    ("queued_jobs", "queued_jobs", "queued jobs", "count"),
    ("stored_bytes", "stored_bytes", "stored (data sets + checkpoints)", "bytes"),
    ("uploads_last_hour", "uploads_per_hour", "uploads in the last hour", "count"),
)


def _value(value: int, kind: str) -> str:
    return render.binary_size(value) if kind == "bytes" else str(value)


def quota_table(answer: dict[str, Any]) -> Table:
    """One row per counted quota (used, limit, how full), then the limits that are not counts of use."""
    quotas, usage = answer["quotas"], answer["usage"]
    table = Table(box=None, pad_edge=False, title=f"quotas of {answer['owner']}", title_justify="left")
    for header in ("QUOTA", "USED", "LIMIT", "FULL"):
        table.add_column(header, no_wrap=True, justify="left" if header == "QUOTA" else "right")
    for used_field, limit_field, label, kind in ROWS:
        used, limit = int(usage[used_field]), int(quotas[limit_field])
        share = used / limit if limit else 1.0
        style = "red" if share >= 1 else "yellow" if share >= NEAR else ""
        table.add_row(label, _value(used, kind), _value(limit, kind), Text(f"{share:.0%}", style=style))
    table.add_row("steps per job", "", str(quotas["steps_per_job"]), "")
    table.add_row("highest priority", "", str(quotas["max_priority"]), "")
    return table


def quota(ctx: typer.Context, json_output: Json = False, url: Url = None, api_key: ApiKey = None) -> None:
    """Your quotas and current usage: running and queued jobs, stored bytes, uploads in the last hour, steps per
    job. A submission past queued_jobs or while stored bytes are at the limit is refused (exit 1)."""
    with connect(ctx, url, api_key) as client:
        answer = client.quota().model_dump(mode="json")
    if json_output:
        render.print_json(answer)
        return
    render.stdout().print(quota_table(answer))
    wait = answer["usage"].get("upload_retry_after_seconds")
    if wait is not None:
        render.stdout().print(f"the next upload fits in {render.duration(wait)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `ganforge quota` to `app`."""
    app.command("quota", rich_help_panel="Use the service")(quota)
