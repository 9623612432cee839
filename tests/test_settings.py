"""Settings that would fail open or run unsafely refuse validation, and a process given them refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.deps import owner_for
from models.queue import VISIBILITY_TIMEOUT_SECONDS, make_celery
from models.settings import Settings
from tests.service import ROOT, free_port, service_env

SECRET = "s3cret-token"


@pytest.fixture(autouse=True)
def _no_ganforge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("GANFORGE_")]:
        monkeypatch.delenv(name)


def settings(tmp_path: Path, **values: object) -> Settings:
    """Settings from these values (strings, as the environment gives them, or typed values)."""
    return Settings.model_validate({"data_dir": tmp_path, **values})


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        (" ", "only whitespace"),
        ("\t \n", "only whitespace"),
        ("=bob", "entry 1 has an empty token"),
        (f"{SECRET}=alice, =bob", "entry 2 has an empty token"),
        (SECRET, "entry 1 has no '='"),
        (f"{SECRET}=alice,{SECRET}=bob", "entry 2 repeats an earlier entry's token"),
        (f"{SECRET}=", "entry 1 has an empty owner"),
        (f"{SECRET}=  ", "entry 1 has an empty owner"),
        (f"{SECRET}=alice,,other=bob", "entry 2 is empty"),
        (f"{SECRET}=alice,", "entry 2 is empty"),
        ("two words=alice", "cannot contain whitespace"),
        (f"{SECRET}={'o' * 129}", "longer than 128"),
    ],
)
def test_bad_api_keys_are_refused_naming_the_variable(keys: str, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        settings(tmp_path, api_keys=keys)
    message = str(refused.value)
    assert "GANFORGE_API_KEYS" in message and fragment in message, message
    assert SECRET not in message  # a refused key is not printed into the log


def test_api_keys_are_parsed_once_into_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = settings(tmp_path, api_keys=" k1=alice , k2 = bob")
    assert parsed.api_keys == {"k1": "alice", "k2": "bob"}
    assert settings(tmp_path).api_keys == {}
    assert "k1" not in repr(parsed)
    with pytest.raises(ValidationError, match="empty token"):
        settings(tmp_path, api_keys={"": "bob"})
    monkeypatch.setenv("GANFORGE_API_KEYS", "k1=alice,k2=bob")
    assert Settings().api_keys == {"k1": "alice", "k2": "bob"}  # from the environment's string


def test_memory_sizes_read_as_bytes_or_as_people_write_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFORGE_WORKER_MEMORY_BYTES", "16GiB")
    monkeypatch.setenv("GANFORGE_WORKER_ADDRESS_SPACE_BYTES", "1000")
    read = Settings()
    assert (read.worker_memory_bytes, read.worker_address_space_bytes) == (16 * 1024**3, 1000)
    monkeypatch.setenv("GANFORGE_WORKER_MEMORY_BYTES", "lots")
    with pytest.raises(ValidationError, match="worker_memory_bytes"):
        Settings()


def test_production_needs_keys_and_environment_is_one_of_two(tmp_path: Path) -> None:
    # Without GANFORGE_API_KEYS production is refused at API startup, where the store's keys are seen (test_keys).
    assert settings(tmp_path, environment="production").environment == "production"
    with pytest.raises(ValidationError, match="'development' or 'production'"):
        settings(tmp_path, environment="prod")
    assert settings(tmp_path, environment="production", api_keys="k=a").environment == "production"


@pytest.mark.parametrize(("flush", "lease", "ok"), [(15.0, 60.0, True), (15.1, 60.0, False), (1.0, 2.0, False)])
def test_metrics_flush_must_be_well_below_the_lease_timeout(
    flush: float, lease: float, ok: bool, tmp_path: Path
) -> None:
    def make() -> Settings:
        return settings(tmp_path, metrics_flush_seconds=flush, lease_timeout_seconds=lease)

    if ok:
        assert make().metrics_flush_seconds == flush
        return
    with pytest.raises(ValidationError) as refused:
        make()
    message = str(refused.value)
    assert "GANFORGE_METRICS_FLUSH_SECONDS" in message and "renews the job's lease" in message, message


def test_heartbeat_seconds_is_gone_the_flush_renews_the_lease() -> None:
    assert "heartbeat_seconds" not in Settings.model_fields
    assert "renews its job's lease" in (Settings.model_fields["metrics_flush_seconds"].description or "")


def test_redis_visibility_timeout_is_a_day_and_the_file_broker_has_none(tmp_path: Path) -> None:
    redis = make_celery(settings(tmp_path, broker_url="redis://127.0.0.1:6379/0"))
    assert redis.conf.broker_transport_options["visibility_timeout"] == VISIBILITY_TIMEOUT_SECONDS == 86400
    embedded = make_celery(settings(tmp_path))
    assert "visibility_timeout" not in embedded.conf.broker_transport_options


def test_the_key_lookup_refuses_bare_bearers_and_other_schemes() -> None:
    keys = {"k1": "alice", "k2": "bob"}
    assert owner_for(keys, "Bearer k2") == "bob"
    assert owner_for(keys, "bearer  k1 ") == "alice"
    for header in (None, "", "Bearer", "Bearer ", "Bearer  ", "Basic k1", "k1", "Bearer k3", "Bearer k1k2"):
        assert owner_for(keys, header) is None, header
    assert owner_for({}, None) == "anonymous"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"GANFORGE_ENVIRONMENT": "production", "GANFORGE_API_KEYS": " "}, "only whitespace"),
        ({"GANFORGE_ENVIRONMENT": "production", "GANFORGE_API_KEYS": ""}, "must be set when"),
        ({"GANFORGE_API_KEYS": "=bob"}, "empty token"),
        ({"GANFORGE_API_KEYS": SECRET}, "has no '='"),
        ({"GANFORGE_METRICS_FLUSH_SECONDS": "5", "GANFORGE_LEASE_TIMEOUT_SECONDS": "10"}, "renews the job's lease"),
        ({"GANFORGE_RATE_SUBMIT": "1/0 seconds"}, "GANFORGE_RATE_SUBMIT='1/0 seconds' is not one rate"),
        ({"GANFORGE_OWNER_QUOTAS": '{"v": {"steps_per_job": true}}'}, "GANFORGE_OWNER_QUOTAS at v.steps_per_job"),
    ],
)
def test_the_api_process_refuses_to_start_with_unsafe_settings(
    env: dict[str, str], fragment: str, tmp_path: Path
) -> None:
    port = free_port()
    process = subprocess.run(
        [sys.executable, "-m", "ganforge", "api", "--port", str(port)],
        cwd=ROOT,
        env=service_env(tmp_path, None, None, **env),
        capture_output=True,
        timeout=60,
    )
    output = (process.stdout + process.stderr).decode()
    assert process.returncode != 0, output
    assert "refusing to start" in output and fragment in output, output
    assert SECRET not in output


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        # `limits` reads a period multiplier of 0 as 1: "1/0 seconds" would be 1 per second
        ({"GANFORGE_RATE_SUBMIT": "1/0 seconds"}, "GANFORGE_RATE_SUBMIT='1/0 seconds' is not one rate"),
        ({"GANFORGE_RATE_UPLOAD": "1 per 0 minute"}, "GANFORGE_RATE_UPLOAD='1 per 0 minute' is not one rate"),
        # past Redis's 64-bit counts (every counted request was a ResponseError, which turned the limits off)
        ({"GANFORGE_RATE_UPLOAD": "99999999999999999999/minute"}, "GANFORGE_RATE_UPLOAD='9999"),
        ({"GANFORGE_RATE_UNAUTHENTICATED": "1000000001/second"}, "GANFORGE_RATE_UNAUTHENTICATED='1000000001"),
        ({"GANFORGE_RATE_SUBMIT": "1/1000000001 seconds"}, "GANFORGE_RATE_SUBMIT='1/1000000001"),
        ({"GANFORGE_OWNER_QUOTAS": '{"v": {"stored_bytes": "99999999999999999999999TiB"}}'}, "GANFORGE_OWNER_QUOTAS"),
        ({"GANFORGE_OWNER_QUOTAS": '{"v": {"stored_bytes": 9223372036854775808}}'}, "GANFORGE_OWNER_QUOTAS at v."),
        ({"GANFORGE_OWNER_QUOTAS": '{"v": {"steps_per_job": true}}'}, "GANFORGE_OWNER_QUOTAS at v.steps_per_job"),
        ({"GANFORGE_OWNER_QUOTAS": '{"v": {"running_jobs": 2.0}}'}, "GANFORGE_OWNER_QUOTAS at v.running_jobs"),
        ({"GANFORGE_OWNER_QUOTAS": '{"v": {"stored_bytes": false}}'}, "GANFORGE_OWNER_QUOTAS at v.stored_bytes"),
        ({"GANFORGE_QUOTA_STORED_BYTES": "99999999999999999999999TiB"}, "GANFORGE_QUOTA_STORED_BYTES"),
        ({"GANFORGE_QUOTA_RUNNING_JOBS": "true"}, "GANFORGE_QUOTA_RUNNING_JOBS"),
        ({"GANFORGE_MAX_KEYS_PER_OWNER": "0"}, "max_keys_per_owner"),
    ],
)
def test_rates_and_quotas_out_of_range_are_refused_naming_the_setting(
    env: dict[str, str], setting: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=tmp_path)
    assert setting in str(refused.value), refused.value


def test_the_largest_rates_and_quotas_still_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GANFORGE_RATE_SUBMIT", "1000000000 per 1000000000 seconds")
    monkeypatch.setenv("GANFORGE_QUOTA_RUNNING_JOBS", "4")
    monkeypatch.setenv(
        "GANFORGE_OWNER_QUOTAS", '{"v": {"stored_bytes": 9223372036854775807, "steps_per_job": 1000000000}}'
    )
    read = Settings(data_dir=tmp_path)
    assert read.quota.running_jobs == 4 and read.max_keys_per_owner == 100
    assert read.quotas("v").stored_bytes == 2**63 - 1 and read.quotas("v").steps_per_job == 10**9
