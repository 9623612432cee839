"""Webhooks (issue 13): signed deliveries of a job's life to a real HTTP receiver, retries, redelivery, the URL
guard, ownership, the outbox's cost, and no delivery lost across an API restart; on both backends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update
from standardwebhooks import Webhook

from api.webhooks import guarded_client
from models.records import Job
from models.spec import JobSpec
from models.store import JobStore
from models.store.base import append_event
from models.webhooks import HostPolicy, UrlRefused
from tests.conftest import BACKENDS, api_only
from tests.service import TINY_SPEC, Service, free_port, wait_for

SPEC = JobSpec.model_validate(TINY_SPEC)


class Receiver:
    """A threaded HTTP server that records every POST (path, headers, body, time) and answers each path with the
    statuses queued for it (then 200)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.received: list[dict[str, Any]] = []
        self.answers: dict[str, list[int]] = {}
        self.always: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    queued = receiver.answers.get(self.path)
                    status = queued.pop(0) if queued else receiver.always.get(self.path, 200)
                    receiver.received.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers.items()),
                            "body": body.decode(),
                            "status": status,
                            "at": time.time(),
                        }
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, free_port()), Handler)
        self.base = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def at(self, path: str, *, status: int | None = None) -> list[dict[str, Any]]:
        """What `path` received (only the answers of `status`, when given)."""
        with self.lock:
            return [r for r in self.received if r["path"] == path and (status is None or r["status"] == status)]

    def wait(
        self, path: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if done(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path} received only {[json.loads(r['body'])['type'] for r in self.at(path)]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def endpoints(service: Service) -> Iterator[list[str]]:
    """Endpoints a test makes (ids appended) are deleted after it: the shared service outlives this module."""
    made: list[str] = []
    yield made
    with service.client() as client:
        for webhook_id in made:
            client.delete(f"/v1/webhooks/{webhook_id}")


def _verified(secret: str, request: dict[str, Any]) -> dict[str, Any]:
    """The payload of a received request, verified as a receiver would, with the spec's library."""
    payload: dict[str, Any] = Webhook(secret).verify(request["body"], request["headers"])
    return payload


def _settled(read: Callable[[], list[dict[str, Any]]], timeout: float = 30) -> list[dict[str, Any]]:
    """A delivery log once none of it is waiting (a receipt comes just before the sender records it)."""
    deadline = time.monotonic() + timeout
    log = read()
    while any(d["status"] in ("pending", "failed") for d in log) and time.monotonic() < deadline:
        time.sleep(0.05)
        log = read()
    return log


def _statuses(got: list[dict[str, Any]], job_id: str) -> list[str]:
    bodies = [json.loads(r["body"]) for r in got]
    return [b["data"]["to"] for b in bodies if b["type"] == "job.status" and b["data"]["job_id"] == job_id]


def test_a_jobs_life_arrives_signed(service: Service, receiver: Receiver, endpoints: list[str]) -> None:
    path = f"/life-{service.port}"
    with service.client() as client:
        made = client.post(
            "/v1/webhooks", json={"url": receiver.base + path, "events": ["job.status", "job.checkpoint"]}
        )
        assert made.status_code == 201, made.text
        endpoint = made.json()
        endpoints.append(endpoint["id"])
        assert endpoint["secret"].startswith("whsec_")
        assert "secret" not in client.get(f"/v1/webhooks/{endpoint['id']}").json()
        job = client.post("/v1/jobs", json=TINY_SPEC).json()
        wait_for(client, job["id"], ("succeeded",))
        got = receiver.wait(path, lambda got: _statuses(got, job["id"])[-1:] == ["succeeded"])
        assert _statuses(got, job["id"]) == ["queued", "running", "succeeded"]
        payloads = [_verified(endpoint["secret"], r) for r in got]
        assert any(p["type"] == "job.checkpoint" and p["data"]["step"] == 5 for p in payloads)
        assert all(r["headers"]["webhook-id"].startswith("msg_") for r in got)
        with pytest.raises(Exception, match="signature"):  # another secret does not verify
            Webhook("whsec_" + "A" * 44).verify(got[0]["body"], got[0]["headers"])

        log = _settled(lambda: client.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["deliveries"])
        assert {d["status"] for d in log} == {"succeeded"} and {d["response_code"] for d in log} == {200}
        assert all(d["attempts"] == 1 and d["latency_ms"] > 0 for d in log)
        assert {d["type"] for d in log} == {"job.status", "job.checkpoint"}
        metrics = client.get("/metrics").text
        assert 'ganforge_webhook_deliveries_total{outcome="succeeded"}' in metrics
        listed = client.get("/v1/webhooks", params={"limit": 1}).json()
        assert [w["id"] for w in listed["webhooks"]] == [endpoint["id"]]

    with service.client("key-b") as other:  # another owner's endpoint is missing
        for method, url in [
            ("GET", f"/v1/webhooks/{endpoint['id']}"),
            ("GET", f"/v1/webhooks/{endpoint['id']}/deliveries"),
            ("POST", f"/v1/webhooks/{endpoint['id']}/enable"),
            ("POST", f"/v1/webhooks/{endpoint['id']}/deliveries/{log[0]['id']}/redeliver"),
            ("DELETE", f"/v1/webhooks/{endpoint['id']}"),
        ]:
            assert other.request(method, url).status_code == 404, (method, url)
        assert other.get("/v1/webhooks").json()["webhooks"] == []
    _sdk_and_cli(service, receiver, path, endpoint["id"])


def _sdk_and_cli(service: Service, receiver: Receiver, path: str, webhook_id: str) -> None:
    """The SDK (sync and aio) and the CLI on an endpoint that received a job's life at `path`."""
    import asyncio

    from typer.testing import CliRunner

    from ganforge.cli import app
    from ganforge.client import AsyncClient, Client
    from ganforge.client.errors import NotFound, ValidationFailed

    with Client(service.url, api_key="key-a") as client:
        assert webhook_id in [w.id for w in client.webhooks.list()]
        with pytest.raises(ValidationFailed, match="url"):
            client.webhooks.create("http://169.254.169.254/", ["job.status"])
        log = list(client.webhooks.deliveries(webhook_id, status="succeeded"))
        again = client.webhooks.redeliver(webhook_id, log[0].id)
        assert again.event_id == log[0].event_id and again.status == "pending"
        receiver.wait(path, lambda got: sum(r["headers"]["webhook-id"] == again.event_id for r in got) == 2)

    async def through_aio() -> tuple[str, int]:
        async with AsyncClient(service.url, api_key="key-a") as aio:
            found = await aio.webhooks.get(webhook_id)
            return found.url, len([d async for d in aio.webhooks.deliveries(webhook_id)])

    assert asyncio.run(through_aio()) == (receiver.base + path, len(log) + 1)

    env = {"GANFORGE_URL": service.url, "GANFORGE_API_KEY": "key-a"}
    runner = CliRunner()
    listed = runner.invoke(app, ["webhooks", "list", "--json"], env=env)
    assert listed.exit_code == 0 and webhook_id in [w["id"] for w in json.loads(listed.stdout)], listed.output
    shown = runner.invoke(app, ["webhooks", "deliveries", webhook_id], env=env)
    assert shown.exit_code == 0 and "job.status" in shown.stdout, shown.output
    created = runner.invoke(app, ["webhooks", "create", receiver.base + "/cli", "--event", "job.checkpoint"], env=env)
    assert created.exit_code == 0 and "whsec_" in created.stdout, created.output
    for made in (created.stdout.split()[1], webhook_id):
        assert runner.invoke(app, ["webhooks", "delete", made], env=env).exit_code == 0
    with Client(service.url, api_key="key-a") as client, pytest.raises(NotFound):
        client.webhooks.get(webhook_id)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://[::1]:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:10.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "http://user:pass@example.com/hook",
    ],
)
def test_urls_reaching_inside_are_refused_naming_url(service: Service, url: str) -> None:
    with service.client() as client:
        answer = client.post("/v1/webhooks", json={"url": url, "events": ["job.status"]})
    assert answer.status_code == 422, answer.text
    assert [d["field"] for d in answer.json()["error"]["details"]] == ["url"]


def test_bad_fields_are_422s_naming_them(service: Service) -> None:
    with service.client() as client:
        answer = client.post("/v1/webhooks", json={"url": "https://example.com/", "events": ["job.started"]})
        assert answer.status_code == 422 and answer.json()["error"]["details"][0]["field"].startswith("events")
        answer = client.post("/v1/webhooks", json={"url": "https://example.com/", "events": []})
        assert answer.status_code == 422 and answer.json()["error"]["details"][0]["field"] == "events"


def test_the_guard_refuses_at_send_time_too(receiver: Receiver) -> None:
    # The connection itself is guarded: a URL that passed at creation and resolves inside later reaches nothing.
    with guarded_client(HostPolicy([]), 5) as client, pytest.raises(UrlRefused, match="loopback"):
        client.post(receiver.base + "/send-time", content=b"{}")
    assert receiver.at("/send-time") == []
    with guarded_client(HostPolicy(["127.0.0.0/8"]), 5) as client:
        assert client.post(receiver.base + "/send-time", content=b"{}").status_code == 200
    for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]"]:
        with pytest.raises(UrlRefused):
            HostPolicy([]).check_url(f"http://{host}:1/")
    with pytest.raises(UrlRefused, match="redirect|credentials"):
        HostPolicy([]).check_url("https://a:b@example.com/")


def test_the_outbox_costs_one_query_per_status_event_and_none_per_metrics_event(store: JobStore) -> None:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "webhook" in statement:
            statements.append(statement)

    job, _ = store.create_job(owner="nobody-listens", spec=SPEC, idempotency_key=None)
    bulk = [store.create_job(owner=owner, spec=SPEC, idempotency_key=None)[0].id for owner in ["x", "y", "y"]]
    event.listen(store.engine, "before_cursor_execute", count)
    try:
        with store.session() as session, session.begin():
            append_event(session, job.id, "metrics", {"first_step": 1, "last_step": 1, "latest": {}, "points": []})
        assert statements == []
        store.request_cancel(job_id=job.id, owner="nobody-listens")
        assert len(statements) == 1 and "FROM webhook_endpoints" in statements[0]
        # A bulk move (transition_where) of several owners' jobs: one query for them all.
        statements.clear()
        with store.session() as session, session.begin():
            assert len(store.cancel_where(session, Job.id.in_(bulk))) == 3
        assert len(statements) == 1 and "FROM webhook_endpoints" in statements[0]
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    # With an endpoint, the status event and its delivery commit together.
    store.create_webhook(
        owner="listens",
        url="https://example.com/",
        events=["job.status"],
        description="",
        secret="whsec_AA==",
        max_per_owner=1,
    )
    other, _ = store.create_job(owner="listens", spec=SPEC, idempotency_key=None)
    endpoint = store.list_webhooks(owner="listens")[0][0]
    deliveries, _cursor = store.list_deliveries(webhook_id=endpoint.id)
    assert [d.payload["data"]["job_id"] for d in deliveries] == [other.id]
    assert deliveries[0].payload["data"]["to"] == "queued" and deliveries[0].status == "pending"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_retries_redelivery_and_no_delivery_lost_across_an_api_restart(backend: str, tmp_path: Path) -> None:
    # The receiver listens on 127.0.0.2 and only that is allowed: 127.0.0.1 and localhost stay refused.
    receiver = Receiver("127.0.0.2")
    settings = {
        "GANFORGE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.2",
        "GANFORGE_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "GANFORGE_WEBHOOK_RETRY_MAX_SECONDS": "0.5",
    }
    try:
        with api_only(backend, tmp_path, **settings) as service, service.client() as client:
            for url in ["http://127.0.0.1:8080/", "http://localhost:8080/"]:
                refused = client.post("/v1/webhooks", json={"url": url, "events": ["job.status"]})
                assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "url"
            endpoint = client.post(
                "/v1/webhooks", json={"url": receiver.base + "/hook", "events": ["job.status"]}
            ).json()
            deliveries_url = f"/v1/webhooks/{endpoint['id']}/deliveries"

            # 500, 500, then 200: retried until it passes.
            receiver.answers["/hook"] = [500, 500]
            job = client.post("/v1/jobs", json=TINY_SPEC).json()
            got = receiver.wait("/hook", lambda got: any(r["status"] == 200 for r in got))
            assert [r["status"] for r in got] == [500, 500, 200]
            assert len({r["headers"]["webhook-id"] for r in got}) == 1  # one event, three attempts
            first = client.get(deliveries_url).json()["deliveries"][0]
            assert (first["status"], first["attempts"], first["response_code"]) == ("succeeded", 3, 200)

            again = client.post(f"{deliveries_url}/{first['id']}/redeliver")
            assert again.status_code == 202, again.text
            got = receiver.wait("/hook", lambda got: len(got) == 4)
            assert got[-1]["headers"]["webhook-id"] == got[0]["headers"]["webhook-id"]
            _verified(endpoint["secret"], got[-1])

            # Deliveries pending (their receiver fails) when the API stops are all sent after it starts again.
            receiver.always["/hook"] = 503
            client.post(f"/v1/jobs/{job['id']}/cancel")
            more = [client.post("/v1/jobs", json=TINY_SPEC).json()["id"] for _ in range(3)]
            for job_id in more:
                client.post(f"/v1/jobs/{job_id}/cancel")
            # Seven events (a cancel, three submissions, three cancels): wait until each failed once.
            waiting = {"queued", "cancelled"}

            def all_failed_once() -> bool:
                log = client.get(deliveries_url, params={"status": "failed"}).json()["deliveries"]
                return len(log) == 7

            deadline = time.monotonic() + 30
            while not all_failed_once():
                assert time.monotonic() < deadline, client.get(deliveries_url).json()
                time.sleep(0.1)
            service.stop()
            pending = {r["headers"]["webhook-id"] for r in receiver.at("/hook", status=503)}
            assert len(pending) == 7
            receiver.always["/hook"] = 200
            service.start_api()
            got = receiver.wait(
                "/hook", lambda got: pending <= {r["headers"]["webhook-id"] for r in got if r["status"] == 200}
            )
            arrived = [
                json.loads(r["body"]) for r in got if r["status"] == 200 and r["headers"]["webhook-id"] in pending
            ]
            assert {p["data"]["to"] for p in arrived} == waiting
            assert {p["data"]["job_id"] for p in arrived} == {job["id"], *more}
            log = client.get(deliveries_url, params={"limit": 500}).json()["deliveries"]
            assert {d["status"] for d in log} == {"succeeded"}
    finally:
        receiver.close()


def test_study_finished_is_sent_once_when_its_last_job_ends(store: JobStore) -> None:
    store.create_webhook(
        owner="lab",
        url="https://example.com/",
        events=["study.finished"],
        description="",
        secret="whsec_AA==",
        max_per_owner=1,
    )
    jobs = [store.create_job(owner="lab", spec=SPEC, idempotency_key=None)[0].id for _ in range(3)]
    with store.session() as session, session.begin():
        session.execute(update(Job).where(Job.id.in_(jobs)).values(study_id="study-1"))
    endpoint = store.list_webhooks(owner="lab")[0][0]
    store.request_cancel(job_id=jobs[0], owner="lab")
    assert store.list_deliveries(webhook_id=endpoint.id)[0] == []  # two jobs still queued
    with store.session() as session, session.begin():  # the other two in one bulk move
        store.cancel_where(session, Job.id.in_(jobs[1:]))
    deliveries, _cursor = store.list_deliveries(webhook_id=endpoint.id)
    assert [(d.type, d.payload["data"]) for d in deliveries] == [
        ("study.finished", {"study_id": "study-1", "jobs": {"cancelled": 3}})
    ]


def test_an_endpoint_failing_for_the_window_is_disabled_with_a_warning(
    store: JobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from api.webhooks import WebhookSender
    from models.settings import Settings

    # Stored directly (the API would refuse it): the sender's own guard refuses it at send time.
    endpoint = store.create_webhook(
        owner="ops",
        url="http://127.0.0.1:9/hook/s3cret?token=t0ken",
        events=["job.status"],
        description="",
        secret="whsec_AA==",
        max_per_owner=1,
    )
    settings = Settings(data_dir=tmp_path, webhook_retry_window_seconds=0.2, webhook_retry_base_seconds=0.01)
    registry = CollectorRegistry()
    sender = WebhookSender(store, settings, registry)
    try:
        store.create_job(owner="ops", spec=SPEC, idempotency_key=None)
        assert sender.send_due() == 1  # fails: its failure run starts
        assert sender.wait_idle(5)
        (first,), _cursor = store.list_deliveries(webhook_id=endpoint.id)
        assert first.attempts == 1 and first.error is not None and "loopback" in first.error
        time.sleep(0.25)
        store.create_job(owner="ops", spec=SPEC, idempotency_key=None)
        with caplog.at_level("WARNING", logger="api.webhooks"):
            assert sender.send_due() >= 1  # failing for the whole window: disabled
            assert sender.wait_idle(5)
        assert f"webhook endpoint {endpoint.id} of owner ops (http://127.0.0.1:9) disabled" in caplog.text
        assert "s3cret" not in caplog.text and "t0ken" not in caplog.text  # a URL's path or query may hold a token
        disabled = store.get_webhook(webhook_id=endpoint.id, owner="ops")
        assert disabled is not None and not disabled.enabled and "failed since" in (disabled.disabled_reason or "")
        assert [d.status for d in store.list_deliveries(webhook_id=endpoint.id)[0]] == ["dead", "dead"]
        store.create_job(owner="ops", spec=SPEC, idempotency_key=None)  # no delivery while disabled
        assert len(store.list_deliveries(webhook_id=endpoint.id)[0]) == 2
        assert b'ganforge_webhook_deliveries_total{outcome="dead"}' in generate_latest(registry)
        enabled = store.enable_webhook(webhook_id=endpoint.id, owner="ops")
        assert enabled is not None and enabled.enabled and enabled.failing_since is None
    finally:
        sender.stop()


class Dripper:
    """A receiver that reads a request, then answers one byte of its status line every `every` seconds (at most
    `count` bytes, then it hangs up): a slow endpoint no per-read timeout catches. `connected` is set once a request
    arrived."""

    def __init__(self, every: float = 2.0, count: int = 8) -> None:
        import socket

        self.every, self.count = every, count
        self.connected = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/drip"
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: Any) -> None:
        with conn:
            conn.recv(65536)
            self.connected.set()
            for byte in b"HTTP/1.1 200 OK\r\n"[: self.count]:
                if self.stopped.wait(self.every):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def _sender(store: JobStore, tmp_path: Path, **settings: Any) -> Any:
    from prometheus_client import CollectorRegistry

    from api.webhooks import WebhookSender
    from models.settings import Settings

    return WebhookSender(
        store, Settings(data_dir=tmp_path, webhook_allowed_hosts=["127.0.0.1"], **settings), CollectorRegistry()
    )


def _endpoint(store: JobStore, owner: str, url: str) -> str:
    return store.create_webhook(
        owner=owner, url=url, events=["job.status"], description="", secret="whsec_AA==", max_per_owner=5
    ).id


def test_a_slow_receiver_is_cut_at_the_deadline_and_delays_no_other_endpoint(
    store: JobStore, receiver: Receiver, tmp_path: Path
) -> None:
    # A drips a byte every 2 s (each read passes a 3 s per-read timeout); its attempt must end at the 3 s deadline,
    # and B's delivery, written while A's is in flight, must not wait for it.
    dripper = Dripper(every=2.0, count=8)
    slow = _endpoint(store, "drip-owner", dripper.url)
    quick = _endpoint(store, "quick-owner", receiver.base + "/quick")
    sender = _sender(store, tmp_path, webhook_timeout_seconds=3.0)
    sender.start()
    try:
        started = time.monotonic()
        store.create_job(owner="drip-owner", spec=SPEC, idempotency_key=None)
        assert dripper.connected.wait(5)
        written = time.time()
        store.create_job(owner="quick-owner", spec=SPEC, idempotency_key=None)
        got = receiver.wait("/quick", lambda got: len(got) == 1, timeout=5)
        assert got[0]["at"] - written < 1.0, got[0]["at"] - written
        deadline = time.monotonic() + 8
        while (log := store.list_deliveries(webhook_id=slow)[0])[0].attempts == 0:
            assert time.monotonic() < deadline, "the slow attempt was never cut"
            time.sleep(0.05)
        assert time.monotonic() - started < 5
        assert (log[0].status, log[0].error, log[0].response_code) == ("failed", "timeout", None)
        assert 3000 <= (log[0].latency_ms or 0) < 4500, log[0].latency_ms
        assert [d.status for d in store.list_deliveries(webhook_id=quick)[0]] == ["succeeded"]
    finally:
        sender.stop()
        dripper.close()


def test_one_endpoints_backlog_takes_two_slots_at_most(store: JobStore, receiver: Receiver, tmp_path: Path) -> None:
    # Each request to the busy endpoint takes 1 s: its six deliveries go two at a time, and another owner's
    # delivery written meanwhile goes at once.
    busy = {"now": 0, "most": 0}
    lock = threading.Lock()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                busy["now"] += 1
                busy["most"] = max(busy["most"], busy["now"])
            time.sleep(1.0)
            with lock:
                busy["now"] -= 1
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    slow = _endpoint(store, "backlog-owner", f"http://127.0.0.1:{server.server_address[1]}/slow")
    _endpoint(store, "other-owner", receiver.base + "/other")
    for _ in range(6):
        store.create_job(owner="backlog-owner", spec=SPEC, idempotency_key=None)
    sender = _sender(store, tmp_path, webhook_timeout_seconds=5.0)
    sender.start()
    try:
        time.sleep(0.5)  # the backlog is in flight
        written = time.time()
        store.create_job(owner="other-owner", spec=SPEC, idempotency_key=None)
        got = receiver.wait("/other", lambda got: len(got) == 1, timeout=5)
        assert got[0]["at"] - written < 1.0, got[0]["at"] - written
        deadline = time.monotonic() + 15
        while {d.status for d in store.list_deliveries(webhook_id=slow)[0]} != {"succeeded"}:
            assert time.monotonic() < deadline, [d.status for d in store.list_deliveries(webhook_id=slow)[0]]
            time.sleep(0.05)
        assert busy["most"] == 2
    finally:
        sender.stop()
        server.shutdown()
        server.server_close()


def test_the_delivery_log_says_a_short_reason_not_the_exception(
    store: JobStore, receiver: Receiver, tmp_path: Path
) -> None:
    # httpx's text names addresses and errno strings (a port-probe oracle): the log keeps a class of failure.
    closed = f"http://127.0.0.1:{free_port()}/nothing-listens"
    refused = _endpoint(store, "probe-a", closed)
    answering = _endpoint(store, "probe-b", receiver.base + "/answers-500")
    receiver.always["/answers-500"] = 500
    sender = _sender(store, tmp_path)
    try:
        for owner in ("probe-a", "probe-b"):
            store.create_job(owner=owner, spec=SPEC, idempotency_key=None)
        sender.send_due()
        deadline = time.monotonic() + 10
        while not all(store.list_deliveries(webhook_id=w)[0][0].attempts for w in (refused, answering)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (first,), _ = store.list_deliveries(webhook_id=refused)
        assert (first.error, first.response_code) == ("connection refused", None)
        (second,), _ = store.list_deliveries(webhook_id=answering)
        assert (second.error, second.response_code) == ("HTTP 500", 500)
    finally:
        sender.stop()


def test_redeliver_keeps_one_waiting_per_event_and_a_cap_per_endpoint(store: JobStore) -> None:
    from models.records import WebhookDelivery
    from models.store.webhooks import RedeliveryPending, TooManyWaiting

    webhook = _endpoint(store, "redo", "https://example.com/")
    for _ in range(3):
        store.create_job(owner="redo", spec=SPEC, idempotency_key=None)
    deliveries = store.list_deliveries(webhook_id=webhook)[0]
    with pytest.raises(RedeliveryPending) as raised:  # still waiting itself: nothing to add
        store.redeliver(webhook_id=webhook, delivery_id=deliveries[0].id)
    assert raised.value.waiting == deliveries[0].id
    with store.session() as session, session.begin():  # all sent
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == webhook)
            .values(status="succeeded", next_attempt_at=None)
        )
    again = store.redeliver(webhook_id=webhook, delivery_id=deliveries[0].id, max_waiting=2)
    assert again is not None and again.event_id == deliveries[0].event_id
    with pytest.raises(RedeliveryPending) as raised:  # its redelivery waits
        store.redeliver(webhook_id=webhook, delivery_id=deliveries[0].id, max_waiting=2)
    assert raised.value.waiting == again.id
    assert store.redeliver(webhook_id=webhook, delivery_id=deliveries[1].id, max_waiting=2) is not None
    with pytest.raises(TooManyWaiting) as capped:  # two wait for the endpoint already
        store.redeliver(webhook_id=webhook, delivery_id=deliveries[2].id, max_waiting=2)
    assert capped.value.limit == 2
    assert len(store.list_deliveries(webhook_id=webhook)[0]) == 5


def test_concurrent_redelivers_of_one_delivery_make_one(
    service: Service, receiver: Receiver, endpoints: list[str]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = f"/redo-{service.port}"
    with service.client() as client:
        endpoint = client.post("/v1/webhooks", json={"url": receiver.base + path, "events": ["job.status"]}).json()
        endpoints.append(endpoint["id"])
        client.post("/v1/jobs", json=TINY_SPEC)
        receiver.wait(path, lambda got: len(got) >= 1)
        receiver.always[path] = 503  # from now on every attempt fails and waits 5 s for its retry
        deliveries_url = f"/v1/webhooks/{endpoint['id']}/deliveries"
        deadline = time.monotonic() + 30
        while not (done := client.get(deliveries_url, params={"status": "succeeded"}).json()["deliveries"]):
            assert time.monotonic() < deadline, client.get(deliveries_url).json()
            time.sleep(0.05)
        sent = done[-1]
        redeliver = f"{deliveries_url}/{sent['id']}/redeliver"
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: client.post(redeliver), range(20)))
        assert sorted(a.status_code for a in answers) == [202] + [409] * 19, [a.text for a in answers]
        made = next(a.json() for a in answers if a.status_code == 202)
        refused = next(a.json()["error"] for a in answers if a.status_code == 409)
        assert refused["code"] == "redelivery_pending" and made["id"] in refused["message"], refused
        later = client.post(redeliver)  # attempted and failed by now, or still pending: waiting either way
        assert later.status_code == 409 and later.json()["error"]["code"] == "redelivery_pending", later.text
        log = client.get(deliveries_url, params={"limit": 500}).json()["deliveries"]
        assert sum(d["event_id"] == sent["event_id"] for d in log) == 2
