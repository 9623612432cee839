"""Rate limits (api/ratelimit.py, enforced in api/gate.py) against real uvicorn processes on both backends.

Submissions and uploads per key, failed authentications per client IP, the counts shared by two API processes
through Redis, Redis going away (requests pass uncounted), a bad rate string refusing to start, and the SDK
waiting out a 429's Retry-After. Rates are small ("3 per 6 seconds") so a window passes in a few seconds.
"""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.ratelimit import RateLimits, Verdict
from ganforge.client import Client
from ganforge.supervisor import api_command
from models.settings import Settings
from tests.conftest import BACKENDS, api_only
from tests.service import (
    KEYS,
    REDIS_URL,
    ROOT,
    TINY_SPEC,
    Service,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    service_env,
)
from tests.tcp_proxy import TcpProxy

# Seconds: long enough that the requests meant to fill a window arrive within it on a loaded machine.
WINDOW = 6
RATES = {
    "GANFORGE_RATE_SUBMIT": f"3/{WINDOW}second",
    "GANFORGE_RATE_UPLOAD": f"2/{WINDOW}second",
    "GANFORGE_RATE_UNAUTHENTICATED": f"4/{WINDOW}second",
}
# One env key per test, so no test spends another's window (key-a and key-b of tests/service.py stay in).
MORE_KEYS = {f"key-{letter}": f"team-{letter}" for letter in "cdefghij"}
MAX_KEYS = 2  # GANFORGE_MAX_KEYS_PER_OWNER here
API_KEYS = ",".join(f"{key}={owner}" for key, owner in {**KEYS, **MORE_KEYS}.items())
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An API (no worker: nothing here trains) with small rates, shared by the module's tests of one backend."""
    folder = tmp_path_factory.mktemp(f"rate-{request.param}")
    # FORWARDED_ALLOW_IPS unset (as by default): X-Forwarded-For is not read, whatever this shell exports.
    extra = {"GANFORGE_API_KEYS": API_KEYS, "GANFORGE_MAX_KEYS_PER_OWNER": str(MAX_KEYS), "FORWARDED_ALLOW_IPS": ""}
    with api_only(request.param, folder, **extra, **RATES) as deployment:
        yield deployment


def npz(value: float) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.full((4, 2), value, np.float32))
    return buffer.getvalue()


def assert_limited(response: httpx.Response, setting: str, limit: int) -> int:
    """The 429 a rate gives: its error body, Retry-After and RateLimit headers; returns Retry-After."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["setting"] == setting, error
    assert setting in error["message"] and f"{limit} " in error["message"], error
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= WINDOW, retry_after
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-reset"] == retry_after
    return int(retry_after)


def test_a_submission_flood_from_one_key_is_cut_and_another_key_is_not(service: Service) -> None:
    with service.client("key-c") as flood, service.client("key-d") as other:
        remaining = []
        for _ in range(3):
            response = flood.post("/v1/jobs", json=TINY_SPEC)
            assert response.status_code == 201, response.text
            assert all(name in response.headers for name in RATE_HEADERS), response.headers
            assert response.headers["ratelimit-limit"] == "3"
            remaining.append(int(response.headers["ratelimit-remaining"]))
        assert remaining == [2, 1, 0]
        assert_limited(flood.post("/v1/jobs", json=TINY_SPEC), "GANFORGE_RATE_SUBMIT", 3)
        # studies and generate count against the same rate, and are refused before their body is parsed
        assert_limited(flood.post("/v1/studies", content=b"not json"), "GANFORGE_RATE_SUBMIT", 3)
        assert_limited(flood.post("/v1/jobs/j-none/generate", json={}), "GANFORGE_RATE_SUBMIT", 3)
        # reads are not limited, and another key has its own count
        listed = flood.get("/v1/jobs")
        assert listed.status_code == 200 and "ratelimit-limit" not in listed.headers
        assert len(listed.json()["jobs"]) == 3  # the refused submissions created nothing
        assert other.post("/v1/jobs", json=TINY_SPEC).status_code == 201


def test_uploads_have_their_own_rate_and_a_refused_body_is_never_read(service: Service) -> None:
    with service.client("key-e") as client:
        # Refused uploads count too (here 415s, which come back at once: the window fills however loaded the
        # machine); their answers carry the RateLimit headers as well.
        for remaining in (1, 0):
            response = client.post("/v1/datasets", json={})
            assert response.status_code == 415, response.text
            assert response.headers["ratelimit-limit"] == "2"
            assert response.headers["ratelimit-remaining"] == str(remaining)
        assert_limited(client.post("/v1/datasets", files={"file": ("p.npz", npz(3.0))}), "GANFORGE_RATE_UPLOAD", 2)
        assert client.post("/v1/jobs", json=TINY_SPEC).status_code == 201  # submissions are counted apart
    # A 1 GiB upload announced, none of it sent: the 429 comes at once, so the gate read no body.
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-e\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1073741824\r\n\r\n"
        )
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 429 "), head[:200]
    assert b"retry-after: " in head.lower()


def test_a_flood_of_bad_keys_from_one_address_is_cut_before_the_key_lookup(service: Service) -> None:
    # key-f's store-key-shaped twin: each would need a store lookup
    bad = [f"gf_{n:08x}_{'x' * 32}" for n in range(4)]
    for key in bad:
        with service.client(key) as client:
            assert client.get("/v1/jobs").status_code == 401
    with service.client("gf_deadbeef_" + "y" * 32) as client:
        assert_limited(client.get("/v1/jobs"), "GANFORGE_RATE_UNAUTHENTICATED", 4)
    assert_limited(httpx.get(f"{service.url}/v1/jobs", timeout=10), "GANFORGE_RATE_UNAUTHENTICATED", 4)  # no key
    with service.client("key-f") as known:  # a key known without the store still gets in from that address
        assert known.get("/v1/jobs").status_code == 200


def test_after_retry_after_each_limit_lets_in_again_and_the_sdk_waits_it_out(service: Service, tmp_path: Path) -> None:
    """One wait for the three rates: each is filled to its 429, then the SDK's upload waits out its Retry-After
    (the last window filled) and is sent again, though it carries no Idempotency-Key: the API refused it unread."""
    free_at = 0.0  # time.monotonic() by which every window filled here has a place again

    def fill(client: httpx.Client, method: str, path: str, **request: object) -> None:
        nonlocal free_at
        for _ in range(6):  # the rates here take at most 4
            response = client.request(method, path, **request)  # type: ignore[arg-type]
            if response.status_code == 429:
                free_at = max(free_at, time.monotonic() + int(response.headers["retry-after"]))
                return
        raise AssertionError(f"{method} {path} was never refused: {response.status_code} {response.text}")

    bad_key = "gf_cafebabe_" + "z" * 32
    with service.client(bad_key) as bad, service.client("key-g") as submitter, service.client("key-h") as uploader:
        fill(bad, "GET", "/v1/jobs")
        fill(submitter, "POST", "/v1/jobs?validate_only=true", json=TINY_SPEC)
        fill(uploader, "POST", "/v1/datasets", json={})
        told: list[str] = []
        path = tmp_path / "points.npz"
        path.write_bytes(npz(6.0))
        with Client(service.url, "key-h", on_retry=told.append) as sdk:
            assert sdk.datasets.upload(path).id
        assert told and told[0].startswith("rate limited: waiting "), told
        time.sleep(max(0.0, free_at - time.monotonic()))
        assert submitter.post("/v1/jobs", json=TINY_SPEC).status_code == 201
        assert bad.get("/v1/jobs").status_code == 401  # a store lookup again, and its honest 401


@pytest.mark.parametrize("header", ["Idempotency-Key", "Last-Event-ID"])
def test_a_header_read_as_one_value_given_twice_is_refused(service: Service, header: str) -> None:
    with service.client("key-d") as client:
        response = client.get("/v1/jobs", headers=[(header, "1"), (header, "2")])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "repeated_header"
    assert header.lower() in response.json()["error"]["message"]


def test_openapi_declares_the_429_of_the_limited_operations(service: Service) -> None:
    paths = httpx.get(f"{service.url}/openapi.json", timeout=10).json()["paths"]
    for path, method in (("/v1/jobs", "post"), ("/v1/studies", "post"), ("/v1/jobs/{job_id}/generate", "post")):
        answer = paths[path][method]["responses"]["429"]
        assert "GANFORGE_RATE_SUBMIT" in answer["description"], answer
        assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(answer["headers"])
        assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert "GANFORGE_RATE_UPLOAD" in paths["/v1/datasets"]["post"]["responses"]["429"]["description"]
    # any /v1 operation: a client address over its rate of failed authentications
    listing = paths["/v1/jobs"]["get"]["responses"]["429"]["description"]
    assert "GANFORGE_RATE_UNAUTHENTICATED" in listing and "GANFORGE_RATE_SUBMIT" not in listing


@pytest.fixture
def proxied_redis() -> Iterator[TcpProxy]:
    """A way to this machine's Redis that a test can cut."""
    proxy = TcpProxy(int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.cut()


@pytest.mark.slow  # two API processes and a PostgreSQL database of their own
def test_two_api_processes_share_the_count_through_redis_and_let_requests_through_without_it(
    tmp_path: Path, proxied_redis: TcpProxy
) -> None:
    database, url = create_postgres_database()
    broker = f"redis://127.0.0.1:{proxied_redis.port}/0"
    first = Service(env=service_env(tmp_path, url, broker, GANFORGE_API_KEYS=API_KEYS, **RATES), data_dir=tmp_path)
    second = Service(env=first.env, data_dir=tmp_path)
    try:
        first.migrate()
        first.start_api()
        second.start_api()
        with first.client("key-c") as one, second.client("key-c") as two:
            assert one.post("/v1/jobs", json=TINY_SPEC).status_code == 201
            assert one.post("/v1/jobs", json=TINY_SPEC).status_code == 201
            seen = two.post("/v1/jobs", json=TINY_SPEC)
            assert seen.status_code == 201 and seen.headers["ratelimit-remaining"] == "0"  # the first's two
            assert_limited(two.post("/v1/jobs", json=TINY_SPEC), "GANFORGE_RATE_SUBMIT", 3)
            assert_limited(one.post("/v1/jobs", json=TINY_SPEC), "GANFORGE_RATE_SUBMIT", 3)
            # Redis goes away: requests pass uncounted (fail open), never a 500 or a 429 for everyone.
            proxied_redis.cut()
            started = time.monotonic()
            answers = [api.post("/v1/jobs?validate_only=true", json=TINY_SPEC) for api in (one, two) * 3]
            seconds = time.monotonic() - started
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        assert not any("ratelimit-limit" in a.headers for a in answers)
        assert seconds < 10, f"6 validations took {seconds:.1f} s without Redis"
        print(f"\n6 submissions (validate_only) over the rate, Redis cut: {seconds:.2f} s")
        assert "rate limits not applied" in (tmp_path / "api.log").read_text()
    finally:
        second.stop()
        first.stop()
        drop_postgres_database(database)


@pytest.mark.parametrize("value", ["lots", "0/minute", "3/minute;10/hour"])
def test_a_bad_rate_refuses_to_start_naming_the_setting(tmp_path: Path, value: str) -> None:
    env = service_env(tmp_path, None, None, GANFORGE_RATE_UPLOAD=value)
    result = subprocess.run(
        [sys.executable, "-m", "ganforge", "api", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert f"GANFORGE_RATE_UPLOAD={value!r} is not one rate" in result.stderr, result.stderr


def test_more_keys_make_no_more_room_the_owner_is_counted_and_keys_are_capped(service: Service) -> None:
    """POST /v1/keys counts against the submit rate, and every key's submissions against its owner's too: an
    owner that makes keys gets no more submissions than one key would. Past GANFORGE_MAX_KEYS_PER_OWNER active
    keys, POST /v1/keys is a 403 quota_exceeded naming it."""
    with service.client("key-i") as admin:
        made = [admin.post("/v1/keys", json={"scopes": ["submit"]}) for _ in range(2)]  # 2 of team-i's 3
        assert [response.status_code for response in made] == [201, 201], [r.text for r in made]
        assert made[1].headers["ratelimit-remaining"] == "1"
        with service.client(made[0].json()["key"]) as first, service.client(made[1].json()["key"]) as second:
            assert first.post("/v1/jobs", json=TINY_SPEC).status_code == 201  # team-i's third
            refused = second.post("/v1/jobs", json=TINY_SPEC)  # this key's first, but the owner's fourth
            assert_limited(refused, "GANFORGE_RATE_SUBMIT", 3)
            assert "for this owner's keys together" in refused.json()["error"]["message"]
        assert_limited(admin.post("/v1/keys", json={}), "GANFORGE_RATE_SUBMIT", 3)
    with service.client("key-j") as admin:
        for _ in range(MAX_KEYS):
            assert admin.post("/v1/keys", json={"scopes": ["read"]}).status_code == 201
        capped = admin.post("/v1/keys", json={"scopes": ["read"]})  # the third request: within the rate
        assert capped.status_code == 403, capped.text
        error = capped.json()["error"]
        assert error["code"] == "quota_exceeded" and "GANFORGE_MAX_KEYS_PER_OWNER" in error["message"], error
        assert len(admin.get("/v1/keys").json()["keys"]) == MAX_KEYS


def test_the_uvicorn_launch_reads_forwarded_headers_only_when_the_operator_names_the_proxies() -> None:
    assert api_command("127.0.0.1", 8000, {})[-1] == "--no-proxy-headers"
    assert api_command("127.0.0.1", 8000, {"FORWARDED_ALLOW_IPS": " "})[-1] == "--no-proxy-headers"
    # uvicorn reads FORWARDED_ALLOW_IPS itself, and its proxy headers are on by default
    assert "--no-proxy-headers" not in api_command("127.0.0.1", 8000, {"FORWARDED_ALLOW_IPS": "10.0.0.5"})


def fill_failed_authentications(service: Service, path: str, **headers: str) -> httpx.Response:
    """Bad store-key-shaped keys (each a store lookup) to `path` until one is a 429, which it returns (a 401 for
    each before; fails after 6: the rate here is 4, and other tests may have counted some already). `{n}` in a
    header's value is the attempt's number."""
    for n in range(6):
        with service.client(f"gf_{n:08x}_{'m' * 32}") as client:
            response = client.get(path, headers={name: value.format(n=n) for name, value in headers.items()})
        if response.status_code == 429:
            return response
        assert response.status_code == 401, response.text
    raise AssertionError(f"6 bad keys to {path} and never a 429")


def test_metrics_counts_failed_authentications_and_a_blocked_address_gets_no_lookup_there(service: Service) -> None:
    """/metrics takes a key like /v1: its bad keys are counted, and once the address is over the rate it gets the
    429 there too, with no store lookup (a store key's login waits out the window); known keys still get in."""
    refused = fill_failed_authentications(service, "/metrics")
    assert_limited(refused, "GANFORGE_RATE_UNAUTHENTICATED", 4)
    with service.client("gf_abcdefgh_" + "n" * 32) as unknown:
        assert_limited(unknown.get("/metrics"), "GANFORGE_RATE_UNAUTHENTICATED", 4)
        assert_limited(unknown.get("/v1/jobs"), "GANFORGE_RATE_UNAUTHENTICATED", 4)
    with service.client("key-c") as known:
        assert known.get("/metrics").status_code == 200


def test_x_forwarded_for_does_not_move_the_address_the_failed_authentications_count(service: Service) -> None:
    """A client sending another X-Forwarded-For with each bad key is still one address (no proxy is trusted
    without FORWARDED_ALLOW_IPS): it is cut at the rate. (Were each header its address, every one would be new
    and get its 401, however full the socket's address's window is.)"""
    refused = fill_failed_authentications(service, "/v1/jobs", **{"X-Forwarded-For": "203.0.113.{n}"})
    assert_limited(refused, "GANFORGE_RATE_UNAUTHENTICATED", 4)


def test_a_storage_error_on_one_rate_leaves_the_other_rates_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail open per rate: an error counting uploads (such as a Redis error reply) lets uploads pass uncounted for
    STORAGE_RETRY_SECONDS, but submissions are still counted (before, every limit was off for 5 s)."""
    limits = RateLimits(Settings(data_dir=tmp_path, rate_submit="1/minute", rate_upload="1/minute"))
    counted = limits.limiter.hit

    async def hit(item: object, name: str, who: str) -> bool:
        if name == "upload":
            raise RuntimeError("ERR value is not an integer or out of range")
        return await counted(item, name, who)  # type: ignore[arg-type]

    monkeypatch.setattr(limits.limiter, "hit", hit)
    submit, upload = limits.rates["submit"], limits.rates["upload"]
    assert submit is not None and upload is not None

    async def run() -> tuple[object, ...]:
        failed = await limits.hit(upload, "k")
        first, second = await limits.hit(submit, "k"), await limits.hit(submit, "k")
        return failed, first, second

    failed, first, second = asyncio.run(run())
    assert failed is None  # uploads pass uncounted
    assert isinstance(first, Verdict) and first.allowed
    assert isinstance(second, Verdict) and not second.allowed  # submissions still limited
