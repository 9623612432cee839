"""The web dashboard and /docs in a real headless Chromium (Debian's `chromium`, driven by Playwright), against a
real API and worker (PostgreSQL + Redis). The service runs with API keys, so every page test also covers auth.

Screenshots go to pytest's tmp dir (test output), never the repository.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import api_and_worker
from tests.service import Service, wait_for

CHROMIUM = "/usr/bin/chromium"
KEY = "key-a"


def long_spec(name: str) -> dict[str, Any]:
    """A small job that would train for minutes: the tests watch it, then cancel it."""
    return {
        "name": name,
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
        "loss": {"name": "nsgan"},
        "training": {"steps": 200_000, "batch_size": 32},
        "every": {"metrics": 10, "samples": 1000, "checkpoint": 1000},
        "tags": {"suite": "dashboard"},
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """API + one worker on one backend (PostgreSQL + Redis, as in production).

    This face is an HTTP client; the API's and the SDK's tests cover both backends.
    """
    with api_and_worker("postgres", tmp_path_factory.mktemp("postgres")) as deployment:
        yield deployment


@pytest.fixture(autouse=True)
def nothing_left_running(service: Service) -> Iterator[None]:
    """Cancel what a test leaves queued or running (a failed test's 200,000-step job would hold the module's one
    worker and leave every later test's jobs queued)."""
    yield
    with service.client() as client:
        for status in ("running", "queued"):
            for job in client.get("/v1/jobs", params={"status": status, "limit": 500}).json()["jobs"]:
                client.post(f"/v1/jobs/{job['id']}/cancel")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A page whose browser already holds the key (the auth test enters it by hand)."""
    context.add_init_script(f"localStorage.setItem('ganforge.apiKey', {json.dumps(KEY)})")
    return context.new_page()


def script_errors(page: Page) -> list[str]:
    """The page's uncaught script errors and console errors (a failed load) from now on; the list fills as they
    happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def test_static_files_and_page_are_public(service: Service) -> None:
    for path, kind in [
        ("/", "text/html"),
        ("/static/app.js", "javascript"),
        ("/static/vendor/uplot/uPlot.iife.min.js", "javascript"),
        ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "javascript"),
        ("/docs", "text/html"),
    ]:
        response = httpx.get(service.url + path)  # no key: the page is public, its data calls are not
        assert response.status_code == 200, (path, response.text[:200])
        assert kind in response.headers["content-type"], path
    for path in ["/static/../app.py", "/static/%2e%2e/app.py", "/static/nothing.js", "/static/"]:
        assert httpx.get(service.url + path).status_code == 404, path
    assert httpx.get(f"{service.url}/v1/jobs").status_code == 401
    assert "/" not in httpx.get(f"{service.url}/openapi.json").json()["paths"]


def test_pages_send_security_headers_and_answer_head(service: Service) -> None:
    for path in ["/", "/static/app.js", "/static/docs.js", "/docs"]:
        got = httpx.get(service.url + path)
        assert got.status_code == 200, path
        policy = got.headers.get("content-security-policy", "")
        directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
        assert directives.get("default-src") == ["'self'"], (path, policy)
        assert directives.get("script-src") == ["'self'"], (path, policy)  # nothing inline, nothing eval'd
        assert directives.get("connect-src") == ["'self'"], (path, policy)
        assert set(directives.get("img-src", [])) == {"'self'", "blob:", "data:"}, (path, policy)
        assert directives.get("frame-ancestors") == ["'none'"], (path, policy)
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, (path, policy)
        assert got.headers.get("x-frame-options") == "DENY", path
        assert got.headers.get("x-content-type-options") == "nosniff", path
        assert got.headers.get("referrer-policy") == "no-referrer", path
        head = httpx.head(service.url + path)
        assert head.status_code == 200, (path, head.status_code)
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers.get("content-security-policy") == policy, path
    assert "<script>" not in httpx.get(service.url + "/docs").text  # no inline script for the CSP to allow
    assert httpx.head(service.url + "/static/nothing.js").status_code == 404


def test_jobs_list_progress_stays_progress_across_refreshes(page: Page, service: Service) -> None:
    errors = script_errors(page)
    with service.client() as client:
        job = client.post("/v1/jobs", json=long_spec("dash-progress")).json()
        wait_for(client, job["id"], ("running",), timeout=60)
    page.goto(service.url + "/#/jobs")
    row = page.locator(f"#jobs tr[data-id='{job['id']}']")
    cells = row.locator("td")
    progress = re.compile(r"^step (\d+) / 200000")
    expect(cells.nth(4)).to_have_text(progress)
    expect(cells).to_have_count(6)
    created = cells.nth(5).inner_text()
    first = int(progress.findall(cells.nth(4).inner_text())[0])
    deadline = time.monotonic() + 30  # 2 s refreshes, each replacing the status and progress cells
    while int(progress.findall(cells.nth(4).inner_text())[0]) <= first:  # the refreshed value, not the first one
        assert time.monotonic() < deadline, cells.nth(4).inner_text()
        page.wait_for_timeout(500)
        expect(cells).to_have_count(6)
        expect(cells.nth(3).locator("[data-status]")).to_have_text("running")
        expect(cells.nth(4)).to_have_text(progress)
    expect(cells.nth(4).locator("progress")).to_have_count(1)
    assert cells.nth(5).inner_text() == created
    with service.client() as client:
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    expect(cells.nth(3).locator("[data-status]")).to_have_text("cancelled", timeout=30_000)
    expect(cells.nth(4)).to_have_text(progress)
    assert errors == []


def test_key_entered_once_is_kept_across_reload(context: BrowserContext, service: Service, tmp_path: Path) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json={**long_spec("auth-check"), "training": {"steps": 20}}).json()
    page = context.new_page()
    errors = script_errors(page)
    page.goto(service.url + "/#/jobs")
    prompt = page.locator("#auth-prompt")
    expect(prompt).to_be_visible()
    expect(prompt).to_contain_text("API key")
    shot(page, tmp_path, "needs-key")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Save key").click()
    expect(prompt).to_be_hidden()
    expect(page.locator(f"#jobs tr[data-id='{job['id']}']")).to_contain_text("auth-check")
    page.reload()
    expect(page.locator(f"#jobs tr[data-id='{job['id']}']")).to_contain_text("auth-check")
    expect(prompt).to_be_hidden()
    # a wrong key is refused and said so
    page.get_by_label("API key").fill("wrong")
    page.get_by_role("button", name="Save key").click()
    expect(prompt).to_contain_text("refused")
    assert [error for error in errors if "status of 401" not in error] == []  # 401: the key's refusals


def test_job_page_live_curves_slider_and_cancel(page: Page, service: Service, tmp_path: Path) -> None:
    errors = script_errors(page)
    with service.client() as client:
        job = client.post("/v1/jobs", json=long_spec("dash-live")).json()
        wait_for(client, job["id"], ("running",), timeout=60)
    # the jobs page lists it, with its status as text
    page.goto(service.url + "/#/jobs")
    row = page.locator(f"#jobs tr[data-id='{job['id']}']")
    expect(row).to_contain_text("dash-live")
    expect(row).to_contain_text("nsgan / mlp / ring8")
    expect(row.locator("[data-status]")).to_have_text(re.compile("running|queued"))
    expect(row).to_contain_text(re.compile(r"step \d+ / 200000"))
    page.locator("#filter-status").select_option("succeeded")
    expect(row).to_have_count(0)
    page.locator("#filter-status").select_option("running")
    expect(row).to_contain_text("dash-live")
    page.get_by_label("Tag").fill("suite:other")
    page.get_by_role("button", name="Apply filters").click()
    expect(row).to_have_count(0)
    page.get_by_label("Tag").fill("suite:dashboard")
    page.get_by_role("button", name="Apply filters").click()
    expect(row).to_contain_text("suite:dashboard")
    shot(page, tmp_path, "jobs")

    row.get_by_role("link", name="dash-live").click()
    expect(page).to_have_url(re.compile(f"#/jobs/{job['id']}$"))
    charts = page.locator("#charts")
    expect(charts).not_to_have_attribute("data-points", "0")
    first = int(charts.get_attribute("data-points") or 0)
    # a function, not an expression: Playwright would eval() an expression, which the page's CSP refuses
    page.wait_for_function(
        "(least) => Number(document.querySelector('#charts').dataset.points) > least", arg=first + 20, timeout=30_000
    )  # grows from SSE while the job trains
    groups = [element.get_attribute("data-group") for element in page.locator("#charts figure").all()]
    assert {"Losses", "D(x) and D(G(z))", "Gradient norms"} <= set(groups), groups
    # every series the API has is plotted
    with service.client() as client:
        names = set(client.get(f"/v1/jobs/{job['id']}/metrics", params={"max_points": 2}).json()["series"])
    plotted = " ".join(figure.get_attribute("data-series") or "" for figure in page.locator("#charts figure").all())
    legends = " ".join(page.locator("#charts .u-legend").all_inner_texts())
    assert names <= set(plotted.split()), (names, plotted)
    assert all(name in legends for name in names), legends
    page.get_by_label("Log scale").check()
    expect(page.locator("#charts figure").first.locator("canvas")).to_have_count(1)

    # the step slider walks the snapshots; the image and its label follow
    slider = page.get_by_label("Snapshot step")
    page.wait_for_function("() => Number(document.querySelector('#sample-step').max) >= 2", timeout=30_000)
    image = page.locator("#sample-img")
    expect(image).to_have_attribute("src", re.compile("^blob:"))
    newest = image.get_attribute("data-step")
    slider.fill("0")
    expect(image).to_have_attribute("data-step", "1000")
    expect(page.locator("#sample-label")).to_contain_text("step 1000 (1 of")
    assert image.get_attribute("data-step") != newest
    slider.focus()
    page.keyboard.press("ArrowRight")
    expect(image).to_have_attribute("data-step", "2000")
    assert page.evaluate("document.querySelector('#sample-img').naturalWidth") > 0
    expect(page.locator("#checkpoints li[data-step]").first).to_contain_text("weights")
    expect(page.locator("#events")).to_contain_text("sample at step")
    expect(page.locator("#spec")).to_contain_text('"lr_d"')  # the spec with its defaults
    shot(page, tmp_path, "job-running")

    cancel = page.get_by_role("button", name="Cancel job")
    expect(cancel).to_be_enabled()
    cancel.click()
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=30_000)
    expect(cancel).to_be_disabled()
    expect(page.locator("#events")).to_contain_text("→ cancelled")
    shot(page, tmp_path, "job-cancelled")
    assert errors == []


def test_submit_shows_field_errors_and_submits(page: Page, service: Service, tmp_path: Path) -> None:
    errors = script_errors(page)
    page.goto(service.url + "/#/submit")
    editor = page.get_by_label("Spec (JSON)")
    expect(page.locator("#spec-state")).to_have_text(re.compile("^Valid"))  # seeded from the catalog, with defaults
    page.get_by_label("Loss").select_option("hinge")
    # the catalog's defaults for hinge, then (once valid) the whole spec as it would run
    expect(editor).to_have_value(re.compile(r'"name": "hinge"[\s\S]*"training"'))
    expect(page.locator("#spec-state")).to_have_text(re.compile("^Valid"))
    spec = json.loads(editor.input_value())
    assert spec["loss"]["betas"] == [0.0, 0.9] and spec["loss"]["n_critic"] == 5  # hinge's paper defaults
    assert spec["dataset"]["builtin"] == "ring8" and spec["training"]["steps"] > 0

    spec["loss"]["lr_d"] = -1
    editor.fill(json.dumps(spec, indent=2))
    problems = page.locator("#spec-errors")
    expect(problems.locator("li[data-field='loss.lr_d']")).to_contain_text("loss.lr_d")
    expect(page.locator("#spec-state")).to_contain_text("Invalid")
    shot(page, tmp_path, "submit-error")
    editor.fill("{ not json")
    expect(problems).to_contain_text("not valid JSON")

    spec["loss"]["lr_d"] = 1e-4
    spec["name"] = "from-the-form"
    spec["training"].update(steps=30, batch_size=32)
    spec["architecture"]["hidden"] = 32  # a few seconds of CPU
    editor.fill(json.dumps(spec, indent=2))
    expect(page.locator("#spec-state")).to_have_text(re.compile("^Valid"))
    expect(problems.locator("li")).to_have_count(0)
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/[A-Za-z0-9_-]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("h1")).to_contain_text("from-the-form")
    expect(page.locator("#spec")).to_contain_text('"lr_d": 0.0001')
    with service.client() as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["spec"]["loss"]["name"] == "hinge"
        wait_for(client, job_id, ("succeeded",), timeout=120)
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=30_000)
    expect(page.get_by_role("button", name="Cancel job")).to_be_disabled()
    assert [error for error in errors if "status of 422" not in error] == []  # 422: the validation answers


def test_datasets_upload_preview_delete(page: Page, service: Service, tmp_path: Path) -> None:
    points = tmp_path / "blobs.npz"
    rng = np.random.default_rng(0)
    np.savez(points, x=rng.normal(size=(500, 2)).astype("float32"))
    errors = script_errors(page)
    page.goto(service.url + "/#/datasets")
    page.get_by_label(".npz or .zip of class folders").set_input_files(str(points))
    page.get_by_label("Name").fill("dash-blobs")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-state")).to_contain_text("Ready: dash-blobs")
    card = page.locator("#datasets article").filter(has_text="dash-blobs")
    expect(card.locator("img")).to_have_attribute("src", re.compile("^blob:"))
    expect(page.locator("#upload-progress")).to_have_attribute("value", re.compile("[1-9]"))
    dataset_id = card.get_attribute("data-id")
    expect(page.get_by_text("No data sets uploaded yet")).to_have_count(0)
    shot(page, tmp_path, "datasets")
    card.get_by_role("button", name="Delete dash-blobs").click()
    expect(card).to_have_count(0)
    with service.client() as client:
        assert client.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert errors == []


def test_docs_load_with_nothing_from_outside(context: BrowserContext, service: Service) -> None:
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    errors = script_errors(page)
    page.goto(service.url + "/docs")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    expect(page.locator(".swagger-ui")).to_contain_text("/v1/jobs")
    # Auth is on: the schema declares the bearer key on /v1 operations, so "Authorize" can send it.
    expect(page.locator(".swagger-ui .btn.authorize")).to_be_visible()
    schema = httpx.get(service.url + "/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/jobs"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    page.goto(service.url + "/")
    page.wait_for_load_state("networkidle")
    time.sleep(0.2)
    outside = [url for url in requests if not url.startswith((service.url + "/", "data:", "blob:"))]
    assert outside == [], outside
    assert any(url.endswith("swagger-ui-bundle.js") for url in requests)
    # no CSP violation on either page; the dashboard, opened without a key here, logs its 401s
    assert [error for error in errors if "status of 401" not in error] == []


def test_jobs_more_follows_next_cursor(page: Page, service: Service) -> None:
    with service.client() as client:
        spec = {**long_spec("paged"), "tags": {"batch": "more"}}
        ids = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(51)]
        for job_id in ids:  # nothing here needs them trained
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code in (202, 409)
    errors = script_errors(page)
    page.goto(service.url + "/#/jobs")
    page.get_by_label("Tag").fill("batch:more")
    page.get_by_role("button", name="Apply filters").click()
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(50)  # one page, newest first
    assert rows.first.get_attribute("data-id") == ids[-1]
    more = page.get_by_role("button", name="More")
    more.click()
    expect(rows).to_have_count(51)
    assert rows.last.get_attribute("data-id") == ids[0]
    expect(more).to_be_hidden()
    page.wait_for_timeout(2500)  # a poll of page 1 neither drops the second page nor brings back "More"
    expect(rows).to_have_count(51)
    expect(more).to_be_hidden()
    assert errors == []


def test_study_page_table_curves_samples_and_a_job_alert(page: Page, service: Service, tmp_path: Path) -> None:
    """A finished two-loss study: one table row per loss, a uPlot chart per measure, one sample image per loss at a
    common step; its job page lists the training.watch alert (set to fire: every snapshot under 99 % of the modes
    from step 0 is a collapse, so the tiny runs' first snapshot raises one)."""
    spec = {
        "name": "dash-study",
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
        "losses": ["nsgan", "lsgan"],
        "seeds": 1,
        "training": {
            "steps": 40,
            "batch_size": 64,
            "watch": {"collapse_floor": 0.99, "warmup_steps": 0, "patience": 1},
        },
        "every": {"metrics": 10, "samples": 20, "checkpoint": 40},
    }
    errors = script_errors(page)
    with service.client() as client:
        created = client.post("/v1/studies", json=spec)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        deadline = time.monotonic() + 180
        while (study := client.get(f"/v1/studies/{study_id}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, study
            time.sleep(0.5)
    assert study["status"] == "succeeded", study
    page.goto(service.url + "/#/studies")
    row = page.locator(f"#studies tr[data-id='{study_id}']")
    expect(row).to_contain_text("dash-study")
    expect(row.locator("[data-status]")).to_have_text("succeeded")
    row.get_by_role("link", name="dash-study").click()
    expect(page).to_have_url(re.compile(f"#/studies/{study_id}$"))
    expect(page.locator("#study-status")).to_have_text("succeeded")
    expect(page.locator("#study-progress")).to_contain_text("2 / 2 jobs finished")
    rows = page.locator("#comparison tbody tr")
    expect(rows).to_have_count(2)
    for loss in ("nsgan", "lsgan"):
        expect(page.locator(f"#comparison tr[data-loss='{loss}'] th")).to_have_text(loss)
        expect(page.locator(f"#comparison tr[data-loss='{loss}'] td[data-measure='modes_covered']")).to_have_text(
            re.compile(r"^\d")
        )
    for measure in study["measures"]:  # one chart per measure, a line (and band) per loss
        chart = page.locator(f"#study-charts figure[data-measure='{measure}']")
        expect(chart.locator("canvas")).to_have_count(1)
        expect(chart).to_have_attribute("data-curves", "2")
        expect(chart.locator(".u-legend")).to_contain_text("nsgan")
    samples = page.locator("#study-samples figure")
    expect(samples).to_have_count(2)
    expect(page.locator("#study-samples")).to_have_attribute("data-step", "40")  # the latest both have
    for loss in ("nsgan", "lsgan"):
        image = page.locator(f"#study-samples figure[data-loss='{loss}'] img")
        expect(image).to_have_attribute("src", re.compile("^blob:"))
        page.wait_for_function(
            "(loss) => document.querySelector(`#study-samples figure[data-loss='${loss}'] img`).naturalWidth > 0",
            arg=loss,
        )
    shot(page, tmp_path, "study")

    # the job page of one of its jobs shows the collapse alert, with its step and evidence
    page.locator("#study-jobs a").first.click()
    expect(page).to_have_url(re.compile(r"#/jobs/[A-Za-z0-9_-]+$"))
    alert = page.locator("#alerts li[data-kind='collapse']")
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text(re.compile(r"collapse at step \d+"))
    shot(page, tmp_path, "job-alert")
    assert errors == []
