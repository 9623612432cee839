"""`ganforge study submit|show|list|cancel|follow`: many losses, seeds and grid points in one request, compared.

    ganforge study submit study.yaml --set seeds=2 --follow   # progress of the whole study, then the table
    ganforge study show STUDY                                 # one row per loss (and grid point): mean ± std
    ganforge study show STUDY --json                          # what GET /v1/studies/{id} answered

The comparison table has one row per (loss, grid point): the quality measures at each run's
last snapshot as mean ± sample std over the seeds (models/comparison.py), the steps to reach
the primary measure's threshold (and how many runs reached it), wall seconds, and the
stability figures computed from the series. Exit statuses as for jobs (ganforge/cli/exits.py):
`follow` (and `submit --follow`) exits 0 when every job succeeded, 1 when the study failed or
was cancelled, 0 on Ctrl-C (detached: the study keeps running).
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from ganforge.cli import render
from ganforge.cli.context import ApiKey, Url, connect
from ganforge.cli.exits import JOB_FAILED, OK
from ganforge.cli.overrides import load_spec
from ganforge.cli.text import clean, clean_tree

if TYPE_CHECKING:
    from ganforge.client import Client

POLL_SECONDS = 2.0  # how often `follow` reads the study again

app = typer.Typer(
    help="Studies: the same data and architecture trained with several losses, seeds and settings, compared.",
    epilog=(
        "submit FILE [--set PATH=VALUE] [--follow] [--quiet] [--json] | show STUDY [--jobs] [--json] | "
        "list [--limit N] [--json] | cancel STUDY [--json] | follow STUDY"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
StudyId = Annotated[
    str, typer.Argument(metavar="STUDY", help="the study's id (what `submit` printed)", show_default=False)
]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON answer (for scripts)")]

# Short headers for the stability figures of models.comparison.compare; an unknown one shows its own name.
STABILITY = {
    "loss_g_spread_last_quarter": "G SPREAD",
    "loss_g_std_last_quarter": "G STD",
    "vanishing_grad_fraction": "VANISH",
    "vanishing_grad_fraction_relative": "VANISH REL",
    "mode_oscillation": "OSCILL",
    "collapse_events": "COLLAPSES",
    "divergence_events": "DIVERGENCES",
}


# --- rendering (the JSON form of the SDK's Study, as `--json` prints it) ------------------------------------


def figure(stat: Any, *, percent: bool = False) -> str:
    """{"mean", "std", "n"} as `7.5 ± 0.71` (4 significant digits; no ± with one run); `-` without data."""
    if isinstance(stat, int | float) and not isinstance(stat, bool):
        return render.number(stat)
    if not isinstance(stat, dict) or stat.get("mean") is None:
        return "-"
    mean, std = float(stat["mean"]), stat.get("std")
    if percent:
        return f"{mean:.1%}" if std is None else f"{mean:.1%} ± {float(std):.1%}"
    return render.number(mean) if std is None else f"{mean:.4g} ± {float(std):.2g}"


def point_text(point: dict[str, Any] | None) -> str:
    """A grid point as `lr_multiplier=0.5,architecture.hidden=64`; empty without a grid."""
    return ",".join(f"{key}={value}" for key, value in (point or {}).items())


def _reached(stat: Any, finished: int) -> str:
    """Steps to the threshold: `120 ± 14 (2/3)`, the mean over the runs that reached it, how many of how many;
    `never (0/2)` when runs finished without reaching it, `-` while none has finished (nothing to say yet)."""
    if not isinstance(stat, dict):
        return "-"
    if stat.get("mean") is not None:
        mean = figure(stat)
    elif not finished:
        return "-"
    else:
        mean = "never"
    reached, n = stat.get("reached"), stat.get("n")
    return f"{mean} ({reached}/{n})" if reached is not None and n is not None else mean


# What each stability column measures (models/comparison.py), for the legend under the table.
STABILITY_LEGEND = {
    "loss_g_spread_last_quarter": "std of loss_g over the last quarter of the run / its interquartile range over "
    "the whole run (scale-free: near 0 settled, 0.5 or more still swinging)",
    "loss_g_std_last_quarter": "std of loss_g over the last quarter of the run, in that loss's own units "
    "(compare within one loss only)",
    "vanishing_grad_fraction": "fraction of grad_norm_g readings below 1e-4 (absolute: a loss of small scale "
    "reads as vanishing sooner)",
    "vanishing_grad_fraction_relative": "fraction of grad_norm_g readings below 1 % of the run's own median "
    "grad_norm_g (scale-free)",
    "mode_oscillation": "mean worsening of the primary measure from one snapshot to the next (gains count as 0)",
    "collapse_events": "collapse alerts, over every run",
    "divergence_events": "divergence alerts, over every run",
}


def comparison_table(study: dict[str, Any]) -> Group:
    """One row per (loss, grid point): runs (succeeded/all), failed runs (failed or cancelled: not in any figure),
    each measure's mean ± std, steps to the primary's threshold, wall seconds and the stability figures; then the
    legend, a line per column that needs one."""
    study = clean_tree(study)
    rows: list[dict[str, Any]] = study.get("comparison") or []
    measures: list[str] = study.get("measures") or []
    primary = measures[0] if measures else None
    grid = any(row.get("point") for row in rows)
    stability = list(dict.fromkeys(key for row in rows for key in (row.get("stability") or {})))
    reach = [(row.get("steps_to_threshold") or {}).get(primary) for row in rows]
    rule = next((stat.get("rule") or stat.get("threshold") for stat in reach if isinstance(stat, dict)), None)
    # Our own text, as Text: a plain string would be escaped by SafeConsole, its line breaks printed as \x0a.
    legend = ["RUNS: succeeded/all; FAILED: failed or cancelled runs, left out of every mean ± std"]
    if primary:
        legend.append(
            f"STEPS TO THRESHOLD: the first step with {rule}, mean over the runs that reached it (reached/runs); "
            "never: runs finished without reaching it; -: no run finished yet"
        )
    legend += [
        f"{STABILITY.get(key, key.upper())}: {STABILITY_LEGEND[key]}" for key in stability if key in STABILITY_LEGEND
    ]
    table = Table(box=None, pad_edge=False)
    headers = ["LOSS", *(["POINT"] if grid else []), "RUNS", "FAILED", *(measure.upper() for measure in measures)]
    if primary:
        headers.append("STEPS TO THRESHOLD")
    headers += ["WALL S", "CPU S", *(STABILITY.get(key, key.upper()) for key in stability)]
    for header in headers:
        table.add_column(header, no_wrap=header in ("LOSS", "RUNS"))
    for row in rows:
        quality = row.get("quality") or {}
        cells: list[str | Text] = [Text(str(row.get("loss", "")), style="bold")]
        if grid:
            cells.append(point_text(row.get("point")))
        cells.append(f"{row.get('finished', '-')}/{row.get('runs', '-')}")
        cells.append(str(row.get("failed", "-")))
        cells += [figure(quality.get(measure), percent=measure == "hq_fraction") for measure in measures]
        if primary:
            finished = row.get("finished")
            reached = (row.get("steps_to_threshold") or {}).get(primary)
            cells.append(_reached(reached, finished if isinstance(finished, int) else 0))
        cells += [figure(row.get("wall_seconds")), figure(row.get("cpu_seconds"))]
        figures = row.get("stability") or {}
        cells += [figure(figures.get(key), percent=key.startswith("vanishing_grad_fraction")) for key in stability]
        table.add_row(*cells)
    return Group(table, *(Text(line, style="dim") for line in legend))


def progress_line(study: dict[str, Any]) -> str:
    """`running: 3/8 jobs finished (2 running, 3 queued), step 1200/4800 (25%)`."""
    counts: dict[str, int] = study.get("counts") or {}
    finished = sum(counts.get(status, 0) for status in render.FINAL)
    others = ", ".join(
        f"{counts[status]} {clean(status)}"
        for status in sorted(counts)
        if status not in render.FINAL and counts[status]
    )
    line = f"{clean(study['status'])}: {finished}/{study['job_count']} jobs finished" + (
        f" ({others})" if others else ""
    )
    progress = study.get("progress") or {}
    if progress:
        line += f", step {progress['steps_done']}/{progress['steps_total']} ({progress['fraction']:.0%})"
    failed = [f"{counts[status]} {status}" for status in ("failed", "cancelled") if counts.get(status)]
    return line + (f"; {', '.join(failed)}" if failed else "")


def study_details(study: dict[str, Any], *, with_jobs: bool = False) -> Group:
    """A study: id, name, status, data and measures, the progress line, then the comparison table (and its jobs)."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    shown = clean_tree(study)
    spec = shown.get("spec") or {}
    dataset = spec.get("dataset") or {}
    architecture = spec.get("architecture") or {}
    for label, value in (
        ("id", shown["id"]),
        ("name", shown["name"]),
        ("status", render.status_text(shown["status"])),
        ("data", f"{dataset.get('builtin') or dataset.get('id') or '-'} ({shown.get('data_kind') or '-'})"),
        ("architecture", str(architecture.get("name", "-"))),
        ("measures", ", ".join(shown.get("measures") or []) or "-"),
        ("progress", progress_line(study)),
        ("created", render.when(shown.get("created_at"))),
    ):
        facts.add_row(label, value)
    parts: list[RenderableType] = [facts, Text("")]
    if shown.get("comparison"):
        parts += [comparison_table(study)]
    else:
        parts.append(Text("no comparison yet: no job has reported", style="dim"))
    if with_jobs:
        parts += [Text(""), jobs_table(study)]
    return Group(*parts)


def jobs_table(study: dict[str, Any]) -> Table:
    """One row per job of the study: id, loss, point, seed, status, step."""
    table = Table(box=None, pad_edge=False)
    for header in ("JOB", "LOSS", "POINT", "SEED", "STATUS", "STEP"):
        table.add_column(header, no_wrap=header == "JOB", min_width=36 if header == "JOB" else None)
    for job in clean_tree(study.get("jobs") or []):
        table.add_row(
            job["id"],
            job["loss"],
            point_text(job.get("point")) or "-",
            str(job["seed"]),
            render.status_text(job["status"]),
            f"{job.get('step', 0)}/{job.get('total_steps', 0)}",
        )
    return table


def studies_table(studies: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False)
    for header in ("ID", "NAME", "STATUS", "JOBS", "PROGRESS", "CREATED"):
        table.add_column(header, no_wrap=header == "ID", min_width=36 if header == "ID" else None)
    for study in clean_tree(studies):
        progress = study.get("progress") or {}
        table.add_row(
            study["id"],
            study["name"],
            render.status_text(study["status"]),
            str(study["job_count"]),
            f"{progress['fraction']:.0%}" if progress else "-",
            render.when(study.get("created_at")),
        )
    return table


# --- following ---------------------------------------------------------------------------------------------


def follow_study(client: Client, study_id: str, *, json_output: bool = False, quiet: bool = False) -> int:
    """Follow `study_id` until every job is final: a bar of the steps done over all jobs, and how many jobs are
    finished and running (read every POLL_SECONDS); then the comparison table (or the study as JSON).

    Exit status 0 when the study succeeded, 1 when it failed or was cancelled; Ctrl-C detaches (0). Raises the SDK's
    errors (NotFound, ...) to the caller.
    """
    try:
        study = client.studies.get(study_id).model_dump(mode="json")
        if study["status"] not in render.FINAL:
            render.stderr().print(
                f"following study {study_id} ({study['name']}, {study['job_count']} jobs); Ctrl-C detaches",
                soft_wrap=True,
            )
            study = _live(client, study)
    except KeyboardInterrupt:
        render.stderr().print(
            f"detached from study {study_id}; its jobs keep running. Re-attach with: ganforge study follow {study_id}",
            soft_wrap=True,
        )
        return OK
    if json_output:
        render.print_json(study)
    else:
        console = render.stderr() if quiet else render.stdout()
        console.print(f"study {study['id']} {progress_line(study)}", soft_wrap=True)
        if study.get("comparison"):
            console.print(comparison_table(study))
    return OK if study["status"] == "succeeded" else JOB_FAILED


def _jobs_text(study: dict[str, Any]) -> str:
    counts: dict[str, int] = study.get("counts") or {}
    finished = sum(counts.get(status, 0) for status in render.FINAL)
    return f"jobs {finished}/{study['job_count']} finished, {counts.get('running', 0)} running"


def _live(client: Client, study: dict[str, Any]) -> dict[str, Any]:
    progress_of = study.get("progress") or {}
    with Progress(
        TextColumn("{task.description:>9}", markup=False),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("steps  {task.fields[jobs]}", markup=False),
        console=render.stderr(),
    ) as progress:
        task = progress.add_task(
            clean(study["status"]),
            total=progress_of.get("steps_total") or None,
            completed=progress_of.get("steps_done", 0),
            jobs=_jobs_text(study),
        )
        while study["status"] not in render.FINAL:
            time.sleep(POLL_SECONDS)
            study = client.studies.get(study["id"]).model_dump(mode="json")
            progress_of = study.get("progress") or {}
            progress.update(
                task,
                description=clean(study["status"]),
                total=progress_of.get("steps_total") or None,
                completed=progress_of.get("steps_done", 0),
                jobs=_jobs_text(study),
            )
    return study


# --- commands ----------------------------------------------------------------------------------------------


@app.command()
def submit(
    ctx: typer.Context,
    spec_file: Annotated[
        str, typer.Argument(metavar="FILE", help="the study spec: a .yaml, .yml or .json file, or - for stdin")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="PATH=VALUE",
            help="override one field, e.g. --set seeds=2 or --set training.steps=500; repeatable",
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="then follow it (as `ganforge study follow`)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print only the new study's id on stdout")] = False,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Submit a study (its jobs are queued at once); print its id. With --follow, exit 1 unless every job succeeds."""
    spec = load_spec(spec_file, overrides or [])
    with connect(ctx, url, api_key) as client:
        study = client.studies.submit(spec)
        if quiet:
            print(study.id, flush=True)
        elif json_output and not follow:
            render.print_json(study.model_dump(mode="json"))
        elif not json_output:
            render.stdout().print(
                f"submitted study {study.id} ({study.name}, {study.job_count} jobs); "
                f"follow it with: ganforge study follow {study.id}",
                soft_wrap=True,
            )
        if follow:
            raise typer.Exit(follow_study(client, study.id, json_output=json_output, quiet=quiet))


@app.command()
def show(
    ctx: typer.Context,
    study_id: StudyId,
    jobs: Annotated[bool, typer.Option("--jobs", help="also list every job of the study")] = False,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """A study: status, progress and the comparison table (one row per loss and grid point, mean ± std over seeds)."""
    with connect(ctx, url, api_key) as client:
        study = client.studies.get(study_id).model_dump(mode="json")
    if json_output:
        render.print_json(study)
    else:
        render.stdout().print(study_details(study, with_jobs=jobs))


@app.command("list")
def list_studies(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, help="show at most N studies")] = 20,
    json_output: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """List your studies, newest first."""
    with connect(ctx, url, api_key) as client:
        found = [
            study.model_dump(mode="json")
            for study in itertools.islice(client.studies.list(limit=min(limit, 200)), limit)
        ]
    if json_output:
        render.print_json(found)
    elif found:
        render.stdout().print(studies_table(found))
    else:
        render.stderr().print("no studies")


@app.command()
def cancel(
    ctx: typer.Context, study_id: StudyId, json_output: Json = False, url: Url = None, api_key: ApiKey = None
) -> None:
    """Cancel every queued or running job of a study (finished jobs keep their results); a study that already
    finished keeps its status (an error)."""
    with connect(ctx, url, api_key) as client:
        study = client.studies.cancel(study_id).model_dump(mode="json")
    if json_output:
        render.print_json(study)
    else:
        render.stdout().print(f"study {study['id']}: {progress_line(study)}", soft_wrap=True)


@app.command()
def follow(ctx: typer.Context, study_id: StudyId, url: Url = None, api_key: ApiKey = None) -> None:
    """Follow a study live (jobs finished and running, steps done), then print its table; Ctrl-C detaches."""
    with connect(ctx, url, api_key) as client:
        raise typer.Exit(follow_study(client, study_id))
