"""`ganforge follow JOB` (and `submit --follow`): a live progress bar from the job's event stream.

The bar (on stderr) shows the status, step/total, the worker's steps/s and ETA (read from
the job every couple of seconds) and the latest losses from the `metrics` events, plus
modes covered and the high-quality fraction on the 2-D mixtures. Ctrl-C detaches: the
job keeps running, and the command says how to re-attach and exits 0.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ganforge.cli import render
from ganforge.cli.exits import JOB_FAILED, OK
from ganforge.cli.text import clean

if TYPE_CHECKING:
    from ganforge.client import Client

POLL_SECONDS = 2.0  # how often steps/s and ETA are refreshed from the job itself


def follow_job(client: Client, job_id: str, *, json_output: bool = False, quiet: bool = False) -> int:
    """Follow `job_id` until it finishes (exit status 0 succeeded, 1 failed or cancelled) or Ctrl-C (0).

    Prints the final status as a line on stdout (on stderr with `quiet`: stdout is the id alone), or the
    final job as JSON with `json_output`.
    Raises the SDK's errors (NotFound, Unauthorized, ConnectionFailed, ...) to the caller.
    """
    try:
        job = client.get(job_id).model_dump(mode="json")
        if job["status"] not in render.FINAL:
            render.stderr().print(
                f"following job {job_id} ({job['name'] or 'no name'}); Ctrl-C detaches", soft_wrap=True
            )
            _live(client, job)
    except KeyboardInterrupt:
        render.stderr().print(
            f"detached from job {job_id}; it keeps running. Re-attach with: ganforge follow {job_id}",
            soft_wrap=True,
        )
        return OK
    final = client.get(job_id).model_dump(mode="json")
    if json_output:
        render.print_json(final)
    else:
        (render.stderr() if quiet else render.stdout()).print(summary(final), soft_wrap=True)
    return OK if final["status"] == "succeeded" else JOB_FAILED


def summary(job: dict[str, Any]) -> str:
    """`job <id> succeeded at step 200/200: loss_d 1.38  loss_g 0.69`, or the job's error when it failed."""
    progress = job["progress"]
    head = f"job {job['id']} {job['status']} at step {progress['step']}/{progress['total_steps']}"
    if job.get("error"):
        return f"{head}: {job['error']}"
    metrics = render.metrics_text(job["latest_metrics"])
    return f"{head}: {metrics}" if metrics else head


def _live(client: Client, job: dict[str, Any]) -> None:
    latest = dict(job["latest_metrics"])
    progress_of = job["progress"]
    with render.follow_progress(render.stderr()) as progress:
        task = progress.add_task(
            clean(job["status"]),
            total=progress_of["total_steps"],
            completed=progress_of["step"],
            metrics=render.metrics_text(latest),
            rate=progress_of.get("steps_per_sec"),
            eta=progress_of.get("eta_seconds"),
        )
        polled = time.monotonic() - POLL_SECONDS  # the first event reads the rate at once
        for event in client.follow(job["id"]):
            data: dict[str, Any] = event.data
            changes: dict[str, Any] = {}
            if event.type == "metrics":
                latest.update(data.get("latest") or {})
                changes["completed"] = data.get("last_step", 0)
            elif event.type == "sample":
                latest.update(data.get("evaluation") or {})
            elif event.type == "checkpoint":
                changes["completed"] = data.get("step", 0)
            elif event.type == "status":
                changes["description"] = clean(str(data.get("to", "")))
                if data.get("to") in render.FINAL:
                    changes["eta"] = None  # nothing left to wait for
            if time.monotonic() - polled >= POLL_SECONDS and not event.final:
                polled = time.monotonic()
                now = client.get(job["id"]).progress
                changes.update(rate=now.steps_per_sec, eta=now.eta_seconds)
            progress.update(task, metrics=render.metrics_text(latest), **changes)
