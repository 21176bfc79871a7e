// The KPI cards' change against the same time yesterday, and the "payment to screen" latency readout.
//
// Yesterday: the channels carry today only, so the page keeps what it showed, one sample of every KPI per
// minute, in this browser's localStorage (today and yesterday only, older days removed). The change is shown
// when yesterday has a sample at the same minute or up to 5 minutes before it; otherwise the card says the
// figure is not known. Figures are the shop's own totals, which the signed-in browser shows anyway.
//
// Latency: each live orders.today update carries last_recorded_at, when the order service recorded the newest
// payment of the batch; the page takes the browser's clock (corrected by the server's clock read when the page
// loaded) minus that instant, and shows the latest value, p50 and max over the last minute. Snapshots and
// replayed messages are old by nature and are not counted.
import { $, clock, decimal, minuteIndex, minuteLabel, previousDay, serverNow, setText } from "./format.js";

const PREFIX = "rtdash.kpis.";
const NEAR_MINUTES = 5;
const days = {};      // date -> {"HH:MM": {kpi: value}}
const current = {};   // kpi -> {date, value}
let dirty = false;

function load(date) {
  if (!(date in days)) {
    try { days[date] = JSON.parse(localStorage.getItem(PREFIX + date) || "{}") || {}; } catch (e) { days[date] = {}; }
  }
  return days[date];
}

export function saveKpis() {
  // Write today's samples and drop any day older than yesterday.
  if (!dirty) return;
  dirty = false;
  const today = clock().date, keep = new Set([today, previousDay(today)]);
  try {
    for (let i = localStorage.length - 1; i >= 0; i--) {
      const key = localStorage.key(i);
      if (key && key.startsWith(PREFIX) && !keep.has(key.slice(PREFIX.length))) localStorage.removeItem(key);
    }
    if (days[today]) localStorage.setItem(PREFIX + today, JSON.stringify(days[today]));
  } catch (e) { /* storage full or refused: comparisons stay unknown */ }
}

export function recordKpi(name, date, value) {
  // A KPI as shown now; sampled into today's minute when the figure is of today.
  current[name] = { date, value };
  const now = clock();
  if (date === now.date && Number.isFinite(value)) {
    const day = load(date);
    day[now.minute] = Object.assign(day[now.minute] || {}, { [name]: value });
    dirty = true;
  }
  renderDelta(name);
}

function yesterdayAt(name, date, minute) {
  const day = load(previousDay(date));
  const at = minuteIndex(minute);
  for (let i = at; i >= Math.max(0, at - NEAR_MINUTES); i--) {
    const sample = day[minuteLabel(i)];
    if (sample && Number.isFinite(sample[name])) return { value: sample[name], minute: minuteLabel(i) };
  }
  return null;
}

export function renderDelta(name) {
  const node = $(name + "-delta");
  const shown = current[name];
  if (!node || !shown) return;
  const now = clock();
  const before = shown.date === now.date ? yesterdayAt(name, shown.date, now.minute) : null;
  node.className = "delta";
  if (!before) {
    node.textContent = "vs yesterday: not known";
    node.title = "No figure of yesterday at this time in this browser (the page keeps what it showed, per minute)";
    return;
  }
  const diff = shown.value - before.value;
  node.title = `yesterday at ${before.minute}: ${decimal.format(before.value)}`;
  if (before.value === 0) {
    node.textContent = diff ? "new vs yesterday" : "same as yesterday";
  } else {
    const pct = (100 * diff) / before.value;
    const change = decimal.format(Math.round(pct * 10) / 10);
    node.textContent = `${pct >= 0 ? "▲ +" : "▼ "}${change}% vs yesterday ${before.minute}`;
  }
  node.classList.add(diff > 0 ? "up" : diff < 0 ? "down" : "flat");
}

export function renderDeltas() {
  for (const name of Object.keys(current)) renderDelta(name);
}

// --- payment to screen ---------------------------------------------------------------------

const WINDOW_MS = 60000;
const latencies = [];   // {at, ms}: when the update arrived, how long after the payment was recorded

export function recordLatency(recordedAt) {
  const recorded = Date.parse(recordedAt);
  if (!Number.isFinite(recorded)) return;
  const now = serverNow();
  latencies.push({ at: now, ms: Math.max(0, now - recorded) });
  renderLatency();
}

function quantile(sorted, q) {
  // Nearest rank.
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];
}

export function renderLatency() {
  const since = serverNow() - WINDOW_MS;
  while (latencies.length && latencies[0].at < since) latencies.shift();
  const box = $("latency");
  if (!latencies.length) {
    box.dataset.samples = "0";
    setText("latency-last", "–", false);
    setText("latency-p50", "–", false);
    setText("latency-max", "–", false);
    $("latency-note").textContent = "no order paid in the last minute";
    return;
  }
  const sorted = latencies.map((l) => l.ms).sort((a, b) => a - b);
  const last = latencies[latencies.length - 1].ms;
  box.dataset.samples = String(sorted.length);
  box.dataset.lastMs = String(Math.round(last));
  setText("latency-last", formatSeconds(last), true);
  setText("latency-p50", formatSeconds(quantile(sorted, 0.5)), false);
  setText("latency-max", formatSeconds(sorted[sorted.length - 1]), false);
  $("latency-note").textContent = `over ${sorted.length} update${sorted.length === 1 ? "" : "s"} in the last minute`;
}

function formatSeconds(ms) {
  return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}
