"""The client commands of `ganforge`, run as a user runs them: the installed console script against a live service.

Each test runs `.venv/bin/ganforge` (the venv's console script) as a process against the
`service` fixture (API + worker, embedded), with GANFORGE_URL and GANFORGE_API_KEY
in its environment, and checks what it prints and its exit status: 0 ok, 1 job failed,
2 usage or a refused spec, 3 not found, 4 auth, 5 nothing listening.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open

from tests.conftest import api_and_worker
from tests.service import ROOT, Service, free_port, wait_for

GANFORGE = Path(sys.executable).parent / "ganforge"
SPEC = """\
name: cli-ring8
dataset: {builtin: ring8}
architecture: {name: mlp, hidden: 32, depth: 2}
loss: {name: nsgan}
training: {steps: 200, batch_size: 64}
every: {metrics: 10, samples: 100, checkpoint: 100}
"""


def ganforge(
    service: Service | None, *args: str, key: str | None = "key-a", url: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script with `args` against `service` (or `url`) as the owner of `key`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANFORGE_")}
    env["GANFORGE_URL"] = url or (service.url if service else "")
    if key is not None:
        env["GANFORGE_API_KEY"] = key
    return subprocess.run(
        [str(GANFORGE), *args],
        cwd=tempfile.gettempdir(),
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """API + one worker on one backend (the embedded default `ganforge up` runs).

    This face is an HTTP client; the API's and the SDK's tests cover both backends.
    """
    with api_and_worker("embedded", tmp_path_factory.mktemp("embedded")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "spec.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def finished_job(service: Service, spec_file: Path) -> dict[str, Any]:
    """A 200-step ring8 job submitted and followed to its end with `ganforge submit --follow`, and what it printed."""
    result = ganforge(service, "submit", str(spec_file), "--set", "name=followed", "--follow")
    assert result.returncode == 0, result
    job_id = result.stdout.split()[2]  # "submitted job <id> (...)"
    with service.client() as client:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return {"job": job, "stdout": result.stdout, "stderr": result.stderr}


def test_submit_follow_renders_progress_and_exits_0_when_the_job_succeeds(finished_job: dict[str, Any]) -> None:
    job, stdout, stderr = finished_job["job"], finished_job["stdout"], finished_job["stderr"]
    assert job["status"] == "succeeded" and job["name"] == "followed", job  # --set name=... reached the spec
    assert f"following job {job['id']}" in stderr, stderr
    bar = stderr.strip().splitlines()[-1]  # off a terminal the live bar is drawn once, as it ended
    assert "succeeded" in bar and "200/200" in bar and "steps/s" in bar and "loss_d" in bar and "loss_g" in bar, bar
    assert "modes" in bar and "HQ" in bar, bar  # ring8 is a 2-D mixture: modes covered and HQ share
    assert f"job {job['id']} succeeded at step 200/200" in stdout, stdout


def test_the_json_of_every_read_command_parses(service: Service, finished_job: dict[str, Any]) -> None:
    job_id = finished_job["job"]["id"]
    listed = json.loads(ganforge(service, "jobs", "--json", "--status", "succeeded", "--limit", "100").stdout)
    assert job_id in [job["id"] for job in listed] and {job["status"] for job in listed} == {"succeeded"}, listed
    shown = json.loads(ganforge(service, "show", job_id, "--json").stdout)
    assert (shown["id"], shown["progress"]["step"], shown["spec"]["training"]["steps"]) == (job_id, 200, 200)
    lines = ganforge(service, "events", job_id, "--json").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [event["id"] for event in events] == list(range(1, len(events) + 1)), events
    assert {"status", "metrics", "sample", "checkpoint"} <= {event["type"] for event in events}
    assert events[-1]["type"] == "status" and events[-1]["data"]["to"] == "succeeded", events[-1]
    samples = json.loads(ganforge(service, "samples", job_id, "--json").stdout)
    assert [sample["step"] for sample in samples] == [100, 200], samples
    loss = json.loads(ganforge(service, "catalog", "wgan-gp", "--json").stdout)
    assert "Gulrajani" in loss["paper"] and loss["defaults"]["n_critic"] == 5, loss


def test_submit_reads_stdin_and_json_and_quiet_print_only_what_scripts_read(service: Service) -> None:
    spec = json.dumps(
        {
            "dataset": {"builtin": "ring8"},
            "architecture": {"name": "mlp", "hidden": 16},
            "loss": {"name": "nsgan"},
            "training": {"steps": 5, "batch_size": 16},
        }
    )
    quiet = ganforge(service, "submit", "-", "-q", "--set", "training.steps=7", stdin=spec)
    assert quiet.returncode == 0 and len(quiet.stdout.split()) == 1, quiet
    job_id = quiet.stdout.strip()
    submitted = json.loads(ganforge(service, "submit", "-", "--json", stdin=spec).stdout)
    assert submitted["status"] in ("queued", "running") and submitted["spec"]["loss"]["lr_d"] == 2e-4, submitted
    with service.client() as client:
        assert wait_for(client, job_id, ("succeeded",))["spec"]["training"]["steps"] == 7
        wait_for(client, submitted["id"], ("succeeded",))


def test_download_writes_a_loadable_safetensors_file_and_samples_save_their_files(
    service: Service, finished_job: dict[str, Any], tmp_path: Path
) -> None:
    job_id = finished_job["job"]["id"]
    weights = tmp_path / "g.safetensors"
    result = ganforge(service, "download", job_id, "-o", str(weights))
    assert result.returncode == 0 and str(weights) in result.stdout, result
    with safe_open(str(weights), framework="np") as loaded:
        assert loaded.keys() and json.loads(loaded.metadata()["spec"])["loss"]["name"] == "nsgan"
        assert all(np.isfinite(loaded.get_tensor(name)).all() for name in loaded.keys())
    picture, batch = tmp_path / "s.png", tmp_path / "s.npy"
    assert ganforge(service, "samples", job_id, "--step", "latest", "-o", str(picture)).returncode == 0
    assert picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert ganforge(service, "samples", job_id, "--step", "100", "--npy", "-o", str(batch)).returncode == 0
    assert np.load(io.BytesIO(batch.read_bytes()), allow_pickle=False).shape[1] == 2


def test_datasets_upload_list_show_delete(service: Service, tmp_path: Path) -> None:
    archive = tmp_path / "points.npz"
    np.savez(archive, x=np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32))
    uploaded = ganforge(service, "datasets", "upload", str(archive), "--name", "cli-points", "--json")
    assert uploaded.returncode == 0, uploaded
    dataset = json.loads(uploaded.stdout)
    assert dataset["name"] == "cli-points"
    assert dataset["id"] in [d["id"] for d in json.loads(ganforge(service, "datasets", "list", "--json").stdout)]
    shown = json.loads(ganforge(service, "datasets", "show", dataset["id"], "--json").stdout)
    assert shown["info"]["shape"] == [2], shown
    assert ganforge(service, "datasets", "delete", dataset["id"]).returncode == 0


# --- exit statuses ---------------------------------------------------------------------------------------


def test_a_job_that_fails_exits_1_with_its_error(service: Service, spec_file: Path) -> None:
    # lr 1e30 makes the losses non-finite at step 1 (tests/test_service_e2e.py's divergence).
    result = ganforge(
        service, "submit", str(spec_file), "--set", "loss.name=lsgan", "--set", "loss.lr_d=1e30",
        "--set", "loss.lr_g=1e30", "--follow",
    )  # fmt: skip
    assert result.returncode == 1, result
    assert "failed at step" in result.stdout and "became" in result.stdout, result.stdout
    assert_no_traceback(result)


def test_a_spec_the_api_refuses_and_a_bad_set_exit_2_naming_the_field(service: Service, spec_file: Path) -> None:
    refused = ganforge(service, "submit", str(spec_file), "--set", "loss.name=nsgn", "--set", "training.steps=-1")
    assert refused.returncode == 2, refused
    assert "  loss.name: " in refused.stderr and "did you mean 'nsgan'" in refused.stderr, refused.stderr
    assert "  training.steps: " in refused.stderr, refused.stderr
    assert_no_traceback(refused)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--set", "loss.lr_d"], "--set 'loss.lr_d': expected PATH=VALUE"),
        (["--set", "name.first=x"], "--set 'name.first=x': name is"),  # a path through a string
        (["--set", "=1"], "--set '=1'"),
    ],
)
def test_a_malformed_set_or_spec_file_exits_2_before_any_request(args: list[str], says: str, spec_file: Path) -> None:
    # No service: the CLI refuses before it connects (the URL is nothing's).
    nowhere = f"http://127.0.0.1:{free_port()}"
    malformed = ganforge(None, "submit", str(spec_file), *args, url=nowhere)
    assert malformed.returncode == 2 and says in malformed.stderr, malformed
    assert_no_traceback(malformed)


def test_an_unreadable_spec_or_a_bad_option_exits_2(spec_file: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreadable = ganforge(None, "submit", str(spec_file.with_name("missing.yaml")), url=nowhere)
    assert unreadable.returncode == 2 and "missing.yaml" in unreadable.stderr, unreadable
    bad_option = ganforge(None, "download", "some-job", "--step", "soon", url=nowhere)
    assert bad_option.returncode == 2 and "--step" in bad_option.stderr, bad_option
    assert_no_traceback(unreadable)


def test_names_print_literally_and_control_characters_in_field_paths_escaped(service: Service, spec_file: Path) -> None:
    refused = ganforge(service, "submit", str(spec_file), "--set", "tags.t\x1b]0;TITLE\x07=1")
    assert refused.returncode == 2 and "  tags.t\\x1b]0;TITLE\\x07" in refused.stderr, refused.stderr
    assert "\x1b" not in refused.stderr and "\x07" not in refused.stderr, repr(refused.stderr)
    name = "[bold]x[/bold] :x:"  # rich markup and an emoji code: printed as they are
    submitted = ganforge(
        service, "submit", str(spec_file), "--set", f"name={name}", "--set", "tags.markup=[red]y",
        "--set", "training.steps=5", "-q",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted
    listed = ganforge(service, "jobs", "--tag", "markup:[red]y")
    assert listed.returncode == 0 and name in listed.stdout, listed.stdout
    shown = ganforge(service, "show", submitted.stdout.strip())
    assert name in shown.stdout and "markup:[red]y" in shown.stdout, shown.stdout


def test_an_unknown_job_exits_3(service: Service) -> None:
    for command in ("show", "follow", "download"):
        result = ganforge(service, command, "00000000-0000-4000-8000-000000000000")
        assert result.returncode == 3, (command, result)
        assert "no job" in result.stderr, result.stderr
        assert_no_traceback(result)
    missing = ganforge(service, "datasets", "show", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 3, missing


def test_a_wrong_key_exits_4(service: Service) -> None:
    result = ganforge(service, "jobs", key="not-a-key")
    assert result.returncode == 4, result
    assert "GANFORGE_API_KEY" in result.stderr, result.stderr
    assert_no_traceback(result)
    # --api-key (and --url) after the command win over the environment and over the ones before it
    assert ganforge(service, "jobs", "--api-key", "key-a", key="not-a-key").returncode == 0
    assert ganforge(service, "--api-key", "not-a-key", "jobs", "--api-key", "key-a").returncode == 0
    assert ganforge(None, "jobs", "--url", service.url, url="http://127.0.0.1:1").returncode == 0


def test_nothing_listening_exits_5_with_one_line_naming_the_url_after_saying_each_retry() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = ganforge(None, "jobs", url=url)
    assert result.returncode == 5, result
    *retries, error = result.stderr.strip().splitlines()
    assert error.startswith("ganforge: could not reach") and url in error, result.stderr
    assert len(retries) == 3 and all(line.startswith("retrying GET /v1/jobs in ") for line in retries), retries


# --- Ctrl-C ----------------------------------------------------------------------------------------------


def test_ctrl_c_detaches_from_a_followed_job_which_keeps_running(
    service: Service, spec_file: Path, tmp_path: Path
) -> None:
    submitted = ganforge(
        service,
        "submit",
        str(spec_file),
        "--set",
        "training.steps=1000000",
        "--set",
        "every.samples=5000",
        "--set",
        "every.checkpoint=5000",
        "-q",
    )
    job_id = submitted.stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANFORGE_")}
    env.update(GANFORGE_URL=service.url, GANFORGE_API_KEY="key-a")
    errors = tmp_path / "follow.err"
    follow = subprocess.Popen(
        [str(GANFORGE), "follow", job_id],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=errors.open("wb"),
        text=True,
        # A process started by a non-interactive shell may inherit SIGINT ignored; a terminal's does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        with service.client() as client:
            deadline = time.monotonic() + 60
            while (
                "Ctrl-C detaches" not in errors.read_text()
                or client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] < 20
            ):
                assert follow.poll() is None and time.monotonic() < deadline, errors.read_text()
                time.sleep(0.2)
            time.sleep(1.0)  # the event stream is open by now
            follow.send_signal(signal.SIGINT)
            stdout, _ = follow.communicate(timeout=15)
            assert follow.returncode == 0, (stdout, errors.read_text())
            message = errors.read_text()
            assert f"Re-attach with: ganforge follow {job_id}" in message and "Traceback" not in message, message
            before = client.get(f"/v1/jobs/{job_id}").json()
            time.sleep(1.5)
            after = client.get(f"/v1/jobs/{job_id}").json()
            assert before["status"] == after["status"] == "running", after
            assert after["progress"]["step"] > before["progress"]["step"], (before, after)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
        cancelled = ganforge(service, "cancel", job_id, "--json")
        assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] in ("cancelling", "cancelled")
