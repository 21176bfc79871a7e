// Per-minute charts drawn by uPlot (the global `uPlot`, served by the push server from /static/vendor/, never a
// CDN). The x axis is the slot index of the hour shown (0..59), labelled with each slot's "HH:MM" in the
// dashboard's time zone, so the browser's own zone never shifts a minute. A chart keeps its container's width
// (ResizeObserver), so it fits a phone.
import { $, grouped } from "./format.js";

const HEIGHT = 220;

function niceMax(value) {
  if (!(value > 4)) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function seriesOptions(spec) {
  // spec: {label, kind: "bars" | "line" | "marks", color}
  const base = { label: spec.label, value: (u, v) => (v == null ? "0" : grouped.format(v)) };
  if (spec.kind === "line") {
    return { ...base, stroke: spec.color, width: 2, points: { show: false } };
  }
  const size = spec.kind === "marks" ? [0.3, 12] : [0.72, 40];
  return { ...base, stroke: spec.color, fill: spec.color, width: 0, points: { show: false },
           paths: uPlot.paths.bars({ size, align: 0 }) };
}

export function missingLibrary() {
  return typeof uPlot !== "function";
}

export class MinuteChart {
  // One uPlot per container; update(labels, columns) with one array per series of the spec, values per slot.
  constructor(id, specs) {
    this.container = $(id);
    this.specs = specs;
    this.labels = [];
    this.plot = null;
    if (missingLibrary()) {
      this.container.textContent = "The chart library did not load (run `make setup` on the server).";
      this.container.classList.add("chart-missing");
      return;
    }
    const labelAt = (i) => this.labels[Math.round(i)] || "";
    const options = {
      width: this.width(), height: HEIGHT,
      scales: { x: { time: false, range: (u) => [-0.5, Math.max(1, this.labels.length) - 0.5] },
                y: { range: (u, min, max) => [0, niceMax(max)] } },
      axes: [
        { stroke: "#64748b", grid: { show: false }, ticks: { show: false },
          splits: () => this.labels.map((_, i) => i).filter((i) => i % 10 === 0 || i === this.labels.length - 1),
          values: (u, splits) => splits.map(labelAt) },
        { stroke: "#64748b", size: 44, grid: { stroke: "#e2e8f0", width: 1 }, ticks: { show: false },
          values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? grouped.format(v) : v.toFixed(1))) },
      ],
      series: [{ label: "minute", value: (u, i) => (i == null ? "–" : labelAt(i)) }, ...specs.map(seriesOptions)],
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      legend: { live: true },
    };
    this.plot = new uPlot(options, this.columns([], specs.map(() => [])), this.container);
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(() => this.plot.setSize({ width: this.width(), height: HEIGHT })).observe(this.container);
    }
  }

  width() {
    return Math.max(200, Math.floor(this.container.clientWidth || 320));
  }

  columns(labels, values) {
    // A bar of zero is not drawn (null); a line goes through zero.
    return [labels.map((_, i) => i), ...values.map((column, k) => column.map(
      (v) => (this.specs[k].kind === "line" ? v || 0 : v || null)))];
  }

  update(labels, values) {
    // values: one array per spec, each as long as labels; the sums are kept on the container for reading.
    this.labels = labels;
    this.container.dataset.sums = values.map((column) => column.reduce((a, v) => a + (v || 0), 0)).join(",");
    this.container.dataset.first = labels[0] || "";
    this.container.dataset.last = labels[labels.length - 1] || "";
    if (this.plot) this.plot.setData(this.columns(labels, values));
  }
}
