"""`ganforge webhooks create|list|delete|deliveries|redeliver|enable`: your owner's webhook endpoints.

    ganforge webhooks create https://hooks.example.com/gf --event job.status --event study.finished
    ganforge webhooks list
    ganforge webhooks deliveries WEBHOOK [--status failed]
    ganforge webhooks redeliver WEBHOOK DELIVERY
    ganforge webhooks delete WEBHOOK

`create` prints the signing secret (whsec_...) once: receivers verify each request's webhook-signature with it,
as the Standard Webhooks spec says (e.g. Python's `standardwebhooks` library).
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any

import typer
from rich.table import Table

from ganforge.cli import render
from ganforge.cli.context import ApiKey, Url, connect
from ganforge.cli.text import clean

app = typer.Typer(
    help="Webhooks: the service POSTs your jobs' status changes, checkpoints and finished studies to your URL.",
    epilog="create URL [--event KIND ...] [--description TEXT] [--json] | list [--json] | delete WEBHOOK [--json] | "
    "deliveries WEBHOOK [--status STATUS] [--limit N] [--json] | redeliver WEBHOOK DELIVERY | enable WEBHOOK",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
WebhookId = Annotated[str, typer.Argument(metavar="WEBHOOK", help="the endpoint's id", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON answer (for scripts)")]
KINDS = ("job.status", "job.checkpoint", "study.finished")


def webhooks_table(webhooks: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "URL", "EVENTS", "STATE", "CREATED"):
        table.add_column(column)
    for webhook in webhooks:
        state = "enabled" if webhook["enabled"] else f"disabled: {webhook.get('disabled_reason') or ''}"
        table.add_row(
            webhook["id"],
            clean(webhook["url"]),
            ",".join(webhook["events"]),
            clean(state),
            render.when(webhook["created_at"]),
        )
    return table


def deliveries_table(deliveries: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "EVENT", "TYPE", "STATUS", "TRIES", "CODE", "MS", "WHEN", "ERROR"):
        table.add_column(column)
    for delivery in deliveries:
        latency = delivery.get("latency_ms")
        table.add_row(
            delivery["id"],
            delivery["event_id"],
            delivery["type"],
            delivery["status"],
            str(delivery["attempts"]),
            str(delivery.get("response_code") or "-"),
            f"{latency:.0f}" if latency is not None else "-",
            render.when(delivery.get("last_attempt_at") or delivery["created_at"]),
            clean(delivery.get("error") or ""),
        )
    return table


@app.command()
def create(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="URL", help="http(s) URL that receives the events")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event", metavar="KIND", help=f"an event kind to send, repeatable: {', '.join(KINDS)} (default all)"
        ),
    ] = None,
    description: Annotated[str, typer.Option("--description", metavar="TEXT", help="what the endpoint is for")] = "",
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Register URL for your events; prints the endpoint's id and its signing secret (shown only now)."""
    with connect(ctx, url, api_key) as client:
        made = client.webhooks.create(target, event or KINDS, description=description).model_dump(mode="json")
    if json_output:
        render.print_json(made)
        return
    render.stdout().print(f"webhook {made['id']} -> {clean(made['url'])} ({', '.join(made['events'])})")
    render.stdout().print(f"secret: {made['secret']}", highlight=False)
    render.stderr().print("the secret is shown only now: verify each request's webhook-signature with it")


@app.command("list")
def list_webhooks(ctx: typer.Context, json_output: Json = False, url: Url = None, api_key: ApiKey = None) -> None:
    """List your webhook endpoints, newest first."""
    with connect(ctx, url, api_key) as client:
        found = [webhook.model_dump(mode="json") for webhook in client.webhooks.list(limit=100)]
    if json_output:
        render.print_json(found)
    elif found:
        render.stdout().print(webhooks_table(found))
    else:
        render.stderr().print("no webhooks")


@app.command()
def delete(
    ctx: typer.Context, webhook_id: WebhookId, json_output: Json = False, url: Url = None, api_key: ApiKey = None
) -> None:
    """Delete an endpoint and its delivery log (events not delivered yet are dropped)."""
    with connect(ctx, url, api_key) as client:
        gone = client.webhooks.delete(webhook_id).model_dump(mode="json")
    if json_output:
        render.print_json(gone)
    else:
        render.stdout().print(f"deleted webhook {gone['id']}")


@app.command()
def deliveries(
    ctx: typer.Context,
    webhook_id: WebhookId,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", metavar="STATUS", help="only deliveries in this status: pending, failed, succeeded, dead"
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, help="show at most N deliveries")] = 20,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """An endpoint's delivery log, newest first: type, status, attempts, the last HTTP status, latency, error."""
    with connect(ctx, url, api_key) as client:
        pages = client.webhooks.deliveries(webhook_id, status=status, limit=min(limit, 500))
        found = [delivery.model_dump(mode="json") for delivery in itertools.islice(pages, limit)]
    if json_output:
        render.print_json(found)
    elif found:
        render.stdout().print(deliveries_table(found))
    else:
        render.stderr().print("no deliveries")


@app.command()
def redeliver(
    ctx: typer.Context,
    webhook_id: WebhookId,
    delivery_id: Annotated[str, typer.Argument(metavar="DELIVERY", help="the delivery's id (from `deliveries`)")],
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Send a delivery's event again (same webhook-id)."""
    with connect(ctx, url, api_key) as client:
        again = client.webhooks.redeliver(webhook_id, delivery_id)
    render.stdout().print(f"queued delivery {again.id} of {again.event_id}")


@app.command()
def enable(ctx: typer.Context, webhook_id: WebhookId, url: Url = None, api_key: ApiKey = None) -> None:
    """Turn a disabled endpoint on again."""
    with connect(ctx, url, api_key) as client:
        webhook = client.webhooks.enable(webhook_id)
    render.stdout().print(f"webhook {webhook.id} enabled")
