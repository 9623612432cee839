"""bench/study.py, the in-process study runner, on a study small enough to run in seconds: it cannot rot."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import yaml

from tests.service import ROOT

spec = importlib.util.spec_from_file_location("bench_study", ROOT / "bench" / "study.py")
assert spec is not None and spec.loader is not None
study = importlib.util.module_from_spec(spec)
sys.modules["bench_study"] = study
spec.loader.exec_module(study)

BODY = {
    "name": "smoke",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
    "losses": ["wgan", "nsgan"],
    "seeds": 1,
    "training": {"steps": 20, "batch_size": 64},
    "every": {"metrics": 5, "samples": 10, "checkpoint": 20},
}


def test_a_small_study_runs_resumes_and_reports(tmp_path: Path) -> None:
    spec_file = tmp_path / "smoke.yaml"
    spec_file.write_text(yaml.safe_dump(BODY))
    body = study.load_study(spec_file)
    results = tmp_path / "results"
    log = io.StringIO()
    cells = study.run_study(body, results, log=log)

    # One run per loss, the cheap loss first (nsgan's one D step before wgan's five), each saved as it ended.
    assert [c.loss for c in cells] == ["nsgan", "wgan"]
    assert sorted(p.name for p in results.iterdir()) == ["nsgan__default__seed0.json", "wgan__default__seed0.json"]
    saved = json.loads((results / "wgan__default__seed0.json").read_text())
    assert saved["status"] == "succeeded" and saved["step"] == saved["total_steps"] == 20
    assert saved["series"]["modes_covered"][0] == [10, 20]  # the snapshot evaluations, as a series
    assert saved["series"]["loss_g"][0] == [5, 10, 15, 20]
    assert [s for s, _ in saved["snapshots"]] == [10, 20]
    assert saved["wall_seconds"] > 0 and saved["cpu_seconds"] > 0
    assert saved["spec"]["tags"]["study_loss"] == "wgan" and saved["spec"]["training"]["seed"] == 0

    # A re-run skips what is done.
    again = io.StringIO()
    study.run_study(body, results, log=again)
    assert "0 to run now" in again.getvalue()

    runs = study.load_runs(results)
    assert {r.loss for r in runs} == {"nsgan", "wgan"}
    table = study.write_report(spec_file, body, cells, results, tmp_path / "smoke.md")
    assert len([line for line in table.splitlines() if line.startswith(("| nsgan | ", "| wgan | "))]) == 2
    assert len([line for line in table.splitlines() if line.startswith(("| nsgan__", "| wgan__"))]) == 2
    last_modes = saved["series"]["modes_covered"][1][-1]
    wgan_row = next(line for line in table.splitlines() if line.startswith("| wgan | –"))
    assert f"| {last_modes:.2f} |" in wgan_row  # one seed: the mean is that run's last snapshot, no std
    assert "Finished 2 of 2 runs" in table
    assert (tmp_path / "smoke.md").read_text().startswith("# Study `smoke`")
