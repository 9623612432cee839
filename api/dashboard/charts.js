// Live metric curves: one uPlot chart per group of series, every series the job reports plotted somewhere.
// Points are keyed by (series, step), so a point seen twice (the seed and an event) is plotted once.

/* global uPlot */

const GROUPS = [
  { title: "Losses", test: (name) => name === "loss_d" || name === "loss_g" },
  { title: "D(x) and D(G(z))", test: (name) => name === "d_real" || name === "d_fake" },
  { title: "Gradient norms", test: (name) => name.startsWith("grad_norm") },
  { title: "Wasserstein estimate", test: (name) => name.startsWith("wasserstein") },
  { title: "k_t (BEGAN)", test: (name) => name === "k_t" },
  // a count and a fraction: the fraction gets its own axis on the right
  { title: "Modes covered / high-quality fraction", test: (name) => name === "modes_covered" || name === "hq_fraction", right: ["hq_fraction"] },
  { title: "Reverse KL", test: (name) => name.startsWith("reverse_kl") },
];
// Colours tell series apart; the legend names each one, so nothing is told by colour alone.
const COLOURS = ["#0b57d0", "#d9480f", "#1a7f37", "#8250df", "#bf8700", "#cf222e", "#0a7ea4"];

function groupOf(name) {
  const group = GROUPS.find((candidate) => candidate.test(name));
  return group ? group.title : name;
}

function onRightAxis(title, name) {
  return GROUPS.find((group) => group.title === title)?.right?.includes(name) ?? false;
}

// Charts in the order of GROUPS, then any other series alphabetically.
function rank(title) {
  const index = GROUPS.findIndex((group) => group.title === title);
  return index >= 0 ? String(index).padStart(3, "0") : `999 ${title}`;
}

class Chart {
  constructor(title, container, logScale) {
    this.title = title;
    this.names = [];
    this.points = new Map(); // name -> Map(step -> value)
    this.logScale = logScale;
    this.element = document.createElement("figure");
    this.element.className = "chart panel";
    this.element.dataset.group = title;
    const heading = document.createElement("h3");
    heading.textContent = title;
    this.plotArea = document.createElement("div");
    this.element.append(heading, this.plotArea);
    const later = [...container.children].find((other) => rank(other.dataset.group) > rank(title));
    container.insertBefore(this.element, later || null);
    this.plot = null;
  }

  add(name, step, value) {
    if (!this.points.has(name)) {
      this.points.set(name, new Map());
      this.names.push(name);
      this.plot?.destroy();
      this.plot = null; // a new series: the chart is rebuilt with it
    }
    this.points.get(name).set(step, value);
  }

  count() {
    let total = 0;
    for (const series of this.points.values()) total += series.size;
    return total;
  }

  data() {
    const steps = new Set();
    for (const series of this.points.values()) for (const step of series.keys()) steps.add(step);
    const xs = [...steps].sort((a, b) => a - b);
    const columns = this.names.map((name) => {
      const series = this.points.get(name);
      return xs.map((step) => {
        const value = series.has(step) ? series.get(step) : null;
        return this.logScale && value !== null && value <= 0 ? null : value; // log scale: no place for <= 0
      });
    });
    return [xs, ...columns];
  }

  width() {
    return Math.max(300, this.plotArea.clientWidth || 420);
  }

  resize() {
    this.plot?.setSize({ width: this.width(), height: 220 });
  }

  draw() {
    this.element.dataset.series = this.names.join(" ");
    const data = this.data();
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    const right = this.names.some((name) => onRightAxis(this.title, name));
    const scale = this.logScale ? { distr: 3 } : {};
    this.plot = new uPlot(
      {
        width: this.width(),
        height: 220,
        scales: { x: { time: false }, y: scale, right: scale },
        axes: [{ label: "step" }, { scale: "y" }, right ? { scale: "right", side: 1, grid: { show: false } } : null]
          .filter(Boolean),
        series: [
          { label: "step" },
          ...this.names.map((name, index) => ({
            label: onRightAxis(this.title, name) ? `${name} (right axis)` : name,
            scale: onRightAxis(this.title, name) ? "right" : "y",
            stroke: COLOURS[index % COLOURS.length],
            width: 1.5,
            spanGaps: true,
            points: { show: false },
          })),
        ],
      },
      data,
      this.plotArea,
    );
  }
}

/** The charts of one job page; `element.dataset.points` is the number of points plotted, for tests. */
export class Charts {
  constructor(container) {
    this.container = container;
    this.logScale = false;
    this.charts = new Map();
    this.pending = false;
    this.resizer = new ResizeObserver(() => this.charts.forEach((chart) => chart.resize()));
    this.resizer.observe(container);
  }

  /** Add points [name, step, value]; redrawn on the next animation frame. */
  add(points) {
    for (const [name, step, value] of points) {
      const title = groupOf(name);
      if (!this.charts.has(title)) this.charts.set(title, new Chart(title, this.container, this.logScale));
      this.charts.get(title).add(name, step, value);
    }
    this.schedule();
  }

  setLogScale(on) {
    this.logScale = on;
    for (const chart of this.charts.values()) {
      chart.logScale = on;
      chart.plot?.destroy();
      chart.plot = null;
    }
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      let total = 0;
      for (const chart of this.charts.values()) {
        chart.draw();
        total += chart.count();
      }
      this.container.dataset.points = String(total);
      this.container.dataset.series = String([...this.charts.values()].reduce((n, c) => n + c.names.length, 0));
    });
  }

  destroy() {
    this.resizer.disconnect();
    for (const chart of this.charts.values()) chart.plot?.destroy();
    this.charts.clear();
  }
}
