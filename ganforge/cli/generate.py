"""`ganforge generate JOB -n 16 -o samples.png`: sample a trained job's generator on the service.

The format is the output file's suffix: .npy (float32 array: N×D points in the data's coordinates, not clamped; or
N×C×H×W images, in [-1, 1] from a dcgan or resnet G) or .png (an image grid, or a scatter plot of points). Ask once
the job has a checkpoint (`ganforge submit --follow` returns when the job ended, with its last one written). Runs on the service's generate worker (POST /v1/jobs/{id}/generate),
so it needs no PyTorch here; `ganforge.load_generator` is the local alternative.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ganforge.cli import render
from ganforge.cli.context import ApiKey, Url, connect
from ganforge.cli.exits import JOB_FAILED, USAGE, fail
from ganforge.cli.jobs import JobId, Step, _step

SUFFIXES = {".png": "png", ".npy": "npy"}


def generate(
    ctx: typer.Context,
    job_id: JobId,
    count: Annotated[
        int,
        typer.Option("--count", "-n", metavar="N", min=1, help="how many samples (the service bounds it)"),
    ] = 16,
    seed: Annotated[int, typer.Option("--seed", metavar="N", min=0, help="the same seed gives the same samples")] = 0,
    step: Step = "latest",
    labels: Annotated[
        list[int] | None,
        typer.Option(
            "--label",
            metavar="N",
            min=0,
            help="cgan: the class of every sample (once) or of each (N times, in order)",
        ),
    ] = None,
    codes: Annotated[
        str | None,
        typer.Option(
            "--codes",
            metavar="JSON",
            help='infogan: the codes, as JSON, e.g. \'{"categorical": 3, "continuous": [0.5, -0.5]}\'',
            show_default=False,
        ),
    ] = None,
    ema: Annotated[
        bool | None,
        typer.Option("--ema/--no-ema", help="the EMA copy of G, or G itself (default: EMA when the job kept one)"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="a .png or .npy file (default JOB-seedN.npy here)"),
    ] = None,
    wait: Annotated[float, typer.Option("--wait", metavar="N", min=1, help="give up after N seconds (exit 1)")] = 120.0,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Sample a trained job's generator on the service and write the samples (format from the file's suffix)."""
    chosen = _step(step)
    target = output if output is not None else Path(f"{re.sub(r'[^A-Za-z0-9_.-]', '_', job_id)}-seed{seed}.npy")
    fmt = SUFFIXES.get(target.suffix.lower())
    if fmt is None:
        fail(f"{target}: the output file must end in .png or .npy (it sets the format)", USAGE)
    label_arg: int | list[int] | None = None
    if labels:
        label_arg = labels[0] if len(labels) == 1 else labels
    code_arg = None if codes is None else _codes(codes)
    with connect(ctx, url, api_key) as client:
        try:
            data = client.generate(
                job_id, count, seed=seed, step=chosen, labels=label_arg, codes=code_arg, format=fmt, ema=ema, wait=wait
            )
        except TimeoutError as exc:
            fail(str(exc), JOB_FAILED)
        target.write_bytes(data)
    render.stdout().print(f"wrote {count} samples to {target}", soft_wrap=True)


EXAMPLE = '{"categorical": 3, "continuous": [0.5, -0.5]}'


def _codes(text: str) -> dict[str, Any]:
    """`--codes` as the JSON object the API takes (the service checks it against the job); exit 2 otherwise."""
    shown = repr(text if len(text) <= 100 else f"{text[:100]}...")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        why = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc) or "too deep"
        fail(f"--codes {shown}: not JSON ({why}); e.g. --codes '{EXAMPLE}'", USAGE)
    if not isinstance(value, dict):
        fail(f"--codes {shown}: expected a JSON object, e.g. --codes '{EXAMPLE}'", USAGE)
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON (or the API) accepts")


def register(app: typer.Typer) -> None:
    """Add `generate` to `app`."""
    app.command("generate", rich_help_panel="Use the service")(generate)
