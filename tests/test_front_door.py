"""The front door, tried as a new user would: errors that name the field and the fix, pictures a person can read,
events that carry their files' URLs, progress from the start, documented tags."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from models.pictures import CAPTION_FONT_SIZE, GENERATED, MARGIN_BOTTOM, MARGIN_LEFT, MARGIN_TOP, REAL, TITLE_FONT_SIZE
from tests.conftest import BACKENDS, api_only
from tests.service import Service, wait_for

BASE = {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp", "hidden": 32, "depth": 2}}
RNG = np.random.default_rng(7)


def spec(**parts: Any) -> dict[str, Any]:
    return {
        **BASE,
        "loss": {"name": "nsgan"},
        "training": {"steps": 10, "batch_size": 16, "device": "cpu"},
        **parts,
    }


@pytest.fixture(scope="module", params=BACKENDS)
def front(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API without a worker: enough for answers that never wait on training."""
    with api_only(request.param, tmp_path_factory.mktemp(f"front-{request.param}")) as deployment:
        yield deployment


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def detail(error: dict[str, Any], field: str) -> str:
    messages = [d["message"] for d in error["details"] if d["field"] == field]
    assert messages, error
    return str(messages[0])


# --------------------------------------------------------------------------- errors that name the fix


@pytest.mark.parametrize(
    ("parts", "field", "fragments"),
    [
        (
            {"loss": {"name": "wgan_gp"}},
            "loss.name",
            ["did you mean 'wgan-gp'?", "valid names: minimax, nsgan, lsgan, wgan, wgan-gp, dragan, hinge, began"],
        ),
        ({"loss": {"name": "WGAN-GP", "gp_weight": 1}}, "loss.name", ["did you mean 'wgan-gp'?"]),
        ({"loss": {"name": "zzzz"}}, "loss.name", ["unknown loss name 'zzzz' (valid names: minimax,"]),
        ({"loss": {}}, "loss.name", ["Field required", "minimax", "wgan-gp"]),
        ({"loss": {"name": "cgan", "base": "hinje"}}, "loss.base", ["did you mean 'hinge'?", "'wgan-gp'"]),
        ({"architecture": {"name": "dcgam"}}, "architecture.name", ["did you mean 'dcgan'?", "mlp, dcgan, resnet"]),
        ({"dataset": {"builtin": "ring"}}, "dataset.builtin", ["did you mean 'ring8'?", "'grid25'"]),
        ({"training": {"device": "cude"}}, "training.device", ["did you mean 'cuda'?"]),
        ({"loss": "wgan-gp"}, "loss", ['write it as an object, e.g. "loss": {"name": "wgan-gp"}']),
        ({"dataset": "ring8"}, "dataset", ['e.g. "dataset": {"builtin": "ring8"} or {"id": ']),
    ],
)
def test_a_wrong_name_is_an_error_on_its_field_with_the_valid_names_and_the_closest(
    front: Service, parts: dict[str, Any], field: str, fragments: list[str]
) -> None:
    with front.client() as client:
        error = error_of(client.post("/v1/jobs", params={"validate_only": "true"}, json=spec(**parts)), 422)
        message = detail(error, field)
        for fragment in fragments:
            assert fragment in message, message
        assert field in error["message"], error  # the summary names it too


def test_malformed_json_says_line_and_column(front: Service) -> None:
    body = b'{\n  "dataset": {"builtin": "ring8"},\n  "loss" {"name": "nsgan"}\n}'
    with front.client() as client:
        response = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
        error = error_of(response, 422)
        assert detail(error, "body") == "invalid JSON at line 3, column 10: Expecting ':' delimiter", error


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"name": "\xff"}', "the body is not UTF-8: byte 10 (b'\\xff') is invalid"),
        (b"[" * 400_000, "the JSON is nested too deeply"),
    ],
)
def test_a_body_that_cannot_be_read_is_a_422_on_body_like_a_syntax_error(
    front: Service, body: bytes, message: str
) -> None:
    with front.client() as client:
        response = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
        error = error_of(response, 422)
        assert error["code"] == "validation_error" and detail(error, "body") == message, error


def test_a_text_too_long_is_counted_in_characters(front: Service) -> None:
    """A bound checked after a text validator made pydantic say "items" and count something else."""
    with front.client() as client:
        error = error_of(client.post("/v1/jobs", json=spec(tags={"k" * 65: "v"})), 422)
        assert [d["message"] for d in error["details"]] == ["String should have at most 64 characters, not 65"]
        job = client.post("/v1/jobs", json=spec()).json()
        names = ",".join(f"n{i}" for i in range(5000))
        error = error_of(client.get(f"/v1/jobs/{job['id']}/metrics", params={"names": names}), 422)
        assert detail(error, "query.names") == f"String should have at most 2000 characters, not {len(names)}"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_a_body_sent_as_something_else_than_json_says_to_send_application_json(
    front: Service, content_type: str
) -> None:
    with front.client() as client:
        response = client.post("/v1/jobs", content=json.dumps(spec()).encode(), headers={"Content-Type": content_type})
        error = error_of(response, 415)
        assert "send `Content-Type: application/json`" in detail(error, "header.content-type"), error


def test_a_queued_job_says_it_has_no_samples_checkpoints_or_series_yet(front: Service) -> None:
    with front.client() as client:
        job = client.post("/v1/jobs", json=spec()).json()  # no worker: it stays queued
        base = f"/v1/jobs/{job['id']}"
        for path, what in (("/samples/999.png", "sample"), ("/checkpoints/999", "checkpoint")):
            message = detail(error_of(client.get(base + path), 404), "path.step")
            assert message == f"no {what} at step 999; this job's {what}s: none yet", message
        message = detail(error_of(client.get(base + "/checkpoints/latest"), 404), "path.step")
        assert message == "no checkpoint yet: this job has written none so far", message
        unknown = error_of(client.get(base + "/metrics", params={"names": "loss_d,loss_x"}), 404)
        assert detail(unknown, "query.names") == "no metric series 'loss_x' for this job; its series: none yet"
        # A series the worker will write is not unknown while the job can still write it.
        waiting = client.get(base + "/metrics", params={"names": "loss_d"})
        assert waiting.status_code == 200 and waiting.json()["series"]["loss_d"]["steps"] == [], waiting.text
        for names in ("loss_d,,loss_g", "", ","):
            empty = error_of(client.get(base + "/metrics", params={"names": names}), 422)
            assert "empty" in detail(empty, "query.names"), empty


def test_tags_and_their_filter_are_documented(front: Service) -> None:
    with httpx.Client(base_url=front.url) as client:
        openapi = client.get("/openapi.json").json()
    tags = openapi["components"]["schemas"]["JobSpec"]["properties"]["tags"]
    assert "GET /v1/jobs?tag=key:value" in tags["description"], tags
    parameters = {p["name"]: p for p in openapi["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert "key:value" in parameters["tag"]["description"] and "team:vision" in parameters["tag"]["description"]


# --------------------------------------------------------------------------- pictures


def non_white(region: np.ndarray) -> int:
    return int((region.min(axis=-1) < 200).sum())


def has_colour(region: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool((np.abs(region.astype(int) - colour).max(axis=-1) <= 2).any())


def class_zip(per_class: int = 5, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in ("cats", "dogs"):
            for i in range(per_class):
                picture = io.BytesIO()
                Image.fromarray(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(picture, "PNG")
                archive.writestr(f"{label}/{i}.png", picture.getvalue())
    return buffer.getvalue()


def caption_rows(picture: np.ndarray, title: bool) -> np.ndarray:
    """The text strip under the first tile of image_grid's picture (8 px images enlarged to 32 px, pad 2)."""
    top = (TITLE_FONT_SIZE + 8 if title else 0) + 2 + 32
    return picture[top : top + CAPTION_FONT_SIZE + 3, 2:34]


def test_a_labelled_data_sets_preview_names_the_classes(front: Service) -> None:
    with front.client() as client:
        response = client.post("/v1/datasets", files={"file": ("pets.zip", class_zip())}, data={"name": "pets"})
        assert response.status_code == 201, response.text
        preview = client.get(response.json()["preview_url"])
        assert preview.status_code == 200, preview.text
    picture = np.asarray(Image.open(io.BytesIO(preview.content)).convert("RGB"))
    # 10 images: a 4-column grid of 3 rows, each a 32 px tile and a caption strip; a title strip above.
    rows = 3
    assert picture.shape[0] == TITLE_FONT_SIZE + 8 + rows * (32 + CAPTION_FONT_SIZE + 3 + 2) + 2, picture.shape
    assert non_white(picture[: TITLE_FONT_SIZE + 8]) > 20  # "10 examples, 2 classes"
    assert non_white(caption_rows(picture, title=True)) > 10  # "cats"


# --------------------------------------------------------------------------- with a worker


@pytest.fixture(scope="module")
def trained(service: Service) -> dict[str, Any]:
    """A finished job with 50 sample snapshots (one per step) and 5 checkpoints (all kept: keep_last 0)."""
    body = spec(
        training={"steps": 50, "batch_size": 16, "device": "cpu", "sample_count": 200},
        every={"metrics": 5, "samples": 1, "checkpoint": 10, "keep_last": 0},
    )
    with service.client() as client:
        job = client.post("/v1/jobs", json=body).json()
        return wait_for(client, job["id"], ("succeeded",), timeout=180)


def test_a_missing_sample_or_checkpoint_lists_the_steps_that_exist(service: Service, trained: dict[str, Any]) -> None:
    base = f"/v1/jobs/{trained['id']}"
    with service.client() as client:
        message = detail(error_of(client.get(f"{base}/checkpoints/999"), 404), "path.step")
        assert message == "no checkpoint at step 999; this job's checkpoints: steps 10, 20, 30, 40, 50 (or 'latest')"
        message = detail(error_of(client.get(f"{base}/samples/999.png"), 404), "path.step")
        first, last = ", ".join(map(str, range(1, 21))), ", ".join(map(str, range(31, 51)))
        assert (
            message == f"no sample at step 999; this job's samples: steps {first}, … (10 more) …, {last} (or 'latest')"
        )


def test_an_unknown_metric_name_is_a_404_listing_the_names(service: Service, trained: dict[str, Any]) -> None:
    base = f"/v1/jobs/{trained['id']}/metrics"
    with service.client() as client:
        names = sorted(client.get(base).json()["series"])
        assert "loss_d" in names and "modes_covered" in names
        error = error_of(client.get(base, params={"names": "loss_x"}), 404)
        assert detail(error, "query.names") == f"no metric series 'loss_x' for this job; its series: {', '.join(names)}"
        # A finished nsgan job will never write k_t (BEGAN's): unknown now.
        assert "'k_t'" in detail(error_of(client.get(base, params={"names": "k_t"}), 404), "query.names")
        twice = client.get(base, params={"names": "loss_d,loss_d, loss_g"})
        assert twice.status_code == 200 and list(twice.json()["series"]) == ["loss_d", "loss_g"], twice.text


def test_the_scatter_plot_has_axes_a_title_and_a_legend(service: Service, trained: dict[str, Any]) -> None:
    with service.client() as client:
        response = client.get(f"/v1/jobs/{trained['id']}/samples/50.png")
        assert response.status_code == 200, response.text
    picture = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert picture.shape == (512, 512, 3)
    plot_top, plot_bottom = MARGIN_TOP, 512 - MARGIN_BOTTOM
    assert non_white(picture[plot_top:plot_bottom, : MARGIN_LEFT - 8]) > 50  # y tick labels
    assert non_white(picture[plot_bottom + 6 :, MARGIN_LEFT:]) > 50  # x tick labels
    assert non_white(picture[:MARGIN_TOP, :200]) > 30  # "step 50"
    # The legend sits in the plot's top-right corner: a marker of each kind, in its colour.
    legend = picture[plot_top : plot_top + 60, 512 - 160 : 512 - 14]
    assert has_colour(legend, GENERATED) and has_colour(legend, REAL)
    # The legend tells them apart by shape too: a filled dot for generated, a cross (empty corners) for real.
    assert marker_shape(legend, GENERATED) == "dot" and marker_shape(legend, REAL) == "cross"


def marker_shape(region: np.ndarray, colour: tuple[int, int, int]) -> str:
    """ "dot" or "cross": the one legend marker of `colour` in `region`, by how much of its 5×5 core it fills."""
    mask = np.abs(region.astype(int) - colour).max(axis=-1) <= 2
    ys, xs = np.nonzero(mask)
    assert ys.max() - ys.min() >= 4 and xs.max() - xs.min() >= 4, "a marker of at least 5×5 px"
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    core = int(mask[cy - 2 : cy + 3, cx - 2 : cx + 3].sum())
    return "dot" if core >= 20 else "cross" if core <= 9 and mask[cy, cx] else f"other ({core})"


def test_a_cgan_sample_grid_is_titled_with_the_step_and_captioned_with_classes(service: Service) -> None:
    body = {
        "dataset": {"builtin": "digits"},
        "architecture": {"name": "mlp", "hidden": 32, "depth": 2, "latent_dim": 8},
        "loss": {"name": "cgan"},
        "training": {"steps": 2, "batch_size": 8, "device": "cpu", "sample_count": 10},
        "every": {"samples": 2, "checkpoint": 2},
    }
    with service.client() as client:
        job = client.post("/v1/jobs", json=body)
        assert job.status_code == 201, job.text
        wait_for(client, job.json()["id"], ("succeeded",), timeout=180)
        response = client.get(f"/v1/jobs/{job.json()['id']}/samples/2.png")
        assert response.status_code == 200, response.text
    picture = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert picture.shape[0] == TITLE_FONT_SIZE + 8 + 3 * (32 + CAPTION_FONT_SIZE + 3 + 2) + 2, picture.shape
    assert non_white(picture[: TITLE_FONT_SIZE + 8]) > 20  # "step 2"
    assert non_white(caption_rows(picture, title=True)) > 5  # "0"


# --------------------------------------------------------------------------- events and progress


def events_of(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    events, kind = [], ""
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


def test_sample_and_checkpoint_events_carry_urls_that_download(service: Service, trained: dict[str, Any]) -> None:
    with service.client() as client:
        events = events_of(client, trained["id"])
        samples = [data for kind, data in events if kind == "sample"]
        checkpoints = [data for kind, data in events if kind == "checkpoint"]
        assert len(samples) == 50 and len(checkpoints) == 5
        listed = {s["step"]: s for s in client.get(f"/v1/jobs/{trained['id']}/samples").json()["samples"]}
        for sample in samples[-2:]:
            assert sample["png_url"] == listed[sample["step"]]["png_url"]
            png = client.get(sample["png_url"])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert client.get(sample["npy_url"]).status_code == 200
        listed = {c["step"]: c for c in client.get(f"/v1/jobs/{trained['id']}/checkpoints").json()["checkpoints"]}
        for checkpoint in checkpoints:
            assert (checkpoint["url"], checkpoint["state_url"]) == (
                listed[checkpoint["step"]]["url"],
                listed[checkpoint["step"]]["state_url"],
            )
        assert client.get(checkpoints[-1]["url"]).status_code == 200


def test_progress_shows_a_rate_and_an_eta_within_seconds_of_running(service: Service) -> None:
    # No metrics before step 1000: the rate comes from the worker's step clock, not from two metric points.
    body = spec(
        training={"steps": 2000, "batch_size": 32, "device": "cpu"},
        every={"metrics": 1000, "samples": 1000, "checkpoint": 1000},
    )
    with service.client() as client:
        job = client.post("/v1/jobs", json=body).json()
        try:
            running = wait_for(client, job["id"], ("running",), timeout=60)
            started = time.monotonic()
            progress = running["progress"]
            while progress["steps_per_sec"] is None or progress["eta_seconds"] is None:
                assert time.monotonic() - started < 5, f"no rate or ETA {time.monotonic() - started:.1f} s in"
                time.sleep(0.5)
                state = client.get(f"/v1/jobs/{job['id']}").json()
                progress = state["progress"]
                assert state["status"] == "running", state
            assert progress["steps_per_sec"] > 0 and progress["eta_seconds"] > 0, progress
        finally:
            client.post(f"/v1/jobs/{job['id']}/cancel")
