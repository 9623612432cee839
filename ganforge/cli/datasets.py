"""`ganforge datasets upload|list|show|delete`: your own data, uploaded once and used by id in any job."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated

import typer

from ganforge.cli import render
from ganforge.cli.context import ApiKey, Url, connect
from ganforge.cli.exits import USAGE, fail

app = typer.Typer(
    help="Upload, list, show and delete your data sets.",
    # Each subcommand's options at a glance, so `ganforge datasets --help` answers without a second call.
    epilog=(
        "upload FILE [--name NAME] [--resize PX] [--json] | list [--limit N] [--json] | "
        "show DATASET [--json] | delete DATASET"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
DatasetId = Annotated[str, typer.Argument(metavar="DATASET", help="the data set's id", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON answer (for scripts)")]


@app.command()
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help=".npz (x: N×D rows or N×[C×]H×W images, optional integer y) or .zip of class folders of PNG/JPEG",
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", metavar="NAME", help="default: the file's name")] = None,
    resize: Annotated[
        int | None, typer.Option("--resize", metavar="PX", min=1, help="resize images to PX×PX on arrival")
    ] = None,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Upload a data set (with a progress bar); print its id, to use as {"dataset": {"id": ...}} in a spec."""
    if not file.is_file():
        fail(f"{file}: no such file", USAGE)
    with connect(ctx, url, api_key) as client, render.transfer("upload") as progress:
        dataset = client.datasets.upload(file, name, resize=resize, progress=progress)
    if json_output:
        render.print_json(dataset.model_dump(mode="json"))
    else:
        render.stdout().print(f"data set {dataset.id} ({dataset.name})", soft_wrap=True)


@app.command("list")
def list_datasets(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, help="show at most N data sets")] = 50,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """List your data sets, newest first."""
    with connect(ctx, url, api_key) as client:
        found = [dataset.model_dump(mode="json") for dataset in itertools.islice(client.datasets.list(), limit)]
    if json_output:
        render.print_json(found)
    elif found:
        render.stdout().print(render.datasets_table(found))
    else:
        render.stderr().print("no data sets")


@app.command()
def show(
    ctx: typer.Context, dataset_id: DatasetId, json_output: Json = False, url: Url = None, api_key: ApiKey = None
) -> None:
    """One data set: kind, shape, classes, size, content hash."""
    with connect(ctx, url, api_key) as client:
        dataset = client.datasets.get(dataset_id).model_dump(mode="json")
    if json_output:
        render.print_json(dataset)
    else:
        render.stdout().print(render.dataset_details(dataset))


@app.command()
def delete(ctx: typer.Context, dataset_id: DatasetId, url: Url = None, api_key: ApiKey = None) -> None:
    """Delete a data set and its files (refused, exit 1, while a queued or running job uses it)."""
    with connect(ctx, url, api_key) as client:
        client.datasets.delete(dataset_id)
    render.stdout().print(f"deleted data set {dataset_id}", soft_wrap=True)
