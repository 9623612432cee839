"""What a new user following the README met on the command line (issue 12's polish list): each checked against the
real command, as a process where it reads the settings or the store.

- a settings error is one line, exit 2, naming the variable and the field path (GANFORGE_OWNER_QUOTAS);
- `keys` takes --data-dir after the command, `keys list --json` prints a list (as `jobs --json`), and the first
  admin key's hint is a command that works for a non-default data dir;
- `keys list --remote --owner` another team is exit 2, not an empty table;
- `show` and `jobs` show a job's priority, `show` why a queued job waits; `quota` shows binary units.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ganforge.cli import main
from ganforge.cli.render import binary_size
from models.hints import store_command, store_note
from tests.conftest import api_only
from tests.service import ROOT, TINY_SPEC, service_env


def ganforge(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ganforge", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=90
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{bad", "GANFORGE_OWNER_QUOTAS: not valid JSON"),
        ('{"vision": {"queued_job": 5}}', "GANFORGE_OWNER_QUOTAS at vision.queued_job: no such field"),
    ],
)
def test_a_bad_owner_quotas_setting_is_one_line_exit_2_naming_it(value: str, says: str, tmp_path: Path) -> None:
    env = service_env(tmp_path, None, None, GANFORGE_OWNER_QUOTAS=value)
    result = ganforge(["migrate"], env)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("ganforge: refusing to start, the GANFORGE_* settings are invalid: ")
    assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "GANFORGE_OWNER_QUOTAS_VISION" not in result.stderr and "Value error" not in result.stderr
    assert not (tmp_path / "ganforge.db").exists()


def test_keys_take_data_dir_after_the_command_and_the_first_key_hint_works_from_elsewhere(tmp_path: Path) -> None:
    data = tmp_path / "gf data"  # a space: the hint must quote it
    env = service_env(tmp_path / "unused", None, None, GANFORGE_API_KEYS="")
    del env["GANFORGE_DATA_DIR"]
    assert ganforge(["migrate", "--data-dir", str(data)], env).returncode == 0
    # The hint `ganforge up --auth --data-dir DIR` prints, made as `up` makes it (first_admin_key).
    code = "from ganforge.cli.server import first_admin_key; first_admin_key('admin', True)"
    hinted = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "GANFORGE_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert hinted.returncode == 0, hinted.stderr
    command = re.search(r"`(ganforge [^`]*keys create --owner TEAM --scopes read,submit)`", hinted.stdout)
    assert command is not None and "--data-dir" in command.group(1), hinted.stdout
    words = shlex.split(command.group(1).replace("TEAM", "vision"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    made = ganforge([*words[1:], "--json"], {**env, "PYTHONPATH": str(ROOT)}, cwd=elsewhere)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["owner"] == "vision"
    # --data-dir after `keys create` and `keys list` (the README: before or after the command).
    after = ganforge(["keys", "create", "--data-dir", str(data), "--owner", "team-b", "--json"], env)
    assert after.returncode == 0, after.stderr
    listed = ganforge(["keys", "list", "--data-dir", str(data), "--json"], env)
    assert listed.returncode == 0, listed.stderr
    keys = json.loads(listed.stdout)
    assert isinstance(keys, list) and {key["owner"] for key in keys} == {"admin", "vision", "team-b"}, keys
    revoked = ganforge(["keys", "revoke", json.loads(after.stdout)["prefix"], "--data-dir", str(data)], env)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr


def test_store_command_names_the_data_dir_unless_it_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GANFORGE_DATABASE_URL", raising=False)
    assert store_command(Path("ganforge-data").resolve(), "keys") == "ganforge keys" and store_note() == ""
    assert store_command(Path("/srv/gf data"), "keys") == "ganforge --data-dir '/srv/gf data' keys"
    monkeypatch.setenv("GANFORGE_DATABASE_URL", "postgresql+psycopg://u:secret@db/gf")
    assert store_command(Path("/srv/gf"), "keys") == "ganforge keys"
    assert store_note() == " with the same GANFORGE_DATABASE_URL"  # never the URL itself: it may hold a password


def test_binary_sizes_read_as_the_settings_take_them() -> None:
    assert [binary_size(v) for v in (100 * 2**30, 10 * 1024, 812, 3 * 2**19, None)] == [
        "100 GiB",
        "10 KiB",
        "812 B",
        "1.5 MiB",
        "-",
    ]


def test_remote_owner_show_jobs_and_quota_say_what_the_user_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {"GANFORGE_QUOTA_STORED_BYTES": "100GiB", "GANFORGE_QUOTA_RUNNING_JOBS": "1"}
    with api_only("embedded", tmp_path, **settings) as deployment:
        base = ["--url", deployment.url, "--api-key", "key-a"]
        assert main([*base, "keys", "list", "--remote", "--owner", "team-b"]) == 2
        refused = capsys.readouterr().err
        assert "--owner" in refused and "store" in refused, refused
        assert main([*base, "keys", "list", "--remote", "--owner", "team-a", "--json"]) == 0
        assert isinstance(json.loads(capsys.readouterr().out), list)

        with deployment.client() as client:  # no worker: the job stays queued
            created = client.post("/v1/jobs", json={**TINY_SPEC, "priority": 30})
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["priority"] == 30 and job["queue_reason"], job  # POST answers it as GET does
        assert main([*base, "show", job["id"]]) == 0
        shown = capsys.readouterr().out
        assert re.search(r"\npriority +30 +\n", shown) and re.search(r"waiting\s+waiting for a free worker", shown), (
            shown
        )
        assert main([*base, "jobs"]) == 0
        table = capsys.readouterr().out
        assert "PRIO" in table and re.search(rf"{job['id']}\s+\S*\s*queued\s+30\s", table), table

        assert main([*base, "quota"]) == 0
        quota = capsys.readouterr().out
        assert "100 GiB" in quota and "GB" not in quota.replace("GiB", ""), quota
