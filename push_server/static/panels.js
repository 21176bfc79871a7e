// The panels drawn from the DOM: ranked lists (search terms, products), route health with its sparklines, and
// the alerts banner. Everything from the server is written with textContent or SVG attributes, never parsed as
// HTML: search terms are whatever shoppers typed.
import { $, clock, count, decimal, formatMs, html, latestMinute, minuteIndex, minuteLabel, percent, zonedMinute }
  from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const TITLE = document.title;
export const routes = { date: null, minutes: {} };

function svg(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function mergeDay(target, data, fresh, mergeMinute) {
  // Per-minute channels: a snapshot (fresh) holds the whole day and replaces what the page had; a live message
  // holds the minutes that changed and is merged in; a message of another day replaces the day.
  if (fresh || target.date !== data.date) target.minutes = {};
  target.date = data.date;
  for (const [minute, value] of Object.entries(data.minutes || {})) {
    target.minutes[minute] = mergeMinute ? mergeMinute(target.minutes[minute], value) : value;
  }
}

// --- rankings ---------------------------------------------------------------------------

function renderRanked(id, rows, emptyText) {
  // rows: [{label, sub?, count}] in rank order (the job ranks them).
  const list = $(id);
  if (!rows.length) {
    list.replaceChildren(html("li", "empty", emptyText));
    return;
  }
  const previous = new Map([...list.querySelectorAll("li.item")].map((li) => [li.dataset.key, li.dataset.count]));
  const top = Math.max(1, ...rows.map((r) => r.count));
  const items = rows.map((row, i) => {
    const li = html("li", "item");
    li.dataset.key = row.label;
    li.dataset.count = String(row.count);
    if (previous.size && previous.get(row.label) !== String(row.count)) li.classList.add("changed");
    const name = html("span", "name");
    name.appendChild(html("span", "label", row.label));
    if (row.sub) name.appendChild(html("span", "sub", row.sub));
    const track = html("span", "track");
    const fill = html("span", "fill");
    fill.style.width = ((100 * row.count) / top).toFixed(1) + "%"; // CSSOM, allowed by the CSP
    track.appendChild(fill);
    li.append(html("span", "rank", String(i + 1)), name, html("span", "count", count(row.count)), track);
    return li;
  });
  list.replaceChildren(...items);
}

function termRows(terms) {
  return (Array.isArray(terms) ? terms : []).map((t) => ({ label: String(t.term), count: Number(t.count) }));
}

export function renderTermsToday(data) {
  renderRanked("terms-today", termRows(data.terms), "No searches yet today");
}

export function renderTermsRecent(data) {
  renderRanked("terms-recent", termRows(data.terms), "No searches in the last 10 minutes");
  const from = zonedMinute(data.window_start), to = zonedMinute(data.window_end);
  $("terms-recent-window").textContent = from && to ? `${from}–${to}` : "\u00a0";
}

export function renderProductsToday(data) {
  const rows = (Array.isArray(data.products) ? data.products : []).map((p) => (
    p.name ? { label: String(p.name), sub: String(p.product_id), count: Number(p.count) }
           : { label: String(p.product_id), count: Number(p.count) }));
  renderRanked("products-today", rows, "No product searched yet today");
}

// --- route health -----------------------------------------------------------------------

export function renderRoutesPerMinute(data, fresh) {
  // A live message may carry only the routes of a minute that changed: merge route by route; a snapshot
  // (fresh) replaces the day.
  mergeDay(routes, data, fresh, (old, value) => Object.assign({}, old || {}, value));
  renderRoutes();
}

function sparkline(series) {
  const W = 120, H = 26, step = W / series.length;
  const max = Math.max(1, ...series.map((s) => s.requests));
  const chart = svg("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, "aria-hidden": "true" });
  series.forEach((s, i) => {
    const h = s.requests ? Math.max(1.5, (s.requests / max) * (H - 2)) : 0.75;
    chart.appendChild(svg("rect", { class: s.errors ? "bad" : s.requests ? "ok" : "none", x: i * step + 0.5,
                                    y: H - h, width: Math.max(1, step - 1), height: h }));
  });
  return chart;
}

export function renderRoutes() {
  // Per route: the latest minute of the day (the job's event-time clock) and the 5 and 30
  // minutes ending at it.
  const { date, minutes } = routes;
  const tbody = $("routes-body");
  const latest = latestMinute(minutes);
  if (date === null || latest < 0) {
    const row = html("tr", "empty-row");
    const cell = html("td", "", "No requests yet today");
    cell.colSpan = 10;
    row.appendChild(cell);
    tbody.replaceChildren(row);
    $("routes-asof").textContent = date ? date : "\u00a0";
    return;
  }
  const names = new Set();
  for (let i = Math.max(0, latest - 29); i <= latest; i++) {
    for (const route of Object.keys(minutes[minuteLabel(i)] || {})) names.add(route);
  }
  const rows = [...names].sort().map((route) => {
    const at = (i) => (i >= 0 && (minutes[minuteLabel(i)] || {})[route]) || null;
    const now = at(latest) || {};
    let requests5 = 0, errors5 = 0;
    for (let i = latest - 4; i <= latest; i++) {
      const m = at(i);
      if (m) { requests5 += m.requests || 0; errors5 += m.errors || 0; }
    }
    const series = [];
    for (let i = latest - 29; i <= latest; i++) {
      const m = at(i) || {};
      series.push({ requests: m.requests || 0, errors: m.errors || 0 });
    }
    const rate = requests5 ? errors5 / requests5 : 0;
    const health = !requests5 ? ["idle", "idle"] : rate >= 0.05 ? ["bad", "failing"]
      : errors5 ? ["warn", "errors"] : ["ok", "healthy"];

    const tr = html("tr");
    tr.dataset.route = route;
    const name = html("th", "route", route);
    name.scope = "row";
    const pill = html("span", "pill " + health[0], health[1]);
    const status = html("td", "status");
    status.appendChild(pill);
    const cells = [
      ["requests", count(now.requests || 0)], ["errors", count(now.errors || 0)],
      ["p50", formatMs(now.p50_ms)], ["p95", formatMs(now.p95_ms)],
      ["requests-5m", count(requests5)], ["errors-5m", count(errors5)], ["error-rate", percent(errors5, requests5)],
    ].map(([key, text]) => {
      const td = html("td", "num " + key, text);
      if ((key === "errors" || key === "errors-5m") && text !== "0") td.classList.add("bad");
      return td;
    });
    const trend = html("td", "trend");
    trend.appendChild(sparkline(series));
    tr.append(name, status, ...cells, trend);
    return tr;
  });
  tbody.replaceChildren(...rows);
  const now = clock();
  const behind = now.date === date ? minuteIndex(now.minute) - latest : 0;
  $("routes-asof").textContent = `latest minute ${minuteLabel(latest)}` +
    (behind >= 2 ? ` · no requests for ${behind} minutes` : "");
}

// --- alerts -----------------------------------------------------------------------------

function alertLine(alert) {
  const li = html("li", "alert-item");
  li.appendChild(html("span", "alert-message", String(alert.message || alert.rule)));
  const since = zonedMinute(alert.since);
  const facts = [String(alert.rule)];
  if (since) facts.push("since " + since);
  if (Number.isFinite(alert.value)) {
    facts.push("now " + decimal.format(alert.value) +
               (Number.isFinite(alert.baseline) ? " vs " + decimal.format(alert.baseline) + " before" : ""));
  }
  li.appendChild(html("span", "alert-meta", facts.join(" · ")));
  return li;
}

export function renderAlerts(data) {
  const alerts = Array.isArray(data.alerts) ? data.alerts : [];
  const firing = alerts.filter((a) => a && a.state === "firing");
  const pending = alerts.filter((a) => a && a.state === "pending");
  const banner = $("alert-banner");
  banner.hidden = firing.length === 0;
  $("alert-title").textContent = firing.length === 1 ? "Alert firing" : `${firing.length} alerts firing`;
  $("alert-list").replaceChildren(...firing.map(alertLine));
  const chip = $("alerts-pending");
  chip.hidden = pending.length === 0;
  chip.textContent = `${pending.length} pending`;
  chip.title = pending.map((a) => String(a.message || a.rule)).join("\n");
  document.title = (firing.length ? "(!) " : "") + TITLE;
}
