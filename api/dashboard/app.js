// The dashboard: a hash-routed single page (#/jobs, #/jobs/<id>, #/submit, #/datasets, #/studies, #/studies/<id>)
// over the /v1 API.
// DOM is built with h() and textContent only: job names, specs and errors are user data, never parsed as HTML.

import { allPages, api, ApiError, apiKey, blobUrl, download, followEvents, onUnauthorized, setApiKey, upload } from "./api.js";
import { Charts } from "./charts.js";
import { studiesPage, studyPage } from "./studies.js";

const FINAL = ["succeeded", "failed", "cancelled"];
const STATUSES = ["queued", "running", "cancelling", ...FINAL]; // models.records.JobStatus.ALL
const POLL_MS = 2000;

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function statusBadge(status) {
  return h("span", { class: `status status-${status}`, dataset: { status } }, status);
}

function errorText(error) {
  if (error instanceof ApiError && error.status === 401) return "Unauthorized: enter your API key above.";
  return error instanceof ApiError ? `${error.message} (HTTP ${error.status})` : String(error.message || error);
}

function progressCell(job) {
  const { step, total_steps: total, steps_per_sec: rate, eta_seconds: eta } = job.progress;
  const label = `step ${step} / ${total}`;
  const parts = [label];
  if (rate) parts.push(`${rate.toFixed(1)} steps/s`);
  if (eta !== null && eta !== undefined) parts.push(`ETA ${duration(eta)}`);
  return h(
    "div",
    { class: "progress" },
    h("progress", { max: String(Math.max(total, 1)), value: String(step), "aria-label": label }),
    h("span", {}, parts.join(" · ")),
  );
}

// ---------------------------------------------------------------- auth

const prompt = document.getElementById("auth-prompt");
const keyInput = document.getElementById("api-key");
const keyState = document.getElementById("key-state");

onUnauthorized(() => {
  if (!prompt.hidden) return;
  prompt.textContent = apiKey()
    ? "This API key was refused (401). Enter a valid key in the API key field above and press Save key."
    : "This service needs an API key (401). Enter it in the API key field above and press Save key; it is kept in this browser.";
  prompt.hidden = false;
  keyInput.focus();
});

keyInput.value = apiKey();
keyState.textContent = apiKey() ? "key saved" : "";
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(keyInput.value.trim());
  keyState.textContent = apiKey() ? "key saved" : "no key";
  prompt.hidden = true;
  render();
});

// ---------------------------------------------------------------- jobs

function jobsPage(view) {
  const controller = new AbortController();
  const rows = new Map(); // id -> {job, tr}
  let cursor = null; // where "More" goes on from
  let followed = false; // "More" was used: the poll of page 1 no longer moves the cursor
  let filterGeneration = 0; // an answer for filters since changed is dropped
  const statusSelect = h("select", { id: "filter-status" }, h("option", { value: "" }, "any"),
    STATUSES.map((status) => h("option", { value: status }, status)));
  const tagInput = h("input", { id: "filter-tag", placeholder: "key:value", spellcheck: "false" });
  const tbody = h("tbody");
  const state = h("p", { id: "jobs-state", role: "status", class: "muted" });
  const more = h("button", { type: "button", id: "more", hidden: true, onclick: () => load(cursor) }, "More");
  const filters = h(
    "form",
    { class: "filters", onsubmit: (event) => { event.preventDefault(); reset(); } },
    h("label", { for: "filter-status" }, "Status", statusSelect),
    h("label", { for: "filter-tag" }, "Tag", tagInput),
    h("button", { type: "submit" }, "Apply filters"),
  );
  statusSelect.addEventListener("change", reset);
  view.append(
    h("h1", {}, "Jobs"),
    filters,
    h("table", { id: "jobs" },
      h("thead", {}, h("tr", {}, ["Name", "ID", "Loss / architecture / data set", "Status", "Progress", "Created"]
        .map((title) => h("th", { scope: "col" }, title)))),
      tbody),
    more,
    state,
  );

  function query(from) {
    const params = new URLSearchParams({ limit: "50" });
    if (statusSelect.value) params.set("status", statusSelect.value);
    if (tagInput.value.trim()) params.set("tag", tagInput.value.trim());
    if (from) params.set("cursor", from);
    return `/v1/jobs?${params}`;
  }

  function row(job) {
    const spec = job.spec || {};
    const data = spec.dataset ? spec.dataset.builtin || spec.dataset.id : "";
    return h("tr", { dataset: { id: job.id } },
      h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.name || "(unnamed)"),
        Object.keys(job.tags || {}).length
          ? h("div", { class: "muted tags" }, Object.entries(job.tags).map(([k, v]) => `${k}:${v}`).join(" "))
          : null),
      h("td", {}, h("code", {}, job.id)),
      h("td", {}, `${spec.loss?.name ?? ""} / ${spec.architecture?.name ?? ""} / ${data}`),
      h("td", {}, statusBadge(job.status)),
      h("td", {}, progressCell(job)),
      h("td", {}, new Date(job.created_at).toLocaleString()),
    );
  }

  function show(jobs) {
    for (const job of jobs) {
      const fresh = row(job);
      const known = rows.get(job.id);
      if (known) {
        // update cells in place, so a focused link keeps its focus; the cells are taken from `fresh` first,
        // since replaceWith moves each out of it (and would shift the next index onto the Created cell)
        const cells = [...fresh.children];
        [3, 4].forEach((index) => known.tr.children[index].replaceWith(cells[index]));
        known.job = job;
      } else rows.set(job.id, { job, tr: fresh });
    }
    const ordered = [...rows.values()].sort((a, b) =>
      b.job.created_at.localeCompare(a.job.created_at) || b.job.id.localeCompare(a.job.id));
    const current = [...tbody.children];
    if (ordered.some((entry, index) => current[index] !== entry.tr)) tbody.replaceChildren(...ordered.map((e) => e.tr));
    state.textContent = rows.size ? `${rows.size} job(s) shown, newest first; updated every 2 s.` : "No jobs yet: submit one.";
  }

  async function load(from) {
    const mine = filterGeneration;
    try {
      const page = await api(query(from), { signal: controller.signal });
      if (mine !== filterGeneration) return;
      if (from || !followed) {
        followed = followed || Boolean(from);
        cursor = page.next_cursor;
        more.hidden = !cursor;
      }
      show(page.jobs);
    } catch (error) {
      if (!controller.signal.aborted) state.textContent = errorText(error);
    }
  }

  function reset() {
    filterGeneration += 1;
    rows.clear();
    tbody.replaceChildren();
    cursor = null;
    followed = false;
    load(null);
  }

  load(null);
  const timer = setInterval(() => load(null), POLL_MS); // the first page again: new jobs and progress
  return () => {
    clearInterval(timer);
    controller.abort();
  };
}

// ---------------------------------------------------------------- one job

function jobPage(view, jobId) {
  const controller = new AbortController();
  const signal = controller.signal;
  const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const blobs = new Map(); // step -> blob: URL of its sample image
  let job = null;
  let samples = [];
  let shownStep = null;

  const title = h("h1", {}, "Job ", h("code", {}, jobId));
  const statusText = h("span", { id: "job-status", role: "status" });
  const attempt = h("span", { id: "job-attempt" });
  const studyLink = h("span", { id: "job-study" }); // the study that fanned the job out, if any
  const progress = h("span", { id: "job-progress" });
  const cancel = h("button", { type: "button", id: "cancel", class: "danger", disabled: true, onclick: cancelJob }, "Cancel job");
  const errorLine = h("p", { id: "job-error", class: "error", hidden: true });
  // training.watch alerts (collapse, divergence): from the job, then live from "alert" events
  const alerts = h("ul", { id: "alerts", class: "alerts", hidden: true, "aria-label": "Alerts" });
  const message = h("p", { id: "job-message", role: "status", class: "muted" });
  const logToggle = h("input", { type: "checkbox", id: "log-scale", onchange: () => charts.setLogScale(logToggle.checked) });
  const chartsBox = h("div", { class: "charts", id: "charts", dataset: { points: "0", series: "0" } });
  const charts = new Charts(chartsBox);
  const image = h("img", { id: "sample-img", alt: "no sample yet" });
  const slider = h("input", { type: "range", id: "sample-step", min: "0", max: "0", value: "0", disabled: true,
    oninput: () => showSample(Number(slider.value)) });
  const sliderLabel = h("output", { id: "sample-label", for: "sample-step" }, "no snapshots yet");
  const evaluation = h("p", { id: "sample-evaluation", class: "muted" });
  const checkpoints = h("ul", { id: "checkpoints" }, h("li", { class: "muted" }, "none yet"));
  const specBox = h("pre", { id: "spec" });
  const events = h("ul", { id: "events", class: "log" }); // newest first
  const metricsSummary = h("li", { id: "metrics-summary", hidden: true });
  events.append(metricsSummary);
  let metricBatches = 0;

  view.append(
    title,
    h("div", { class: "row" }, h("span", {}, "Status: ", statusText), attempt, progress, cancel, studyLink),
    errorLine,
    alerts,
    message,
    h("div", { class: "job-layout" },
      h("section", { "aria-labelledby": "curves-title" },
        h("h2", { id: "curves-title" }, "Curves"),
        h("label", {}, logToggle, " Log scale (values ≤ 0 are not drawn on it)"),
        chartsBox),
      h("section", { class: "sample", "aria-labelledby": "samples-title" },
        h("h2", { id: "samples-title" }, "Samples"),
        image,
        h("label", { for: "sample-step" }, "Snapshot step"),
        slider,
        sliderLabel,
        evaluation)),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "checkpoints-title" },
        h("h2", { id: "checkpoints-title" }, "Checkpoints"),
        checkpoints),
      h("section", { class: "panel", "aria-labelledby": "events-title" },
        h("h2", { id: "events-title" }, "Event log"),
        events)),
    h("section", { "aria-labelledby": "spec-title" }, h("h2", { id: "spec-title" }, "Spec (with defaults)"), specBox),
  );

  function showJob(next) {
    job = next;
    title.replaceChildren(job.name || "Job", " ", h("code", {}, job.id));
    document.title = `${job.name || job.id} · ganforge`;
    statusText.replaceChildren(statusBadge(job.status));
    view.dataset.status = job.status;
    attempt.textContent = `attempt ${job.attempt} of ${job.max_attempts}`;
    progress.replaceChildren(progressCell(job));
    cancel.disabled = FINAL.includes(job.status);
    errorLine.hidden = !job.error;
    errorLine.textContent = job.error ? `Error: ${job.error}` : "";
    const text = JSON.stringify(job.spec, null, 2);
    if (specBox.textContent !== text) specBox.textContent = text;
    (job.alerts || []).forEach(addAlert);
    if (job.study_id && !studyLink.childElementCount) {
      studyLink.append("part of study ", h("a", { href: `#/studies/${job.study_id}` }, h("code", {}, job.study_id)));
    }
  }

  function addAlert(alert) {
    const key = `${alert.kind}@${alert.step}`;
    if (alerts.querySelector(`[data-key="${CSS.escape(key)}"]`)) return;
    const evidence = Object.entries(alert.evidence || {})
      .map(([name, value]) => `${name} ${typeof value !== "number" ? JSON.stringify(value)
        : Number.isInteger(value) ? value : value.toPrecision(4)}`)
      .join(" · ");
    alerts.append(h("li", { class: "alert", dataset: { key, kind: alert.kind, step: String(alert.step) } },
      h("strong", {}, `${alert.kind} at step ${alert.step}`),
      alert.action ? ` (${alert.action})` : "",
      evidence ? `: ${evidence}` : ""));
    alerts.hidden = false;
  }

  async function refresh() {
    try {
      showJob(await api(base, { signal }));
    } catch (error) {
      if (!signal.aborted) message.textContent = errorText(error);
    }
  }

  async function cancelJob() {
    cancel.disabled = true;
    try {
      showJob(await api(`${base}/cancel`, { method: "POST", signal }));
      message.textContent = "Cancel requested: a running job stops at its next step.";
    } catch (error) {
      message.textContent = errorText(error);
      refresh();
    }
  }

  // samples: the slider walks the snapshots in step order
  function addSample(sample) {
    if (samples.some((known) => known.step === sample.step)) return;
    const atEnd = samples.length === 0 || Number(slider.value) === samples.length - 1;
    samples.push(sample);
    samples.sort((a, b) => a.step - b.step);
    slider.max = String(samples.length - 1);
    slider.disabled = false;
    if (atEnd) {
      slider.value = String(samples.length - 1);
      showSample(samples.length - 1);
    } else {
      slider.value = String(samples.findIndex((known) => known.step === shownStep));
      labelSample();
    }
  }

  function labelSample() {
    const index = samples.findIndex((known) => known.step === shownStep);
    sliderLabel.textContent = `step ${shownStep} (${index + 1} of ${samples.length})`;
    const values = samples[index]?.evaluation;
    evaluation.textContent = values
      ? Object.entries(values).map(([name, value]) => `${name} ${Number(value).toPrecision(3)}`).join(" · ")
      : "";
  }

  async function showSample(index) {
    const sample = samples[index];
    if (!sample) return;
    shownStep = sample.step;
    labelSample();
    try {
      if (!blobs.has(sample.step)) blobs.set(sample.step, await blobUrl(`${base}/samples/${sample.step}.png`, signal));
      if (shownStep !== sample.step) return; // the slider moved on meanwhile
      image.src = blobs.get(sample.step);
      image.alt = `generated samples at step ${sample.step}`;
      image.dataset.step = String(sample.step);
    } catch (error) {
      if (!signal.aborted) message.textContent = errorText(error);
    }
  }

  function addCheckpoint(checkpoint) {
    if (checkpoints.querySelector(`[data-step="${checkpoint.step}"]`)) return;
    checkpoints.querySelector(".muted")?.remove();
    const weights = `${base}/checkpoints/${checkpoint.step}`;
    const link = (href, text, filename) =>
      h("a", { href, onclick: (event) => {
        event.preventDefault();
        download(href, filename).catch((error) => { message.textContent = errorText(error); });
      } }, text);
    const item = h("li", { dataset: { step: String(checkpoint.step) } },
      `step ${checkpoint.step}: `,
      link(weights, `weights (${bytes(checkpoint.size_bytes)})`, `${jobId}-${checkpoint.step}.safetensors`),
      " · ",
      link(`${weights}?file=state`, "resume state", `${jobId}-${checkpoint.step}.state.pt`));
    const later = [...checkpoints.children].find((li) => Number(li.dataset.step) > checkpoint.step);
    checkpoints.insertBefore(item, later || null);
  }

  function logEvent(text, time) {
    const when = time ? new Date(time).toLocaleTimeString() : "";
    events.insertBefore(h("li", {}, h("span", { class: "muted" }, when), " ", text), metricsSummary.nextSibling);
    while (events.children.length > 300) events.lastElementChild.remove();
  }

  // the seed's last step per series: events are replayed from the start, points the seed holds are skipped
  const seeded = new Map();

  function onEvent({ event, data }) {
    if (event === "metrics") {
      charts.add(data.points.filter(([name, step]) => step > (seeded.get(name) ?? -1)));
      metricBatches += 1;
      metricsSummary.hidden = false;
      metricsSummary.textContent = `metrics: ${metricBatches} batch(es), last at step ${data.last_step}`;
    } else if (event === "status") {
      const reason = data.reason ? ` (${data.reason})` : "";
      logEvent(`status ${data.from ?? "–"} → ${data.to}${reason}, attempt ${data.attempt}`, data.time);
      if (job && data.to !== job.status) refresh();
    } else if (event === "sample") {
      logEvent(`sample at step ${data.step}`, data.time);
      addSample({ step: data.step, evaluation: data.evaluation });
    } else if (event === "checkpoint") {
      logEvent(`checkpoint at step ${data.step} (${bytes(data.size_bytes)})`, data.time);
      addCheckpoint(data);
    } else if (event === "alert") {
      logEvent(`alert: ${data.kind} at step ${data.step}`, data.time);
      addAlert(data);
    } else logEvent(`${event}: ${JSON.stringify(data)}`, data.time);
  }

  async function start() {
    try {
      const [first, sampleList, checkpointList, metrics] = await Promise.all([
        api(base, { signal }),
        allPages(`${base}/samples`, "samples", { signal }),
        allPages(`${base}/checkpoints`, "checkpoints", { signal }),
        api(`${base}/metrics?max_points=2000`, { signal }),
      ]);
      showJob(first);
      sampleList.forEach(addSample);
      checkpointList.forEach(addCheckpoint);
      const points = [];
      for (const [name, series] of Object.entries(metrics.series)) {
        series.steps.forEach((step, index) => points.push([name, step, series.values[index]]));
        if (series.steps.length) seeded.set(name, series.steps[series.steps.length - 1]);
      }
      charts.add(points);
    } catch (error) {
      if (!signal.aborted) message.textContent = errorText(error);
      return;
    }
    followEvents(`${base}/events`, onEvent, signal)
      .then(() => refresh())
      .catch((error) => { if (!signal.aborted) message.textContent = `Live updates stopped: ${errorText(error)}`; });
  }

  start();
  const timer = setInterval(() => { if (job && !FINAL.includes(job.status)) refresh(); }, POLL_MS);
  return () => {
    clearInterval(timer);
    controller.abort();
    charts.destroy();
    blobs.forEach((url) => URL.revokeObjectURL(url));
  };
}

// ---------------------------------------------------------------- submit

function submitPage(view) {
  const controller = new AbortController();
  const signal = controller.signal;
  let catalog = null;
  let timer = null;
  let generation = 0; // answers to older validations are dropped

  const loss = h("select", { id: "loss" });
  const architecture = h("select", { id: "architecture" });
  const dataset = h("select", { id: "dataset" });
  const editor = h("textarea", { id: "spec-editor", spellcheck: "false", "aria-describedby": "spec-state spec-errors" });
  const state = h("p", { id: "spec-state", role: "status" }, "Loading the catalog…");
  const errors = h("ul", { id: "spec-errors", class: "errors", "aria-live": "polite" });
  const submit = h("button", { type: "submit", id: "submit", class: "primary" }, "Submit job");

  view.append(
    h("h1", {}, "Submit a job"),
    h("p", { class: "muted" }, "Pick a loss, architecture and data set to start from their defaults, then edit the spec; it is checked as you type."),
    h("div", { class: "row" },
      h("label", { class: "field", for: "loss" }, "Loss", loss),
      h("label", { class: "field", for: "architecture" }, "Architecture", architecture),
      h("label", { class: "field", for: "dataset" }, "Data set", dataset)),
    h("form", { onsubmit: submitSpec },
      h("div", { class: "editor" },
        h("div", {}, h("label", { for: "spec-editor" }, "Spec (JSON)"), editor),
        h("aside", { "aria-labelledby": "validation-title" },
          h("h2", { id: "validation-title" }, "Validation"), state, errors)),
      submit),
  );

  function showProblems(problems) {
    errors.replaceChildren(...problems.map(({ field, message }) =>
      h("li", { dataset: { field: field || "" } }, h("code", {}, field || "(spec)"), `: ${message}`)));
  }

  function parse() {
    try {
      return { spec: JSON.parse(editor.value) };
    } catch (error) {
      return { problem: { field: "body", message: `not valid JSON: ${error.message}` } };
    }
  }

  // Check the editor's spec; with `fill`, a valid answer replaces the text by the spec with every default.
  async function validate(fill = false) {
    const mine = ++generation;
    const { spec, problem } = parse();
    if (problem) {
      state.textContent = "Invalid JSON.";
      state.className = "error";
      showProblems([problem]);
      return null;
    }
    try {
      const answer = await api("/v1/jobs?validate_only=true", { method: "POST", json: spec, signal });
      if (mine !== generation) return null;
      if (fill) editor.value = JSON.stringify(answer.spec, null, 2); // as it would run
      state.textContent = "Valid: this spec would be accepted.";
      state.className = "valid";
      showProblems([]);
      return answer.spec;
    } catch (error) {
      if (mine !== generation || signal.aborted) return null;
      state.textContent = error instanceof ApiError && error.status === 422 ? `Invalid: ${error.message}` : errorText(error);
      state.className = "error";
      showProblems(error.details || []);
      return null;
    }
  }

  editor.addEventListener("input", () => {
    clearTimeout(timer);
    state.textContent = "Checking…";
    state.className = "muted";
    timer = setTimeout(validate, 400);
  });

  async function seed() {
    const [kind, id] = dataset.value.split(":", 2);
    const spec = {
      name: "",
      dataset: kind === "builtin" ? { builtin: id } : { id },
      architecture: { name: architecture.value, ...catalog.architectures[architecture.value].defaults },
      loss: { name: loss.value, ...catalog.losses[loss.value].defaults },
    };
    editor.value = JSON.stringify(spec, null, 2);
    state.textContent = "Checking…";
    state.className = "muted";
    await validate(true);
  }

  async function submitSpec(event) {
    event.preventDefault();
    clearTimeout(timer);
    const { spec, problem } = parse();
    if (problem) {
      showProblems([problem]);
      return;
    }
    submit.disabled = true;
    try {
      const key = crypto.randomUUID ? crypto.randomUUID() : [...crypto.getRandomValues(new Uint8Array(16))]
        .map((b) => b.toString(16).padStart(2, "0")).join("");
      const job = await api("/v1/jobs", { method: "POST", json: spec, headers: { "Idempotency-Key": key }, signal });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      state.textContent = errorText(error);
      state.className = "error";
      showProblems(error.details || []);
    } finally {
      submit.disabled = false;
    }
  }

  (async () => {
    try {
      const [body, uploaded] = await Promise.all([
        api("/v1/catalog", { signal }),
        api("/v1/datasets?limit=500", { signal }).catch(() => ({ datasets: [] })),
      ]);
      catalog = body;
      loss.append(...Object.keys(catalog.losses).map((name) => h("option", { value: name }, name)));
      architecture.append(...Object.keys(catalog.architectures).map((name) => h("option", { value: name }, name)));
      dataset.append(
        h("optgroup", { label: "built in" },
          Object.entries(catalog.datasets).map(([name, info]) => h("option", { value: `builtin:${name}`, title: info.description }, name))),
        uploaded.datasets.length
          ? h("optgroup", { label: "uploaded" },
            uploaded.datasets.map((item) => h("option", { value: `id:${item.id}` }, `${item.name} (${item.id})`)))
          : null,
      );
      loss.value = "nsgan" in catalog.losses ? "nsgan" : loss.value;
      [loss, architecture, dataset].forEach((select) => select.addEventListener("change", seed));
      await seed();
    } catch (error) {
      if (!signal.aborted) state.textContent = errorText(error);
    }
  })();
  return () => {
    clearTimeout(timer);
    controller.abort();
  };
}

// ---------------------------------------------------------------- data sets

function datasetsPage(view) {
  const controller = new AbortController();
  const signal = controller.signal;
  const urls = [];
  let cursor = null;
  const file = h("input", { type: "file", id: "upload-file", accept: ".npz,.zip", required: true });
  const name = h("input", { id: "upload-name", placeholder: "default: the file name" });
  const resize = h("select", { id: "upload-resize" }, h("option", { value: "" }, "keep"),
    [8, 16, 32, 64].map((size) => h("option", { value: String(size) }, `${size} px`)));
  const bar = h("progress", { id: "upload-progress", max: "1", value: "0", "aria-label": "upload progress" });
  const uploadState = h("span", { id: "upload-state", role: "status" });
  const cards = h("div", { class: "cards", id: "datasets" });
  const state = h("p", { role: "status", class: "muted" });
  const more = h("button", { type: "button", hidden: true, onclick: () => load(cursor) }, "More");

  view.append(
    h("h1", {}, "Data sets"),
    h("form", { class: "filters", onsubmit: send },
      h("label", { for: "upload-file" }, ".npz or .zip of class folders", file),
      h("label", { for: "upload-name" }, "Name", name),
      h("label", { for: "upload-resize" }, "Resize images to", resize),
      h("button", { type: "submit", class: "primary" }, "Upload"),
      bar,
      uploadState),
    cards,
    more,
    state,
  );

  function card(item) {
    const info = item.info || {};
    const image = h("img", { alt: `preview of ${item.name}` });
    blobUrl(item.preview_url, signal).then((url) => { urls.push(url); image.src = url; }).catch(() => {
      image.alt = `no preview for ${item.name}`;
    });
    const remove = h("button", { type: "button", class: "danger", onclick: async () => {
      remove.disabled = true;
      try {
        await api(`/v1/datasets/${item.id}`, { method: "DELETE", signal });
        element.remove();
        state.textContent = `Deleted ${item.name}.${cards.children.length ? "" : " No data sets uploaded yet."}`;
      } catch (error) {
        state.textContent = errorText(error);
        remove.disabled = false;
      }
    } }, `Delete ${item.name}`);
    const classes = info.num_classes ? `${info.num_classes}${info.class_names?.length ? `: ${info.class_names.slice(0, 10).join(", ")}` : ""}` : "none";
    const element = h("article", { class: "card panel", dataset: { id: item.id } },
      image,
      h("h2", {}, item.name),
      h("dl", {},
        h("dt", {}, "id"), h("dd", {}, h("code", {}, item.id)),
        h("dt", {}, "kind"), h("dd", {}, `${info.kind ?? "?"} ${JSON.stringify(info.shape ?? [])}`),
        h("dt", {}, "examples"), h("dd", {}, String(info.size ?? "?")),
        h("dt", {}, "classes"), h("dd", {}, classes),
        h("dt", {}, "size"), h("dd", {}, bytes(item.size_bytes)),
        h("dt", {}, "uploaded"), h("dd", {}, new Date(item.created_at).toLocaleString())),
      remove);
    return element;
  }

  async function load(from) {
    try {
      const params = new URLSearchParams({ limit: "50" });
      if (from) params.set("cursor", from);
      const page = await api(`/v1/datasets?${params}`, { signal });
      cards.append(...page.datasets.map(card));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      state.textContent = cards.children.length ? "" : "No data sets uploaded yet.";
    } catch (error) {
      if (!signal.aborted) state.textContent = errorText(error);
    }
  }

  async function send(event) {
    event.preventDefault();
    if (!file.files.length) return;
    const form = new FormData();
    form.append("file", file.files[0]);
    if (name.value.trim()) form.append("name", name.value.trim());
    if (resize.value) form.append("resize", resize.value);
    uploadState.textContent = "Uploading…";
    try {
      const created = await upload(form, (loaded, total) => {
        bar.max = String(total || 1);
        bar.value = String(total ? loaded : 0);
        uploadState.textContent = total ? `Uploading: ${Math.round((100 * loaded) / total)} %` : "Uploading…";
        if (total && loaded >= total) uploadState.textContent = "Uploaded; checking and normalising…";
      });
      uploadState.textContent = `Ready: ${created.name} (${created.id}).`;
      cards.querySelector(`[data-id="${created.id}"]`)?.remove();
      cards.prepend(card(created));
      state.textContent = "";
    } catch (error) {
      const fields = (error.details || []).map((d) => `${d.field}: ${d.message}`).join("; ");
      uploadState.textContent = `Upload refused: ${errorText(error)}${fields ? ` — ${fields}` : ""}`;
    }
  }

  load(null);
  return () => {
    controller.abort();
    urls.forEach((url) => URL.revokeObjectURL(url));
  };
}

// ---------------------------------------------------------------- router

const view = document.getElementById("view");
let cleanup = null;

function render() {
  if (cleanup) cleanup();
  cleanup = null;
  view.replaceChildren();
  delete view.dataset.status;
  document.title = "ganforge";
  const path = location.hash.replace(/^#/, "") || "/jobs";
  const job = path.match(/^\/jobs\/([A-Za-z0-9_-]+)$/);
  const study = path.match(/^\/studies\/([A-Za-z0-9_-]+)$/);
  const ui = { h, statusBadge, errorText, duration };
  let page = "jobs";
  if (job) cleanup = jobPage(view, job[1]);
  else if (study) (page = "study"), (cleanup = studyPage(view, study[1], ui));
  else if (path === "/studies") (page = "studies"), (cleanup = studiesPage(view, ui));
  else if (path === "/submit") (page = "submit"), (cleanup = submitPage(view));
  else if (path === "/datasets") (page = "datasets"), (cleanup = datasetsPage(view));
  else cleanup = jobsPage(view);
  view.dataset.page = job ? "job" : page;
  document.querySelectorAll("nav a").forEach((link) => {
    if (link.getAttribute("href") === `#/${page}` && !job) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  });
}

window.addEventListener("hashchange", () => {
  prompt.hidden = true;
  render();
  view.focus();
});
render();
