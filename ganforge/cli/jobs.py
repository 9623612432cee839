"""The client commands on jobs: submit, jobs, show, follow, events, cancel, delete, download, samples, catalog.

Each talks HTTP through `ganforge.client`; `--json` prints what the API answered, for scripts.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ganforge.cli import render
from ganforge.cli.context import ApiKey, Url, connect
from ganforge.cli.exits import NOT_FOUND, fail
from ganforge.cli.follow import follow_job
from ganforge.cli.overrides import load_spec

JobId = Annotated[str, typer.Argument(metavar="JOB", help="the job's id (what `submit` printed)", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON answer (for scripts)")]


def _step(text: str) -> int | str:
    """`latest` or a step number ≥ 0, for --step."""
    if text == "latest":
        return text
    if not re.fullmatch(r"\d+", text):
        raise typer.BadParameter(f"{text!r} is neither a step number nor latest", param_hint="'--step'")
    return int(text)


Step = Annotated[str, typer.Option("--step", metavar="N", help="a step number, or latest")]


def submit(
    ctx: typer.Context,
    spec_file: Annotated[
        str, typer.Argument(metavar="SPEC", help="the job spec: a .yaml, .yml or .json file, or - for stdin")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="PATH=VALUE",
            help="override one field, e.g. --set loss.lr_d=1e-4 (VALUE as JSON or YAML, else a string); repeatable",
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="then follow it live (as `ganforge follow`)")] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="print only the new job's id on stdout (JOB=$(ganforge submit ... -q))"),
    ] = False,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Submit a training job; print its id (and follow it with --follow: exit 1 if it fails)."""
    spec = load_spec(spec_file, overrides or [])
    with connect(ctx, url, api_key) as client:
        job = client.submit(spec)
        if quiet:
            print(job.id, flush=True)
        elif json_output and not follow:
            render.print_json(job.model_dump(mode="json"))
        elif not json_output:
            render.stdout().print(
                f"submitted job {job.id} ({job.name}, {job.status}); follow it with: ganforge follow {job.id}",
                soft_wrap=True,
            )
        if follow:
            raise typer.Exit(follow_job(client, job.id, json_output=json_output, quiet=quiet))


def list_jobs(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", metavar="STATUS", help="queued, running, cancelling, succeeded, failed or cancelled"),
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", metavar="KEY:VALUE", help="only jobs with this tag")] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, help="show at most N jobs")] = 20,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """List your jobs, newest first."""
    with connect(ctx, url, api_key) as client:
        jobs = [
            job.model_dump(mode="json")
            for job in itertools.islice(client.list(status=status, tag=tag, limit=min(limit, 500)), limit)
        ]
    if json_output:
        render.print_json(jobs)
    elif jobs:
        render.stdout().print(render.jobs_table(jobs))
    else:
        render.stderr().print("no jobs" + (" with these filters" if status or tag else ""))


def show(ctx: typer.Context, job_id: JobId, json_output: Json = False, url: Url = None, api_key: ApiKey = None) -> None:
    """One job: status, progress, error, latest metrics and the spec with every default."""
    with connect(ctx, url, api_key) as client:
        job = client.get(job_id).model_dump(mode="json")
    if json_output:
        render.print_json(job)
    else:
        render.stdout().print(render.job_details(job))


def follow(ctx: typer.Context, job_id: JobId, url: Url = None, api_key: ApiKey = None) -> None:
    """Follow a job live (progress, losses) until it ends; Ctrl-C detaches. Exit 1 if it fails or is cancelled."""
    with connect(ctx, url, api_key) as client:
        raise typer.Exit(follow_job(client, job_id))


def events(
    ctx: typer.Context,
    job_id: JobId,
    after: Annotated[int | None, typer.Option("--after", metavar="N", help="only events after event N")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Print a job's event log (status changes, metrics, samples, checkpoints), live until the job ends."""
    with connect(ctx, url, api_key) as client:
        for event in client.events(job_id, after=after):
            shown = {"id": event.id, "type": event.type, "data": event.data}
            if json_output:
                render.print_json_line(shown)
            else:
                render.stdout().print(render.event_line(shown), soft_wrap=True)


def cancel(
    ctx: typer.Context, job_id: JobId, json_output: Json = False, url: Url = None, api_key: ApiKey = None
) -> None:
    """Cancel a job: a queued one at once, a running one within about a second (its last checkpoint is kept)."""
    with connect(ctx, url, api_key) as client:
        job = client.cancel(job_id).model_dump(mode="json")
    if json_output:
        render.print_json(job)
    else:
        render.stdout().print(f"job {job['id']} is {job['status']}", soft_wrap=True)


def delete(
    ctx: typer.Context,
    job_id: JobId,
    checkpoint: Annotated[
        int | None,
        typer.Option("--checkpoint", metavar="N", min=0, help="delete only the checkpoint at this step"),
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Delete an ended job and everything it produced (its checkpoints' bytes leave your quota), or with
    --checkpoint one of its checkpoints. Refused (exit 1) for a job still queued or running: cancel it first."""
    with connect(ctx, url, api_key) as client:
        if checkpoint is None:
            client.delete(job_id)
        else:
            client.delete_checkpoint(job_id, checkpoint)
    what = f"the checkpoint at step {checkpoint} of job {job_id}" if checkpoint is not None else f"job {job_id}"
    render.stdout().print(f"deleted {what}", soft_wrap=True)


def download(
    ctx: typer.Context,
    job_id: JobId,
    step: Step = "latest",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="the file, or a folder for JOB-STEP.safetensors (default: here)"
        ),
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Download a checkpoint's generator and discriminator weights (safetensors; the spec is in its metadata)."""
    chosen = _step(step)
    with connect(ctx, url, api_key) as client, render.transfer("checkpoint") as progress:
        path = client.download_checkpoint(job_id, chosen, output, progress=progress)
    render.stdout().print(f"wrote {path}", soft_wrap=True)


def samples(
    ctx: typer.Context,
    job_id: JobId,
    step: Annotated[
        str | None,
        typer.Option("--step", metavar="N", help="download this snapshot (a step, or latest) instead of listing"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="where to write it (default JOB-STEP.png)")
    ] = None,
    npy: Annotated[bool, typer.Option("--npy", help="the raw generated batch (.npy) instead of the picture")] = False,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """List a job's sample snapshots, or download one with --step (a PNG picture, or .npy with --npy)."""
    with connect(ctx, url, api_key) as client:
        if step is None:
            listed = [sample.model_dump(mode="json") for sample in client.samples(job_id)]
            if json_output:
                render.print_json(listed)
            elif listed:
                render.stdout().print(render.samples_table(listed))
            else:
                render.stderr().print(f"job {job_id} has no samples yet")
            return
        chosen = _step(step)
        content = client.sample_npy(job_id, chosen) if npy else client.sample_png(job_id, chosen)
        path = output or Path(f"{job_id}-{chosen}.{'npy' if npy else 'png'}")
        path.write_bytes(content)
    render.stdout().print(f"wrote {path}", soft_wrap=True)


def catalog(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="a loss, architecture or data set", show_default=False)
    ] = None,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Every loss, architecture and built-in data set with its defaults and paper; one of them in full; or a whole
    section (losses, architectures, datasets, quality, watch)."""
    with connect(ctx, url, api_key) as client:
        body: dict[str, Any] = client.catalog()
    if name is None:
        if json_output:
            render.print_json(body)
        else:
            render.stdout().print(render.catalog_tables(body))
        return
    if name in body:  # a section's name (`catalog quality`): its entries were searched below, never the section
        if json_output:
            render.print_json(body[name])
        else:
            for entry_name, entry in body[name].items():
                render.stdout().print(render.catalog_entry(name, entry_name, entry))
        return
    for section, entries in body.items():
        if name in entries:
            if json_output:
                render.print_json(entries[name])
            else:
                render.stdout().print(render.catalog_entry(section, name, entries[name]))
            return
    known = ", ".join(sorted(entry for entries in body.values() for entry in entries))
    fail(f"the catalog has no {name!r}; it has the sections {', '.join(body)} and {known}", NOT_FOUND)


COMMANDS: dict[str, Callable[..., None]] = {
    "submit": submit,
    "jobs": list_jobs,
    "show": show,
    "follow": follow,
    "events": events,
    "cancel": cancel,
    "delete": delete,
    "download": download,
    "samples": samples,
    "catalog": catalog,
}


def register(app: typer.Typer) -> None:
    """Add the job commands to `app`."""
    for command_name, function in COMMANDS.items():
        app.command(command_name, rich_help_panel="Use the service")(function)
