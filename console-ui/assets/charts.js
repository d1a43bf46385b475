// Serv console: the overview's live charts. Every node samples its own traffic, errors, memory and
// disk every few seconds into a short series kept in memory; /v1/series answers every node's. Each
// chart is inline SVG (no library, nothing fetched), one line per node, redrawn on every refresh.
// Uses the page helpers of app.js ($, api, banner, missing, short, colorOf, reload, view).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const MIB = 1024 * 1024;
// How often the overview asks for the series again (the nodes sample every 5 s).
const SERIES_REFRESH_MS = 5000;
// The narrowest time span a chart shows, so that the first samples do not fill its width.
const MIN_SPAN_MS = 60 * 1000;
const CHART_HEIGHT = 190;
const MARGIN = { top: 12, right: 12, bottom: 26, left: 48 };
const CHARTS = [
  { id: "messages-in", title: "Messages in", what: "STOMP messages published", unit: "msg/s", value: (s) => s.messages_in_per_s },
  { id: "messages-out", title: "Messages out", what: "STOMP messages delivered", unit: "msg/s", value: (s) => s.messages_out_per_s },
  { id: "s3-requests", title: "S3 requests", what: "answered, refusals included", unit: "req/s", value: (s) => s.s3_requests_per_s },
  { id: "errors", title: "Errors", what: "S3 4xx/5xx and STOMP ERROR frames", unit: "err/s",
    value: (s) => s.s3_errors_per_s + s.stomp_errors_per_s },
  { id: "memory", title: "Memory", what: "resident (RSS)", unit: "MiB", value: (s) => s.resident_bytes / MIB },
  { id: "disk", title: "Disk", what: "data directory", unit: "MiB", value: (s) => s.storage_bytes / MIB },
];

/** An SVG element `name` with `attributes`. */
function svgElement(name, attributes = {}, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/** A step of 1, 2 or 5 × 10^k that divides 0..`max` into at most `divisions` parts, and its top
 * (0..1 at least, so that a quiet chart reads 0 on a scale of 1, not of nothing). */
function niceScale(max, divisions = 4) {
  max = Math.max(max, 1);
  const rough = max / divisions;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  return { step, top: step * Math.max(1, Math.ceil(max / step - 1e-9)) };
}

/** `value` with as many decimals as `step` needs (1 for 0.5, 0 for 50). */
function tickLabel(value, step) {
  return value.toFixed(Math.max(0, Math.min(3, -Math.floor(Math.log10(step)))));
}

/** A short reading of `value` in `unit` for legends and the nodes table. */
function reading(value, unit) {
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${unit}`;
}

// Seconds matter on a chart of a few minutes only.
const clock = (ms, seconds = false) =>
  new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", ...(seconds ? { second: "2-digit" } : {}) });

/**
 * Draws a line chart `width` units wide: time `from`..`to` across, 0 up to the largest value,
 * one path per line ({node, color, points: [[at_ms, value]]}); a gap longer than `gapMs`
 * breaks a line rather than bridge a stretch the node did not sample.
 */
function lineChart({ label, unit, lines, from, to, gapMs, width }) {
  const plot = { x: MARGIN.left, y: MARGIN.top, w: width - MARGIN.left - MARGIN.right, h: CHART_HEIGHT - MARGIN.top - MARGIN.bottom };
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${CHART_HEIGHT}`, role: "img", "aria-label": label });
  const peak = Math.max(0, ...lines.flatMap((line) => line.points.map(([, v]) => v)));
  const { step, top } = niceScale(peak);
  const x = (at) => plot.x + ((at - from) / Math.max(1, to - from)) * plot.w;
  const y = (v) => plot.y + plot.h - (v / top) * plot.h;
  for (let v = 0; v <= top + step / 2; v += step) {
    svg.append(svgElement("line", { x1: plot.x, x2: plot.x + plot.w, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" }),
      svgElement("text", { x: plot.x - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, tickLabel(v, step)));
  }
  svg.append(svgElement("text", { x: plot.x, y: MARGIN.top - 2, class: "unit" }, unit));
  const times = plot.w < 300 ? [from, to] : [from, (from + to) / 2, to];
  times.forEach((at, i) => {
    const anchor = i === 0 ? "start" : i === times.length - 1 ? "end" : "middle";
    svg.append(svgElement("text", { x: x(at), y: CHART_HEIGHT - 8, "text-anchor": anchor, class: "tick" },
      clock(at, to - from < 10 * MIN_SPAN_MS)));
  });
  for (const line of lines) {
    let d = "", last = null;
    for (const [at, v] of line.points) {
      d += `${last === null || at - last > gapMs ? "M" : "L"}${x(at).toFixed(1)},${y(v).toFixed(1)} `;
      last = at;
    }
    const path = svgElement("path", { d: d.trim(), stroke: line.color, class: "series", "data-node": line.node,
      "data-points": line.points.length });
    path.append(svgElement("title", {}, `${short(line.node)}: ${reading(line.points.at(-1)?.[1] ?? 0, unit)}`));
    svg.append(path);
  }
  return { svg, peak };
}

/** The charts' figures, made once; each is redrawn in place. */
function chartFigures() {
  const charts = $("charts");
  if (charts.children.length === 0) {
    charts.replaceChildren(...CHARTS.map((chart) => {
      const figure = document.createElement("figure");
      figure.className = "chart";
      figure.dataset.chart = chart.id;
      const caption = document.createElement("figcaption");
      const title = document.createElement("strong");
      title.textContent = chart.title;
      caption.append(title, ` ${chart.what}, ${chart.unit}`);
      const legend = document.createElement("ul");
      legend.className = "legend";
      figure.append(caption, document.createElement("div"), legend);
      return figure;
    }));
  }
  return [...charts.children];
}

/** Reads every node's series and redraws the charts and the nodes' memory and disk. */
async function loadSeries() {
  const series = await api("/v1/series");
  view.series = series;
  view.latest = new Map(series.nodes.filter((n) => n.samples.length).map((n) => [n.node, n.samples.at(-1)]));
  missing("series-missing", series.unreachable, "charts");
  renderCharts();
  renderMembers();
}

function renderCharts() {
  const series = view.series;
  if (!series) return;
  const ids = [...new Set([...view.members.map((m) => m.id), ...series.nodes.map((n) => n.node)])].sort();
  const latest = Math.max(0, ...series.nodes.flatMap((n) => n.samples.map((s) => s.at_ms)));
  const range = Number($("series-range").value) * 1000;
  const kept = series.nodes.map((n) => ({ node: n.node, samples: n.samples.filter((s) => s.at_ms >= latest - range) }))
    .sort((a, b) => a.node.localeCompare(b.node));
  const earliest = Math.min(latest, ...kept.flatMap((n) => n.samples.map((s) => s.at_ms)));
  const from = Math.min(earliest, latest - MIN_SPAN_MS);
  const count = kept.reduce((sum, n) => sum + n.samples.length, 0);
  $("series-state").textContent = count === 0
    ? `Collecting: every node takes a sample every ${series.interval_ms / 1000} s.`
    : `${series.nodes.length} node(s), a sample every ${series.interval_ms / 1000} s; each keeps the last ` +
      `${(series.max_samples * series.interval_ms) / 60000} min. Refreshed ${clock(Date.now())}.`;
  CHARTS.forEach((chart, i) => {
    const figure = chartFigures()[i];
    const lines = kept.map((n) => ({ node: n.node, color: colorOf(n.node, ids),
      points: n.samples.map((s) => [s.at_ms, chart.value(s)]) }));
    const width = Math.max(280, Math.round(figure.clientWidth || 480) - 16);
    const label = `${chart.title} (${chart.unit}) of ${lines.length} node(s), ${clock(from)} to ${clock(latest)}`;
    const { svg, peak } = lineChart({ label, unit: chart.unit, lines, from, to: latest, gapMs: series.interval_ms * 2.5, width });
    figure.dataset.peak = String(peak);
    figure.children[1].replaceChildren(svg);
    figure.children[2].replaceChildren(...lines.map((line) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = line.color;
      const now = line.points.at(-1);
      item.append(swatch, `${short(line.node)} ${now ? reading(now[1], chart.unit) : "collecting"}`);
      item.title = line.node;
      return item;
    }));
  });
}

/** The latest memory (with the node's budget, and whether it refuses new work near it) and disk
 * of node `id`, for its row in the nodes table. */
function nodeUsage(id) {
  const sample = view.latest?.get(id);
  if (!sample) return ["?", "?"];
  let memory = reading(sample.resident_bytes / MIB, "MiB");
  if (sample.memory_limit_bytes) memory += ` of ${reading(sample.memory_limit_bytes / MIB, "MiB")}`;
  if (sample.memory_refusing) memory += " · refusing new work";
  return [memory, reading(sample.storage_bytes / MIB, "MiB")];
}

/** Whether node `id` last said it is near its memory budget and refuses new work. */
function nodeRefusing(id) {
  return Boolean(view.latest?.get(id)?.memory_refusing);
}

document.addEventListener("DOMContentLoaded", () => {
  $("series-range").addEventListener("input", renderCharts);
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; if (!$("overview").hidden) renderCharts(); });
  });
  setInterval(() => { if (token() && !$("overview").hidden) reload("series", loadSeries); }, SERIES_REFRESH_MS);
});
