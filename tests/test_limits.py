"""The API's edge against a real uvicorn: bodies refused before they are read, every integer bounded.

Only the API process runs here (no worker): nothing in these tests needs a job to train.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.records import DB_INT_MAX
from tests.conftest import BACKENDS, api_only
from tests.service import Service

MAX_UPLOAD = 4 * 1024**2
HUGE = 75 * 1024**2
SPEC = {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}}
OUT_OF_RANGE = (2**63, 2**64, 10**20)


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real API process on each backend, with a small upload limit."""
    data_dir = tmp_path_factory.mktemp(f"ganforge-limits-{request.param}")
    with api_only(request.param, data_dir, GANFORGE_MAX_UPLOAD_BYTES=str(MAX_UPLOAD)) as deployment:
        yield deployment


def peak_rss_mb(service: Service) -> float:
    """The API process's peak resident memory so far (VmHWM), in MiB."""
    assert service.api is not None
    for line in Path(f"/proc/{service.api.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class HealthWatch:
    """Polls /healthz from a thread while a test runs; `worst` is the slowest answer in seconds."""

    def __init__(self, service: Service) -> None:
        self.url, self.worst, self.answers = f"{service.url}/healthz", 0.0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                assert client.get(self.url).status_code == 200
                self.worst = max(self.worst, time.monotonic() - started)
                self.answers += 1
                time.sleep(0.05)

    def __enter__(self) -> HealthWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        deadline = time.monotonic() + 5
        while self.answers == 0 and time.monotonic() < deadline:  # a fast test still sees one answer
            time.sleep(0.01)
        self.stop.set()
        self.thread.join(timeout=15)


def test_an_unauthenticated_huge_body_is_refused_before_it_is_read(api: Service) -> None:
    before = peak_rss_mb(api)
    with HealthWatch(api) as health:
        # The answer comes from the headers alone: a raw client sends them and 1 MiB, and reads its 401 ...
        head = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {HUGE}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as connection:
            started = time.monotonic()
            connection.sendall(head.encode() + b'{"name": "' + b"x" * 1024**2)
            answer = connection.recv(65536).decode()
            answered = time.monotonic() - started
        assert answer.startswith("HTTP/1.1 401 "), answer
        # ... and a client that sends all 75 MB first (as httpx does) gets it too, the rest discarded as it arrives.
        body = b'{"dataset": "' + b"x" * HUGE + b'"}'
        with httpx.Client(timeout=30) as client:
            started = time.monotonic()
            response = client.post(f"{api.url}/v1/jobs", content=body, headers={"Content-Type": "application/json"})
            elapsed = time.monotonic() - started
    grown = peak_rss_mb(api) - before
    print(
        f"75 MB unauthenticated POST: 401 after {answered * 1000:.0f} ms (headers + 1 MiB sent), whole body sent "
        f"and answered in {elapsed:.2f} s; API peak RSS +{grown:.1f} MiB; "
        f"slowest /healthz {health.worst * 1000:.0f} ms over {health.answers} answers"
    )
    assert answered < 1.0
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert elapsed < 10.0  # the client's own upload of 75 MB on a loaded machine; the server answered long before
    assert grown < 30, f"the API grew by {grown:.0f} MiB: it read the body"
    assert health.answers > 0 and health.worst < 1.0


def test_a_bare_or_wrong_bearer_is_401_even_without_a_body(api: Service) -> None:
    for authorization in ("Bearer", "Basic key-a", "Bearer key-a-not", "key-a"):
        response = httpx.post(f"{api.url}/v1/jobs", json=SPEC, headers={"Authorization": authorization})
        assert response.status_code == 401, authorization
    assert httpx.get(f"{api.url}/v1/catalog").status_code == 401  # every /v1 route is behind the gate
    assert httpx.get(f"{api.url}/healthz").status_code == 200


def test_an_authenticated_json_body_over_the_limit_is_413(api: Service) -> None:
    with api.client() as client, HealthWatch(api) as health:
        declared = client.post("/v1/jobs", content=b" " * (2 * 1024**2), headers={"Content-Type": "application/json"})
        assert declared.status_code == 413, declared.text
        assert declared.json()["error"]["code"] == "body_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while the body streams
            for _ in range(48):
                yield b" " * 65536

        started = time.monotonic()
        chunked = client.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
        assert chunked.request.headers.get("transfer-encoding") == "chunked"
        assert chunked.status_code == 413, chunked.text
        assert time.monotonic() - started < 2.0
        # under the limit, a body is read as before
        assert client.post("/v1/jobs", params={"validate_only": True}, json=SPEC).status_code == 200
    assert health.answers > 0 and health.worst < 1.0


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/studies", "/v1/datasets/any/preview"])
def test_a_multipart_content_type_off_the_upload_route_keeps_the_json_limit(api: Service, path: str) -> None:
    """The upload limit (here 4 MiB + form room) follows the upload route, not a Content-Type any client can set."""
    with api.client() as client:
        answer = client.post(
            path, content=b"x" * (2 * 1024**2), headers={"Content-Type": "multipart/form-data; boundary=x"}
        )
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("name", ["Content-Type", "Authorization", "Content-Length"])
def test_a_header_read_as_one_value_given_twice_is_400(api: Service, name: str) -> None:
    """The gate and the framework would read different copies (the last and the first): neither is guessed."""
    body = b"{}"
    values = {
        "Content-Type": ["application/json", "multipart/form-data; boundary=x"],
        "Authorization": [f"Bearer {key}" for key in ("key-a", "key-b")],
        "Content-Length": [str(len(body))] * 2,
    }[name]
    with socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1])), timeout=10) as raw:
        lines = ["POST /v1/jobs?validate_only=true HTTP/1.1", "Host: x", "Connection: close"]
        lines += [f"{name}: {value}" for value in values]
        if name != "Content-Length":
            lines.append(f"Content-Length: {len(body)}")
        if name != "Authorization":
            lines.append("Authorization: Bearer key-a")
        if name != "Content-Type":
            lines.append("Content-Type: application/json")
        raw.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    if name != "Content-Length":  # that one uvicorn's HTTP parser refuses before the app sees it
        assert b"repeated_header" in answer and name.lower().encode() in answer, answer


def test_an_upload_declaring_more_than_the_upload_limit_is_413_before_it_is_read(api: Service) -> None:
    # A raw socket: the client sends only the headers and one line of its 16 MiB body, then waits for the answer.
    head = (
        f"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer key-a\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {MAX_UPLOAD * 4}\r\n\r\n--b\r\n"
    )
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as connection:
        connection.sendall(head.encode())
        answer = _read_answer(connection)
    assert answer.startswith("HTTP/1.1 413 "), answer
    assert "body_too_large" in answer


def _read_answer(connection: socket.socket) -> str:
    """One HTTP answer: its head, then as many body bytes as its Content-Length (they may come in later segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data.decode()
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def fill_path(path: str, values: dict[str, str]) -> str:
    """The path template with its {names} filled from `values` ("x" for any other)."""
    return re.sub(r"{(\w+)}", lambda match: values.get(match[1], "x"), path)


def _integer_parameters(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, parameter) for every path, query and header parameter that carries an integer."""
    found = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                options = schema.get("anyOf", [schema])
                integer = any(option.get("type") == "integer" for option in options)
                digits = any("[0-9]" in option.get("pattern", "") for option in options)
                if integer or digits or parameter["name"] == "cursor":
                    found.append((method, path, parameter))
    return found


def test_every_integer_parameter_refuses_values_past_the_store(api: Service) -> None:
    with api.client() as client:
        job = client.post("/v1/jobs", json=SPEC).json()["id"]  # stays queued: no worker here
        fill = {"job_id": job, "extension": "png"}
        parameters = _integer_parameters(client.get("/openapi.json").json())
        covered = {(path, parameter["name"]) for _, path, parameter in parameters}
        assert {
            ("/v1/jobs/{job_id}/metrics", "since_step"),
            ("/v1/jobs/{job_id}/metrics", "max_points"),
            ("/v1/jobs/{job_id}/samples/{step}.{extension}", "step"),
            ("/v1/jobs/{job_id}/checkpoints/{step}", "step"),
            ("/v1/jobs/{job_id}/events", "after"),
            ("/v1/jobs/{job_id}/events", "last-event-id"),
            ("/v1/jobs", "cursor"),
            ("/v1/jobs", "limit"),
        } <= covered, covered
        for method, path, parameter in parameters:
            where, name = parameter["in"], parameter["name"]
            # another object named in the path (a data set, ...) does not exist here: a 404 is the right answer
            foreign = [key for key in re.findall(r"{(\w+)}", path) if key not in fill and key != name]
            for value in OUT_OF_RANGE:
                values = {**fill, name: str(value)} if where == "path" else fill
                url = fill_path(path, values)
                response = client.request(
                    method.upper(),
                    url,
                    params={name: str(value)} if where == "query" else None,
                    headers={name: str(value)} if where == "header" else None,
                    json={} if method in ("post", "put", "patch") else None,
                    timeout=10,
                )
                label = f"{method.upper()} {path} {where}.{name}={value}: {response.status_code} {response.text}"
                if foreign and response.status_code == 404:
                    continue
                assert response.status_code == 422, label
                assert f"{where}.{name}" in {d["field"] for d in response.json()["error"]["details"]}, label


def test_int_max_itself_is_in_range(api: Service) -> None:
    with api.client() as client:
        job = client.post("/v1/jobs", json=SPEC).json()["id"]
        metrics = client.get(f"/v1/jobs/{job}/metrics", params={"since_step": DB_INT_MAX})
        assert metrics.status_code == 200 and metrics.json()["series"] == {}, metrics.text
        # a queued job's stream with a position past its head: answered (headers at once), not refused
        with client.stream("GET", f"/v1/jobs/{job}/events", headers={"Last-Event-ID": str(DB_INT_MAX)}) as stream:
            assert stream.status_code == 200
