"""Request bodies and sample downloads: a JSON syntax error names the body, a non-JSON body is a 415, and
samples/latest.{png,npy} is the newest snapshot."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.service import Service, wait_for

SPEC = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp"},
    "loss": {"name": "nsgan"},
    "training": {"steps": 10, "batch_size": 8},
    "every": {"samples": 5, "checkpoint": 5},
}


def _jobs(client: httpx.Client) -> list[object]:
    return list(client.get("/v1/jobs", params={"limit": 500}).json()["jobs"])


def test_a_json_syntax_error_names_the_body_and_where(service: Service) -> None:
    with service.client() as client:
        response = client.post("/v1/jobs", content=b'{"dataset": ', headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        details = response.json()["error"]["details"]
        assert [(d["field"], d["message"]) for d in details] == [
            ("body", "invalid JSON at line 1, column 13: Expecting value")
        ], details


@pytest.mark.parametrize(
    ("headers", "sent"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, "application/x-www-form-urlencoded"),  # curl -d
        ({"Content-Type": "text/plain"}, "text/plain"),
        ({}, "no content-type"),
    ],
)
def test_a_body_that_is_not_declared_json_is_a_415(service: Service, headers: dict[str, str], sent: str) -> None:
    with service.client() as client:
        before = _jobs(client)
        for body in (json.dumps(SPEC).encode(), b'{"dataset": '):  # valid JSON or not, the content type decides
            response = client.post("/v1/jobs", content=body, headers=headers)
            assert response.status_code == 415, response.text
            error = response.json()["error"]
            assert error["code"] == "unsupported_media_type", error
            assert "send `Content-Type: application/json`" in error["message"] and sent in error["message"], error
            assert [d["field"] for d in error["details"]] == ["header.content-type"], error
        assert _jobs(client) == before  # nothing was stored


def test_json_with_a_charset_is_still_json(service: Service) -> None:
    with service.client() as client:
        response = client.post(
            "/v1/jobs", content=json.dumps(SPEC).encode(), headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert response.status_code == 201, response.text
        wait_for(client, response.json()["id"], ("succeeded",))


def test_samples_latest_is_the_newest_snapshot(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=SPEC).json()
        wait_for(client, job["id"], ("succeeded",))
        newest = max(sample["step"] for sample in client.get(f"/v1/jobs/{job['id']}/samples").json()["samples"])
        assert newest == 10
        for extension in ("png", "npy"):
            latest = client.get(f"/v1/jobs/{job['id']}/samples/latest.{extension}")
            by_step = client.get(f"/v1/jobs/{job['id']}/samples/{newest}.{extension}")
            assert latest.status_code == 200 and by_step.status_code == 200, latest.text
            assert latest.content == by_step.content
            assert f'filename="{job["id"]}-{newest}.{extension}"' in latest.headers["content-disposition"]
        # numeric steps keep their bound; a word other than latest is refused with the field
        for step in ("1" * 13, "newest", "-1"):
            refused = client.get(f"/v1/jobs/{job['id']}/samples/{step}.png")
            assert refused.status_code == 422, (step, refused.text)
            assert [d["field"] for d in refused.json()["error"]["details"]] == ["path.step"], refused.text


def test_samples_latest_is_404_before_the_first_snapshot(service: Service) -> None:
    with service.client() as client:
        # the first snapshot comes at the last of 100,000 steps: none exists for the seconds this test looks
        spec = {**SPEC, "training": {"steps": 100_000, "batch_size": 8}, "every": {"samples": 100_000}}
        job = client.post("/v1/jobs", json=spec).json()
        try:
            for extension in ("png", "npy"):
                response = client.get(f"/v1/jobs/{job['id']}/samples/latest.{extension}")
                assert response.status_code == 404, response.text
                assert response.json()["error"]["code"] == "not_found"
        finally:
            assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
            wait_for(client, job["id"], ("cancelled",))
