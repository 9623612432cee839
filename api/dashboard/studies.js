// Studies: the list (#/studies) and one study (#/studies/<id>): progress, the comparison table, the overlaid curves
// per measure (one line per loss and grid point: the mean over seeds, with a min-max band) and a grid of samples per
// loss at one step. DOM through the page's h() (textContent only: names and specs are user data).

/* global uPlot */

import { allPages, api, blobUrl } from "./api.js";

const FINAL = ["succeeded", "failed", "cancelled"];
const POLL_MS = 2000;
// Colours tell the losses apart; the legend and the table name each one, so nothing is told by colour alone.
const COLOURS = ["#0b57d0", "#d9480f", "#1a7f37", "#8250df", "#bf8700", "#cf222e", "#0a7ea4", "#57606a"];
const STABILITY = {
  loss_g_spread_last_quarter: "G loss spread (last ¼)",
  loss_g_std_last_quarter: "G loss std (last ¼)",
  vanishing_grad_fraction: "Vanishing G grad",
  vanishing_grad_fraction_relative: "Vanishing G grad (relative)",
  mode_oscillation: "Oscillation",
  collapse_events: "Collapses",
  divergence_events: "Divergences",
};

function pointText(point) {
  return Object.entries(point || {}).map(([key, value]) => `${key}=${value}`).join(",");
}

function groupLabel(loss, point) {
  const text = pointText(point);
  return text ? `${loss} [${text}]` : loss;
}

function groupKey(loss, point) {
  return `${loss}|${pointText(point)}`;
}

function figure(stat, percent = false) {
  if (typeof stat === "number") return String(stat);
  if (!stat || stat.mean === null || stat.mean === undefined) return "–";
  const show = (value, digits) => (percent ? `${(100 * value).toFixed(1)} %` : Number(value).toPrecision(digits));
  return stat.std === null || stat.std === undefined ? show(stat.mean, 4) : `${show(stat.mean, 4)} ± ${show(stat.std, 2)}`;
}

function reached(stat) {
  if (!stat) return "–";
  const mean = stat.mean === null || stat.mean === undefined ? "never" : figure(stat);
  return stat.reached === undefined ? mean : `${mean} (${stat.reached}/${stat.n})`;
}

function progressText(study) {
  const counts = study.counts || {};
  const finished = FINAL.reduce((n, status) => n + (counts[status] || 0), 0);
  const parts = [`${finished} / ${study.job_count} jobs finished`, `${counts.running || 0} running`];
  if (counts.queued) parts.push(`${counts.queued} queued`);
  if (counts.failed) parts.push(`${counts.failed} failed`);
  if (counts.cancelled) parts.push(`${counts.cancelled} cancelled`);
  if (counts.cancelling) parts.push(`${counts.cancelling} stopping`);
  if (study.progress) parts.push(`step ${study.progress.steps_done} / ${study.progress.steps_total}`);
  return parts.join(" · ");
}

// ---------------------------------------------------------------- the list

export function studiesPage(view, { h, statusBadge, errorText }) {
  const controller = new AbortController();
  const signal = controller.signal;
  let cursor = null;
  let first = []; // the first page, polled
  let extra = []; // studies of the pages after the first ("More")
  const tbody = h("tbody");
  const state = h("p", { id: "studies-state", role: "status", class: "muted" });
  const more = h("button", { type: "button", id: "more-studies", hidden: true, onclick: () => load(cursor) }, "More");
  view.append(
    h("h1", {}, "Studies"),
    h("p", { class: "muted" }, "A study trains the same data and architecture with several losses, seeds and settings, and compares them. Submit one with POST /v1/studies or `ganforge study submit`."),
    h("table", { id: "studies" },
      h("thead", {}, h("tr", {}, ["Name", "ID", "Status", "Jobs", "Progress", "Created"]
        .map((title) => h("th", { scope: "col" }, title)))),
      tbody),
    more,
    state,
  );

  function row(study) {
    const fraction = study.progress ? study.progress.fraction : 0;
    return h("tr", { dataset: { id: study.id } },
      h("td", {}, h("a", { href: `#/studies/${study.id}` }, study.name || "(unnamed)")),
      h("td", {}, h("code", {}, study.id)),
      h("td", {}, statusBadge(study.status)),
      h("td", {}, String(study.job_count)),
      h("td", {}, h("div", { class: "progress" },
        h("progress", { max: "1", value: String(fraction), "aria-label": `${Math.round(100 * fraction)} %` }),
        h("span", {}, progressText(study)))),
      h("td", {}, new Date(study.created_at).toLocaleString()));
  }

  // Page 1 again every poll (new studies, progress); the pages "More" brought stay below it.
  async function load(from) {
    try {
      const params = new URLSearchParams({ limit: "50" });
      if (from) params.set("cursor", from);
      const page = await api(`/v1/studies?${params}`, { signal });
      if (from) extra = [...extra, ...page.studies];
      else first = page.studies;
      if (from || !extra.length) {
        cursor = page.next_cursor;
        more.hidden = !cursor;
      }
      const seen = new Set();
      const studies = [...first, ...extra].filter((study) => !seen.has(study.id) && seen.add(study.id));
      tbody.replaceChildren(...studies.map(row));
      state.textContent = studies.length ? `${studies.length} study(ies), newest first; updated every 2 s.` : "No studies yet.";
    } catch (error) {
      if (!signal.aborted) state.textContent = errorText(error);
    }
  }

  load(null);
  const timer = setInterval(() => load(null), POLL_MS);
  return () => {
    clearInterval(timer);
    controller.abort();
  };
}

// ---------------------------------------------------------------- curves

/** One chart per measure: per (loss, point), the mean line and a band from min to max over the seeds. */
class StudyChart {
  constructor(container, name, h) {
    this.name = name;
    this.plot = null;
    this.key = "";
    this.area = h("div");
    this.element = h("figure", { class: "chart panel study-chart", dataset: { measure: name } }, h("h3", {}, name), this.area);
    container.append(this.element);
  }

  update(curves, colourOf) {
    const steps = [...new Set(curves.flatMap((curve) => curve.steps))].sort((a, b) => a - b);
    const at = new Map(steps.map((step, index) => [step, index]));
    const column = (curve, values) => {
      const out = new Array(steps.length).fill(null);
      curve.steps.forEach((step, index) => { out[at.get(step)] = values[index] ?? null; });
      return out;
    };
    const data = [steps];
    const series = [{ label: "step" }];
    const bands = [];
    for (const curve of curves) {
      const label = groupLabel(curve.loss, curve.point);
      const colour = colourOf(curve.loss, curve.point);
      const base = data.length;
      data.push(column(curve, curve.mean), column(curve, curve.max ?? curve.mean), column(curve, curve.min ?? curve.mean));
      series.push(
        { label: `${label} (mean of ${curve.runs})`, stroke: colour, width: 2, spanGaps: true, points: { show: false } },
        { label: `${label} max`, stroke: `${colour}55`, width: 1, spanGaps: true, points: { show: false } },
        { label: `${label} min`, stroke: `${colour}55`, width: 1, spanGaps: true, points: { show: false } },
      );
      bands.push({ series: [base + 1, base + 2], fill: `${colour}22` });
    }
    const key = series.map((s) => s.label).join("\n");
    this.element.dataset.curves = String(curves.length);
    if (this.plot && key === this.key) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.key = key;
    this.plot = new uPlot(
      {
        width: Math.max(320, this.area.clientWidth || 440),
        height: 240,
        scales: { x: { time: false } },
        axes: [{ label: "step" }, { label: this.name }],
        series,
        bands,
      },
      data,
      this.area,
    );
  }

  destroy() {
    this.plot?.destroy();
  }
}

// ---------------------------------------------------------------- one study

export function studyPage(view, studyId, { h, statusBadge, errorText, duration }) {
  const controller = new AbortController();
  const signal = controller.signal;
  const base = `/v1/studies/${encodeURIComponent(studyId)}`;
  const charts = new Map(); // measure -> StudyChart
  const blobs = new Map(); // sample path -> blob: URL
  const colours = new Map(); // group key -> colour
  let study = null;
  let polls = 0;
  let sampleStep = null;

  const title = h("h1", {}, "Study ", h("code", {}, studyId));
  const statusText = h("span", { id: "study-status", role: "status" });
  const bar = h("progress", { id: "study-bar", max: "1", value: "0", "aria-label": "study progress" });
  const progress = h("span", { id: "study-progress" });
  const cancel = h("button", { type: "button", id: "cancel-study", class: "danger", disabled: true, onclick: cancelStudy }, "Cancel study");
  const message = h("p", { id: "study-message", role: "status", class: "muted" });
  const about = h("p", { id: "study-about", class: "muted" });
  const table = h("table", { id: "comparison" });
  const chartsBox = h("div", { class: "charts", id: "study-charts" });
  const samplesNote = h("p", { id: "study-samples-note", class: "muted" }, "Samples appear once every loss has a snapshot.");
  const samplesBox = h("div", { class: "study-samples", id: "study-samples" });
  const jobsBody = h("tbody");

  view.append(
    title,
    h("div", { class: "row" }, h("span", {}, "Status: ", statusText), bar, progress, cancel),
    message,
    about,
    h("section", { "aria-labelledby": "comparison-title" },
      h("h2", { id: "comparison-title" }, "Comparison (mean ± sample std over seeds)"), table),
    h("section", { "aria-labelledby": "study-curves-title" },
      h("h2", { id: "study-curves-title" }, "Curves (mean over seeds; band: min to max)"), chartsBox),
    h("section", { "aria-labelledby": "study-samples-title" },
      h("h2", { id: "study-samples-title" }, "Samples per loss at the same step"), samplesNote, samplesBox),
    h("section", { "aria-labelledby": "study-jobs-title" },
      h("h2", { id: "study-jobs-title" }, "Jobs"),
      h("table", { id: "study-jobs" },
        h("thead", {}, h("tr", {}, ["Job", "Loss", "Point", "Seed", "Status", "Step"].map((t) => h("th", { scope: "col" }, t)))),
        jobsBody)),
  );

  function colourOf(loss, point) {
    const key = groupKey(loss, point);
    if (!colours.has(key)) colours.set(key, COLOURS[colours.size % COLOURS.length]);
    return colours.get(key);
  }

  function showTable() {
    const rows = study.comparison || [];
    const measures = study.measures || [];
    const grid = rows.some((row) => Object.keys(row.point || {}).length);
    const stability = [...new Set(rows.flatMap((row) => Object.keys(row.stability || {})))];
    const primary = measures[0];
    const threshold = rows.map((row) => row.steps_to_threshold?.[primary]?.threshold).find((t) => t !== undefined && t !== null);
    // Failed or cancelled runs are left out of every mean ± std (models/comparison.py): the Failed column counts them.
    const headers = ["Loss", ...(grid ? ["Point"] : []), "Runs done", "Failed", ...measures,
      ...(primary ? [`Steps to ${primary}${threshold !== undefined ? ` ${Number(threshold).toPrecision(3)}` : ""}`] : []),
      "Wall time", "CPU s", ...stability.map((key) => STABILITY[key] || key)];
    const body = rows.map((row) => {
      const swatch = h("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = colourOf(row.loss, row.point);
      return h("tr", { dataset: { loss: row.loss, point: pointText(row.point) } },
        h("th", { scope: "row" }, swatch, row.loss),
        grid ? h("td", {}, pointText(row.point) || "–") : null,
        h("td", {}, `${row.finished ?? "–"} / ${row.runs ?? "–"}`),
        h("td", { dataset: { failed: String(row.failed ?? 0) } }, String(row.failed ?? "–")),
        measures.map((name) => h("td", { dataset: { measure: name } }, figure(row.quality?.[name], name === "hq_fraction"))),
        primary ? h("td", {}, reached(row.steps_to_threshold?.[primary])) : null,
        h("td", {}, row.wall_seconds?.mean === null || row.wall_seconds?.mean === undefined ? "–" : duration(row.wall_seconds.mean)),
        h("td", {}, figure(row.cpu_seconds)),
        stability.map((key) => h("td", {}, figure(row.stability?.[key], key.startsWith("vanishing_grad_fraction")))));
    });
    table.replaceChildren(
      h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
      h("tbody", {}, body.length ? body : h("tr", {}, h("td", { colspan: String(headers.length), class: "muted" }, "No job has reported yet."))),
    );
  }

  function showJobs() {
    jobsBody.replaceChildren(...(study.jobs || []).map((job) => h("tr", { dataset: { id: job.id } },
      h("td", {}, h("a", { href: `#/jobs/${job.id}` }, h("code", {}, job.id))),
      h("td", {}, job.loss),
      h("td", {}, pointText(job.point) || "–"),
      h("td", {}, String(job.seed)),
      h("td", {}, statusBadge(job.status)),
      h("td", {}, `${job.step} / ${job.total_steps}`))));
  }

  function showStudy(next) {
    study = next;
    title.replaceChildren(study.name || "Study", " ", h("code", {}, study.id));
    document.title = `${study.name || study.id} · ganforge`;
    statusText.replaceChildren(statusBadge(study.status));
    view.dataset.status = study.status;
    bar.value = String(study.progress ? study.progress.fraction : 0);
    progress.textContent = progressText(study);
    cancel.disabled = FINAL.includes(study.status) || study.status === "cancelling";
    const dataset = study.spec?.dataset || {};
    about.textContent = `${dataset.builtin || dataset.id || "?"} (${study.data_kind || "?"}) · ${study.spec?.architecture?.name || "?"} · measures: ${(study.measures || []).join(", ") || "none for this data set"}`;
    showTable();
    showJobs();
  }

  async function showCurves() {
    const names = [...(study.measures || []), "loss_g"]; // the quality measures, and G's loss for stability
    const params = new URLSearchParams({ names: names.join(","), points: "200" });
    const body = await api(`${base}/curves?${params}`, { signal });
    for (const name of names) {
      const curves = (body.curves || {})[name] || [];
      if (!curves.length) continue;
      if (!charts.has(name)) charts.set(name, new StudyChart(chartsBox, name, h));
      charts.get(name).update(curves, colourOf);
    }
  }

  // One job per (loss, point), its lowest seed; the latest step every one of them has a snapshot of.
  async function showSamples() {
    const chosen = new Map();
    for (const job of study.jobs || []) {
      const key = groupKey(job.loss, job.point);
      if (!chosen.has(key) || job.seed < chosen.get(key).seed) chosen.set(key, job);
    }
    const jobs = [...chosen.values()];
    const lists = await Promise.all(jobs.map((job) => allPages(`/v1/jobs/${encodeURIComponent(job.id)}/samples`, "samples", { signal })));
    let common = null;
    for (const list of lists) {
      const steps = new Set(list.map((sample) => sample.step));
      common = common === null ? steps : new Set([...common].filter((step) => steps.has(step)));
    }
    const step = common && common.size ? Math.max(...common) : null;
    if (step === null) {
      samplesNote.textContent = "Samples appear once every loss has a snapshot at a common step.";
      return;
    }
    if (step === sampleStep) return;
    sampleStep = step;
    samplesNote.textContent = `Step ${step}: the latest step every loss has a snapshot of (seed shown: the lowest).`;
    const figures = await Promise.all(jobs.map(async (job, index) => {
      const sample = lists[index].find((item) => item.step === step);
      if (!blobs.has(sample.png_url)) blobs.set(sample.png_url, await blobUrl(sample.png_url, signal));
      const label = `${groupLabel(job.loss, job.point)}, seed ${job.seed}, step ${step}`;
      const evaluation = sample.evaluation
        ? Object.entries(sample.evaluation).map(([name, value]) => `${name} ${Number(value).toPrecision(3)}`).join(" · ")
        : "";
      return h("figure", { class: "panel", dataset: { loss: job.loss, point: pointText(job.point), step: String(step) } },
        h("img", { src: blobs.get(sample.png_url), alt: `samples of ${label}` }),
        h("figcaption", {}, h("a", { href: `#/jobs/${job.id}` }, groupLabel(job.loss, job.point)), ` · seed ${job.seed}`,
          evaluation ? h("div", { class: "muted" }, evaluation) : null));
    }));
    samplesBox.dataset.step = String(step);
    samplesBox.replaceChildren(...figures);
  }

  async function refresh() {
    try {
      showStudy(await api(base, { signal }));
      polls += 1;
      // while running: the curves every other poll; the samples (a request per loss and grid point) every other
      // poll too, every tenth for a study of many points; both once more at the end
      const final = FINAL.includes(study.status);
      const groups = new Set((study.jobs || []).map((job) => groupKey(job.loss, job.point))).size;
      if (polls % 2 === 1 || final) await showCurves();
      if (polls % (groups > 16 ? 10 : 2) === 1 || final) await showSamples();
    } catch (error) {
      if (!signal.aborted) message.textContent = errorText(error);
    }
  }

  async function cancelStudy() {
    cancel.disabled = true;
    try {
      showStudy(await api(`${base}/cancel`, { method: "POST", signal }));
      message.textContent = "Cancel requested: every queued or running job of the study stops.";
    } catch (error) {
      message.textContent = errorText(error);
    }
  }

  let busy = false; // a slow answer is not overlapped by the next poll
  const timer = setInterval(async () => {
    if (busy || (study && FINAL.includes(study.status))) return;
    busy = true;
    await refresh();
    busy = false;
  }, POLL_MS);
  busy = true;
  refresh().finally(() => { busy = false; });
  return () => {
    clearInterval(timer);
    controller.abort();
    charts.forEach((chart) => chart.destroy());
    blobs.forEach((url) => URL.revokeObjectURL(url));
  };
}
