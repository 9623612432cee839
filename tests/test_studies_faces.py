"""Studies from Python and the terminal: `client.studies` (sync and async) and `ganforge study ...`, against a real
API and worker (embedded backend: this face is an HTTP client; tests/test_studies.py covers both backends).

A small study (ring8, a tiny MLP, nsgan and lsgan × 1 seed, 40 steps) is submitted, waited for and read back
through each face; a long study is cancelled; a study file the API refuses is exit 2 with the field path; a job's
training.watch alert shows in `ganforge show JOB`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ganforge.client import AsyncClient, Client, Job, NotFound, Study, ValidationFailed
from tests.conftest import api_and_worker
from tests.service import Service
from tests.test_cli_client import GANFORGE, assert_no_traceback, ganforge

KEY = "key-a"
LOSSES = ["nsgan", "lsgan"]


def study_spec(name: str, steps: int = 40, **extra: Any) -> dict[str, Any]:
    """Two losses × one seed of a tiny MLP on ring8: a few seconds of CPU per job."""
    return {
        "name": name,
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
        "losses": LOSSES,
        "seeds": 1,
        # training.watch set to fire: a snapshot under 99 % of the modes from step 0 is a collapse (an alert to show)
        "training": {
            "steps": steps,
            "batch_size": 64,
            "watch": {"collapse_floor": 0.99, "warmup_steps": 0, "patience": 1},
        },
        "every": {"metrics": 10, "samples": 20, "checkpoint": 40},
        **extra,
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with api_and_worker("embedded", tmp_path_factory.mktemp("studies-faces")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def done(service: Service) -> Study:
    """The small study, submitted and waited for through the sync SDK."""
    with Client(service.url, KEY) as client:
        submitted = client.studies.submit(study_spec("faces-sdk"), idempotency_key="faces-sdk-1")
        assert submitted.job_count == 2 and submitted.status in ("queued", "running"), submitted
        return client.studies.wait(submitted.id, timeout=180)


@pytest.mark.slow
def test_sync_sdk_submits_waits_and_reads_the_comparison(service: Service, done: Study) -> None:
    assert done.status == "succeeded" and done.finished, done
    assert sorted(job.loss for job in done.jobs) == sorted(LOSSES), done.jobs
    assert done.data_kind == "points" and done.measures[0] == "modes_covered", done.measures
    rows = {row["loss"]: row for row in done.comparison}
    assert set(rows) == set(LOSSES), done.comparison
    with Client(service.url, KEY) as client:
        # validate_only: the spec with defaults and the job count; nothing is created
        checked = client.studies.validate(study_spec("faces-check"))
        assert checked.job_count == 2 and checked.spec["training"]["steps"] == 40, checked
        # the same Idempotency-Key and body: the same study, not a second one
        again = client.studies.submit(study_spec("faces-sdk"), idempotency_key="faces-sdk-1")
        assert again.id == done.id
        jobs = client.studies.jobs(done.id)
        assert len(jobs) == 2 and all(isinstance(job, Job) and job.tags["study"] == done.id for job in jobs), jobs
        for job in jobs:  # the table's figure is the job's own last modes_covered (one seed: no std)
            modes = client.metrics(job.id, ["modes_covered"])["modes_covered"].values
            quality = rows[job.tags["study_loss"]]["quality"]["modes_covered"]
            assert quality["mean"] == pytest.approx(modes[-1]) and quality["std"] is None, (quality, modes)
        curves = client.studies.curves(done.id, ["modes_covered", "loss_g"], points=50)
        assert set(curves.names) == {"modes_covered", "loss_g"}, curves.names
        for name in curves.names:
            assert sorted(curve.loss for curve in curves[name]) == sorted(LOSSES), curves[name]
            for curve in curves[name]:
                assert curve.runs == 1 and len(curve.steps) == len(curve.mean) <= 50, curve
                assert curve.steps == sorted(curve.steps) and curve.steps[-1] <= 40, curve.steps
        assert done.id in [study.id for study in client.studies.list(limit=1)]  # pages followed
        with pytest.raises(NotFound):
            client.studies.get("no-such-study")
    with Client(service.url, "key-b") as other, pytest.raises(NotFound):
        other.studies.get(done.id)  # another owner's study


def test_async_sdk_reads_and_cancels_a_study(service: Service, done: Study) -> None:
    async def flow() -> None:
        async with AsyncClient(service.url, KEY) as client:
            got = await client.studies.get(done.id)
            assert got.comparison == done.comparison and got.status == "succeeded"
            assert (await client.studies.wait(done.id, timeout=5)).id == done.id
            assert done.id in [study.id async for study in client.studies.list(limit=1)]
            curves = await client.studies.curves(done.id)  # what the comparison reads: loss_g, the measures, ...
            assert {"loss_g", *done.measures} <= set(curves.names) and len(curves["modes_covered"]) == 2, curves
            assert len(await client.studies.jobs(done.id)) == 2
            long = await client.studies.submit(
                study_spec("faces-cancel", steps=100_000, every={"metrics": 10, "samples": 500, "checkpoint": 500})
            )
            cancelled = await client.studies.cancel(long.id)
            assert cancelled.id == long.id
            # the study reads cancelling until every job stopped: wait() waits for that
            assert cancelled.status in ("cancelling", "cancelled"), cancelled
            assert cancelled.status == "cancelled" or not cancelled.finished
            final = await client.studies.wait(long.id, timeout=60)
            assert final.status == "cancelled", final
            assert {job.status for job in final.jobs} == {"cancelled"}, final.jobs
            assert (await client.studies.cancel(long.id)).status == "cancelled"  # idempotent
            with pytest.raises(ValidationFailed) as refused:
                await client.studies.submit({**study_spec("bad"), "losses": ["nsgan", "no-such-loss"]})
            assert any("losses" in (field.field or "") for field in refused.value.fields), refused.value.fields

    asyncio.run(flow())


@pytest.mark.slow
def test_cli_study_submit_follow_show_list_cancel(service: Service, done: Study, tmp_path: Path) -> None:
    spec_file = tmp_path / "study.yaml"
    spec_file.write_text(
        yaml.safe_dump(study_spec("faces-cli", steps=100_000, every={"metrics": 10, "samples": 500, "checkpoint": 500}))
    )
    # submit with --set (a short run), follow to the end: exit 0, the table on stdout
    followed = ganforge(service, "study", "submit", str(spec_file), "--set", "training.steps=40", "--follow")
    assert followed.returncode == 0, followed
    assert_no_traceback(followed)
    study_id = followed.stdout.split()[2]  # "submitted study <id> (...)"
    assert f"following study {study_id}" in followed.stderr, followed.stderr
    assert "succeeded: 2/2 jobs finished" in followed.stdout, followed.stdout
    assert "MODES_COVERED" in followed.stdout and all(loss in followed.stdout for loss in LOSSES), followed.stdout

    shown = ganforge(service, "study", "show", done.id, "--jobs")
    assert shown.returncode == 0, shown
    lines = shown.stdout.splitlines()
    header = next(line for line in lines if line.startswith("LOSS"))
    for column in ("RUNS", "MODES_COVERED", "HQ_FRACTION", "STEPS TO THRESHOLD", "WALL S", "G SPREAD", "VANISH"):
        assert column in header, header
    for loss in LOSSES:  # one table row per loss: runs finished/total, then the figures
        assert any(line.startswith(loss) and " 1/1 " in line for line in lines), shown.stdout
    assert "succeeded: 2/2 jobs finished" in shown.stdout and all(job.id in shown.stdout for job in done.jobs)

    as_json = json.loads(ganforge(service, "study", "show", done.id, "--json").stdout)
    assert as_json["id"] == done.id and len(as_json["comparison"]) == 2, as_json
    listed = json.loads(ganforge(service, "study", "list", "--json", "--limit", "50").stdout)
    assert {done.id, study_id} <= {study["id"] for study in listed}, listed

    # a running study cancelled from the terminal, then followed: exit 1 (cancelled)
    long = ganforge(service, "study", "submit", str(spec_file), "-q")
    assert long.returncode == 0, long
    long_id = long.stdout.strip()
    # Ctrl-C detaches from a followed study: exit 0, how to re-attach; the study runs on
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANFORGE_")}
    env.update(GANFORGE_URL=service.url, GANFORGE_API_KEY=KEY)
    errors = tmp_path / "follow.err"
    follower = subprocess.Popen(
        [str(GANFORGE), "study", "follow", long_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=errors.open("wb"),
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not inherited ignored from a shell
    )
    try:
        deadline = time.monotonic() + 30
        while "Ctrl-C detaches" not in errors.read_text():
            assert follower.poll() is None and time.monotonic() < deadline, errors.read_text()
            time.sleep(0.2)
        time.sleep(0.5)
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=15)
        assert follower.returncode == 0, errors.read_text()
        assert f"Re-attach with: ganforge study follow {long_id}" in errors.read_text(), errors.read_text()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    cancelled = ganforge(service, "study", "cancel", long_id)
    # cancelling while its running job stops, cancelled when none was running
    assert cancelled.returncode == 0, cancelled
    assert re.search(rf"study {long_id}: cancell(ing|ed): ", cancelled.stdout), cancelled.stdout
    after = ganforge(service, "study", "follow", long_id)
    assert after.returncode == 1, after
    assert "cancelled" in after.stdout, after.stdout

    job = ganforge(service, "show", done.jobs[0].id)  # a job's alerts, a line each
    assert job.returncode == 0 and "alert" in job.stdout and "collapse at step" in job.stdout, job.stdout

    missing = ganforge(service, "study", "show", "no-such-study")
    assert missing.returncode == 3, missing


def test_cli_refused_study_file_is_exit_2_with_the_field_path(service: Service, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**study_spec("bad"), "losses": ["nsgan", "no-such-loss"]}))
    result = ganforge(service, "study", "submit", str(bad))
    assert result.returncode == 2, result
    assert_no_traceback(result)
    assert "losses" in result.stderr and "no-such-loss" not in result.stdout, result.stderr
    unreadable = ganforge(service, "study", "submit", str(tmp_path / "none.yaml"))
    assert unreadable.returncode == 2 and "none.yaml" in unreadable.stderr, unreadable


def _rendered(study: dict[str, Any]) -> str:
    """`ganforge study show`'s text for `study` (the SDK's JSON form), as a log or pipe gets it."""
    import io

    from ganforge.cli import render
    from ganforge.cli.studies import study_details

    console = render.SafeConsole(file=io.StringIO(), width=render.WIDE, markup=False, emoji=False, color_system=None)
    console.print(study_details(study))
    return console.file.getvalue()  # type: ignore[attr-defined]


def _study_row(loss: str, *, finished: int, runs_measured: int, mean: float | None) -> dict[str, Any]:
    reached = 0 if mean is None else runs_measured
    figure = {"mean": 0.01, "std": None, "n": max(finished, 1)}
    return {
        "loss": loss,
        "point": {},
        "runs": 2,
        "finished": finished,
        "failed": 0,
        "quality": {"modes_covered": {"mean": None, "std": None, "n": 0}},
        "steps_to_threshold": {
            "modes_covered": {
                "mean": mean,
                "std": None,
                "reached": reached,
                "n": runs_measured,
                "threshold": 8,
                "rule": "modes_covered ≥ 8 (every mode)\x1b[2J",
            }
        },
        "wall_seconds": {"mean": None, "std": None, "n": 0},
        "cpu_seconds": {"mean": None, "std": None, "n": 0},
        "stability": {"loss_g_std_last_quarter": figure, "vanishing_grad_fraction_relative": figure},
    }


def _study(*rows: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "s-1",
        "name": "legend",
        "status": "running",
        "spec": {"dataset": {"builtin": "ring8"}},
        "measures": ["modes_covered"],
        "counts": {"queued": 2, "succeeded": 2},
        "job_count": 4,
        "comparison": list(rows),
    }


def test_the_table_legend_prints_as_lines_and_only_names_from_the_server_are_escaped() -> None:
    out = _rendered(_study(_study_row("nsgan\nx", finished=2, runs_measured=2, mean=120.0)))
    assert "\\x0a" not in out.replace("nsgan\\x0ax", ""), out  # the loss name is escaped, the legend is not
    assert "nsgan\\x0ax" in out and "\x1b" not in out and "(every mode)\\x1b[2J" in out, out
    legend = out.splitlines()[-4:]
    assert legend[0].startswith("RUNS: succeeded/all; FAILED: failed or cancelled runs"), out
    assert legend[1].startswith("STEPS TO THRESHOLD: the first step with modes_covered ≥ 8 (every mode)"), out
    assert legend[2].startswith("G STD: ") and "last quarter" in legend[2] and "units" in legend[2], out
    assert legend[3].startswith("VANISH REL: ") and "1 % of the run's own median" in legend[3], out


def test_steps_to_threshold_says_never_only_once_runs_finished_without_reaching_it() -> None:
    out = _rendered(
        _study(
            _study_row("queued", finished=0, runs_measured=0, mean=None),
            _study_row("early", finished=0, runs_measured=2, mean=None),
            _study_row("missed", finished=2, runs_measured=2, mean=None),
            _study_row("made", finished=2, runs_measured=2, mean=120.0),
        )
    )
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("LOSS"))
    column = header.index("STEPS TO THRESHOLD")
    cells = {line.split()[0]: line[column:].split("  ")[0] for line in lines[lines.index(header) + 1 :][:4]}
    assert cells == {"queued": "-", "early": "-", "missed": "never (0/2)", "made": "120 (2/2)"}, out
