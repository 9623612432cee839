"""What the client commands print: rich tables and panels on stdout, progress bars on stderr, JSON for scripts.

Every function here takes the JSON form of the SDK's objects (`model_dump(mode="json")`),
the same dicts `--json` prints, so the two views cannot disagree, and escapes the control
characters in every string of it (text.clean: a job name cannot steer the terminal).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from ganforge.cli.text import clean, clean_tree

# The metrics the follow bar shows, in this order, when the job reports them (modes and HQ: 2-D mixtures only).
FOLLOWED = ("loss_d", "loss_g", "modes_covered", "hq_fraction")
FINAL = ("succeeded", "failed", "cancelled")


WIDE = 200  # columns when the output is not a terminal (a pipe, a log): whole rows rather than 80 squeezed ones


class SafeConsole(Console):
    """A rich Console that escapes control characters (text.clean) in every plain string it prints, tables'
    cells included; Text objects are built from cleaned strings here. Markup and emoji codes are off: names and
    messages from the service print as they are ("[bold]", ":x:")."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(clean(text), **kwargs)


def _console(*, stderr: bool) -> Console:
    console = SafeConsole(stderr=stderr, highlight=False, markup=False, emoji=False)
    if console.is_terminal:
        return console
    return SafeConsole(stderr=stderr, highlight=False, markup=False, emoji=False, width=WIDE)


def stdout() -> Console:
    return _console(stderr=False)


def stderr() -> Console:
    return _console(stderr=True)


# JSON escapes C0 controls itself; these it would print raw (DEL, C1 such as the 8-bit CSI, bidi overrides).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _json(value: Any, **layout: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, **layout)
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def print_json(value: Any) -> None:
    """`value` as indented JSON on stdout (plain text, whatever the terminal; control characters as \\u escapes)."""
    sys.stdout.write(_json(value, indent=2) + "\n")


def print_json_line(value: Any) -> None:
    """`value` as one line of JSON on stdout, flushed (a reader of a live stream sees it at once)."""
    sys.stdout.write(_json(value, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `12s`; `-` for unknown."""
    if seconds is None:
        return "-"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def size(num_bytes: float | None) -> str:
    """`812 B`, `1.5 kB`, `23.0 MB` (powers of 1000)."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # not reached


def binary_size(num_bytes: float | None) -> str:
    """`812 B`, `10 KiB`, `1.5 MiB`, `100 GiB` (powers of 1024, as GANFORGE_QUOTA_STORED_BYTES takes them): one
    decimal unless whole."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if unit == "B" or value == int(value) else f"{value:.1f} {unit}"


def number(value: float | None) -> str:
    """A metric value in 4 significant digits; `-` when missing."""
    return "-" if value is None else f"{value:.4g}"


def metrics_text(latest: dict[str, float]) -> str:
    """`loss_d 1.234 loss_g 0.71 modes 8 HQ 93.1%` from the metrics the job reported; empty when none yet."""
    parts = []
    for name in FOLLOWED:
        if name not in latest:
            continue
        value = latest[name]
        if name == "modes_covered":
            parts.append(f"modes {value:.0f}")
        elif name == "hq_fraction":
            parts.append(f"HQ {value:.1%}")
        else:
            parts.append(f"{name} {number(value)}")
    return "  ".join(parts)


def when(timestamp: str | None) -> str:
    """An ISO timestamp as `2026-11-29 22:34:10` (UTC, as the API reports it)."""
    return "-" if not timestamp else timestamp.replace("T", " ")[:19]


def status_text(status: str) -> Text:
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}.get(status, "")
    return Text(status, style=style)


# --- jobs ----------------------------------------------------------------------------------------------


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    """One row per job, in the order given (the API's: newest first)."""
    jobs = clean_tree(jobs)
    table = Table(box=None, pad_edge=False)
    for header in ("ID", "NAME", "STATUS", "PRIO", "STEP", "STEPS/S", "ETA", "LOSS_D", "LOSS_G", "CREATED"):
        # The id is what the other commands take: never cut; the rest may wrap on a narrow terminal.
        table.add_column(header, no_wrap=header == "ID", min_width=36 if header == "ID" else None)
    for job in jobs:
        progress, latest = job["progress"], job["latest_metrics"]
        rate = progress.get("steps_per_sec")
        table.add_row(
            job["id"],
            job["name"],
            status_text(job["status"]),
            str(job.get("priority", "-")),
            f"{progress['step']}/{progress['total_steps']}",
            "-" if rate is None else f"{rate:.1f}",
            duration(progress.get("eta_seconds")),
            number(latest.get("loss_d")),
            number(latest.get("loss_g")),
            when(job["created_at"]),
        )
    return table


def job_details(job: dict[str, Any]) -> Group:
    """Everything about one job: status, progress, attempts, error, times, tags, latest metrics, the full spec."""
    job = clean_tree(job)
    progress = job["progress"]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    rate = progress.get("steps_per_sec")
    rows: list[tuple[str, str | Text]] = [
        ("id", job["id"]),
        ("name", job["name"]),
        ("status", status_text(job["status"])),
        ("priority", str(job.get("priority", "-"))),
    ]
    if job.get("queue_reason"):
        rows.append(("waiting", job["queue_reason"]))
    rows += [
        ("owner", job["owner"]),
        ("progress", f"step {progress['step']}/{progress['total_steps']}"),
        ("speed", "-" if rate is None else f"{rate:.1f} steps/s, ETA {duration(progress.get('eta_seconds'))}"),
        ("attempt", f"{job['attempt']} of {job['max_attempts']}"),
    ]
    if job.get("error"):
        rows.append(("error", Text(job["error"], style="red")))
    rows += [("created", when(job["created_at"])), ("started", when(job.get("started_at")))]
    rows.append(("finished", when(job.get("finished_at"))))
    if job["tags"]:
        rows.append(("tags", ", ".join(f"{key}:{value}" for key, value in job["tags"].items())))
    for name, value in sorted(job["latest_metrics"].items()):
        rows.append((name, number(value)))
    rows += [("alert", Text(alert_text(alert), style="yellow")) for alert in job.get("alerts") or []]
    for label, value in rows:
        facts.add_row(label, value)
    spec = yaml.safe_dump(job["spec"], sort_keys=False, default_flow_style=None).rstrip()
    return Group(facts, Text("\nspec (with every default filled in):", style="bold"), Text(spec))


def alert_text(alert: dict[str, Any]) -> str:
    """A training.watch alert as one line: `collapse at step 1200 (reported): modes_covered=1 best=8`."""
    evidence = alert.get("evidence") or {}
    shown = " ".join(
        f"{key}={number(value) if isinstance(value, int | float) and not isinstance(value, bool) else value}"
        for key, value in evidence.items()
    )
    head = f"{alert.get('kind', 'alert')} at step {alert.get('step', '?')}"
    head += f" ({alert['action']})" if alert.get("action") else ""
    return f"{head}: {shown}" if shown else head


def event_line(event: dict[str, Any]) -> str:
    """One event of a job's log as a line: `#3 status queued -> running: claimed by worker ...`."""
    event = clean_tree(event)
    data, kind = event["data"], event["type"]
    head = f"#{event['id']} {when(data.get('time'))} {kind}"
    if kind == "status":
        change = f"{data['from']} -> {data.get('to')}" if data.get("from") else str(data.get("to"))
        return f"{head} {change}: {data.get('reason', '')}".rstrip(": ")
    if kind == "metrics":
        latest = data.get("latest", {})
        values = " ".join(f"{name}={number(value)}" for name, value in sorted(latest.items()))
        return f"{head} steps {data.get('first_step')}-{data.get('last_step')} {values}"
    if kind == "sample":
        evaluation = data.get("evaluation") or {}
        extra = metrics_text(evaluation)
        return f"{head} step {data.get('step')}, {data.get('count')} samples" + (f" ({extra})" if extra else "")
    if kind == "checkpoint":
        return f"{head} step {data.get('step')}, {size(data.get('size_bytes'))}"
    if kind == "alert":
        return f"{head} {alert_text(data)}"
    rest = {key: value for key, value in data.items() if key != "time"}
    return f"{head} {json.dumps(rest, separators=(',', ':'))}"


def samples_table(samples: list[dict[str, Any]]) -> Table:
    samples = clean_tree(samples)
    table = Table(box=None, pad_edge=False)
    for header in ("STEP", "COUNT", "MODES", "HQ", "CREATED"):
        table.add_column(header, no_wrap=True)
    for sample in samples:
        evaluation = sample.get("evaluation") or {}
        modes, hq = evaluation.get("modes_covered"), evaluation.get("hq_fraction")
        table.add_row(
            str(sample["step"]),
            str(sample["count"]),
            "-" if modes is None else f"{modes:.0f}",
            "-" if hq is None else f"{hq:.1%}",
            when(sample.get("created_at")),
        )
    return table


# --- data sets -----------------------------------------------------------------------------------------


def _shape(info: dict[str, Any]) -> str:
    shape = info.get("shape") or []
    return "×".join(str(dim) for dim in shape) or "-"


def datasets_table(datasets: list[dict[str, Any]]) -> Table:
    datasets = clean_tree(datasets)
    table = Table(box=None, pad_edge=False)
    for header in ("ID", "NAME", "FORMAT", "EXAMPLES", "SHAPE", "CLASSES", "SIZE", "CREATED"):
        table.add_column(header, no_wrap=True)
    for dataset in datasets:
        info = dataset.get("info") or {}
        table.add_row(
            dataset["id"],
            dataset["name"],
            dataset.get("format", "-"),
            str(info.get("size", "-")),
            _shape(info),
            str(info.get("num_classes") or "-"),
            size(dataset.get("size_bytes")),
            when(dataset.get("created_at")),
        )
    return table


def dataset_details(dataset: dict[str, Any]) -> Table:
    dataset = clean_tree(dataset)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    info = dataset.get("info") or {}
    for label, value in (
        ("id", dataset["id"]),
        ("name", dataset["name"]),
        ("format", dataset.get("format", "-")),
        ("kind", str(info.get("kind", "-"))),
        ("examples", str(info.get("size", "-"))),
        ("shape", _shape(info)),
        ("classes", ", ".join(info.get("class_names") or []) or str(info.get("num_classes") or "-")),
        ("size", size(dataset.get("size_bytes"))),
        ("content hash", dataset.get("content_hash", "-")),
        ("created", when(dataset.get("created_at"))),
        ("preview", dataset.get("preview_url", "-")),
    ):
        facts.add_row(label, value)
    for warning in info.get("warnings") or []:
        facts.add_row("warning", Text(str(warning), style="yellow"))
    return facts


# --- the catalog ---------------------------------------------------------------------------------------


def catalog_tables(catalog: dict[str, Any]) -> Group:
    """One table per section (losses, architectures, data sets): name, defaults in short, paper or description."""
    catalog = clean_tree(catalog)
    tables: list[RenderableType] = []
    for section, entries in catalog.items():
        table = Table(title=section, title_justify="left", box=None, pad_edge=False)
        table.add_column("NAME", no_wrap=True, style="bold")
        table.add_column("DEFAULTS")
        table.add_column("PAPER / DESCRIPTION")
        for name, entry in entries.items():
            defaults = entry.get("defaults") or {}
            table.add_row(
                name,
                ", ".join(f"{key}={json.dumps(value)}" for key, value in defaults.items()) or "-",
                str(entry.get("paper") or entry.get("description") or ""),
            )
        tables.append(table)
        tables.append(Text(""))
    return Group(*tables)


def catalog_entry(section: str, name: str, entry: dict[str, Any]) -> Group:
    """One loss, architecture or data set: its paper, then every parameter with default, bounds, meaning."""
    section, name, entry = clean(section), clean(name), clean_tree(entry)
    about = entry.get("paper") or entry.get("description") or ""
    head = Text.assemble((f"{name}", "bold"), f" ({section}): {about}")
    parameters = entry.get("parameters")
    if not parameters:
        rest = {key: value for key, value in entry.items() if key not in ("paper", "description") and value}
        return Group(head, Text(yaml.safe_dump(rest, sort_keys=False, default_flow_style=None).rstrip()))
    table = Table(box=None, pad_edge=False)
    for header in ("PARAMETER", "DEFAULT", "ALLOWED", "MEANING"):
        table.add_column(header, no_wrap=header != "MEANING")
    for parameter, schema in parameters.items():
        table.add_row(parameter, json.dumps(schema.get("default")), _allowed(schema), schema.get("description", ""))
    return Group(head, Text(""), table)


def _allowed(schema: dict[str, Any]) -> str:
    """A JSON schema's bounds in short: `adam|rmsprop`, `>0`, `1..100`, `number`."""
    if "enum" in schema:
        return "|".join(map(str, schema["enum"]))
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None and high is not None:
        return f"{low}..{high}"
    if low is not None:
        return f"{'>' if 'exclusiveMinimum' in schema else '>='}{low}"
    if high is not None:
        return f"{'<' if 'exclusiveMaximum' in schema else '<='}{high}"
    kinds = schema.get("type") or "/".join(str(option.get("type")) for option in schema.get("anyOf", []))
    return str(kinds or "-")


# --- progress ------------------------------------------------------------------------------------------


class RateColumn(ProgressColumn):
    """The worker's own steps/s (from the job's progress), not a rate guessed from when events arrived."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text("- steps/s" if rate is None else f"{rate:.1f} steps/s", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"ETA {duration(task.fields.get('eta'))}", style="progress.remaining")


INLINE_METRICS = 130  # columns from which the losses (and modes, HQ) fit on the bar's line
NARROW = 72  # columns below which the steps/s column is left out


class FollowProgress(Progress):
    """The follow bar; with `metrics_below`, each task's metrics on a line of their own below the bars."""

    def __init__(self, *columns: str | ProgressColumn, metrics_below: bool, **options: Any) -> None:
        self.metrics_below = metrics_below  # before Progress.__init__, which renders once
        super().__init__(*columns, **options)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.metrics_below:
            for task in self.tasks:
                if task.fields.get("metrics"):
                    yield Text(f"{'':>9} {task.fields['metrics']}", no_wrap=True, overflow="ellipsis")


def follow_progress(console: Console) -> Progress:
    """The bar of `ganforge follow`: status, bar, step/total, steps/s, ETA, the latest losses (and modes/HQ).

    On one line on a console of INLINE_METRICS columns or more (a log: render.WIDE); narrower (an 80-column
    terminal), the bar takes the width left and the metrics go on the line below, so nothing wraps.
    """
    if console.width >= INLINE_METRICS:
        return FollowProgress(
            TextColumn("{task.description:>9}", markup=False),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            RateColumn(),
            EtaColumn(),
            TextColumn("{task.fields[metrics]}", markup=False),
            console=console,
            metrics_below=False,
        )
    fixed = Column(no_wrap=True)
    columns = [
        TextColumn("{task.description:>9}", markup=False, table_column=fixed),
        BarColumn(bar_width=None),
        MofNCompleteColumn(table_column=fixed),
        RateColumn(table_column=fixed),
        EtaColumn(table_column=fixed),
    ]
    if console.width < NARROW:  # below this even the bar's own columns don't fit: the rate goes first
        columns.remove(columns[3])
    return FollowProgress(*columns, console=console, expand=True, metrics_below=True)


@contextmanager
def transfer(description: str) -> Iterator[Callable[[int, int | None], None]]:
    """A bytes progress bar on stderr; yields the SDK's progress callback `(done_bytes, total_bytes or None)`.

    The bar appears with the first bytes, so a request refused at once (404) leaves no empty bar behind.
    """
    progress = Progress(
        TextColumn(description, markup=False),
        BarColumn(bar_width=30),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr(),
    )
    task = progress.add_task(description, total=None)

    def update(done: int, total: int | None) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if progress.live.is_started:
            progress.stop()
